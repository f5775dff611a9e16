import Foundation

/// The on-device half of `slm-export verify`: every file listed in the manifest exists with its
/// size and sha256, nothing unlisted is present, and every artifact's digest (a folder digest for
/// the `.mlpackage`) matches. A companion encoder (docs/MANIFEST.md, Companions) is checked as the
/// bundle it is: its manifest.json against `manifest_sha256`, and its own manifest's file and
/// artifact digests against the files just hashed (the top-level `files` lists them all).
///
/// Why the `.mlpackage` can be checked here at all: Xcode compiles any `.mlpackage` it finds among
/// a target's resources into an `.mlmodelc`, which would leave nothing to compare with the
/// manifest's digest. The app therefore does not list the bundle as resources: a build script
/// (project.yml, "Embed slm bundle (uncompiled)") copies `SLMDemo/Resources/slm/` byte for byte
/// into the app, and `CoreMLEngine` compiles the verified package on the device with
/// `MLModel.compileModel(at:)`, caching the result by the artifact's sha256.
struct VerificationReport: Equatable {
    var problems: [String]
    var checkedFiles: Int
    var checkedBytes: Int64
    var passed: Bool { problems.isEmpty }
}

enum BundleVerifier {
    /// Files the app tolerates beside the listed ones (Finder and the Files app drop them).
    static let ignoredUnlisted: Set<String> = [".DS_Store"]

    static func verify(bundle: URL, manifest: Manifest,
                       progress: ((_ done: Int64, _ total: Int64) -> Void)? = nil) -> VerificationReport {
        var problems: [String] = []
        var digests: [String: String] = [:]
        let total = manifest.files.reduce(Int64(0)) { $0 + $1.bytes }
        var done: Int64 = 0
        let fm = FileManager.default

        for entry in manifest.files {
            let url = bundle.appendingPathComponent(entry.path)
            guard let attrs = try? fm.attributesOfItem(atPath: url.path),
                  (attrs[.type] as? FileAttributeType) == .typeRegular else {
                problems.append("\(entry.path): missing")
                continue
            }
            let size = (attrs[.size] as? NSNumber)?.int64Value ?? -1
            if size != entry.bytes {
                problems.append("\(entry.path): \(size) bytes, the manifest says \(entry.bytes) (file changed or truncated)")
                done += entry.bytes
                progress?(done, total)
                continue
            }
            do {
                let sha = try FileDigest.sha256(fileAt: url)
                digests[entry.path] = sha
                if sha != entry.sha256 { problems.append("\(entry.path): sha256 differs from the manifest (file changed)") }
            } catch {
                problems.append("\(entry.path): unreadable (\(error.localizedDescription))")
            }
            done += entry.bytes
            progress?(done, total)
        }

        let listed = Set(manifest.files.map(\.path))
        for rel in FileDigest.regularFiles(under: bundle).sorted()
        where rel != Manifest.fileName && !listed.contains(rel) {
            let name = (rel as NSString).lastPathComponent
            if !ignoredUnlisted.contains(name) { problems.append("\(rel): not listed in the manifest") }
        }

        problems += crossCheck(manifest: manifest, fileDigests: digests)
        problems += checkCompanions(bundle: bundle, manifest: manifest, fileDigests: digests)
        return VerificationReport(problems: problems, checkedFiles: manifest.files.count, checkedBytes: total)
    }

    /// Each companion: its manifest.json has the digest the decoder's manifest gives, decodes as an
    /// encoder bundle of the stated task, and every file and artifact it lists (relative to its
    /// folder) has the digest found for that file in this bundle.
    static func checkCompanions(bundle: URL, manifest: Manifest, fileDigests: [String: String]) -> [String] {
        var problems: [String] = []
        for (i, companion) in (manifest.companions ?? []).enumerated() {
            let folder = companion.path + "/"
            let manifestPath = folder + Manifest.fileName
            let manifestURL = bundle.appendingPathComponent(manifestPath)
            guard let sha = fileDigests[manifestPath] ?? (try? FileDigest.sha256(fileAt: manifestURL)) else {
                problems.append("\(manifestPath): missing (companion \(companion.role))")
                continue
            }
            guard sha == companion.manifestSha256 else {
                problems.append("\(manifestPath): sha256 differs from companions/\(i)/manifest_sha256")
                continue
            }
            let inner: Manifest
            do {
                inner = try Manifest.load(from: bundle.appendingPathComponent(companion.path)).manifest
            } catch {
                problems.append("\(manifestPath): \(Readable.message(for: error))")
                continue
            }
            guard let encoder = inner.encoder, encoder.task == companion.task else {
                problems.append("\(manifestPath): not an encoder bundle for \(companion.task)")
                continue
            }
            var innerDigests: [String: String] = [:]
            for entry in inner.files {
                let path = folder + entry.path
                guard let found = fileDigests[path] else {
                    problems.append("\(path): listed by \(manifestPath) but not by the bundle's manifest")
                    continue
                }
                if found != entry.sha256 { problems.append("\(path): sha256 differs from \(manifestPath)") }
                innerDigests[entry.path] = found
            }
            problems += crossCheck(manifest: inner, fileDigests: innerDigests).map { folder + $0 }
        }
        return problems
    }

    /// Checks that need only the per-file digests: the tokenizer's digests and each artifact's
    /// digest (a folder artifact's is recomputed from its files' digests, as the exporter does).
    static func crossCheck(manifest: Manifest, fileDigests: [String: String]) -> [String] {
        var problems: [String] = []
        if let sha = fileDigests[manifest.tokenizer.path], sha != manifest.tokenizer.sha256 {
            problems.append("\(manifest.tokenizer.path): sha256 differs from tokenizer/sha256")
        }
        if let path = manifest.tokenizer.configPath, let want = manifest.tokenizer.configSha256,
           let sha = fileDigests[path], sha != want {
            problems.append("\(path): sha256 differs from tokenizer/config_sha256")
        }
        for artifact in manifest.artifacts {
            guard let digest = artifactDigest(path: artifact.path, fileDigests: fileDigests) else {
                problems.append("\(artifact.path): artifact missing")
                continue
            }
            if digest != artifact.sha256 { problems.append("\(artifact.path): artifact sha256 differs from the manifest") }
        }
        return problems
    }

    /// A file artifact's digest is its file's; a folder artifact's is the folder digest over the
    /// files below it. nil when neither is among `fileDigests`.
    static func artifactDigest(path: String, fileDigests: [String: String]) -> String? {
        if let sha = fileDigests[path] { return sha }
        let prefix = path + "/"
        var inside: [(relativePath: String, sha256: String)] = []
        for (rel, sha) in fileDigests where rel.hasPrefix(prefix) {
            inside.append((relativePath: String(rel.dropFirst(prefix.count)), sha256: sha))
        }
        return inside.isEmpty ? nil : FileDigest.folderDigest(files: inside)
    }

    /// A cheap key for "this exact bundle was verified before": the manifest's digest plus every
    /// file's size and modification date. Re-hashing hundreds of MB on each launch is avoided;
    /// any change to a file's size or date forces a full check.
    static func fingerprint(bundle: URL, manifestData: Data) -> String {
        var parts = [FileDigest.sha256(of: manifestData)]
        let fm = FileManager.default
        for rel in FileDigest.regularFiles(under: bundle).sorted() {
            let attrs = try? fm.attributesOfItem(atPath: bundle.appendingPathComponent(rel).path)
            let size = (attrs?[.size] as? NSNumber)?.int64Value ?? -1
            let date = (attrs?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            parts.append("\(rel)|\(size)|\(date)")
        }
        return FileDigest.sha256(of: Data(parts.joined(separator: "\n").utf8))
    }
}
