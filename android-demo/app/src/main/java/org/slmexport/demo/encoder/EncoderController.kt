package org.slmexport.demo.encoder

import android.content.SharedPreferences
import java.io.File
import kotlinx.coroutines.CoroutineDispatcher
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.asStateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.slmexport.demo.bundle.ArtifactFormat
import org.slmexport.demo.bundle.EncoderManifest
import org.slmexport.demo.core.Encoding
import org.slmexport.demo.core.EncoderGolden
import org.slmexport.demo.core.EncoderMath
import org.slmexport.demo.core.EncoderTexts
import org.slmexport.demo.core.GoldenOutcome
import org.slmexport.demo.core.WordPieceTokenizer
import org.slmexport.demo.runtime.EncoderEngine
import org.slmexport.demo.runtime.ErrorMessages

/** The app screen an encoder serves (the manifest's companion role, or its task for an encoder bundle). */
enum class EncoderRole(val key: String, val title: String) {
    SEARCH("search", "Search"),
    CLASSIFY("classify", "Classify"),
    ANSWER("answer", "Ask");

    companion object {
        fun fromKey(key: String): EncoderRole? = entries.firstOrNull { it.key == key }

        fun forTask(task: String): EncoderRole = when (task) {
            "feature-extraction" -> SEARCH
            "question-answering" -> ANSWER
            else -> CLASSIFY
        }
    }
}

/** A verified encoder bundle (the whole bundle, or a companion's folder inside a decoder bundle). */
data class EncoderBundle(val dir: File, val manifest: EncoderManifest, val role: EncoderRole, val manifestSha256: String)

sealed interface EncoderEngineState {
    data object Loading : EncoderEngineState
    data object Ready : EncoderEngineState
    data class Failed(val message: String) : EncoderEngineState
}

data class RankedPassage(val text: String, val cosine: Double)

/** A labelled token (token classification). */
data class TokenLabel(val text: String, val label: String, val score: Double)

/** The Ask screen's answer: the span's characters in the passage and its score. */
data class Answer(val start: Int, val end: Int, val score: Double)

data class EncoderUiState(
    val runtimes: List<ArtifactFormat> = emptyList(),
    val runtime: ArtifactFormat? = null,
    val engine: EncoderEngineState = EncoderEngineState.Loading,
    val golden: List<GoldenOutcome>? = null,
    val busy: Boolean = false,
    val query: String = "",
    val ranked: List<RankedPassage> = emptyList(),
    val text: String = "",
    val labels: List<EncoderMath.LabelScore> = emptyList(),
    val tokenLabels: List<TokenLabel> = emptyList(),
    val question: String = "",
    val passage: String = "",
    val answer: Answer? = null,
    /** "12.3 ms per text · 57 texts" and the like, for the last run. */
    val latency: String? = null,
    val error: String? = null,
)

/**
 * One encoder's screen state and actions: tokenizes with the bundle's tokenizer.json as the
 * exporter proved it (core/WordPiece.kt), runs the chosen runtime on [inference] (the app's one
 * inference thread), and computes what the screen shows (core/EncoderMath.kt). The golden
 * self-test runs once per new bundle and runtime, as the decoder's does.
 */
class EncoderController(
    val bundle: EncoderBundle,
    private val texts: EncoderTexts,
    private val scope: CoroutineScope,
    private val inference: CoroutineDispatcher,
    private val prefs: SharedPreferences,
) {
    private val manifest get() = bundle.manifest
    private val maxTokens get() = manifest.model.maxSeqLen
    private var engine: EncoderEngine? = null
    private var tokenizer: WordPieceTokenizer? = null
    // The Search screen's passages, embedded once per runtime.
    private var passageEmbeddings: List<FloatArray>? = null

    private val _state = MutableStateFlow(
        EncoderUiState(
            runtimes = ArtifactFormat.entries.filter { manifest.artifact(it) != null },
            query = "Who is playing music?",
            text = texts.passages.firstOrNull().orEmpty(),
            question = texts.qaExamples.firstOrNull()?.first.orEmpty(),
            passage = texts.qaExamples.firstOrNull()?.second.orEmpty(),
        ),
    )
    val state: StateFlow<EncoderUiState> = _state.asStateFlow()

    val passages: List<String> get() = texts.passages

    fun start() {
        val first = _state.value.runtimes.firstOrNull()
        if (first == null) {
            _state.update { it.copy(engine = EncoderEngineState.Failed("The ${bundle.role.title} model has no ExecuTorch or ONNX artifact (target '${manifest.target}').")) }
            return
        }
        selectRuntime(first)
    }

    fun selectRuntime(format: ArtifactFormat) {
        val s = _state.value
        if (s.busy || (format == s.runtime && s.engine == EncoderEngineState.Ready)) return
        val artifact = manifest.artifact(format) ?: return
        _state.update { it.copy(runtime = format, engine = EncoderEngineState.Loading, golden = null, ranked = emptyList(), latency = null, error = null) }
        scope.launch {
            try {
                withContext(inference) {
                    close()
                    if (tokenizer == null) tokenizer = WordPieceTokenizer.fromTokenizerJson(File(bundle.dir, manifest.tokenizer.path).readText())
                    engine = EncoderEngine.open(bundle.dir, manifest.encoder, artifact)
                }
                _state.update { it.copy(engine = EncoderEngineState.Ready) }
                if (!prefs.getBoolean(goldenKey(format), false)) runSelfTest()
            } catch (e: Throwable) {
                _state.update { it.copy(engine = EncoderEngineState.Failed(ErrorMessages.describe(e, "Loading the ${bundle.role.title} model failed"))) }
            }
        }
    }

    /**
     * The manifest's tokenizer vectors through the app's tokenizer, then the artifact's golden
     * cases, each run alone: see core/EncoderGolden.kt for the rule.
     */
    fun runSelfTest() {
        val format = _state.value.runtime ?: return
        val artifact = manifest.artifact(format) ?: return
        busy { e, t ->
            val tokenizerOutcomes = manifest.tokenizer.selfTest.map { c -> EncoderGolden.compareTokenizer(c.text, c.ids, t.encode(c.text, maxTokens).ids) }
            val outcomes = tokenizerOutcomes + artifact.selfTest.cases.map { case ->
                try {
                    val outputs = e.run(case.inputIds.toIntArray(), case.tokenTypeIds.toIntArray())
                    EncoderGolden.compare(
                        case.name, manifest.encoder.task, case.expected.map { it.toDoubleArray() }, outputs,
                        artifact.parity.cosineMin, manifest.encoder.labels.size, case.tokenTypeIds, case.span,
                    )
                } catch (t: Throwable) {
                    GoldenOutcome(case.name, false, "Case '${case.name}': ${ErrorMessages.describe(t, "the run failed")}")
                }
            }
            prefs.edit().putBoolean(goldenKey(format), true).apply()
            _state.update { it.copy(golden = outcomes) }
        }
    }

    fun setQuery(text: String) = _state.update { it.copy(query = text) }
    fun setText(text: String) = _state.update { it.copy(text = text) }
    fun setQuestion(text: String) = _state.update { it.copy(question = text) }
    fun setPassage(text: String) = _state.update { it.copy(passage = text) }

    /** Ranks the built-in passages by cosine to the query (embedding them first, once). */
    fun search() {
        val query = _state.value.query.trim()
        if (query.isEmpty()) return
        busy { e, t ->
            val started = System.nanoTime()
            val embedded = passageEmbeddings ?: texts.passages.map { embed(e, t.encode(it, maxTokens)) }.also { passageEmbeddings = it }
            val passagesMs = (System.nanoTime() - started) / 1e6
            val queryStarted = System.nanoTime()
            val q = embed(e, t.encode(query, maxTokens))
            val queryMs = (System.nanoTime() - queryStarted) / 1e6
            val ranked = EncoderMath.rank(q, embedded).map { RankedPassage(texts.passages[it.index], it.cosine) }
            _state.update {
                it.copy(
                    ranked = ranked,
                    latency = "query %.1f ms · %d passages %.0f ms (%.1f ms each, once per runtime)".format(
                        queryMs, texts.passages.size, passagesMs, passagesMs / texts.passages.size,
                    ),
                )
            }
        }
    }

    fun classify() {
        val text = _state.value.text
        if (text.isBlank()) return
        busy { e, t ->
            val encoding = t.encode(text, maxTokens)
            val started = System.nanoTime()
            val logits = e.run(encoding.ids, encoding.typeIds)[0]
            val ms = (System.nanoTime() - started) / 1e6
            val labels = manifest.encoder.labels
            if (manifest.encoder.task == "token-classification") {
                val rows = (0 until encoding.ids.size).mapNotNull { row ->
                    val range = encoding.offsets[row]
                    if (encoding.sequenceIds[row] == null) return@mapNotNull null
                    val scores = EncoderMath.labelScores(logits.copyOfRange(row * labels.size, (row + 1) * labels.size), labels)
                    TokenLabel(text.substring(range[0], range[1]), scores[0].label, scores[0].score)
                }
                _state.update { it.copy(tokenLabels = rows, labels = emptyList(), latency = "%.1f ms · %d tokens".format(ms, encoding.ids.size)) }
            } else {
                _state.update { it.copy(labels = EncoderMath.labelScores(logits, labels), tokenLabels = emptyList(), latency = "%.1f ms · %d tokens".format(ms, encoding.ids.size)) }
            }
        }
    }

    /** The best answer span inside the passage, as character offsets into it (for highlighting). */
    fun ask() {
        val s = _state.value
        if (s.question.isBlank() || s.passage.isBlank()) return
        busy { e, t ->
            val encoding = t.encodePair(s.question, s.passage, maxTokens)
            val range = encoding.tokenRange(1) ?: throw IllegalArgumentException("The passage has no tokens.")
            val started = System.nanoTime()
            val (start, end) = e.run(encoding.ids, encoding.typeIds)
            val ms = (System.nanoTime() - started) / 1e6
            val (first, last) = EncoderMath.bestSpan(start, end, range.first, range.last).let { it[0] to it[1] }
            val answer = Answer(encoding.offsets[first][0], encoding.offsets[last][1], start[first].toDouble() + end[last])
            val cut = if (encoding.ids.size == maxTokens) " · passage cut to the model's $maxTokens tokens" else ""
            _state.update { it.copy(answer = answer, latency = "%.1f ms · %d tokens%s".format(ms, encoding.ids.size, cut)) }
        }
    }

    fun dismissError() = _state.update { it.copy(error = null) }

    private fun embed(e: EncoderEngine, encoding: Encoding): FloatArray = e.run(encoding.ids, encoding.typeIds)[0]

    private fun busy(work: (EncoderEngine, WordPieceTokenizer) -> Unit) {
        val e = engine ?: return
        val t = tokenizer ?: return
        if (_state.value.busy) return
        _state.update { it.copy(busy = true, error = null) }
        scope.launch {
            try {
                withContext(inference) { work(e, t) }
            } catch (err: Throwable) {
                _state.update { it.copy(error = ErrorMessages.describe(err, "${bundle.role.title} failed")) }
            } finally {
                _state.update { it.copy(busy = false) }
            }
        }
    }

    private fun goldenKey(format: ArtifactFormat) = "${bundle.manifestSha256}:encoder:${format.key}"

    /** Closes the runtime; call on the inference thread. */
    fun close() {
        engine?.close()
        engine = null
        passageEmbeddings = null
    }
}
