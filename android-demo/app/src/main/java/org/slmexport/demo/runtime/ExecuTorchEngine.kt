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
import org.slmexport.demo.metrics.RunnerStats
import org.slmexport.demo.selftest.SelfTest
import org.slmexport.demo.selftest.SelfTestReport
import org.slmexport.demo.selftest.TokenDecoder

/**
 * executorch/model.pte through ExecuTorch's LLM runner (org.pytorch:executorch-android 1.5.1,
 * org.pytorch.executorch.extension.llm.LlmModule). The .pte carries the runner's metadata methods
 * (get_max_seq_len, get_eos_ids, ...), so LlmModule needs only the program and tokenizer.json.
 *
 * API used (docs/source/llm/run-on-android.md and LlmModule in pytorch/executorch):
 *   LlmModule(modulePath: String, tokenizerPath: String, temperature: Float)
 *   load(); resetContext(); stop()
 *   generate(prompt: String, config: LlmGenerationConfig, callback: LlmCallback)
 *   LlmGenerationConfig.create().seqLen(n).temperature(t).echo(b).numBos(n).numEos(n).build()
 *   LlmCallback.onResult(String) per decoded piece, onStats(String) with stats.h's JSON.
 * Older releases return an int status from load()/generate(); newer ones return nothing and throw.
 * Both are handled: the results are taken as Any and checked when they are an Int.
 */
class ExecuTorchEngine(
    private val bundleDir: File,
    private val manifest: Manifest,
    private val artifact: Artifact,
) : LlmEngine {
    override val format = ArtifactFormat.EXECUTORCH

    private var module: LlmModule? = null
    private val stopRequested = AtomicBoolean(false)
    private val decoder: TokenDecoder by lazy {
        TokenDecoder.fromJson(File(bundleDir, manifest.tokenizer.path).readText())
    }

    // docs/MANIFEST.md: the runner applies tokenizer.json's post-processor when num_bos is 1.
    private val numBos: Int get() = if (manifest.tokenizer.addSpecialTokens != false) 1 else 0

    override fun load() {
        val pte = File(bundleDir, artifact.path)
        val tokenizer = File(bundleDir, manifest.tokenizer.path)
        try {
            val m = LlmModule(pte.absolutePath, tokenizer.absolutePath, 0.0f)
            module = m
            val status: Any = m.load()
            checkStatus(status, "Loading model.pte")
        } catch (e: DemoException) {
            close()
            throw e
        } catch (e: Throwable) {
            close()
            throw DemoException(ErrorMessages.describe(e, "Loading model.pte failed", fromExecutorch = true), e)
        }
    }

    override fun generate(prompt: String, maxNewTokens: Int, onPiece: (String) -> Unit): GenerationResult {
        val m = module ?: throw DemoException("The ExecuTorch model is not loaded.")
        stopRequested.set(false)
        var pieces = 0
        var stats: RunnerStats? = null
        val callback = object : LlmCallback {
            override fun onResult(result: String) {
                if (stopRequested.get()) return
                pieces++
                onPiece(result)
                // LlmGenerationConfig.maxNewTokens is not forwarded by the 1.5 JNI layer; the
                // cap is enforced here (pieces are tokens, save for held-back UTF-8 fragments).
                if (pieces >= maxNewTokens) {
                    stopRequested.set(true)
                    m.stop()
                }
            }

            override fun onStats(stats0: String) {
                stats = RunnerStats.parse(stats0)
            }
        }
        try {
            m.resetContext() // one prompt, one sequence: start from an empty KV cache
            val status: Any = m.generate(prompt, config(manifest.model.maxSeqLen), callback)
            checkStatus(status, "Generating")
        } catch (e: DemoException) {
            throw e
        } catch (e: Throwable) {
            throw DemoException(ErrorMessages.describe(e, "Generation failed", fromExecutorch = true), e)
        }
        val s = stats
        return GenerationResult(
            pieces = pieces,
            stopped = stopRequested.get() && pieces < maxNewTokens,
            runtimeStats = s?.format(),
            runtimeTokensPerSecond = s?.decodeTokensPerSecond,
        )
    }

    override fun stop() {
        stopRequested.set(true)
        module?.stop()
    }

    /**
     * LlmModule (1.5.x) generates from text only: it has no entry point that takes token ids
     * (prefillPrompt takes a String too). So the self-test decodes prompt_ids with tokenizer.json
     * (TokenDecoder), lets the runner encode that text again, and checks that the generated text
     * starts with the decoded text of the first must_match expected ids. The ONNX Runtime
     * artifact's self-test compares ids directly.
     */
    override fun selfTest(cases: List<SelfTestCase>): SelfTestReport {
        val m = module ?: return SelfTestReport(format.key, SelfTestReport.Method.DECODED_TEXT, emptyList(), "the model is not loaded")
        val usable = try {
            decoder
        } catch (e: Exception) {
            return SelfTestReport(
                format.key, SelfTestReport.Method.DECODED_TEXT, emptyList(),
                "tokenizer.json could not be used to decode the golden ids (${e.message})",
            )
        }
        return SelfTest.runText(format.key, cases, decode = { ids -> usable.decode(ids) }) { prompt, promptIds, newTokens ->
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
            val status: Any = m.generate(prompt, config(seqLen), callback)
            checkStatus(status, "Self-test generation")
            out.toString()
        }
    }

    private fun config(seqLen: Int): LlmGenerationConfig =
        LlmGenerationConfig.create()
            .seqLen(seqLen)
            .temperature(0.0f) // greedy, as the host reference
            .echo(false)
            .numBos(numBos)
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
    }
}
