package org.slmexport.demo.runtime

import java.io.File
import java.util.concurrent.atomic.AtomicBoolean
import org.pytorch.executorch.extension.llm.LlmCallback
import org.pytorch.executorch.extension.llm.LlmGenerationConfig
import org.pytorch.executorch.extension.llm.LlmModule
import org.slmexport.demo.bundle.Artifact
import org.slmexport.demo.bundle.ArtifactFormat
import org.slmexport.demo.bundle.Manifest
import org.slmexport.demo.bundle.SelfTestCase
import org.slmexport.demo.core.StopTextFilter
import org.slmexport.demo.metrics.RunnerStats
import org.slmexport.demo.selftest.SelfTest
import org.slmexport.demo.selftest.SelfTestReport
import org.slmexport.demo.selftest.TokenDecoder

/**
 * executorch/model.pte through ExecuTorch's LLM runner (org.pytorch:executorch-android 1.5.1,
 * org.pytorch.executorch.extension.llm.LlmModule). The .pte carries the runner's metadata methods
 * (get_max_seq_len, get_eos_ids with every stop id, ...), so LlmModule needs only the program and
 * tokenizer.json.
 *
 * API used (LlmModule.kt and jni_layer_llama.cpp in pytorch/executorch, 1.4/1.5):
 *   LlmModule(modelType: Int, modulePath: String, tokenizerPath: String, temperature: Float,
 *             dataPath: String?, numBos: Int, numEos: Int)
 *   load(); resetContext(); stop(); resetNative()
 *   generate(prompt: String, config: LlmGenerationConfig, callback: LlmCallback): throws
 *     ExecutorchRuntimeException ("[ExecuTorch Error 0x12] ...", getErrorCode()) on failure
 *   LlmGenerationConfig.create().seqLen(n).temperature(t).echo(b).numEos(n).build()
 *   LlmCallback.onResult(String) per decoded piece (the stop token's own text included, before the
 *     runner stops at it), onStats(String) with stats.h's JSON.
 * The JNI layer ignores LlmGenerationConfig.numBos and maxNewTokens: the BOS count is the one the
 * module was constructed with (applied to the first prompt after resetContext), so the engine keeps
 * one module per BOS count it needs: the manifest's tokenizer.add_special_tokens (1) for plain
 * prompts, chat.bos_added_by_runtime (0) for a rendered chat, and re-creates it when that changes.
 */
class ExecuTorchEngine(
    private val bundleDir: File,
    private val manifest: Manifest,
    private val artifact: Artifact,
) : LlmEngine {
    override val format = ArtifactFormat.EXECUTORCH

    private var module: LlmModule? = null
    private var moduleBos = -1
    private val stopRequested = AtomicBoolean(false)
    private val decoder: TokenDecoder by lazy {
        TokenDecoder.fromJson(File(bundleDir, manifest.tokenizer.path).readText())
    }

    // docs/MANIFEST.md: the runner applies tokenizer.json's post-processor when num_bos is 1.
    private val plainBos: Int get() = if (manifest.tokenizer.addSpecialTokens != false) 1 else 0
    private val chatBos: Int get() = manifest.chat?.bosAddedByRuntime ?: 0

    /** The stop tokens' text, which the runner hands over before it stops: never shown. */
    private val stopStrings: List<String> by lazy {
        manifest.model.eosTokenIds.mapNotNull { id -> runCatching { decoder.decode(listOf(id), skipSpecialTokens = false) }.getOrNull() }
            .filter { it.isNotEmpty() }
    }

    override fun load() {
        // the BOS count of the screen the app shows: chat when it can apply the template
        moduleFor(if (manifest.chat?.portable != null) chatBos else plainBos)
    }

    private fun moduleFor(numBos: Int): LlmModule {
        module?.let { if (moduleBos == numBos) return it }
        close()
        val pte = File(bundleDir, artifact.path)
        val tokenizer = File(bundleDir, manifest.tokenizer.path)
        try {
            val m = LlmModule(LlmModule.MODEL_TYPE_TEXT, pte.absolutePath, tokenizer.absolutePath, 0.0f, null as String?, numBos, 0)
            module = m
            moduleBos = numBos
            val status: Any = m.load()
            checkStatus(status, "Loading model.pte")
            return m
        } catch (e: DemoException) {
            close()
            throw e
        } catch (e: Throwable) {
            close()
            throw DemoException(ErrorMessages.describe(e, "Loading model.pte failed", fromExecutorch = true), e)
        }
    }

    override fun generate(request: GenerationRequest, onPiece: (String) -> Unit): GenerationResult {
        if (module == null) throw DemoException("The ExecuTorch model is not loaded.")
        val m = moduleFor(if (request.chat) chatBos else plainBos)
        stopRequested.set(false)
        val filter = StopTextFilter(stopStrings)
        var pieces = 0
        var stats: RunnerStats? = null
        val callback = object : LlmCallback {
            override fun onResult(result: String) {
                if (stopRequested.get() || filter.stopped) return
                pieces++
                val shown = filter.push(result)
                if (shown.isNotEmpty()) onPiece(shown)
                // LlmGenerationConfig.maxNewTokens is not forwarded by the JNI layer; the cap is
                // enforced here (pieces are tokens, save for held-back UTF-8 fragments).
                if (pieces >= request.maxNewTokens && !filter.stopped) {
                    stopRequested.set(true)
                    m.stop()
                }
            }

            override fun onStats(stats0: String) {
                stats = RunnerStats.parse(stats0)
            }
        }
        try {
            m.resetContext() // one prompt, one sequence: start from an empty KV cache (and apply numBos)
            val status: Any = m.generate(request.prompt, config(manifest.model.maxSeqLen, request.temperature), callback)
            checkStatus(status, "Generating")
        } catch (e: DemoException) {
            throw e
        } catch (e: Throwable) {
            throw DemoException(ErrorMessages.describe(e, "Generation failed", fromExecutorch = true), e)
        }
        if (!filter.stopped) filter.flush().takeIf { it.isNotEmpty() }?.let(onPiece)
        val s = stats
        val userStopped = stopRequested.get() && pieces < request.maxNewTokens
        return GenerationResult(
            pieces = pieces,
            stopped = userStopped,
            atStopToken = filter.stopped,
            runtimeStats = s?.format(),
            runtimeTokensPerSecond = s?.decodeTokensPerSecond,
        )
    }

    /**
     * LlmModule has no encoder the app can call, so this is an upper bound: a byte-level BPE token
     * covers at least one UTF-8 byte (a special token, several). History trimming stays safe with it.
     */
    override fun countTokens(text: String, chat: Boolean): Int = text.toByteArray(Charsets.UTF_8).size + (if (chat) chatBos else plainBos)

    override fun stop() {
        stopRequested.set(true)
        module?.stop()
    }

    /**
     * LlmModule (1.5.x) generates from text only: it has no entry point that takes token ids
     * (prefillPrompt takes a String too). So the self-test decodes prompt_ids with tokenizer.json
     * (TokenDecoder; a chat case keeps its special tokens, which the runner's tokenizer matches
     * again), lets the runner encode that text again (plain cases with the post-processor's BOS, the
     * chat case with none, as the app runs each), and checks that the generated text starts with the
     * decoded text of the first must_match expected ids. The ONNX Runtime artifact's self-test
     * compares ids directly.
     */
    override fun selfTest(cases: List<SelfTestCase>): SelfTestReport {
        if (module == null) return SelfTestReport(format.key, SelfTestReport.Method.DECODED_TEXT, emptyList(), "the model is not loaded")
        val usable = try {
            decoder
        } catch (e: Exception) {
            return SelfTestReport(
                format.key, SelfTestReport.Method.DECODED_TEXT, emptyList(),
                "tokenizer.json could not be used to decode the golden ids (${e.message})",
            )
        }
        val (chatCases, plainCases) = cases.partition { it.name.startsWith(CHAT_CASE_PREFIX) }
        // the group the loaded module's BOS count serves first: at most one reload
        val groups = listOf(plainCases to false, chatCases to true).sortedBy { (_, chat) -> (if (chat) chatBos else plainBos) != moduleBos }
        val reports = groups.filter { it.first.isNotEmpty() }.map { (group, chat) ->
            val numBos = if (chat) chatBos else plainBos
            SelfTest.runText(format.key, group, decode = { ids -> usable.decode(ids, skipSpecialTokens = !chat) }) { prompt, promptIds, newTokens ->
                val m = moduleFor(numBos)
                val out = StringBuilder()
                val callback = object : LlmCallback {
                    override fun onResult(result: String) {
                        out.append(result)
                    }

                    override fun onStats(stats: String) {}
                }
                // Room for the bos token and two extra tokens, which complete a character that the
                // last expected token may have split; the comparison is by prefix.
                val seqLen = minOf(manifest.model.maxSeqLen, promptIds + numBos + newTokens + 2)
                m.resetContext()
                val status: Any = m.generate(prompt, config(seqLen, 0f), callback)
                checkStatus(status, "Self-test generation")
                out.toString()
            }
        }
        return SelfTestReport(format.key, SelfTestReport.Method.DECODED_TEXT, reports.flatMap { it.outcomes }, reports.firstNotNullOfOrNull { it.error })
    }

    private fun config(seqLen: Int, temperature: Float): LlmGenerationConfig =
        LlmGenerationConfig.create()
            .seqLen(seqLen)
            .temperature(temperature) // 0: greedy, as the host reference
            .echo(false)
            .numEos(0)
            .build()

    private fun checkStatus(status: Any, what: String) {
        if (status is Int && status != 0) throw DemoException("$what failed. ${ErrorMessages.executorchError(status)}")
    }

    override fun close() {
        try {
            module?.resetNative()
        } catch (_: Throwable) {
        }
        module = null
        moduleBos = -1
    }

    companion object {
        /** The manifest's chat-formatted self-test case is named "chat: <conversation>". */
        const val CHAT_CASE_PREFIX = "chat: "
    }
}
