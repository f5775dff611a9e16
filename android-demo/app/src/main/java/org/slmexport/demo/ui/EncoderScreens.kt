package org.slmexport.demo.ui

import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.Spacer
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.height
import androidx.compose.foundation.layout.padding
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
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.RadioButton
import androidx.compose.material3.Tab
import androidx.compose.material3.TabRow
import androidx.compose.material3.Text
import androidx.compose.material3.TextButton
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.ui.Alignment
import androidx.compose.ui.Modifier
import androidx.compose.ui.text.SpanStyle
import androidx.compose.ui.text.buildAnnotatedString
import androidx.compose.ui.text.font.FontWeight
import androidx.compose.ui.text.withStyle
import androidx.compose.ui.unit.dp
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import org.slmexport.demo.MODEL_SCREEN
import org.slmexport.demo.UiState
import org.slmexport.demo.chatTemplate
import org.slmexport.demo.encoder.EncoderController
import org.slmexport.demo.encoder.EncoderEngineState
import org.slmexport.demo.encoder.EncoderRole
import org.slmexport.demo.encoder.EncoderUiState

/** One tab per model screen: the decoder's (Chat or Generate) and each encoder's. */
@Composable
fun ScreenTabs(state: UiState, onScreen: (String) -> Unit) {
    val tabs = buildList {
        if (state.bundle?.decoder != null) add(MODEL_SCREEN to if (chatTemplate(state.bundle) != null) "Chat" else "Generate")
        state.encoders.forEach { add(it.bundle.role.key to it.bundle.role.title) }
    }
    if (tabs.size < 2) return
    TabRow(selectedTabIndex = tabs.indexOfFirst { it.first == state.screen }.coerceAtLeast(0)) {
        for ((key, title) in tabs) {
            Tab(selected = key == state.screen, onClick = { onScreen(key) }, text = { Text(title) })
        }
    }
    Spacer(Modifier.height(8.dp))
}

/** An encoder's screen: its model, runtime picker, golden self-test, and the task's own panel. */
@Composable
fun EncoderScreen(controller: EncoderController, verifiedFiles: Int) {
    val state by controller.state.collectAsStateWithLifecycle()
    val manifest = controller.bundle.manifest
    val ready = state.engine == EncoderEngineState.Ready && !state.busy
    Column(verticalArrangement = Arrangement.spacedBy(12.dp), modifier = Modifier.verticalScroll(rememberScrollState())) {
        Card(modifier = Modifier.fillMaxWidth()) {
            Column(Modifier.padding(16.dp)) {
                Text(manifest.model.name, style = MaterialTheme.typography.titleMedium)
                Text(
                    "${manifest.model.family} · ${"%,d".format(manifest.model.parameters)} parameters · ${manifest.encoder.task} · " +
                        "up to ${manifest.model.maxSeqLen} tokens" + (if (verifiedFiles > 0) " · files verified (sha256)" else ""),
                    style = MaterialTheme.typography.bodySmall,
                )
            }
        }
        Text("Runtime", style = MaterialTheme.typography.titleSmall)
        for (format in state.runtimes) {
            val artifact = manifest.artifact(format) ?: continue
            Row(
                verticalAlignment = Alignment.CenterVertically,
                modifier = Modifier.fillMaxWidth().selectable(selected = state.runtime == format, enabled = !state.busy, onClick = { controller.selectRuntime(format) }),
            ) {
                RadioButton(selected = state.runtime == format, onClick = { controller.selectRuntime(format) }, enabled = !state.busy)
                Column {
                    Text(format.label)
                    val figures = listOfNotNull(
                        artifact.parity.cosineMin?.let { "cosine min %.4f".format(it) },
                        artifact.parity.labelAgreement?.let { "label agreement %.3f".format(it) },
                        artifact.parity.spanMatch?.let { "span match %.3f".format(it) },
                    )
                    Text(
                        "${artifact.path} · ${artifact.quantization} · %.1f MB".format(artifact.bytes / 1e6) +
                            (if (figures.isEmpty()) "" else " · host parity " + figures.joinToString(", ")),
                        style = MaterialTheme.typography.bodySmall,
                    )
                }
            }
        }
        when (val engine = state.engine) {
            EncoderEngineState.Loading -> Row(verticalAlignment = Alignment.CenterVertically) {
                CircularProgressIndicator(modifier = Modifier.size(20.dp))
                Spacer(Modifier.width(8.dp))
                Text("Loading the model…")
            }
            EncoderEngineState.Ready -> {}
            is EncoderEngineState.Failed -> Text(engine.message, color = MaterialTheme.colorScheme.error)
        }
        GoldenCard(state, enabled = ready, onRun = controller::runSelfTest)
        when (controller.bundle.role) {
            EncoderRole.SEARCH -> SearchPanel(controller, state, ready)
            EncoderRole.CLASSIFY -> ClassifyPanel(controller, state, ready)
            EncoderRole.ANSWER -> AskPanel(controller, state, ready)
        }
        state.error?.let {
            Card(modifier = Modifier.fillMaxWidth()) {
                Column(Modifier.padding(16.dp)) {
                    Text(it, color = MaterialTheme.colorScheme.error)
                    TextButton(onClick = controller::dismissError) { Text("Dismiss") }
                }
            }
        }
        state.latency?.let { Text(it, style = MaterialTheme.typography.bodyMedium) }
        Spacer(Modifier.height(24.dp))
    }
}

@Composable
private fun GoldenCard(state: EncoderUiState, enabled: Boolean, onRun: () -> Unit) {
    Card(modifier = Modifier.fillMaxWidth()) {
        Column(Modifier.padding(16.dp), verticalArrangement = Arrangement.spacedBy(4.dp)) {
            Text("Golden self-test", style = MaterialTheme.typography.titleSmall)
            val golden = state.golden
            if (golden == null) {
                Text(
                    "The app's tokenizer must give the exporter's ids, and each golden case the host's outputs " +
                        "(embeddings by cosine, labels and answer spans exactly).",
                    style = MaterialTheme.typography.bodySmall,
                )
            } else {
                val passed = golden.isNotEmpty() && golden.all { it.passed }
                Text(
                    if (passed) "PASS (${golden.size} checks)" else "FAIL: ${golden.count { !it.passed }} of ${golden.size} checks",
                    color = if (passed) MaterialTheme.colorScheme.primary else MaterialTheme.colorScheme.error,
                    fontWeight = FontWeight.Bold,
                )
                for (outcome in golden) Text((if (outcome.passed) "✓ " else "✗ ") + outcome.detail, style = MaterialTheme.typography.bodySmall)
            }
            TextButton(onClick = onRun, enabled = enabled) { Text("Run self-test") }
        }
    }
}

@Composable
private fun SearchPanel(controller: EncoderController, state: EncoderUiState, ready: Boolean) {
    Text("Ranks ${controller.passages.size} built-in passages by cosine similarity to your query.", style = MaterialTheme.typography.bodySmall)
    OutlinedTextField(value = state.query, onValueChange = controller::setQuery, label = { Text("Query") }, modifier = Modifier.fillMaxWidth())
    Button(onClick = controller::search, enabled = ready && state.query.isNotBlank()) { Text("Search") }
    if (state.busy) LinearProgressIndicator(modifier = Modifier.fillMaxWidth())
    for ((rank, passage) in state.ranked.take(10).withIndex()) {
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            Text("%d. %.4f".format(rank + 1, passage.cosine), style = MaterialTheme.typography.bodySmall, fontWeight = FontWeight.Bold)
            Text(passage.text, style = MaterialTheme.typography.bodySmall)
        }
    }
}

@Composable
private fun ClassifyPanel(controller: EncoderController, state: EncoderUiState, ready: Boolean) {
    OutlinedTextField(value = state.text, onValueChange = controller::setText, label = { Text("Text") }, modifier = Modifier.fillMaxWidth(), minLines = 2)
    Button(onClick = controller::classify, enabled = ready && state.text.isNotBlank()) { Text("Classify") }
    for (label in state.labels) {
        Column {
            Text("${label.label}  %.3f".format(label.score), style = MaterialTheme.typography.bodyMedium)
            LinearProgressIndicator(progress = { label.score.toFloat() }, modifier = Modifier.fillMaxWidth())
        }
    }
    if (state.tokenLabels.isNotEmpty()) {
        Text(state.tokenLabels.joinToString("  ") { "${it.text}/${it.label}" }, style = MaterialTheme.typography.bodyMedium)
    }
}

@Composable
private fun AskPanel(controller: EncoderController, state: EncoderUiState, ready: Boolean) {
    OutlinedTextField(value = state.question, onValueChange = controller::setQuestion, label = { Text("Question") }, modifier = Modifier.fillMaxWidth())
    OutlinedTextField(value = state.passage, onValueChange = controller::setPassage, label = { Text("Passage") }, modifier = Modifier.fillMaxWidth(), minLines = 3)
    Button(onClick = controller::ask, enabled = ready && state.question.isNotBlank() && state.passage.isNotBlank()) { Text("Ask") }
    val answer = state.answer ?: return
    if (answer.end > state.passage.length) return  // the passage was edited since the answer
    val highlight = MaterialTheme.colorScheme.primaryContainer
    Card(modifier = Modifier.fillMaxWidth()) {
        Column(Modifier.padding(16.dp)) {
            Text("Answer: " + state.passage.substring(answer.start, answer.end), fontWeight = FontWeight.Bold)
            Text("score %.2f".format(answer.score), style = MaterialTheme.typography.bodySmall)
            Spacer(Modifier.height(8.dp))
            Text(
                buildAnnotatedString {
                    append(state.passage.substring(0, answer.start))
                    withStyle(SpanStyle(background = highlight, fontWeight = FontWeight.Bold)) {
                        append(state.passage.substring(answer.start, answer.end))
                    }
                    append(state.passage.substring(answer.end))
                },
            )
        }
    }
}
