package org.slmexport.demo.runtime

import java.io.Closeable
import org.slmexport.demo.bundle.ArtifactFormat
import org.slmexport.demo.bundle.SelfTestCase
import org.slmexport.demo.selftest.SelfTestReport

/**
 * One generation. [chat]: [prompt] is a conversation rendered with the manifest's chat template, so
 * it is encoded without the tokenizer's post-processor and no BOS is added (manifest
 * chat.add_special_tokens / bos_added_by_runtime), and stop tokens' text is never shown. Otherwise
 * [prompt] is plain text, encoded with the post-processor (manifest tokenizer.add_special_tokens).
 * [temperature] 0 is greedy; above 0 samples, within [topP] and [topK] when given.
 */
data class GenerationRequest(
    val prompt: String,
    val maxNewTokens: Int,
    val chat: Boolean = false,
    val temperature: Float = 0f,
    val topP: Float? = null,
    val topK: Int? = null,
)

/** What one generate() call reports when it ends. */
data class GenerationResult(
    val pieces: Int,
    /** Stopped by the user ([LlmEngine.stop]). */
    val stopped: Boolean,
    /** Ended at a stop token (end of turn or eos), not at the token limit. */
    val atStopToken: Boolean = false,
    /** The runtime's own statistics line, when it has one (ExecuTorch's onStats). */
    val runtimeStats: String? = null,
    /** The runtime's own decode rate, when it reports one. */
    val runtimeTokensPerSecond: Double? = null,
)

/**
 * One loaded artifact. All calls but [stop] block and run on the app's inference thread; [stop]
 * may be called from any thread while [generate] runs.
 */
interface LlmEngine : Closeable {
    val format: ArtifactFormat

    /** Loads the program and tokenizer. Throws DemoException with a readable message. */
    fun load()

    /**
     * Generation for [request]; [onPiece] gets text as it is decoded (usually one token; a piece
     * that could be the start of a stop token is held back until it is not).
     */
    fun generate(request: GenerationRequest, onPiece: (String) -> Unit): GenerationResult

    /** How many tokens [text] encodes to (for a rendered chat: as [generate] encodes it). */
    fun countTokens(text: String, chat: Boolean): Int

    fun stop()

    /** The manifest's golden cases for this artifact (see selftest/SelfTest.kt). */
    fun selfTest(cases: List<SelfTestCase>): SelfTestReport
}
