package org.slmexport.demo.bundle

import kotlinx.serialization.SerialName
import kotlinx.serialization.Serializable
import kotlinx.serialization.SerializationException
import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonObject

/** A manifest that cannot be used, with a message meant for people. */
class ManifestException(message: String) : Exception(message)

/**
 * Reads manifest.json and checks what the JSON Schema checks that matters to the app: the schema
 * version, relative paths that stay inside the bundle, sha256 digests, and well-formed self-test
 * cases. Unknown keys are refused, as the schema refuses them (except inside an artifact's parity
 * summary, which the schema leaves open). A manifest with an `encoder` section is an encoder
 * bundle's ([EncoderManifest]); any other a decoder's ([Manifest]).
 */
object ManifestParser {
    const val SUPPORTED_SCHEMA_VERSION = 1

    private val json = Json {
        ignoreUnknownKeys = false
        isLenient = false
    }

    // Reads only the `encoder` section, whatever else the manifest holds.
    private val probe = Json { ignoreUnknownKeys = true }

    @Serializable
    private data class EncoderProbe(@SerialName("encoder") val encoder: JsonObject? = null)

    private val inputOrder = listOf("input_ids", "attention_mask", "token_type_ids")
    private val taskOutputs = mapOf(
        "feature-extraction" to listOf("embeddings"),
        "sequence-classification" to listOf("logits"),
        "token-classification" to listOf("logits"),
        "question-answering" to listOf("start_logits", "end_logits"),
    )

    // The schema's relpath: relative, [A-Za-z0-9._/-] only, no '..' segment.
    private val relPath = Regex("^(?!/)(?!.*(^|/)\\.\\.(/|$))[A-Za-z0-9._/-]+$")
    private val sha256 = Regex("^[0-9a-f]{64}$")

    /** A decoder's or an encoder's manifest, by its `encoder` section. */
    fun parseAny(text: String): BundleManifest = if (isEncoder(text)) parseEncoder(text) else parse(text)

    fun parseAny(bytes: ByteArray): BundleManifest = parseAny(bytes.toString(Charsets.UTF_8))

    /** A decoder bundle's manifest; an encoder bundle's is refused by name. */
    fun parse(text: String): Manifest {
        if (isEncoder(text)) fail("this bundle holds an encoder, not a chat or completion model")
        val manifest = decode(Manifest.serializer(), text)
        validateCommon(manifest)
        validate(manifest)
        return manifest
    }

    fun parseEncoder(text: String): EncoderManifest {
        val manifest = decode(EncoderManifest.serializer(), text)
        validateCommon(manifest)
        validate(manifest)
        return manifest
    }

    private fun isEncoder(text: String): Boolean = try {
        probe.decodeFromString(EncoderProbe.serializer(), text).encoder != null
    } catch (e: SerializationException) {
        false  // reported by the strict parse
    } catch (e: IllegalArgumentException) {
        false
    }

    private fun <T> decode(serializer: kotlinx.serialization.KSerializer<T>, text: String): T = try {
        json.decodeFromString(serializer, text)
    } catch (e: SerializationException) {
        throw ManifestException("manifest.json is not a valid slm-export manifest: ${firstLine(e.message)}")
    } catch (e: IllegalArgumentException) {
        throw ManifestException("manifest.json is not a valid slm-export manifest: ${firstLine(e.message)}")
    }

    fun parse(bytes: ByteArray): Manifest = parse(bytes.toString(Charsets.UTF_8))

    private fun validateCommon(m: BundleManifest) {
        if (m.schemaVersion != SUPPORTED_SCHEMA_VERSION) {
            fail(
                "manifest.json has schema_version ${m.schemaVersion}; this app reads version " +
                    "$SUPPORTED_SCHEMA_VERSION. Export the bundle with a matching slm-export, or update the app.",
            )
        }
        if (m.generator.name != "slm-export") fail("manifest.json was not written by slm-export (generator.name is '${m.generator.name}')")
        if (m.artifactFiles.isEmpty()) fail("manifest.json lists no artifacts")
        if (m.model.maxSeqLen < 1) fail("manifest.json: model.max_seq_len must be at least 1")
        checkPath("tokenizer.path", m.tokenizer.path)
        checkDigest("tokenizer.sha256", m.tokenizer.sha256)
        m.tokenizer.configPath?.let { checkPath("tokenizer.config_path", it) }
        m.tokenizer.configSha256?.let { checkDigest("tokenizer.config_sha256", it) }
        checkPath("parity.results", m.parity.results)
        checkPath("parity.report", m.parity.report)
        checkPath("parity.reference", m.parity.reference)
        val seen = HashSet<String>()
        for (f in m.files) {
            checkPath("files[].path", f.path)
            checkDigest("files[${f.path}].sha256", f.sha256)
            if (f.bytes < 0) fail("manifest.json: files[${f.path}].bytes is negative")
            if (!seen.add(f.path)) fail("manifest.json lists ${f.path} twice")
        }
        for (a in m.artifactFiles) {
            if (a.format !in setOf("executorch", "onnx", "coreml")) fail("manifest.json: unknown artifact format '${a.format}'")
            checkPath("artifacts[${a.format}].path", a.path)
            checkDigest("artifacts[${a.format}].sha256", a.sha256)
        }
    }

    private fun validate(m: Manifest) {
        for (c in m.companions) {
            checkPath("companions[${c.role}].path", c.path)
            checkDigest("companions[${c.role}].manifest_sha256", c.manifestSha256)
            if (c.task !in taskOutputs) fail("manifest.json: companion ${c.role} has an unknown task '${c.task}'")
        }
        for (a in m.artifacts) {
            for (c in a.selfTest.cases) {
                if (c.promptIds.isEmpty() || c.expectedIds.isEmpty()) {
                    fail("manifest.json: self-test case '${c.name}' of ${a.format} has no prompt or expected ids")
                }
                if (c.mustMatch < 1) fail("manifest.json: self-test case '${c.name}' of ${a.format} has must_match < 1")
                if ((c.promptIds + c.expectedIds).any { it < 0 }) {
                    fail("manifest.json: self-test case '${c.name}' of ${a.format} has a negative token id")
                }
            }
        }
    }

    private fun validate(m: EncoderManifest) {
        val e = m.encoder
        val outputs = taskOutputs[e.task] ?: fail("manifest.json: unknown encoder task '${e.task}'")
        if (e.outputs != outputs) fail("manifest.json: a ${e.task} encoder returns $outputs, the manifest says ${e.outputs}")
        if (e.inputs != inputOrder.take(e.inputs.size) || e.inputs.size < 2) {
            fail("manifest.json: encoder.inputs must be input_ids, attention_mask[, token_type_ids], not ${e.inputs}")
        }
        if (e.task in setOf("sequence-classification", "token-classification") && e.labels.isEmpty()) {
            fail("manifest.json: a ${e.task} encoder has no labels")
        }
        for (a in m.artifacts) {
            for (c in a.selfTest.cases) {
                val where = "self-test case '${c.name}' of ${a.format}"
                if (c.inputIds.isEmpty() || c.inputIds.size > m.model.maxSeqLen) fail("manifest.json: $where has ${c.inputIds.size} ids (1 to ${m.model.maxSeqLen})")
                if (c.inputIds.any { it < 0 }) fail("manifest.json: $where has a negative token id")
                if (c.tokenTypeIds.size != c.inputIds.size) fail("manifest.json: $where has ${c.tokenTypeIds.size} token types for ${c.inputIds.size} ids")
                if (c.expected.size != outputs.size) fail("manifest.json: $where expects ${c.expected.size} outputs, the task has ${outputs.size}")
                c.span?.let { span ->
                    if (span.size != 2 || span[0] > span[1] || span[1] >= c.inputIds.size) fail("manifest.json: $where has an answer span $span outside its ${c.inputIds.size} tokens")
                }
            }
        }
    }

    private fun checkPath(key: String, value: String) {
        if (!relPath.matches(value)) fail("manifest.json: $key '$value' is not a relative path inside the bundle")
    }

    private fun checkDigest(key: String, value: String) {
        if (!sha256.matches(value)) fail("manifest.json: $key is not a sha256 digest")
    }

    private fun fail(message: String): Nothing = throw ManifestException(message)

    private fun firstLine(message: String?): String =
        message?.lineSequence()?.firstOrNull { it.isNotBlank() }?.trim() ?: "unreadable JSON"
}
