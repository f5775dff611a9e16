package org.slmexport.demo.runtime

import java.io.Closeable
import org.slmexport.demo.bundle.ArtifactFormat
import org.slmexport.demo.bundle.SelfTestCase
import org.slmexport.demo.selftest.SelfTestReport

/** What one generate() call reports when it ends. */
data class GenerationResult(
    val pieces: Int,
    val stopped: Boolean,
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
     * Greedy generation from [prompt]; [onPiece] gets text as it is decoded (usually one token;
     * ExecuTorch may hold back a token until it completes a UTF-8 character).
     */
    fun generate(prompt: String, maxNewTokens: Int, onPiece: (String) -> Unit): GenerationResult

    fun stop()

    /** The manifest's golden cases for this artifact (see selftest/SelfTest.kt). */
    fun selfTest(cases: List<SelfTestCase>): SelfTestReport
}
