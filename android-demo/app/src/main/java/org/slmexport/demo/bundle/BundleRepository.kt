package org.slmexport.demo.bundle

import android.content.Context
import java.io.File
import java.io.FileNotFoundException
import java.io.IOException
import org.slmexport.demo.core.BundleContainment
import org.slmexport.demo.runtime.DemoException

/** Where the bundle in use came from. */
enum class BundleSource(val label: String) {
    SIDELOADED("side-loaded (adb push)"),
    APK_ASSETS("bundled in the app"),
}

/** A bundle folder on disk, with its parsed manifest. Not yet verified. */
data class LocatedBundle(
    val dir: File,
    val source: BundleSource,
    /** A decoder's manifest (chat, completion; maybe with companion encoders) or an encoder's. */
    val manifest: BundleManifest,
    /** sha256 of manifest.json: identifies the bundle (a new bundle means a new self-test). */
    val manifestSha256: String,
) {
    /** The decoder's manifest; null for an encoder bundle. */
    val decoder: Manifest? get() = manifest as? Manifest
}

/**
 * Finds the bundle: first a side-loaded one in getExternalFilesDir(null)/slm (what
 * `adb push BUNDLE /sdcard/Android/data/org.slmexport.demo/files/slm` writes), then the one
 * `slm-export --target android` put into the APK's assets (assets/slm). The runtimes need file
 * paths, so an asset bundle is copied to internal storage (filesDir/slm) on first run, and again
 * whenever the APK carries a different manifest.json.
 */
class BundleRepository(private val context: Context) {

    fun sideloadDir(): File? = context.getExternalFilesDir(null)?.let { File(it, SLM) }

    private val installedDir: File get() = File(context.filesDir, SLM)

    /**
     * [progress] gets (file being copied, bytes done, bytes total) while assets are copied.
     * [forceCopy]: copy the APK's bundle again even though the installed manifest matches (the
     * installed files failed their sha256: a matching manifest does not make the copy good).
     */
    fun locate(forceCopy: Boolean = false, progress: (String, Long, Long) -> Unit = { _, _, _ -> }): LocatedBundle {
        sideloadDir()?.let { dir ->
            val manifestFile = File(dir, MANIFEST)
            if (manifestFile.isFile) {
                // Someone else's bundle: it must stay inside its folder before any file is read.
                BundleContainment.refusal(dir)?.let { throw DemoException(it) }
                val bytes = manifestFile.readBytes()
                return LocatedBundle(dir, BundleSource.SIDELOADED, ManifestParser.parseAny(bytes), BundleVerifier.sha256Of(bytes))
            }
        }
        val assetManifest = try {
            context.assets.open("$SLM/$MANIFEST").use { it.readBytes() }
        } catch (e: FileNotFoundException) {
            throw DemoException(noBundleMessage())
        }
        val manifest = ManifestParser.parseAny(assetManifest)
        val digest = BundleVerifier.sha256Of(assetManifest)
        val installedManifest = File(installedDir, MANIFEST)
        val upToDate = installedManifest.isFile && BundleVerifier.sha256Of(installedManifest.readBytes()) == digest
        if (!upToDate || forceCopy) copyAssets(manifest, assetManifest, progress)
        return LocatedBundle(installedDir, BundleSource.APK_ASSETS, manifest, digest)
    }

    /** Copies every file the manifest lists, then manifest.json last, into filesDir/slm. */
    private fun copyAssets(manifest: BundleManifest, manifestBytes: ByteArray, progress: (String, Long, Long) -> Unit) {
        val staging = File(context.filesDir, "$SLM.staging")
        staging.deleteRecursively()
        val total = manifest.files.sumOf { it.bytes }
        var done = 0L
        val buffer = ByteArray(1 shl 20)
        try {
            for (entry in manifest.files) {
                val target = File(staging, entry.path)
                target.parentFile?.mkdirs()
                val start = done
                progress(entry.path, start, total)
                context.assets.open("$SLM/${entry.path}").use { input ->
                    target.outputStream().use { output ->
                        var copied = 0L
                        while (true) {
                            val n = input.read(buffer)
                            if (n < 0) break
                            output.write(buffer, 0, n)
                            copied += n
                            progress(entry.path, start + copied, total)
                        }
                    }
                }
                done += entry.bytes
            }
            File(staging, MANIFEST).writeBytes(manifestBytes)
        } catch (e: FileNotFoundException) {
            staging.deleteRecursively()
            throw DemoException("The app's bundle is incomplete: ${e.message?.substringAfterLast("$SLM/") ?: "a file"} is missing from its assets. Re-run slm-export --target android and rebuild the app.", e)
        } catch (e: IOException) {
            staging.deleteRecursively()
            val free = context.filesDir.usableSpace / 1_000_000
            throw DemoException("Copying the bundle out of the app failed (${e.message}). It needs ${total / 1_000_000} MB; $free MB are free.", e)
        }
        installedDir.deleteRecursively()
        if (!staging.renameTo(installedDir)) {
            staging.deleteRecursively()
            throw DemoException("Could not move the copied bundle into place in the app's storage.")
        }
    }

    fun noBundleMessage(): String =
        "No model bundle found. Either build the app after `slm-export --target android` (it copies the bundle " +
            "into app/src/main/assets/slm), or side-load one:\n" +
            "adb shell mkdir -p /sdcard/Android/data/org.slmexport.demo/files\n" +
            "adb push dist/android /sdcard/Android/data/org.slmexport.demo/files/slm\n" +
            "(looked in ${sideloadDir()?.absolutePath ?: "the external files folder"} and in the APK)."

    companion object {
        const val SLM = "slm"
        const val MANIFEST = "manifest.json"
    }
}
