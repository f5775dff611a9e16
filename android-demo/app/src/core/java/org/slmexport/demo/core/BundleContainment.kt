package org.slmexport.demo.core

import java.io.File
import java.nio.file.Files
import java.nio.file.LinkOption
import java.nio.file.Path
import java.nio.file.attribute.BasicFileAttributes

/**
 * A side-loaded bundle must stay inside its folder, as slm-export's own `verify` requires
 * (docs/TRUST.md): before the app reads any of its files, the folder is walked without following
 * links, and a symbolic link whose target lies outside the bundle (or does not exist) or a special
 * file (pipe, socket, device) is named. Links that stay inside are allowed.
 */
object BundleContainment {
    fun problems(bundle: File): List<String> {
        val root = bundle.toPath()
        val realRoot = root.toRealPath()
        val out = ArrayList<String>()
        walk(root) { path, attributes ->
            val rel = root.relativize(path).toString().replace(File.separatorChar, '/')
            when {
                attributes.isSymbolicLink -> {
                    val target = Files.readSymbolicLink(path)
                    val resolved = try {
                        path.toRealPath()
                    } catch (e: java.io.IOException) {
                        null
                    }
                    when {
                        resolved == null -> out += "$rel is a symbolic link to $target, which does not exist"
                        !resolved.startsWith(realRoot) -> out += "$rel is a symbolic link to $target, outside the bundle"
                    }
                }
                attributes.isOther -> out += "$rel is a special file (a pipe, socket or device), not a regular file"
            }
        }
        return out
    }

    /** One sentence for the bundle screen, or null when the bundle is self-contained. */
    fun refusal(bundle: File): String? {
        val found = problems(bundle)
        if (found.isEmpty()) return null
        val more = if (found.size > 1) " (and ${found.size - 1} more)" else ""
        return "The bundle in ${bundle.path} is not self-contained: ${found[0]}$more. Nothing was read from it."
    }

    private fun walk(folder: Path, visit: (Path, BasicFileAttributes) -> Unit) {
        val entries = Files.newDirectoryStream(folder).use { stream -> stream.sortedBy { it.fileName.toString() } }
        for (path in entries) {
            val attributes = Files.readAttributes(path, BasicFileAttributes::class.java, LinkOption.NOFOLLOW_LINKS)
            visit(path, attributes)
            if (attributes.isDirectory) walk(path, visit)
        }
    }
}
