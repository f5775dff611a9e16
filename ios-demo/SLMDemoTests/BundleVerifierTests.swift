import XCTest

final class BundleVerifierTests: XCTestCase {
    private var root: URL!

    override func setUpWithError() throws {
        root = try Fixtures.temporaryDirectory()
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    /// The files of a folder artifact and the digest `exporter.manifest.artifact_digest` gave
    /// for exactly this folder (computed with Python 3.11 when the test was written).
    private let folderFiles: [String: [UInt8]] = [
        ".hidden": Array("h".utf8),
        "Data/x": [],
        "Manifest.json": Array("{}".utf8),
        "a.txt": Array("y".utf8),
        "a/b.txt": Array("x".utf8),
        "a/c/d.bin": [0, 1],
        "b-c": Array("z".utf8),
        "b/c": Array("w".utf8),
    ]
    private let folderDigestFromPython = "210ddb470f71e52b37e34d7d4c83ead3e05a5965fb8c8254bf65e9088978f666"

    func testFolderDigestMatchesTheExporter() throws {
        let folder = root.appendingPathComponent("pkg.mlpackage")
        for (path, bytes) in folderFiles { try Fixtures.write(Data(bytes), to: path, in: folder) }
        let files = FileDigest.regularFiles(under: folder)
        XCTAssertEqual(Set(files), Set(folderFiles.keys), "hidden files count too")
        let digests = try files.map { (relativePath: $0, sha256: try FileDigest.sha256(fileAt: folder.appendingPathComponent($0))) }
        XCTAssertEqual(FileDigest.folderDigest(files: digests), folderDigestFromPython)
    }

    /// Python sorts pathlib paths by components: "a/b.txt" < "a.txt" and "b/c" < "b-c".
    func testPathOrderIsPythonsPathOrder() {
        let sorted = folderFiles.keys.sorted(by: FileDigest.pathPrecedes)
        XCTAssertEqual(sorted, [".hidden", "Data/x", "Manifest.json", "a/b.txt", "a/c/d.bin", "a.txt", "b/c", "b-c"])
        XCTAssertNotEqual(sorted, folderFiles.keys.sorted(), "plain string order differs; the test would prove nothing")
    }

    func testEmptyFileDigest() throws {
        try Fixtures.write(Data(), to: "empty", in: root)
        XCTAssertEqual(try FileDigest.sha256(fileAt: root.appendingPathComponent("empty")),
                       "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(FileDigest.sha256(of: Data("abc".utf8)),
                       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    /// The fixture's own numbers: the .mlpackage digest recomputed from the manifest's per-file
    /// digests equals the manifest's artifact digest.
    func testArtifactDigestsOfTheExportersManifest() throws {
        let m = try Fixtures.manifest()
        let digests = Dictionary(uniqueKeysWithValues: m.files.map { ($0.path, $0.sha256) })
        for artifact in m.artifacts {
            XCTAssertEqual(BundleVerifier.artifactDigest(path: artifact.path, fileDigests: digests), artifact.sha256, artifact.path)
        }
        XCTAssertEqual(BundleVerifier.crossCheck(manifest: m, fileDigests: digests), [])
        XCTAssertNil(BundleVerifier.artifactDigest(path: "onnx", fileDigests: digests))
    }

    func testVerifiesABundleAndFindsEveryKindOfChange() throws {
        let manifest = try writeBundle()
        XCTAssertEqual(BundleVerifier.verify(bundle: root, manifest: manifest).problems, [])

        // Finder's .DS_Store is tolerated.
        try Fixtures.write(Data([1]), to: ".DS_Store", in: root)
        XCTAssertTrue(BundleVerifier.verify(bundle: root, manifest: manifest).passed)

        // An unlisted file.
        try Fixtures.write(Data("extra".utf8), to: "coreml/model.mlpackage/extra.bin", in: root)
        XCTAssertEqual(BundleVerifier.verify(bundle: root, manifest: manifest).problems,
                       ["coreml/model.mlpackage/extra.bin: not listed in the manifest"])
        try FileManager.default.removeItem(at: root.appendingPathComponent("coreml/model.mlpackage/extra.bin"))

        // A changed byte, same size.
        try Fixtures.write(Data("weightz".utf8), to: "coreml/model.mlpackage/Data/weight.bin", in: root)
        let changed = BundleVerifier.verify(bundle: root, manifest: manifest).problems
        XCTAssertTrue(changed.contains("coreml/model.mlpackage/Data/weight.bin: sha256 differs from the manifest (file changed)"), "\(changed)")
        XCTAssertTrue(changed.contains("coreml/model.mlpackage: artifact sha256 differs from the manifest"), "\(changed)")

        // A missing file.
        try FileManager.default.removeItem(at: root.appendingPathComponent("executorch/model.pte"))
        let missing = BundleVerifier.verify(bundle: root, manifest: manifest).problems
        XCTAssertTrue(missing.contains("executorch/model.pte: missing"), "\(missing)")
        XCTAssertTrue(missing.contains("executorch/model.pte: artifact missing"), "\(missing)")
    }

    func testTruncatedFileIsReported() throws {
        let manifest = try writeBundle()
        try Fixtures.write(Data("tok".utf8), to: "tokenizer.json", in: root)
        let problems = BundleVerifier.verify(bundle: root, manifest: manifest).problems
        XCTAssertTrue(problems.contains { $0.hasPrefix("tokenizer.json: 3 bytes, the manifest says") }, "\(problems)")
    }

    func testFingerprintChangesWithTheFiles() throws {
        _ = try writeBundle()
        let manifestData = Data("{}".utf8)
        let a = BundleVerifier.fingerprint(bundle: root, manifestData: manifestData)
        XCTAssertEqual(a, BundleVerifier.fingerprint(bundle: root, manifestData: manifestData))
        try Fixtures.write(Data("a longer tokenizer".utf8), to: "tokenizer.json", in: root)
        XCTAssertNotEqual(a, BundleVerifier.fingerprint(bundle: root, manifestData: manifestData))
    }

    /// A decoder bundle with a companion encoder in search/: the companion's manifest is checked
    /// against manifest_sha256, its own file list against the files found, and its artifacts.
    func testVerifiesACompanionEncoder() throws {
        var manifest = try writeBundle()
        // The companion: the encoder fixture's manifest with its files replaced by small ones.
        var companion = try Manifest.decode(Fixtures.data("encoder_manifest"))
        let inner: [String: String] = [
            "tokenizer.json": "{\"model\": {\"type\": \"WordPiece\"}}",
            "tokenizer_config.json": "{}",
            "executorch/model.pte": "encoder pte",
            "coreml/model.mlpackage/Manifest.json": "{\"b\": 2}",
            "coreml/model.mlpackage/Data/weight.bin": "encoder weights",
            "parity.json": "[]",
            "parity.html": "<html></html>",
            "reference.json": "{}",
        ]
        var entries: [Manifest.FileEntry] = []
        for (path, text) in inner {
            try Fixtures.write(Data(text.utf8), to: "search/\(path)", in: root)
            entries.append(Manifest.FileEntry(path: path, bytes: Int64(text.utf8.count), sha256: FileDigest.sha256(of: Data(text.utf8))))
        }
        companion.files = entries.sorted { $0.path < $1.path }
        let innerDigests = Dictionary(uniqueKeysWithValues: entries.map { ($0.path, $0.sha256) })
        companion.tokenizer.sha256 = innerDigests["tokenizer.json"]!
        companion.tokenizer.configSha256 = innerDigests["tokenizer_config.json"]!
        for i in companion.artifacts.indices {
            companion.artifacts[i].sha256 = BundleVerifier.artifactDigest(path: companion.artifacts[i].path, fileDigests: innerDigests)!
        }
        let companionData = try JSONEncoder().encode(companion)
        try Fixtures.write(companionData, to: "search/manifest.json", in: root)

        // The decoder's manifest lists every companion file, and the companion.
        for (path, text) in inner {
            manifest.files.append(Manifest.FileEntry(path: "search/\(path)", bytes: Int64(text.utf8.count),
                                                     sha256: FileDigest.sha256(of: Data(text.utf8))))
        }
        manifest.files.append(Manifest.FileEntry(path: "search/manifest.json", bytes: Int64(companionData.count),
                                                 sha256: FileDigest.sha256(of: companionData)))
        manifest.companions = [Manifest.Companion(role: "search", path: "search", task: "feature-extraction",
                                                  manifestSha256: FileDigest.sha256(of: companionData))]
        XCTAssertEqual(BundleVerifier.verify(bundle: root, manifest: manifest).problems, [])

        // A companion file changed: the decoder's list and the companion's own digests both see it.
        try Fixtures.write(Data("encoder ptf".utf8), to: "search/executorch/model.pte", in: root)
        let changed = BundleVerifier.verify(bundle: root, manifest: manifest).problems
        XCTAssertTrue(changed.contains("search/executorch/model.pte: sha256 differs from the manifest (file changed)"), "\(changed)")
        XCTAssertTrue(changed.contains("search/executorch/model.pte: sha256 differs from search/manifest.json"), "\(changed)")
        XCTAssertTrue(changed.contains("search/executorch/model.pte: artifact sha256 differs from the manifest"), "\(changed)")
        try Fixtures.write(Data("encoder pte".utf8), to: "search/executorch/model.pte", in: root)

        // The companion's manifest is not the one the decoder's manifest names.
        var wrong = manifest
        wrong.companions?[0].manifestSha256 = String(repeating: "0", count: 64)
        XCTAssertEqual(BundleVerifier.checkCompanions(bundle: root, manifest: wrong, fileDigests: [:]),
                       ["search/manifest.json: sha256 differs from companions/0/manifest_sha256"])
        // Or not for the stated task.
        wrong = manifest
        wrong.companions?[0].task = "question-answering"
        XCTAssertEqual(BundleVerifier.checkCompanions(bundle: root, manifest: wrong, fileDigests: [:]),
                       ["search/manifest.json: not an encoder bundle for question-answering"])
    }

    /// A small bundle on disk with a manifest describing it (the fixture's, with its files,
    /// digests and artifacts replaced by the ones written here).
    private func writeBundle() throws -> Manifest {
        let contents: [String: String] = [
            "tokenizer.json": "{\"model\": {}}",
            "tokenizer_config.json": "{}",
            "executorch/model.pte": "pte bytes",
            "coreml/model.mlpackage/Manifest.json": "{\"a\": 1}",
            "coreml/model.mlpackage/Data/weight.bin": "weights",
            "parity.json": "{}",
            "parity.html": "<html></html>",
            "reference.json": "{}",
        ]
        var manifest = try Fixtures.manifest()
        var entries: [Manifest.FileEntry] = []
        for (path, text) in contents {
            try Fixtures.write(Data(text.utf8), to: path, in: root)
            entries.append(Manifest.FileEntry(path: path, bytes: Int64(text.utf8.count), sha256: FileDigest.sha256(of: Data(text.utf8))))
        }
        try Fixtures.write(Data("{}".utf8), to: Manifest.fileName, in: root)
        manifest.files = entries.sorted { $0.path < $1.path }
        let digests = Dictionary(uniqueKeysWithValues: entries.map { ($0.path, $0.sha256) })
        manifest.tokenizer.sha256 = digests["tokenizer.json"]!
        manifest.tokenizer.configSha256 = digests["tokenizer_config.json"]!
        for i in manifest.artifacts.indices {
            manifest.artifacts[i].sha256 = BundleVerifier.artifactDigest(path: manifest.artifacts[i].path, fileDigests: digests)!
        }
        return manifest
    }
}
