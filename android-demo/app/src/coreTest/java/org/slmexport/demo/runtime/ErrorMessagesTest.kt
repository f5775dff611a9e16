package org.slmexport.demo.runtime

import java.io.FileNotFoundException
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class ErrorMessagesTest {
    @Test
    fun namesExecuTorchErrorCodes() {
        assertEquals(
            "ExecuTorch: model.pte is not a valid ExecuTorch program for this runtime version (InvalidProgram, code 0x23).",
            ErrorMessages.executorchError(0x23),
        )
        assertTrue(ErrorMessages.executorchError(0x14).contains("OperatorMissing"))
        assertTrue(ErrorMessages.executorchError(0x99).contains("unknown error"))
    }

    @Test
    fun translatesCodesInsideExecuTorchMessages() {
        val text = ErrorMessages.describe(RuntimeException("Prefill failed with error code: 33"), fromExecutorch = true)
        assertTrue(text, text.startsWith("ExecuTorch: Prefill failed with error code: 33."))
        assertTrue(text, text.contains("MemoryAllocationFailed"))
    }

    /** The shape of org.pytorch.executorch.ExecutorchRuntimeException (1.4/1.5): a code property. */
    private class ExecutorchRuntimeException(val errorCode: Int, message: String) : RuntimeException(message)

    @Test
    fun readsExecuTorchsOwnExceptionFormat() {
        val thrown = ExecutorchRuntimeException(0x12, "[ExecuTorch Error 0x12] Invalid argument: Failed to generate")
        val text = ErrorMessages.describe(thrown, "Generation failed", fromExecutorch = true)
        assertEquals(
            "ExecuTorch: Invalid argument: Failed to generate. ExecuTorch: the runtime was given an invalid argument " +
                "(is the prompt longer than the model's context?) (InvalidArgument, code 0x12).",
            text,
        )
        // without the code property, the bracketed hex code in the message is read
        val plain = ErrorMessages.describe(RuntimeException("[ExecuTorch Error 0x21] Memory allocation failed: load"), fromExecutorch = true)
        assertTrue(plain, plain.contains("MemoryAllocationFailed"))
        // the callback's onError text gives the code in decimal
        val decimal = ErrorMessages.describe(RuntimeException("generate() failed with error code 18"), fromExecutorch = true)
        assertTrue(decimal, decimal.contains("InvalidArgument"))
    }

    @Test
    fun leavesOtherMessagesAlone() {
        assertEquals("The model failed: status 404 from somewhere", ErrorMessages.describe(IllegalStateException("status 404 from somewhere")))
        assertEquals("Already worded.", ErrorMessages.describe(DemoException("Already worded.")))
        assertTrue(ErrorMessages.describe(FileNotFoundException("/x/model.pte")).contains("/x/model.pte"))
        assertTrue(ErrorMessages.describe(OutOfMemoryError()).contains("ran out of memory"))
    }
}
