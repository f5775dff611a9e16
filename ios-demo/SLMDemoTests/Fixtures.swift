import Foundation
import XCTest

/// Test resources: Fixtures/manifest.json is the manifest `python -m exporter --target ios
/// --quant none --max-seq-len 64 --out /tmp/iosfixture --no-bundle` wrote for the built-in
/// student, copied verbatim (two artifacts with one golden case each, 29 tokenizer cases).
enum Fixtures {
    private final class Anchor {}

    static func data(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws -> Data {
        let bundle = Bundle(for: Anchor.self)
        let url = try XCTUnwrap(bundle.url(forResource: name, withExtension: "json"),
                                "missing test resource \(name).json", file: file, line: line)
        return try Data(contentsOf: url)
    }

    static func manifest() throws -> Manifest { try Manifest.decode(data("manifest")) }

    /// The fixture as a mutable JSON object, to build broken variants.
    static func manifestObject() throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: data("manifest")) as? [String: Any])
    }

    static func encode(_ object: [String: Any]) throws -> Data {
        try JSONSerialization.data(withJSONObject: object)
    }

    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("slmdemo-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func write(_ data: Data, to relativePath: String, in root: URL) throws {
        let url = root.appendingPathComponent(relativePath)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try data.write(to: url)
    }
}
