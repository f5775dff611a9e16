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

    @Test
    fun leavesOtherMessagesAlone() {
        assertEquals("The model failed: status 404 from somewhere", ErrorMessages.describe(IllegalStateException("status 404 from somewhere")))
        assertEquals("Already worded.", ErrorMessages.describe(DemoException("Already worded.")))
        assertTrue(ErrorMessages.describe(FileNotFoundException("/x/model.pte")).contains("/x/model.pte"))
        assertTrue(ErrorMessages.describe(OutOfMemoryError()).contains("ran out of memory"))
    }
}
