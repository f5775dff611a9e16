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
import org.slmexport.demo.bundle.BundleRepository
import org.slmexport.demo.bundle.BundleVerifier
import org.slmexport.demo.bundle.LocatedBundle
import org.slmexport.demo.bundle.ManifestException
import org.slmexport.demo.metrics.TokensPerSecond
import org.slmexport.demo.runtime.DemoException
import org.slmexport.demo.runtime.ErrorMessages
import org.slmexport.demo.runtime.ExecuTorchEngine
import org.slmexport.demo.runtime.GenAiEngine
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
    val output: String = "",
    val generating: Boolean = false,
    val speed: String? = null,
    val runtimeStats: String? = null,
    val error: String? = null,
)

class DemoViewModel(application: Application) : AndroidViewModel(application) {
    private val repository = BundleRepository(application)
    private val prefs = application.getSharedPreferences("selftest", Context.MODE_PRIVATE)

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
                if (!verification.ok) {
                    _state.update { it.copy(preparing = null, bundle = located, bundleError = verification.summary()) }
                    return@launch
                }
                val runtimes = ArtifactFormat.entries.filter { located.manifest.artifact(it) != null }
                if (runtimes.isEmpty()) {
                    _state.update {
                        it.copy(preparing = null, bundle = located, bundleError = "The bundle has no ExecuTorch or ONNX artifact (target '${located.manifest.target}'). Export it with --target android.")
                    }
                    return@launch
                }
                _state.update {
                    it.copy(preparing = null, bundle = located, verifiedFiles = verification.checkedFiles, runtimes = runtimes, runtime = runtimes.first())
                }
                loadRuntime(runtimes.first())
            } catch (e: DemoException) {
                _state.update { it.copy(preparing = null, bundleError = e.message) }
            } catch (e: ManifestException) {
                _state.update { it.copy(preparing = null, bundleError = e.message) }
            } catch (e: Exception) {
                _state.update { it.copy(preparing = null, bundleError = ErrorMessages.describe(e, "Preparing the bundle failed")) }
            }
        }
    }

    fun selectRuntime(format: ArtifactFormat) {
        val s = _state.value
        if (s.generating || format == s.runtime || s.engine == EngineState.Loading) return
        _state.update { it.copy(runtime = format) }
        loadRuntime(format)
    }

    private fun loadRuntime(format: ArtifactFormat) {
        val bundle = _state.value.bundle ?: return
        val artifact = bundle.manifest.artifact(format) ?: return
        viewModelScope.launch {
            _state.update { it.copy(engine = EngineState.Loading, selfTest = SelfTestState.NotRun, output = "", speed = null, runtimeStats = null, error = null) }
            closeEngine()
            try {
                val loaded = withContext(inference) {
                    val e: LlmEngine = when (format) {
                        ArtifactFormat.EXECUTORCH -> ExecuTorchEngine(bundle.dir, bundle.manifest, artifact)
                        ArtifactFormat.ONNX -> GenAiEngine(bundle.dir, bundle.manifest, artifact)
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
        val artifact = bundle.manifest.artifact(e.format) ?: return
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

    fun setPrompt(text: String) = _state.update { it.copy(prompt = text) }

    fun setMaxNewTokens(n: Int) = _state.update { it.copy(maxNewTokens = n) }

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
                    e.generate(s.prompt, s.maxNewTokens) { piece ->
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
        inference.executor.execute {
            e?.close()
        }
        inference.close()
    }

    private fun fraction(done: Long, total: Long): Float = if (total <= 0) 0f else (done.toFloat() / total).coerceIn(0f, 1f)
}
