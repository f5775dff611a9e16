package org.slmexport.demo.core

import java.io.File
import java.nio.file.Files
import kotlin.test.assertEquals
import kotlin.test.assertNull
import kotlin.test.assertTrue
import org.junit.Test

/** The side-loaded bundle rules of docs/TRUST.md, on real links and a real named pipe. */
class BundleContainmentTest {
    private fun bundle(): File {
        val dir = Files.createTempDirectory("slm-bundle").toFile()
        File(dir, "manifest.json").writeText("{}")
        File(dir, "onnx").mkdir()
        File(dir, "onnx/model.ort").writeBytes(ByteArray(4))
        return dir
    }

    @Test
    fun aPlainBundleAndLinksInsideItPass() {
        val dir = bundle()
        Files.createSymbolicLink(File(dir, "alias.ort").toPath(), File("onnx/model.ort").toPath())
        assertEquals(emptyList(), BundleContainment.problems(dir))
        assertNull(BundleContainment.refusal(dir))
    }

    @Test
    fun aLinkOutOfTheBundleIsNamed() {
        val dir = bundle()
        val outside = Files.createTempFile("secret", ".txt")
        Files.createSymbolicLink(File(dir, "onnx/tokenizer.json").toPath(), outside)
        assertEquals(listOf("onnx/tokenizer.json is a symbolic link to $outside, outside the bundle"), BundleContainment.problems(dir))
        assertTrue("Nothing was read" in BundleContainment.refusal(dir)!!)
    }

    @Test
    fun aDanglingLinkAndANamedPipeAreNamed() {
        val dir = bundle()
        Files.createSymbolicLink(File(dir, "gone.json").toPath(), File(dir, "nowhere.json").toPath())
        assertEquals(0, ProcessBuilder("mkfifo", File(dir, "onnx/queue").path).start().waitFor())
        val found = BundleContainment.problems(dir)
        assertEquals(2, found.size, found.toString())
        assertTrue(found[0].startsWith("gone.json is a symbolic link to") && found[0].endsWith("which does not exist"))
        assertEquals("onnx/queue is a special file (a pipe, socket or device), not a regular file", found[1])
    }
}
