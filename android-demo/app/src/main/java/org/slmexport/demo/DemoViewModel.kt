package org.slmexport.demo

import android.app.Application
import android.content.Context
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import java.util.concurrent.Executors
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.slmexport.demo.bundle.ArtifactFormat
import org.slmexport.demo.bundle.BundleSource
import org.slmexport.demo.bundle.BundleRepository
import org.slmexport.demo.bundle.BundleVerifier
import org.slmexport.demo.bundle.LocatedBundle
import org.slmexport.demo.bundle.ManifestException
import org.slmexport.demo.bundle.PortableTemplateInfo
import org.slmexport.demo.encoder.EncoderBundles
import org.slmexport.demo.encoder.EncoderController
import org.slmexport.demo.core.Affix
import org.slmexport.demo.core.ChatMessage
import org.slmexport.demo.core.EncoderTexts
import org.slmexport.demo.core.HistoryTrimmer
import org.slmexport.demo.core.PortableTemplate
import org.slmexport.demo.metrics.TokensPerSecond
import org.slmexport.demo.runtime.DemoException
import org.slmexport.demo.runtime.ErrorMessages
import org.slmexport.demo.runtime.ExecuTorchEngine
import org.slmexport.demo.runtime.GenAiEngine
import org.slmexport.demo.runtime.GenerationRequest
import org.slmexport.demo.runtime.LlmEngine
import org.slmexport.demo.selftest.SelfTestReport

/** What the bundle screen shows while the app gets a bundle ready. */
sealed interface Preparing {
    data object Locating : Preparing
    data class Copying(val path: String, val fraction: Float) : Preparing
    data class Verifying(val path: String, val fraction: Float) : Preparing
}

sealed interface EngineState {
    data object NotLoaded : EngineState
    data object Loading : EngineState
    data object Ready : EngineState
    data class Failed(val message: String) : EngineState
}

sealed interface SelfTestState {
    data object NotRun : SelfTestState
    data object Running : SelfTestState
    data class Done(val report: SelfTestReport) : SelfTestState
}

data class UiState(
    val preparing: Preparing? = Preparing.Locating,
    /** A bundle that cannot be used (missing, unreadable, or failing verification). */
    val bundleError: String? = null,
    val bundle: LocatedBundle? = null,
    val verifiedFiles: Int = 0,
    val runtimes: List<ArtifactFormat> = emptyList(),
    val runtime: ArtifactFormat? = null,
    val engine: EngineState = EngineState.NotLoaded,
    val selfTest: SelfTestState = SelfTestState.NotRun,
    val prompt: String = "Once upon a time",
    val maxNewTokens: Int = 64,
    /** 0 is greedy (as the host reference); above 0 samples within [topP]. */
    val temperature: Float = 0f,
    val topP: Float = 1f,
    val output: String = "",
    /** A chat model's conversation (the manifest's chat.portable applies it); empty otherwise. */
    val messages: List<ChatMessage> = emptyList(),
    val draft: String = "",
    val systemPrompt: String = "",
    /** Shown when earlier messages no longer fit the context and were left out of the prompt. */
    val historyNote: String? = null,
    val generating: Boolean = false,
    val speed: String? = null,
    val runtimeStats: String? = null,
    val error: String? = null,
    /** The bundle's encoders, one per screen (Search, Classify, Ask). */
    val encoders: List<EncoderController> = emptyList(),
    /** The screen shown: MODEL_SCREEN (chat or completion) or an encoder role's key. */
    val screen: String? = MODEL_SCREEN,
)

/** The decoder's screen (chat or completion) in [UiState.screen]. */
const val MODEL_SCREEN = "model"

/**
 * The chat template of a chat bundle, when the app can apply it (manifest chat.portable); null for
 * a base model, whose screen is the completion screen.
 */
fun chatTemplate(bundle: LocatedBundle?): PortableTemplate? {
    val portable: PortableTemplateInfo = bundle?.decoder?.chat?.portable ?: return null
    val roles = buildMap {
        portable.roles.system?.let { put("system", Affix(it.prefix, it.suffix)) }
        put("user", Affix(portable.roles.user.prefix, portable.roles.user.suffix))
        put("assistant", Affix(portable.roles.assistant.prefix, portable.roles.assistant.suffix))
    }
    return PortableTemplate(portable.prefix, roles, portable.generationPrompt, portable.defaultSystem)
}

class DemoViewModel(application: Application) : AndroidViewModel(application) {
    private val repository = BundleRepository(application)
    private val prefs = application.getSharedPreferences("selftest", Context.MODE_PRIVATE)
    // The encoder screens' passages and QA examples: exporter/data/encoder_texts.json, packaged
    // as an asset by build.gradle.kts.
    private val encoderTexts: EncoderTexts by lazy {
        EncoderTexts.parse(application.assets.open(EncoderTexts.FILE).use { it.readBytes().toString(Charsets.UTF_8) })
    }

    // The runtimes are not thread-safe: every load/generate/self-test runs on this one thread.
    private val inference = Executors.newSingleThreadExecutor { r -> Thread(r, "slm-inference") }.asCoroutineDispatcher()
    private var engine: LlmEngine? = null

    private val _state = MutableStateFlow(UiState())
    val state: StateFlow<UiState> = _state.asStateFlow()

    init {
        prepareBundle()
    }

    /** Locate (copying assets if needed), parse and verify the bundle, then load a runtime. */
    fun prepareBundle() {
        viewModelScope.launch {
            closeEngine()
            _state.value = UiState(prompt = _state.value.prompt, maxNewTokens = _state.value.maxNewTokens)
            try {
                val located = withContext(Dispatchers.IO) {
                    repository.locate { path, done, total ->
                        _state.update { it.copy(preparing = Preparing.Copying(path, fraction(done, total))) }
                    }
                }
                val verification = withContext(Dispatchers.IO) {
                    BundleVerifier().verify(located.dir, located.manifest) { p ->
                        _state.update { it.copy(preparing = Preparing.Verifying(p.path, fraction(p.doneBytes, p.totalBytes))) }
                    }
                }
                if (!verification.ok && located.source == BundleSource.APK_ASSETS) {
                    // The copy out of the APK went bad (storage error, a killed copy): the manifest
                    // still matches, so locate() alone would keep the broken copy. Copy again once.
                    val recopied = withContext(Dispatchers.IO) {
                        repository.locate(forceCopy = true) { path, done, total ->
                            _state.update { it.copy(preparing = Preparing.Copying(path, fraction(done, total))) }
                        }
                    }
                    val again = withContext(Dispatchers.IO) { BundleVerifier().verify(recopied.dir, recopied.manifest) }
                    if (!again.ok) {
                        _state.update { it.copy(preparing = null, bundle = recopied, bundleError = again.summary()) }
                        return@launch
                    }
                    finishPreparing(recopied, again.checkedFiles)
                    return@launch
                }
                if (!verification.ok) {
                    _state.update { it.copy(preparing = null, bundle = located, bundleError = verification.summary()) }
                    return@launch
                }
                finishPreparing(located, verification.checkedFiles)
            } catch (e: DemoException) {
                _state.update { it.copy(preparing = null, bundleError = e.message) }
            } catch (e: ManifestException) {
                _state.update { it.copy(preparing = null, bundleError = e.message) }
            } catch (e: Exception) {
                _state.update { it.copy(preparing = null, bundleError = ErrorMessages.describe(e, "Preparing the bundle failed")) }
            }
        }
    }

    /**
     * The verified bundle's encoders (the bundle itself, or its companions) on their screens, then
     * the decoder's runtimes and generation defaults, and its first runtime loaded.
     */
    private fun finishPreparing(located: LocatedBundle, verifiedFiles: Int) {
        val encoderBundles = try {
            EncoderBundles.of(located)
        } catch (e: ManifestException) {
            _state.update { it.copy(preparing = null, bundle = located, bundleError = e.message) }
            return
        }
        val encoders = encoderBundles.map { EncoderController(it, encoderTexts, viewModelScope, inference, prefs) }
        _state.update { it.copy(encoders = encoders, screen = if (located.decoder == null) encoders.firstOrNull()?.bundle?.role?.key else MODEL_SCREEN) }
        encoders.forEach { it.start() }
        val decoder = located.decoder
        if (decoder == null) {
            _state.update { it.copy(preparing = null, bundle = located, verifiedFiles = verifiedFiles) }
            return
        }
        val runtimes = ArtifactFormat.entries.filter { decoder.artifact(it) != null }
        if (runtimes.isEmpty()) {
            _state.update {
                it.copy(preparing = null, bundle = located, bundleError = "The bundle has no ExecuTorch or ONNX artifact (target '${located.manifest.target}'). Export it with --target android.")
            }
            return
        }
        val defaults = decoder.chat?.generation
        _state.update {
            it.copy(
                preparing = null, bundle = located, verifiedFiles = verifiedFiles, runtimes = runtimes,
                runtime = runtimes.first(),
                temperature = defaults?.temperature?.toFloat() ?: it.temperature,
                topP = defaults?.topP?.toFloat() ?: it.topP,
                maxNewTokens = defaults?.maxNewTokens?.coerceAtMost(located.manifest.model.maxSeqLen / 2) ?: it.maxNewTokens,
            )
        }
        loadRuntime(runtimes.first())
    }

    fun selectRuntime(format: ArtifactFormat) {
        val s = _state.value
        if (s.generating || format == s.runtime || s.engine == EngineState.Loading) return
        _state.update { it.copy(runtime = format) }
        loadRuntime(format)
    }

    private fun loadRuntime(format: ArtifactFormat) {
        val bundle = _state.value.bundle ?: return
        val decoder = bundle.decoder ?: return
        val artifact = decoder.artifact(format) ?: return
        viewModelScope.launch {
            _state.update { it.copy(engine = EngineState.Loading, selfTest = SelfTestState.NotRun, output = "", speed = null, runtimeStats = null, error = null) }
            closeEngine()
            try {
                val loaded = withContext(inference) {
                    val e: LlmEngine = when (format) {
                        ArtifactFormat.EXECUTORCH -> ExecuTorchEngine(bundle.dir, decoder, artifact)
                        ArtifactFormat.ONNX -> GenAiEngine(bundle.dir, decoder, artifact)
                    }
                    e.load()
                    e
                }
                engine = loaded
                _state.update { it.copy(engine = EngineState.Ready) }
                // The golden self-test runs once per new bundle and runtime.
                if (!prefs.getBoolean(selfTestKey(bundle, format), false)) runSelfTest()
            } catch (e: Throwable) {
                _state.update { it.copy(engine = EngineState.Failed(ErrorMessages.describe(e, "Loading the model failed"))) }
            }
        }
    }

    fun runSelfTest() {
        val e = engine ?: return
        val bundle = _state.value.bundle ?: return
        val artifact = bundle.decoder?.artifact(e.format) ?: return
        if (_state.value.generating || _state.value.selfTest == SelfTestState.Running) return
        viewModelScope.launch {
            _state.update { it.copy(selfTest = SelfTestState.Running) }
            val report = try {
                withContext(inference) { e.selfTest(artifact.selfTest.cases) }
            } catch (t: Throwable) {
                SelfTestReport(e.format.key, SelfTestReport.Method.TOKEN_IDS, emptyList(), ErrorMessages.describe(t, "The self-test failed"))
            }
            prefs.edit().putBoolean(selfTestKey(bundle, e.format), true).apply()
            _state.update { it.copy(selfTest = SelfTestState.Done(report)) }
        }
    }

    fun showScreen(screen: String) = _state.update { it.copy(screen = screen) }

    fun setPrompt(text: String) = _state.update { it.copy(prompt = text) }

    fun setMaxNewTokens(n: Int) = _state.update { it.copy(maxNewTokens = n) }

    fun setTemperature(t: Float) = _state.update { it.copy(temperature = t) }

    fun setTopP(p: Float) = _state.update { it.copy(topP = p) }

    fun setDraft(text: String) = _state.update { it.copy(draft = text) }

    fun setSystemPrompt(text: String) = _state.update { it.copy(systemPrompt = text) }

    fun newChat() {
        if (_state.value.generating) return
        _state.update { it.copy(messages = emptyList(), historyNote = null, speed = null, runtimeStats = null, error = null) }
    }

    /**
     * Sends the draft: the conversation (system prompt, earlier turns that still fit, the new
     * message) rendered with the bundle's portable template, generated as a chat (no BOS added,
     * stop tokens hidden), streamed into a new assistant message.
     */
    fun send() {
        val e = engine ?: return
        val s = _state.value
        val template = chatTemplate(s.bundle) ?: return
        if (s.generating || s.selfTest == SelfTestState.Running || s.draft.isBlank()) return
        val maxSeqLen = s.bundle!!.manifest.model.maxSeqLen
        val system = if (template.supportsSystem && s.systemPrompt.isNotBlank()) listOf(ChatMessage("system", s.systemPrompt)) else emptyList()
        val history = s.messages + ChatMessage("user", s.draft)
        val meter = TokensPerSecond()
        viewModelScope.launch {
            _state.update {
                it.copy(generating = true, messages = history + ChatMessage("assistant", ""), draft = "", speed = null, runtimeStats = null, error = null)
            }
            try {
                val result = withContext(inference) {
                    val reply = minOf(s.maxNewTokens, maxSeqLen / 2)
                    val trimmed = HistoryTrimmer.fit(system + history, maxSeqLen, reply) { msgs ->
                        e.countTokens(template.render(msgs, addGenerationPrompt = true), chat = true)
                    }
                    _state.update {
                        it.copy(historyNote = if (trimmed.dropped == 0) null else "${trimmed.dropped} earlier messages were left out to fit the model's ${maxSeqLen}-token context.")
                    }
                    val request = GenerationRequest(
                        prompt = template.render(trimmed.messages, addGenerationPrompt = true), maxNewTokens = reply, chat = true,
                        temperature = s.temperature, topP = s.topP.takeIf { it < 1f }, topK = s.bundle.decoder?.chat?.generation?.topK,
                    )
                    meter.start()
                    e.generate(request) { piece ->
                        meter.onTokens(1)
                        _state.update { st ->
                            val last = st.messages.last()
                            st.copy(messages = st.messages.dropLast(1) + last.copy(content = last.content + piece), speed = meter.format())
                        }
                    }
                }
                val end = when {
                    result.stopped -> " · stopped"
                    result.atStopToken -> " · end of turn"
                    else -> " · token or context limit"
                }
                _state.update {
                    it.copy(generating = false, messages = withoutEmptyReply(it.messages), speed = meter.format() + end, runtimeStats = result.runtimeStats)
                }
            } catch (t: Throwable) {
                _state.update {
                    it.copy(generating = false, messages = withoutEmptyReply(it.messages), error = ErrorMessages.describe(t, "Generation failed"))
                }
            }
        }
    }

    /** A reply that produced no text (failed, or stopped at once) is not kept as an empty turn. */
    private fun withoutEmptyReply(messages: List<ChatMessage>): List<ChatMessage> =
        if (messages.lastOrNull()?.let { it.role == "assistant" && it.content.isEmpty() } == true) messages.dropLast(1) else messages

    fun generate() {
        val e = engine ?: return
        val s = _state.value
        if (s.generating || s.selfTest == SelfTestState.Running || s.prompt.isBlank()) return
        val meter = TokensPerSecond()
        viewModelScope.launch {
            _state.update { it.copy(generating = true, output = "", speed = null, runtimeStats = null, error = null) }
            try {
                val result = withContext(inference) {
                    meter.start()
                    e.generate(GenerationRequest(s.prompt, s.maxNewTokens, temperature = s.temperature, topP = s.topP.takeIf { it < 1f })) { piece ->
                        meter.onTokens(1)
                        _state.update { it.copy(output = it.output + piece, speed = meter.format()) }
                    }
                }
                val end = if (result.stopped) " · stopped" else ""
                _state.update {
                    it.copy(generating = false, speed = meter.format() + end, runtimeStats = result.runtimeStats)
                }
            } catch (t: Throwable) {
                _state.update { it.copy(generating = false, error = ErrorMessages.describe(t, "Generation failed")) }
            }
        }
    }

    fun stop() {
        engine?.stop()
    }

    fun dismissError() = _state.update { it.copy(error = null) }

    private fun selfTestKey(bundle: LocatedBundle, format: ArtifactFormat) = "${bundle.manifestSha256}:${format.key}"

    private suspend fun closeEngine() {
        val encoders = _state.value.encoders
        withContext(inference) { encoders.forEach { it.close() } }
        val e = engine ?: return
        engine = null
        e.stop()
        withContext(inference) { e.close() }
    }

    override fun onCleared() {
        engine?.stop()
        val e = engine
        engine = null
        // viewModelScope is already cancelled here; close on the inference thread directly.
        val encoders = _state.value.encoders
        inference.executor.execute {
            e?.close()
            encoders.forEach { it.close() }
        }
        inference.close()
    }

    private fun fraction(done: Long, total: Long): Float = if (total <= 0) 0f else (done.toFloat() / total).coerceIn(0f, 1f)
}
