package org.slmexport.demo.bundle

import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNotNull
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Assert.fail
import org.junit.Test
import org.slmexport.demo.Fixtures

class ManifestParserTest {
    private val text = Fixtures.manifestJson()

    @Test
    fun parsesTheExportersManifest() {
        val m = ManifestParser.parse(text)
        assertEquals(1, m.schemaVersion)
        assertEquals("slm-export", m.generator.name)
        assertEquals("1.5.1", m.generator.tools["executorch"])
        assertEquals("android", m.target)
        assertEquals(64, m.model.maxSeqLen)
        assertEquals(listOf(0), m.model.eosTokenIds)
        assertEquals("tokenizer.json", m.tokenizer.path)
        assertEquals(true, m.tokenizer.addSpecialTokens)
        assertEquals("parity.json", m.parity.results)

        val et = m.artifact(ArtifactFormat.EXECUTORCH)
        val onnx = m.artifact(ArtifactFormat.ONNX)
        assertNotNull(et)
        assertNotNull(onnx)
        assertEquals("executorch/model.pte", et!!.path)
        assertEquals("onnx", onnx!!.path)
        assertTrue(et.parity.passed)
        assertTrue(et.selfTest.cases.isNotEmpty())
        val case = et.selfTest.cases.first()
        assertTrue(case.mustMatch in 1..case.expectedIds.size)
        assertTrue(m.files.any { it.path == "executorch/model.pte" && it.bytes == et.bytes && it.sha256 == et.sha256 })
    }

    @Test
    fun optionalKeysMayBeAbsent() {
        val withoutOptional = text
            .replace(Regex("""\s*"add_special_tokens": (true|false),"""), "")
            .replace(Regex("""\s*"top5_overlap": [0-9.e-]+,"""), "")
        val m = ManifestParser.parse(withoutOptional)
        assertNull(m.tokenizer.addSpecialTokens)
        assertNull(m.artifacts[0].parity.top5Overlap)
    }

    @Test
    fun refusesAnotherSchemaVersion() {
        val e = expectFailure(text.replaceFirst("\"schema_version\": 1", "\"schema_version\": 2"))
        assertTrue(e.message, e.message!!.contains("schema_version 2"))
    }

    @Test
    fun readsAnEncoderBundle() {
        val m = ManifestParser.parseAny(Fixtures.encoderManifestJson())
        assertTrue(m is EncoderManifest)
        val encoder = m as EncoderManifest
        assertEquals("feature-extraction", encoder.encoder.task)
        assertEquals(listOf("input_ids", "attention_mask", "token_type_ids"), encoder.encoder.inputs)
        assertEquals(true, encoder.encoder.pooling?.normalize)
        val et = encoder.artifact(ArtifactFormat.EXECUTORCH)!!
        assertTrue(et.selfTest.cases.isNotEmpty())
        assertEquals(1, et.selfTest.cases[0].expected.size)
        assertNotNull(et.parity.cosineMin)
        assertTrue(encoder.tokenizer.selfTest.isNotEmpty())
        // A decoder's manifest stays a decoder's.
        assertTrue(ManifestParser.parseAny(text) is Manifest)
    }

    @Test
    fun theDecoderScreensRefuseAnEncoderBundleByName() {
        val e = expectFailure(Fixtures.encoderManifestJson())
        assertTrue(e.message, e.message!!.contains("holds an encoder"))
    }

    @Test
    fun refusesEncoderCasesThatDoNotFitTheirTask() {
        val encoderText = Fixtures.encoderManifestJson()
        val wrongOutputs = encoderText.replaceFirst(Regex("\"outputs\": \\[\\s*\"embeddings\"\\s*]"), "\"outputs\": [\"logits\"]")
        assertTrue(wrongOutputs != encoderText)
        val e = try {
            ManifestParser.parseEncoder(wrongOutputs); null
        } catch (x: ManifestException) {
            x
        }
        assertTrue(e?.message, e?.message?.contains("returns [embeddings]") == true)
    }

    @Test
    fun refusesUnknownKeysAsTheSchemaDoes() {
        val e = expectFailure(text.replaceFirst("\"target\": \"android\"", "\"target\": \"android\", \"surprise\": 1"))
        assertTrue(e.message, e.message!!.contains("surprise"))
    }

    @Test
    fun acceptsUnknownKeysInsideTheOpenParitySummary() {
        val m = ManifestParser.parse(text.replaceFirst("\"passed\": true,", "\"passed\": true, \"new_metric\": 0.5,"))
        assertTrue(m.artifacts[0].parity.passed)
    }

    @Test
    fun refusesMissingRequiredKey() {
        val e = expectFailure(text.replaceFirst(Regex(""",\s*"source_sha256": "[0-9a-f]+""""), ""))
        assertTrue(e.message, e.message!!.contains("source_sha256"))
    }

    @Test
    fun refusesPathsLeavingTheBundle() {
        val e = expectFailure(text.replaceFirst("\"path\": \"tokenizer.json\"", "\"path\": \"../tokenizer.json\""))
        assertTrue(e.message, e.message!!.contains("../tokenizer.json"))
        expectFailure(text.replaceFirst("\"path\": \"tokenizer.json\"", "\"path\": \"/etc/passwd\""))
    }

    @Test
    fun refusesBadDigest() {
        val m = ManifestParser.parse(text)
        val e = expectFailure(text.replace(m.tokenizer.sha256, "ABC"))
        assertTrue(e.message, e.message!!.contains("sha256"))
    }

    @Test
    fun refusesNonJson() {
        val e = expectFailure("not json at all")
        assertTrue(e.message!!.startsWith("manifest.json is not a valid slm-export manifest"))
        assertFalse(e.message!!.contains("\n"))
    }

    private fun expectFailure(json: String): ManifestException {
        try {
            ManifestParser.parse(json)
        } catch (e: ManifestException) {
            return e
        }
        fail("expected ManifestException")
        throw AssertionError()
    }
}
