package org.slmexport.demo.bundle

import kotlinx.serialization.SerialName
import kotlinx.serialization.Serializable
import kotlinx.serialization.SerializationException
import kotlinx.serialization.json.Json

/** A manifest that cannot be used, with a message meant for people. */
class ManifestException(message: String) : Exception(message)

/**
 * Reads manifest.json and checks what the JSON Schema checks that matters to the app: the schema
 * version, relative paths that stay inside the bundle, sha256 digests, and well-formed self-test
 * cases. Unknown keys are refused, as the schema refuses them (except inside an artifact's parity
 * summary, which the schema leaves open).
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
    private data class EncoderProbe(@SerialName("encoder") val encoder: EncoderInfo? = null)

    // The schema's relpath: relative, [A-Za-z0-9._/-] only, no '..' segment.
    private val relPath = Regex("^(?!/)(?!.*(^|/)\\.\\.(/|$))[A-Za-z0-9._/-]+$")
    private val sha256 = Regex("^[0-9a-f]{64}$")

    fun parse(text: String): Manifest {
        val encoder = try {
            probe.decodeFromString(EncoderProbe.serializer(), text).encoder
        } catch (e: SerializationException) {
            null  // reported by the strict parse below
        } catch (e: IllegalArgumentException) {
            null
        }
        if (encoder != null) {
            fail("this bundle holds an encoder (${encoder.task}); this app version runs chat and completion models only")
        }
        val manifest = try {
            json.decodeFromString(Manifest.serializer(), text)
        } catch (e: SerializationException) {
            throw ManifestException("manifest.json is not a valid slm-export manifest: ${firstLine(e.message)}")
        } catch (e: IllegalArgumentException) {
            throw ManifestException("manifest.json is not a valid slm-export manifest: ${firstLine(e.message)}")
        }
        validate(manifest)
        return manifest
    }

    fun parse(bytes: ByteArray): Manifest = parse(bytes.toString(Charsets.UTF_8))

    private fun validate(m: Manifest) {
        if (m.schemaVersion != SUPPORTED_SCHEMA_VERSION) {
            fail(
                "manifest.json has schema_version ${m.schemaVersion}; this app reads version " +
                    "$SUPPORTED_SCHEMA_VERSION. Export the bundle with a matching slm-export, or update the app.",
            )
        }
        if (m.generator.name != "slm-export") fail("manifest.json was not written by slm-export (generator.name is '${m.generator.name}')")
        if (m.artifacts.isEmpty()) fail("manifest.json lists no artifacts")
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
        for (c in m.companions) {
            checkPath("companions[${c.role}].path", c.path)
            checkDigest("companions[${c.role}].manifest_sha256", c.manifestSha256)
        }
        for (a in m.artifacts) {
            if (a.format !in setOf("executorch", "onnx", "coreml")) fail("manifest.json: unknown artifact format '${a.format}'")
            checkPath("artifacts[${a.format}].path", a.path)
            checkDigest("artifacts[${a.format}].sha256", a.sha256)
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
