package org.slmexport.demo.bundle

import java.io.File
import java.nio.file.Files
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Before
import org.junit.Test
import org.slmexport.demo.Fixtures

class BundleVerifierTest {
    private lateinit var root: File

    @Before
    fun setUp() {
        root = Files.createTempDirectory("bundle").toFile()
    }

    @After
    fun tearDown() {
        root.deleteRecursively()
    }

    /** A small bundle on disk with a manifest that lists it correctly. */
    private fun writeBundle(): Manifest {
        val contents = linkedMapOf(
            "tokenizer.json" to "{\"model\": {}}",
            "executorch/model.pte" to "pte-bytes",
            "onnx/genai_config.json" to "{}",
            "onnx/model.ort" to "ort-bytes",
            "onnx/sub/extra.bin" to "x",
            "onnx/sub-dir.bin" to "y",
            "parity.json" to "{}",
        )
        contents.forEach { (path, text) ->
            File(root, path).apply { parentFile.mkdirs() }.writeText(text)
        }
        val files = contents.map { (path, text) ->
            BundleFile(path, text.toByteArray().size.toLong(), BundleVerifier.sha256Of(text.toByteArray()))
        }
        val base = ManifestParser.parse(Fixtures.manifestJson())
        val onnxMembers = BundleVerifier.artifactMembers("onnx", files).map { it.path to it.sha256 }
        return base.copy(
            tokenizer = base.tokenizer.copy(sha256 = files.first { it.path == "tokenizer.json" }.sha256),
            artifacts = listOf(
                base.artifacts[0].copy(path = "executorch/model.pte", sha256 = files.first { it.path == "executorch/model.pte" }.sha256),
                base.artifacts[1].copy(path = "onnx", sha256 = BundleVerifier.artifactDigest("onnx", onnxMembers)),
            ),
            files = files,
        )
    }

    @Test
    fun acceptsAnIntactBundle() {
        val manifest = writeBundle()
        val seen = mutableListOf<String>()
        val result = BundleVerifier().verify(root, manifest) { seen += it.path }
        assertTrue(result.summary(), result.ok)
        assertEquals(manifest.files.size, result.checkedFiles)
        assertTrue(seen.containsAll(manifest.files.map { it.path }))
    }

    @Test
    fun namesAChangedFile() {
        val manifest = writeBundle()
        File(root, "executorch/model.pte").writeText("PTE-BYTES") // same size, other bytes
        val result = BundleVerifier().verify(root, manifest)
        assertFalse(result.ok)
        assertEquals(BundleProblem.Kind.DIGEST_MISMATCH, result.problems.first().kind)
        assertTrue(result.summary(), result.summary().contains("executorch/model.pte has changed"))
    }

    @Test
    fun namesAMissingFile() {
        val manifest = writeBundle()
        File(root, "onnx/model.ort").delete()
        val result = BundleVerifier().verify(root, manifest)
        assertFalse(result.ok)
        assertTrue(result.summary(), result.summary().contains("onnx/model.ort is missing"))
    }

    @Test
    fun reportsASizeChangeWithoutHashing() {
        val manifest = writeBundle()
        File(root, "parity.json").writeText("{\"longer\": true}")
        var hashed = 0
        val verifier = BundleVerifier { file, progress -> hashed++; BundleVerifier.sha256Of(file, progress) }
        val result = verifier.verify(root, manifest)
        assertEquals(listOf(BundleProblem.Kind.SIZE_MISMATCH), result.problems.map { it.kind })
        assertEquals(manifest.files.size - 1, hashed)
        assertTrue(result.summary().contains("parity.json"))
    }

    @Test
    fun detectsAnArtifactDigestThatDoesNotMatchItsFiles() {
        val manifest = writeBundle()
        val wrong = manifest.copy(artifacts = listOf(manifest.artifacts[0], manifest.artifacts[1].copy(sha256 = "0".repeat(64))))
        val result = BundleVerifier().verify(root, wrong)
        assertEquals(listOf(BundleProblem.Kind.ARTIFACT_DIGEST_MISMATCH), result.problems.map { it.kind })
    }

    @Test
    fun unlistedFilesAreIgnored() {
        val manifest = writeBundle()
        File(root, "notes.txt").writeText("left here by hand")
        assertTrue(BundleVerifier().verify(root, manifest).ok)
    }

    @Test
    fun folderDigestMatchesTheExporter() {
        // The fixture's onnx artifact digest was computed by exporter/manifest.py:artifact_digest.
        val m = ManifestParser.parse(Fixtures.manifestJson())
        for (artifact in m.artifacts) {
            val members = BundleVerifier.artifactMembers(artifact.path, m.files)
            assertEquals(artifact.path, artifact.sha256, BundleVerifier.artifactDigest(artifact.path, members.map { it.path to it.sha256 }))
        }
    }

    @Test
    fun sortsPathsLikePythonPathlib() {
        val sorted = listOf("sub-dir.bin", "sub/extra.bin", "a.bin", "Z.bin").sortedWith { a, b -> BundleVerifier.comparePaths(a, b) }
        assertEquals(listOf("Z.bin", "a.bin", "sub/extra.bin", "sub-dir.bin"), sorted)
    }
}
