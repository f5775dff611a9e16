package org.slmexport.demo.runtime

import java.io.FileNotFoundException
import java.io.IOException

/** An error already worded for people. */
class DemoException(message: String, cause: Throwable? = null) : Exception(message, cause)

/**
 * Turns what the runtimes throw or return into sentences. Runtime classes are matched by name so
 * that this stays plain Kotlin (and unit-testable without the native libraries).
 */
object ErrorMessages {

    /** ExecuTorch's runtime error codes (runtime/core/error.h), as people would say them. */
    fun executorchError(code: Int): String {
        val (name, meaning) = when (code) {
            0x00 -> "Ok" to "no error"
            0x01 -> "Internal" to "the runtime hit an internal error"
            0x02 -> "InvalidState" to "the runtime was in the wrong state for this call (was generation still running?)"
            0x03 -> "EndOfMethod" to "the program ended early"
            0x10 -> "NotSupported" to "the model uses something this runtime build does not support"
            0x11 -> "NotImplemented" to "the model uses something this runtime build does not implement"
            0x12 -> "InvalidArgument" to "the runtime was given an invalid argument (is the prompt longer than the model's context?)"
            0x13 -> "InvalidType" to "a tensor has the wrong type for this program"
            0x14 -> "OperatorMissing" to "the model needs an operator that is not in this ExecuTorch build " +
                "(was it exported with a different ExecuTorch version, or with quantized embeddings?)"
            0x20 -> "NotFound" to "a file or method the model needs was not found"
            0x21 -> "MemoryAllocationFailed" to "there is not enough memory for the model"
            0x22 -> "AccessFailed" to "the model file could not be read"
            0x23 -> "InvalidProgram" to "model.pte is not a valid ExecuTorch program for this runtime version"
            0x30 -> "DelegateInvalidCompatibility" to "the XNNPACK part of the model was built for another runtime version"
            0x31 -> "DelegateMemoryAllocationFailed" to "XNNPACK could not allocate memory for the model"
            0x32 -> "DelegateInvalidHandle" to "XNNPACK lost its state (reload the model)"
            else -> "error" to "the runtime reported an unknown error"
        }
        return "ExecuTorch: $meaning ($name, code 0x%02x).".format(code)
    }

    // ExecutorchRuntimeException's message (executorch-android 1.4/1.5):
    // "[ExecuTorch Error 0x12] Invalid argument: details"; the callback's onError text says
    // "generate() failed with error code 18" (decimal).
    private val codeInMessage = Regex("""\[ExecuTorch Error (0x[0-9a-fA-F]+)]|error code\s*[:=]?\s*(0x[0-9a-fA-F]+|\d+)""", RegexOption.IGNORE_CASE)

    /**
     * A sentence for any failure of loading or generating. [fromExecutorch]: the throwable came out
     * of an LlmModule call, so a numeric code in its message is an ExecuTorch error code.
     */
    fun describe(t: Throwable, action: String = "The model failed", fromExecutorch: Boolean = false): String {
        val message = t.message?.trim().orEmpty()
        return when {
            t is DemoException -> message
            t is OutOfMemoryError -> "$action: the phone ran out of memory. Close other apps, or export a smaller or more quantized model."
            t is UnsatisfiedLinkError ->
                "$action: the runtime's native library could not be loaded on this device " +
                    "(${System.getProperty("os.arch") ?: "unknown CPU"}). The demo ships arm64-v8a and x86_64 libraries."
            t is FileNotFoundException -> "$action: a file is missing (${message.ifEmpty { "no detail" }})."
            t is IOException -> "$action: a file could not be read (${message.ifEmpty { t.javaClass.simpleName }})."
            t.javaClass.name == "ai.onnxruntime.genai.GenAIException" ->
                "ONNX Runtime GenAI: ${message.ifEmpty { "unknown error" }}"
            fromExecutorch || t.javaClass.name.startsWith("org.pytorch.executorch") ->
                withCode("ExecuTorch: ${message.substringAfter("] ").ifEmpty { "unknown error" }}".trimEnd('.'), message, errorCodeOf(t))
            else -> "$action: ${message.ifEmpty { t.javaClass.simpleName }}"
        }
    }

    private fun withCode(prefix: String, message: String, code: Int?): String {
        val hint = codeHint(message, code)
        return if (hint.isEmpty()) prefix else "$prefix.$hint"
    }

    /** ExecutorchRuntimeException.getErrorCode(), read by reflection so this stays plain Kotlin. */
    private fun errorCodeOf(t: Throwable): Int? =
        runCatching { t.javaClass.getMethod("getErrorCode").invoke(t) as? Int }.getOrNull()

    private fun codeHint(message: String, known: Int?): String {
        val code = known ?: codeInMessage.find(message)?.groupValues?.drop(1)?.firstOrNull { it.isNotEmpty() }?.let { raw ->
            if (raw.startsWith("0x", ignoreCase = true)) raw.substring(2).toIntOrNull(16) else raw.toIntOrNull()
        }
        return if (code == null || code == 0) "" else " " + executorchError(code)
    }
}
