package org.slmexport.demo.ui

import androidx.compose.foundation.isSystemInDarkTheme
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.layout.safeDrawingPadding
import androidx.compose.foundation.layout.size
import androidx.compose.foundation.layout.width
import androidx.compose.foundation.rememberScrollState
import androidx.compose.foundation.selection.selectable
import androidx.compose.foundation.verticalScroll
import androidx.compose.material3.Button
import androidx.compose.material3.Card
import androidx.compose.material3.CircularProgressIndicator
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.RadioButton
import androidx.compose.material3.Slider
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.material3.darkColorScheme
import androidx.compose.material3.lightColorScheme
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.text.font.FontWeight
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import org.slmexport.demo.DemoViewModel
import org.slmexport.demo.EngineState
import org.slmexport.demo.Preparing
import org.slmexport.demo.SelfTestState
import org.slmexport.demo.UiState
import org.slmexport.demo.bundle.ArtifactFormat
import org.slmexport.demo.chatTemplate

@Composable
fun DemoApp(viewModel: DemoViewModel) {
    val state by viewModel.state.collectAsStateWithLifecycle()
    MaterialTheme(colorScheme = if (isSystemInDarkTheme()) darkColorScheme() else lightColorScheme()) {
        Surface(modifier = Modifier.fillMaxSize()) {
            Column(
                modifier = Modifier
                    .fillMaxSize()
                    .safeDrawingPadding()
                    .padding(16.dp),
            ) {
                Text("slm-export demo", style = MaterialTheme.typography.headlineSmall)
                Spacer(Modifier.height(8.dp))
                val preparing = state.preparing
                when {
                    preparing != null -> PreparingScreen(preparing)
                    state.bundleError != null -> BundleErrorScreen(state.bundleError!!, onRetry = viewModel::prepareBundle)
                    else -> {
                        ScreenTabs(state, onScreen = viewModel::showScreen)
                        val encoder = state.encoders.firstOrNull { it.bundle.role.key == state.screen }
                        if (encoder != null) {
                            EncoderScreen(encoder, state.verifiedFiles)
                        } else {
                            MainScreen(
                                state = state,
                                onRuntime = viewModel::selectRuntime,
                                onPrompt = viewModel::setPrompt,
                                onMaxTokens = viewModel::setMaxNewTokens,
                                onTemperature = viewModel::setTemperature,
                                onTopP = viewModel::setTopP,
                                chat = ChatActions(
                                    onDraft = viewModel::setDraft,
                                    onSystem = viewModel::setSystemPrompt,
                                    onSend = viewModel::send,
                                    onNewChat = viewModel::newChat,
                                ),
                                onGenerate = viewModel::generate,
                                onStop = viewModel::stop,
                                onSelfTest = viewModel::runSelfTest,
                                onReload = viewModel::prepareBundle,
                                onDismissError = viewModel::dismissError,
                            )
                        }
                    }
                }
            }
        }
    }
}

/** Screen 1: locating, copying and verifying the bundle. */
@Composable
private fun PreparingScreen(preparing: Preparing) {
    Column(verticalArrangement = Arrangement.spacedBy(12.dp)) {
        when (preparing) {
            Preparing.Locating -> {
                Text("Looking for the model bundle…")
                CircularProgressIndicator()
            }
            is Preparing.Copying -> {
                Text("First run: copying the bundle out of the app")
                Text(preparing.path, style = MaterialTheme.typography.bodySmall, fontFamily = FontFamily.Monospace)
                LinearProgressIndicator(progress = { preparing.fraction }, modifier = Modifier.fillMaxWidth())
            }
            is Preparing.Verifying -> {
                Text("Checking every file's sha256 against manifest.json")
                Text(preparing.path, style = MaterialTheme.typography.bodySmall, fontFamily = FontFamily.Monospace)
                LinearProgressIndicator(progress = { preparing.fraction }, modifier = Modifier.fillMaxWidth())
            }
        }
    }
}

/** Screen 2: no usable bundle (none found, unreadable manifest, or a file that fails its digest). */
@Composable
private fun BundleErrorScreen(message: String, onRetry: () -> Unit) {
    Column(verticalArrangement = Arrangement.spacedBy(12.dp), modifier = Modifier.verticalScroll(rememberScrollState())) {
        Card(modifier = Modifier.fillMaxWidth()) {
            Column(Modifier.padding(16.dp)) {
                Text("The model bundle cannot be used", style = MaterialTheme.typography.titleMedium, color = MaterialTheme.colorScheme.error)
                Spacer(Modifier.height(8.dp))
                Text(message)
            }
        }
        Button(onClick = onRetry) { Text("Try again") }
    }
}

/** Screen 3: the loaded bundle, the runtime choice, the self-test, and generation. */
@Composable
private fun MainScreen(
    state: UiState,
    onRuntime: (ArtifactFormat) -> Unit,
    onPrompt: (String) -> Unit,
    onMaxTokens: (Int) -> Unit,
    onTemperature: (Float) -> Unit,
    onTopP: (Float) -> Unit,
    chat: ChatActions,
    onGenerate: () -> Unit,
    onStop: () -> Unit,
    onSelfTest: () -> Unit,
    onReload: () -> Unit,
    onDismissError: () -> Unit,
) {
    val bundle = state.bundle ?: return
    val manifest = bundle.decoder ?: return
    val ready = state.engine == EngineState.Ready
    val busy = state.generating || state.selfTest == SelfTestState.Running
    Column(
        verticalArrangement = Arrangement.spacedBy(12.dp),
        modifier = Modifier.verticalScroll(rememberScrollState()),
    ) {
        Card(modifier = Modifier.fillMaxWidth()) {
            Column(Modifier.padding(16.dp)) {
                Text(manifest.model.name, style = MaterialTheme.typography.titleMedium)
                Text(
                    "${manifest.model.family} · ${"%,d".format(manifest.model.parameters)} parameters · " +
                        "context ${manifest.model.maxSeqLen} tokens",
                    style = MaterialTheme.typography.bodySmall,
                )
                Text(
                    "Bundle ${bundle.source.label} · ${state.verifiedFiles} files verified (sha256) · " +
                        "slm-export ${manifest.generator.version}",
                    style = MaterialTheme.typography.bodySmall,
                )
                TextButton(onClick = onReload, enabled = !busy) { Text("Reload bundle") }
            }
        }

        Text("Runtime", style = MaterialTheme.typography.titleSmall)
        for (format in state.runtimes) {
            val artifact = manifest.artifact(format)
            Row(
                verticalAlignment = Alignment.CenterVertically,
                modifier = Modifier
                    .fillMaxWidth()
                    .selectable(selected = state.runtime == format, enabled = !busy, onClick = { onRuntime(format) }),
            ) {
                RadioButton(selected = state.runtime == format, onClick = { onRuntime(format) }, enabled = !busy)
                Column {
                    Text(format.label)
                    if (artifact != null) {
                        Text(
                            "${artifact.path} · ${artifact.quantization} · ${artifact.bytes / 1_000_000} MB · " +
                                "host parity top-1 ${"%.3f".format(artifact.parity.top1)}" +
                                (artifact.parity.textTop1?.let { top1 ->
                                    " · text top-1 ${"%.3f".format(top1)}, perplexity " +
                                        "%+.1f%%".format(100 * (artifact.parity.pplChange ?: 0.0))
                                } ?: "") +
                                (artifact.search?.let { " · chosen by auto from ${it.tried.size} tried" } ?: ""),
                            style = MaterialTheme.typography.bodySmall,
                        )
                        artifact.qualityLoss?.let { loss ->
                            Text(
                                "Below its quality gate, shipped with ${loss.acceptedWith}: " +
                                    loss.failures.joinToString("; "),
                                style = MaterialTheme.typography.bodySmall,
                                color = MaterialTheme.colorScheme.error,
                            )
                        }
                    }
                }
            }
        }
        when (val engine = state.engine) {
            EngineState.NotLoaded -> {}
            EngineState.Loading -> Row(verticalAlignment = Alignment.CenterVertically) {
                CircularProgressIndicator(modifier = Modifier.size(20.dp))
                Spacer(Modifier.width(8.dp))
                Text("Loading the model…")
            }
            EngineState.Ready -> {}
            is EngineState.Failed -> ErrorCard(engine.message, onDismiss = null)
        }

        SelfTestCard(state.selfTest, enabled = ready && !busy, onRun = onSelfTest)

        GenerationSettings(state, maxSeqLen = manifest.model.maxSeqLen, onMaxTokens, onTemperature, onTopP)

        if (chatTemplate(bundle) != null) {
            ChatSection(state, ready = ready && !busy, actions = chat, onStop = onStop)
            state.error?.let { ErrorCard(it, onDismiss = onDismissError) }
            state.speed?.let { Text(it, style = MaterialTheme.typography.bodyMedium) }
            state.runtimeStats?.let { Text(it, style = MaterialTheme.typography.bodySmall) }
            Spacer(Modifier.height(24.dp))
            return@Column
        }
        manifest.chat?.let { info ->
            // a chat model whose template the app cannot apply: the completion screen, and why
            Text(
                "This model's chat template cannot be applied by the app (" + info.unsupported.joinToString("; ") +
                    "); prompts are sent as plain text.",
                style = MaterialTheme.typography.bodySmall,
                color = MaterialTheme.colorScheme.error,
            )
        }

        OutlinedTextField(
            value = state.prompt,
            onValueChange = onPrompt,
            label = { Text("Prompt") },
            enabled = !state.generating,
            modifier = Modifier.fillMaxWidth(),
            minLines = 2,
        )
        Row(horizontalArrangement = Arrangement.spacedBy(12.dp)) {
            Button(onClick = onGenerate, enabled = ready && !busy && state.prompt.isNotBlank()) { Text("Generate") }
            OutlinedButton(onClick = onStop, enabled = state.generating) { Text("Stop") }
        }

        state.error?.let { ErrorCard(it, onDismiss = onDismissError) }

        if (state.output.isNotEmpty() || state.generating) {
            Card(modifier = Modifier.fillMaxWidth()) {
                Column(Modifier.padding(16.dp)) {
                    Text(state.prompt, fontWeight = FontWeight.Bold)
                    Text(state.output)
                }
            }
        }
        state.speed?.let { Text(it, style = MaterialTheme.typography.bodyMedium) }
        state.runtimeStats?.let { Text(it, style = MaterialTheme.typography.bodySmall) }
        Spacer(Modifier.height(24.dp))
    }
}

/** The chat screen's callbacks. */
data class ChatActions(
    val onDraft: (String) -> Unit,
    val onSystem: (String) -> Unit,
    val onSend: () -> Unit,
    val onNewChat: () -> Unit,
)

/** Temperature (0: greedy, as the host reference), top-p and the reply length. */
@Composable
private fun GenerationSettings(
    state: UiState,
    maxSeqLen: Int,
    onMaxTokens: (Int) -> Unit,
    onTemperature: (Float) -> Unit,
    onTopP: (Float) -> Unit,
) {
    Card(modifier = Modifier.fillMaxWidth()) {
        Column(Modifier.padding(16.dp)) {
            Text("Generation", style = MaterialTheme.typography.titleSmall)
            Text(
                if (state.temperature == 0f) "Temperature 0 (greedy)" else "Temperature ${"%.2f".format(state.temperature)}",
                style = MaterialTheme.typography.bodySmall,
            )
            Slider(value = state.temperature, onValueChange = onTemperature, valueRange = 0f..1.5f, enabled = !state.generating)
            // ExecuTorch's LlmGenerationConfig has no top-p: the runner samples from the whole distribution
            val topPApplies = state.runtime != ArtifactFormat.EXECUTORCH
            Text(
                if (topPApplies) "Top-p ${"%.2f".format(state.topP)}" else "Top-p: not offered by ExecuTorch's runner",
                style = MaterialTheme.typography.bodySmall,
            )
            Slider(value = state.topP, onValueChange = onTopP, valueRange = 0.05f..1f, enabled = !state.generating && state.temperature > 0f && topPApplies)
            Text("Up to ${state.maxNewTokens} new tokens", style = MaterialTheme.typography.bodySmall)
            Slider(
                value = state.maxNewTokens.toFloat(),
                onValueChange = { onMaxTokens(it.toInt()) },
                valueRange = 8f..maxOf(16f, maxSeqLen.toFloat()),
                enabled = !state.generating,
            )
        }
    }
}

/**
 * A chat model's screen: the system prompt (when the template has a turn for it), the messages,
 * a note when early messages no longer fit the context, the draft, send, stop and new chat.
 */
@Composable
private fun ChatSection(state: UiState, ready: Boolean, actions: ChatActions, onStop: () -> Unit) {
    val template = chatTemplate(state.bundle) ?: return
    Column(verticalArrangement = Arrangement.spacedBy(8.dp)) {
        if (template.supportsSystem) {
            OutlinedTextField(
                value = state.systemPrompt,
                onValueChange = actions.onSystem,
                label = { Text("System prompt") },
                placeholder = { Text(template.defaultSystem ?: "None") },
                enabled = !state.generating,
                modifier = Modifier.fillMaxWidth(),
            )
        } else {
            Text("This model's template has no system turn: no system prompt.", style = MaterialTheme.typography.bodySmall)
        }
        state.historyNote?.let { Text(it, style = MaterialTheme.typography.bodySmall, color = MaterialTheme.colorScheme.tertiary) }
        for ((index, message) in state.messages.withIndex()) {
            val mine = message.role == "user"
            val streaming = state.generating && index == state.messages.lastIndex
            Card(modifier = Modifier.fillMaxWidth(if (mine) 1f else 0.95f)) {
                Column(Modifier.padding(12.dp)) {
                    Text(if (mine) "You" else "Model", style = MaterialTheme.typography.labelMedium, fontWeight = FontWeight.Bold)
                    Text(message.content.ifEmpty { if (streaming) "…" else "" })
                }
            }
        }
        OutlinedTextField(
            value = state.draft,
            onValueChange = actions.onDraft,
            label = { Text("Message") },
            enabled = !state.generating,
            modifier = Modifier.fillMaxWidth(),
            minLines = 2,
        )
        Row(horizontalArrangement = Arrangement.spacedBy(12.dp)) {
            Button(onClick = actions.onSend, enabled = ready && state.draft.isNotBlank()) { Text("Send") }
            OutlinedButton(onClick = onStop, enabled = state.generating) { Text("Stop") }
            TextButton(onClick = actions.onNewChat, enabled = !state.generating && state.messages.isNotEmpty()) { Text("New chat") }
        }
    }
}

@Composable
private fun SelfTestCard(selfTest: SelfTestState, enabled: Boolean, onRun: () -> Unit) {
    Card(modifier = Modifier.fillMaxWidth()) {
        Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
            Text("Golden self-test", style = MaterialTheme.typography.titleSmall)
            when (selfTest) {
                SelfTestState.NotRun -> Text(
                    "Greedy generation from the manifest's prompts must reproduce the ids the host produced.",
                    style = MaterialTheme.typography.bodySmall,
                )
                SelfTestState.Running -> Row(verticalAlignment = Alignment.CenterVertically) {
                    CircularProgressIndicator(modifier = Modifier.size(20.dp))
                    Spacer(Modifier.width(8.dp))
                    Text("Running…")
                }
                is SelfTestState.Done -> {
                    val report = selfTest.report
                    Text(
                        if (report.passed) "PASS" else "FAIL",
                        color = if (report.passed) MaterialTheme.colorScheme.primary else MaterialTheme.colorScheme.error,
                        fontWeight = FontWeight.Bold,
                    )
                    Text(report.summary(), style = MaterialTheme.typography.bodySmall)
                    for (outcome in report.outcomes) {
                        Text(
                            (if (outcome.passed) "✓ " else "✗ ") + outcome.detail,
                            style = MaterialTheme.typography.bodySmall,
                        )
                    }
                }
            }
            TextButton(onClick = onRun, enabled = enabled) { Text("Run self-test") }
        }
    }
}

@Composable
private fun ErrorCard(message: String, onDismiss: (() -> Unit)?) {
    Card(modifier = Modifier.fillMaxWidth()) {
        Column(Modifier.padding(16.dp)) {
            Text(message, color = MaterialTheme.colorScheme.error)
            if (onDismiss != null) TextButton(onClick = onDismiss) { Text("Dismiss") }
        }
    }
}
