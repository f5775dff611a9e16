package org.slmexport.demo.metrics

import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive
import kotlinx.serialization.json.longOrNull
import java.util.Locale

/**
 * Live decode speed while tokens stream in. The clock starts at the first token, so the rate is
 * the decode rate (prefill time shows separately as time to first token).
 */
class TokensPerSecond(private val clockNanos: () -> Long = System::nanoTime) {
    private var startNanos = 0L
    private var firstTokenNanos = -1L
    private var lastTokenNanos = -1L

    var tokens: Int = 0
        private set

    fun start() {
        startNanos = clockNanos()
        firstTokenNanos = -1L
        lastTokenNanos = -1L
        tokens = 0
    }

    fun onTokens(count: Int = 1) {
        if (count <= 0) return
        val now = clockNanos()
        if (firstTokenNanos < 0) firstTokenNanos = now
        lastTokenNanos = now
        tokens += count
    }

    /** Milliseconds from start() to the first token, or null before it. */
    val timeToFirstTokenMs: Double?
        get() = if (firstTokenNanos < 0) null else (firstTokenNanos - startNanos) / 1e6

    /**
     * Tokens per second after the first token: (tokens - 1) / (last - first). Null until two
     * tokens have arrived at different times.
     */
    val rate: Double?
        get() {
            if (tokens < 2 || lastTokenNanos <= firstTokenNanos) return null
            return (tokens - 1) / ((lastTokenNanos - firstTokenNanos) / 1e9)
        }

    fun format(): String {
        val r = rate
        val ttft = timeToFirstTokenMs
        return buildString {
            append("$tokens tokens")
            if (r != null) append(String.format(Locale.ROOT, " · %.1f tok/s", r))
            if (ttft != null) append(String.format(Locale.ROOT, " · first token %.0f ms", ttft))
        }
    }
}

/**
 * The statistics ExecuTorch's LLM runner reports through LlmCallback.onStats(String): a JSON
 * object with integer millisecond timestamps (extension/llm/runner/stats.h). Parsed by hand, not
 * through @Serializable classes, so that @SerialName stays reserved for manifest keys.
 */
data class RunnerStats(
    val promptTokens: Long,
    val generatedTokens: Long,
    val inferenceStartMs: Long,
    val promptEvalEndMs: Long,
    val firstTokenMs: Long,
    val inferenceEndMs: Long,
) {
    /** Decode rate as the runner prints it: generated tokens over (inference end - prompt eval end). */
    val decodeTokensPerSecond: Double?
        get() {
            val ms = inferenceEndMs - promptEvalEndMs
            return if (ms <= 0 || generatedTokens <= 0) null else generatedTokens * 1000.0 / ms
        }

    val prefillTokensPerSecond: Double?
        get() {
            val ms = promptEvalEndMs - inferenceStartMs
            return if (ms <= 0 || promptTokens <= 0) null else promptTokens * 1000.0 / ms
        }

    val timeToFirstTokenMs: Long? get() = (firstTokenMs - inferenceStartMs).takeIf { firstTokenMs > 0 && it >= 0 }

    fun format(): String = buildString {
        append("runner: $promptTokens prompt + $generatedTokens generated tokens")
        prefillTokensPerSecond?.let { append(String.format(Locale.ROOT, " · prefill %.1f tok/s", it)) }
        decodeTokensPerSecond?.let { append(String.format(Locale.ROOT, " · decode %.1f tok/s", it)) }
        timeToFirstTokenMs?.let { append(" · first token $it ms") }
    }

    companion object {
        fun parse(json: String): RunnerStats? = try {
            val o: JsonObject = Json.parseToJsonElement(json).jsonObject
            fun long(key: String) = o[key]?.jsonPrimitive?.longOrNull ?: 0L
            RunnerStats(
                promptTokens = long("prompt_tokens"),
                generatedTokens = long("generated_tokens"),
                inferenceStartMs = long("inference_start_ms"),
                promptEvalEndMs = long("prompt_eval_end_ms"),
                firstTokenMs = long("first_token_ms"),
                inferenceEndMs = long("inference_end_ms"),
            )
        } catch (e: Exception) {
            null
        }
    }
}
