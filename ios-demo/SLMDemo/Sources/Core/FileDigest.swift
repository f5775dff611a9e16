import CryptoKit
import Foundation

/// sha256 digests exactly as the exporter computes them (exporter/manifest.py).
enum FileDigest {
    /// Lowercase hex sha256 of a file, read in 4 MiB chunks (model files are hundreds of MB).
    static func sha256(fileAt url: URL) throws -> String {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var hasher = SHA256()
        while true {
            let chunk = try autoreleasepool { try handle.read(upToCount: 4 << 20) }
            guard let chunk, !chunk.isEmpty else { break }
            hasher.update(data: chunk)
        }
        return hex(hasher.finalize())
    }

    static func sha256(of data: Data) -> String { hex(SHA256.hash(data: data)) }

    static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { String(format: "%02x", $0) }.joined()
    }

    /// The digest of a folder artifact (an `.mlpackage`): sha256 over one `relpath sha256\n`
    /// line per file, in the order Python's `sorted()` gives `pathlib.Path` objects. That order
    /// compares path *components*, not strings: `a/b.txt` sorts before `a.txt` (`"a" < "a.txt"`)
    /// although `"/" > "."` as characters.
    static func folderDigest(files: [(relativePath: String, sha256: String)]) -> String {
        var hasher = SHA256()
        for f in files.sorted(by: { pathPrecedes($0.relativePath, $1.relativePath) }) {
            hasher.update(data: Data("\(f.relativePath) \(f.sha256)\n".utf8))
        }
        return hex(hasher.finalize())
    }

    /// `PurePosixPath(a) < PurePosixPath(b)`: lexicographic over components, each compared by code
    /// points (UTF-8 byte order is code point order).
    static func pathPrecedes(_ a: String, _ b: String) -> Bool {
        let pa = a.split(separator: "/"), pb = b.split(separator: "/")
        for (x, y) in zip(pa, pb) where x != y {
            return Array(x.utf8).lexicographicallyPrecedes(Array(y.utf8))
        }
        return pa.count < pb.count
    }

    /// Every regular file under `root`, as `/`-separated paths relative to `root`, hidden files
    /// included (Python's `rglob("*")` includes them too).
    static func regularFiles(under root: URL) -> [String] {
        guard let e = FileManager.default.enumerator(atPath: root.path) else { return [] }
        var out: [String] = []
        while let rel = e.nextObject() as? String {
            if (e.fileAttributes?[.type] as? FileAttributeType) == .typeRegular { out.append(rel) }
        }
        return out
    }
}
