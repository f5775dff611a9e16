import Darwin
import XCTest

/// The side-loaded bundle rules of docs/TRUST.md, on real links and a real named pipe.
final class BundleContainmentTests: XCTestCase {
    private var root: URL!

    override func setUpWithError() throws {
        root = try Fixtures.temporaryDirectory()
        try Fixtures.write(Data("{}".utf8), to: "manifest.json", in: root)
        try Fixtures.write(Data([0, 1, 2, 3]), to: "onnx/model.ort", in: root)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    func testAPlainBundleAndLinksInsideItPass() throws {
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("alias.ort").path,
                                                   withDestinationPath: "onnx/model.ort")
        XCTAssertEqual(BundleContainment.problems(in: root), [])
        XCTAssertNil(BundleContainment.refusal(for: root))
    }

    func testALinkOutOfTheBundleIsNamed() throws {
        let outside = try Fixtures.temporaryDirectory().appendingPathComponent("secret.txt")
        try Data("x".utf8).write(to: outside)
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("onnx/tokenizer.json").path,
                                                   withDestinationPath: outside.path)
        XCTAssertEqual(BundleContainment.problems(in: root),
                       ["onnx/tokenizer.json is a symbolic link to \(outside.path), outside the bundle"])
        XCTAssertTrue(BundleContainment.refusal(for: root)?.contains("Nothing was read") ?? false)
    }

    func testADanglingLinkAndANamedPipeAreNamed() throws {
        try FileManager.default.createSymbolicLink(atPath: root.appendingPathComponent("gone.json").path,
                                                   withDestinationPath: root.appendingPathComponent("nowhere.json").path)
        XCTAssertEqual(mkfifo(root.appendingPathComponent("onnx/queue").path, 0o644), 0)
        let found = BundleContainment.problems(in: root)
        XCTAssertEqual(found.count, 2, "\(found)")
        XCTAssertTrue(found[0].hasPrefix("gone.json is a symbolic link to") && found[0].hasSuffix("which does not exist"))
        XCTAssertEqual(found[1], "onnx/queue is a special file (a pipe, socket or device), not a regular file")
    }
}
