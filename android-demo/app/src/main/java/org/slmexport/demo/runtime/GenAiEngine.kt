package org.slmexport.demo.runtime

import ai.onnxruntime.genai.Generator
import ai.onnxruntime.genai.GeneratorParams
import ai.onnxruntime.genai.Model
import ai.onnxruntime.genai.Tokenizer
import java.io.File
import java.util.concurrent.atomic.AtomicBoolean
import org.slmexport.demo.bundle.Artifact
import org.slmexport.demo.bundle.ArtifactFormat
import org.slmexport.demo.bundle.Manifest
import org.slmexport.demo.bundle.SelfTestCase
import org.slmexport.demo.core.StopTokens
import org.slmexport.demo.selftest.SelfTest
import org.slmexport.demo.selftest.SelfTestReport

/**
 * The onnx/ folder (genai_config.json -> model.ort) through ONNX Runtime GenAI
 * (com.microsoft.onnxruntime:onnxruntime-genai-android 0.18.0, package ai.onnxruntime.genai).
 *
 * API used (src/java in microsoft/onnxruntime-genai):
 *   Model(String modelPath); Tokenizer(Model); tokenizer.updateOptions(Map<String, String>)
 *   (keys add_special_tokens, skip_special_tokens; GenAI's default add_special_tokens is "false");
 *   tokenizer.encode(String): Sequences; sequences.getSequence(0): int[];
 *   tokenizer.createStream(): TokenizerStream; stream.decode(int): String;
 *   GeneratorParams(Model); params.setSearchOption(String, double | boolean);
 *   Generator(Model, GeneratorParams); appendTokens(int[]); isDone(); generateNextToken();
 *   getLastTokenInSequence(0): int. All are AutoCloseable and throw GenAIException.
 * Greedy search comes from genai_config.json (do_sample false, top_k 1), written by slm-export;
 * a temperature above 0 turns sampling on. Stop ids are checked here (and are genai_config.json's
 * eos_token_id list too), so a stop token's text is never decoded.
 */
class GenAiEngine(
    private val bundleDir: File,
    private val manifest: Manifest,
    private val artifact: Artifact,
) : LlmEngine {
    override val format = ArtifactFormat.ONNX

    private var model: Model? = null
    private var tokenizer: Tokenizer? = null
    private val stopRequested = AtomicBoolean(false)
    private val stopTokens = StopTokens(manifest.chat?.stopTokenIds ?: manifest.model.eosTokenIds)

    override fun load() {
        val folder = File(bundleDir, artifact.path)
        try {
            val m = Model(folder.absolutePath)
            model = m
            tokenizer = Tokenizer(m)
        } catch (e: Throwable) {
            close()
            throw DemoException(ErrorMessages.describe(e, "Loading ${artifact.path}/ failed"), e)
        }
    }

    /** Ids as the manifest says to encode: a rendered chat without the post-processor (no added BOS). */
    private fun encode(tok: Tokenizer, text: String, chat: Boolean): IntArray {
        val special = if (chat) manifest.chat?.addSpecialTokens ?: false else manifest.tokenizer.addSpecialTokens != false
        tok.updateOptions(mapOf("add_special_tokens" to special.toString()))
        return tok.encode(text).use { it.getSequence(0) }
    }

    override fun countTokens(text: String, chat: Boolean): Int {
        val tok = tokenizer ?: throw DemoException("The ONNX Runtime GenAI model is not loaded.")
        return encode(tok, text, chat).size
    }

    override fun generate(request: GenerationRequest, onPiece: (String) -> Unit): GenerationResult {
        val m = model ?: throw DemoException("The ONNX Runtime GenAI model is not loaded.")
        val tok = tokenizer!!
        stopRequested.set(false)
        var pieces = 0
        var atStop = false
        try {
            val ids = encode(tok, request.prompt, request.chat)
            val room = manifest.model.maxSeqLen - ids.size
            if (room <= 0) {
                throw DemoException(
                    "The prompt is ${ids.size} tokens; the model's context holds ${manifest.model.maxSeqLen} " +
                        "(prompt plus answer). Shorten the prompt.",
                )
            }
            val newTokens = minOf(request.maxNewTokens, room)
            GeneratorParams(m).use { params ->
                params.setSearchOption("max_length", (ids.size + newTokens).toDouble())
                if (request.temperature > 0f) {
                    params.setSearchOption("do_sample", true)
                    params.setSearchOption("temperature", request.temperature.toDouble())
                    params.setSearchOption("top_k", (request.topK ?: 0).toDouble())
                    params.setSearchOption("top_p", (request.topP ?: 1f).toDouble())
                }
                Generator(m, params).use { generator ->
                    tok.createStream().use { stream ->
                        generator.appendTokens(ids)
                        while (!generator.isDone() && !stopRequested.get() && pieces < newTokens) {
                            generator.generateNextToken()
                            val id = generator.getLastTokenInSequence(0)
                            pieces++
                            if (stopTokens.isStop(id)) {
                                atStop = true
                                break
                            }
                            onPiece(stream.decode(id))
                        }
                    }
                }
            }
        } catch (e: DemoException) {
            throw e
        } catch (e: Throwable) {
            throw DemoException(ErrorMessages.describe(e, "Generation failed"), e)
        }
        return GenerationResult(pieces = pieces, stopped = stopRequested.get(), atStopToken = atStop)
    }

    override fun stop() {
        stopRequested.set(true)
    }

    /** GenAI takes token ids, so the golden cases are compared id by id. */
    override fun selfTest(cases: List<SelfTestCase>): SelfTestReport {
        val m = model ?: return SelfTestReport(format.key, SelfTestReport.Method.TOKEN_IDS, emptyList(), "the model is not loaded")
        return SelfTest.runIds(format.key, cases) { promptIds, newTokens ->
            val out = ArrayList<Int>(newTokens)
            GeneratorParams(m).use { params ->
                params.setSearchOption("max_length", minOf(manifest.model.maxSeqLen, promptIds.size + newTokens).toDouble())
                Generator(m, params).use { generator ->
                    generator.appendTokens(promptIds.toIntArray())
                    while (!generator.isDone() && out.size < newTokens) {
                        generator.generateNextToken()
                        out += generator.getLastTokenInSequence(0)
                    }
                }
            }
            out
        }
    }

    override fun close() {
        tokenizer?.close()
        tokenizer = null
        model?.close()
        model = null
    }
}
