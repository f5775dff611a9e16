package org.slmexport.demo.bundle

import java.io.File
import java.io.FileInputStream
import java.security.MessageDigest

/** One thing wrong with a bundle on disk, with the file it is about. */
data class BundleProblem(val path: String, val kind: Kind, val expected: String? = null, val found: String? = null) {
    enum class Kind { MISSING, SIZE_MISMATCH, DIGEST_MISMATCH, ARTIFACT_DIGEST_MISMATCH, NOT_LISTED }

    /** A sentence for people, naming the file. */
    val message: String
        get() = when (kind) {
            Kind.MISSING -> "$path is missing from the bundle."
            Kind.SIZE_MISMATCH -> "$path has changed: it is $found bytes, the manifest says $expected."
            Kind.DIGEST_MISMATCH ->
                "$path has changed: its sha256 ${short(found)} does not match the manifest's ${short(expected)}."
            Kind.ARTIFACT_DIGEST_MISMATCH ->
                "The $path artifact does not match the manifest: its files are not the ones it was exported with."
            Kind.NOT_LISTED -> "$path is used by the manifest but not listed in its files."
        }

    private fun short(digest: String?) = digest?.take(12)?.plus("…") ?: "?"
}

data class VerificationResult(val problems: List<BundleProblem>, val checkedFiles: Int, val checkedBytes: Long) {
    val ok: Boolean get() = problems.isEmpty()

    /** The message shown when the bundle is refused. */
    fun summary(): String = when {
        ok -> "All $checkedFiles files match the manifest."
        problems.size == 1 -> "The bundle was not loaded. ${problems[0].message} Copy the bundle again (or re-run slm-export)."
        else -> "The bundle was not loaded: ${problems.size} files do not match the manifest. " +
            problems.take(3).joinToString(" ") { it.message } +
            (if (problems.size > 3) " …" else "") + " Copy the bundle again (or re-run slm-export)."
    }
}

/** Progress of a verification: the file being hashed and how far the whole bundle is. */
data class VerifyProgress(val path: String, val doneBytes: Long, val totalBytes: Long)

/**
 * Checks a bundle folder against its manifest before anything is loaded: every file in
 * `files[]` must exist with the listed size and sha256; the tokenizer and each artifact must be
 * among the listed files; and each artifact's digest (for a folder artifact: sha256 over
 * "relpath sha256\n" lines of its files, sorted as slm-export sorts paths) must match.
 * Files that the manifest does not list are ignored: they are never loaded.
 */
class BundleVerifier(private val hasher: (File, (Long) -> Unit) -> String = ::sha256Of) {

    fun verify(root: File, manifest: BundleManifest, progress: (VerifyProgress) -> Unit = {}): VerificationResult {
        val problems = mutableListOf<BundleProblem>()
        val digests = HashMap<String, String>()
        val total = manifest.files.sumOf { it.bytes }
        var done = 0L
        var checked = 0
        for (entry in manifest.files) {
            val file = File(root, entry.path)
            if (!file.isFile) {
                problems += BundleProblem(entry.path, BundleProblem.Kind.MISSING)
                done += entry.bytes
                continue
            }
            val size = file.length()
            if (size != entry.bytes) {
                problems += BundleProblem(entry.path, BundleProblem.Kind.SIZE_MISMATCH, entry.bytes.toString(), size.toString())
                done += entry.bytes
                continue
            }
            val start = done
            progress(VerifyProgress(entry.path, start, total))
            val digest = hasher(file) { read -> progress(VerifyProgress(entry.path, start + read, total)) }
            done += entry.bytes
            checked++
            digests[entry.path] = digest
            if (digest != entry.sha256) {
                problems += BundleProblem(entry.path, BundleProblem.Kind.DIGEST_MISMATCH, entry.sha256, digest)
            }
        }
        val listed = manifest.files.associateBy { it.path }
        if (manifest.tokenizer.path !in listed) problems += BundleProblem(manifest.tokenizer.path, BundleProblem.Kind.NOT_LISTED)
        else if (listed.getValue(manifest.tokenizer.path).sha256 != manifest.tokenizer.sha256) {
            problems += BundleProblem(manifest.tokenizer.path, BundleProblem.Kind.DIGEST_MISMATCH, manifest.tokenizer.sha256, listed.getValue(manifest.tokenizer.path).sha256)
        }
        for ((format, path, sha256) in manifest.artifactFiles) {
            if (format == "coreml") continue // not for this platform; its files are still checked above
            val members = artifactMembers(path, manifest.files)
            if (members.isEmpty()) {
                problems += BundleProblem(path, BundleProblem.Kind.NOT_LISTED)
                continue
            }
            val expected = artifactDigest(path, members.map { it.path to it.sha256 })
            if (expected != sha256) {
                problems += BundleProblem(path, BundleProblem.Kind.ARTIFACT_DIGEST_MISMATCH, sha256, expected)
            }
        }
        return VerificationResult(problems.distinct(), checked, done)
    }

    companion object {
        /** The files of an artifact: the file itself, or every listed file under the folder. */
        fun artifactMembers(artifactPath: String, files: List<BundleFile>): List<BundleFile> {
            files.firstOrNull { it.path == artifactPath }?.let { return listOf(it) }
            val prefix = artifactPath.trimEnd('/') + "/"
            return files.filter { it.path.startsWith(prefix) }
        }

        /**
         * slm-export's artifact digest: a file artifact's own sha256; for a folder, sha256 over
         * "relpath sha256\n" for each file, in the order Python sorts pathlib paths (segment by
         * segment, so "a/b" sorts before "a-b").
         */
        fun artifactDigest(artifactPath: String, members: List<Pair<String, String>>): String {
            if (members.size == 1 && members[0].first == artifactPath) return members[0].second
            val prefix = artifactPath.trimEnd('/') + "/"
            val md = MessageDigest.getInstance("SHA-256")
            members.map { (path, sha) -> path.removePrefix(prefix) to sha }
                .sortedWith { a, b -> comparePaths(a.first, b.first) }
                .forEach { (rel, sha) -> md.update("$rel $sha\n".toByteArray(Charsets.UTF_8)) }
            return md.digest().toHex()
        }

        /** Compares relative paths like Python's PurePosixPath: by segments, then by count. */
        fun comparePaths(a: String, b: String): Int {
            val sa = a.split('/')
            val sb = b.split('/')
            for (i in 0 until minOf(sa.size, sb.size)) {
                val c = compareCodePoints(sa[i], sb[i])
                if (c != 0) return c
            }
            return sa.size.compareTo(sb.size)
        }

        private fun compareCodePoints(a: String, b: String): Int {
            var i = 0
            var j = 0
            while (i < a.length && j < b.length) {
                val ca = a.codePointAt(i)
                val cb = b.codePointAt(j)
                if (ca != cb) return ca.compareTo(cb)
                i += Character.charCount(ca)
                j += Character.charCount(cb)
            }
            return (a.length - i).compareTo(b.length - j)
        }

        fun sha256Of(file: File, onProgress: (Long) -> Unit = {}): String {
            val md = MessageDigest.getInstance("SHA-256")
            val buffer = ByteArray(1 shl 20)
            var read = 0L
            FileInputStream(file).use { input ->
                while (true) {
                    val n = input.read(buffer)
                    if (n < 0) break
                    md.update(buffer, 0, n)
                    read += n
                    onProgress(read)
                }
            }
            return md.digest().toHex()
        }

        fun sha256Of(bytes: ByteArray): String = MessageDigest.getInstance("SHA-256").digest(bytes).toHex()

        private fun ByteArray.toHex(): String {
            val hex = "0123456789abcdef"
            val out = StringBuilder(size * 2)
            for (b in this) {
                val v = b.toInt() and 0xff
                out.append(hex[v ushr 4]).append(hex[v and 0x0f])
            }
            return out.toString()
        }
    }
}
