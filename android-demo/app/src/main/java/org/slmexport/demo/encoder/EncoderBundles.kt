package org.slmexport.demo.encoder

import java.io.File
import org.slmexport.demo.bundle.BundleVerifier
import org.slmexport.demo.bundle.EncoderManifest
import org.slmexport.demo.bundle.LocatedBundle
import org.slmexport.demo.bundle.Manifest
import org.slmexport.demo.bundle.ManifestException
import org.slmexport.demo.bundle.ManifestParser

/**
 * The encoders a verified bundle holds: the bundle itself when it is an encoder bundle, or each
 * companion of a decoder bundle (docs/MANIFEST.md, Companions). A companion's manifest.json must
 * have the digest its parent lists (its files were checked with the parent's); it is then parsed
 * and its artifacts' folder digests checked as the encoder bundle it is.
 */
object EncoderBundles {
    fun of(located: LocatedBundle): List<EncoderBundle> = when (val manifest = located.manifest) {
        is EncoderManifest -> listOf(EncoderBundle(located.dir, manifest, EncoderRole.forTask(manifest.encoder.task), located.manifestSha256))
        is Manifest -> manifest.companions.map { companion ->
            val dir = File(located.dir, companion.path)
            val file = File(dir, "manifest.json")
            if (!file.isFile) throw ManifestException("The bundle lists a ${companion.role} model in ${companion.path}/, which has no manifest.json.")
            val bytes = file.readBytes()
            val digest = BundleVerifier.sha256Of(bytes)
            if (digest != companion.manifestSha256) {
                throw ManifestException("${companion.path}/manifest.json has changed: its sha256 ${digest.take(12)}… is not the ${companion.manifestSha256.take(12)}… the bundle lists.")
            }
            val encoder = ManifestParser.parseEncoder(bytes.toString(Charsets.UTF_8))
            if (encoder.encoder.task != companion.task) {
                throw ManifestException("${companion.path}/ holds a ${encoder.encoder.task} model; the bundle lists it for ${companion.task}.")
            }
            val verification = BundleVerifier().verify(dir, encoder)
            if (!verification.ok) throw ManifestException("${companion.path}/: ${verification.summary()}")
            val role = EncoderRole.fromKey(companion.role) ?: EncoderRole.forTask(companion.task)
            EncoderBundle(dir, encoder, role, digest)
        }
    }
}
