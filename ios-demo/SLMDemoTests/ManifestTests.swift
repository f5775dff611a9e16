import XCTest

final class ManifestTests: XCTestCase {
    func testDecodesTheExportersManifest() throws {
        let m = try Fixtures.manifest()
        XCTAssertEqual(m.schemaVersion, 1)
        XCTAssertEqual(m.generator.name, "slm-export")
        XCTAssertEqual(m.generator.tools["executorch"], "1.5.1")
        XCTAssertEqual(m.target, "ios")
        XCTAssertEqual(m.model.name, "slm-student")
        XCTAssertEqual(m.model.family, "llama")
        XCTAssertEqual(m.model.vocabSize, 4096)
        XCTAssertEqual(m.model.maxSeqLen, 64)
        XCTAssertEqual(m.model.bosTokenId, 1)
        XCTAssertEqual(m.model.eosTokenIds, [0])
        XCTAssertEqual(m.tokenizer.path, "tokenizer.json")
        XCTAssertEqual(m.tokenizer.configPath, "tokenizer_config.json")
        XCTAssertEqual(m.tokenizer.addSpecialTokens, true)
        XCTAssertTrue(m.addsSpecialTokens)
        XCTAssertEqual(m.tokenizer.selfTest?.count, 29)
        XCTAssertEqual(m.artifacts.map(\.format), ["executorch", "coreml"])
        XCTAssertEqual(m.artifact(format: "coreml")?.path, "coreml/model.mlpackage")
        XCTAssertEqual(m.artifact(format: "executorch")?.path, "executorch/model.pte")
        XCTAssertNil(m.artifact(format: "onnx"))

        let coreml = try XCTUnwrap(m.artifact(format: "coreml"))
        XCTAssertEqual(coreml.quantization, "none")
        XCTAssertTrue(coreml.parity.passed)
        XCTAssertEqual(coreml.parity.failures, [])
        let golden = try XCTUnwrap(coreml.selfTest.cases.first)
        XCTAssertEqual(golden.name, "code")
        XCTAssertEqual(golden.promptIds.count, 28)
        XCTAssertEqual(golden.expectedIds.count, 16)
        XCTAssertEqual(golden.mustMatch, 1)
        XCTAssertEqual(m.parity.results, "parity.json")
        XCTAssertEqual(m.files.count, 9)
        XCTAssertTrue(m.problems().isEmpty, "\(m.problems())")
    }

    func testTokenizerSelfTestCases() throws {
        let cases = try XCTUnwrap(Fixtures.manifest().tokenizer.selfTest)
        XCTAssertEqual(cases[0].text, "The quick brown fox jumps over the lazy dog.")
        XCTAssertEqual(cases[0].ids, [458, 1080, 1435, 280, 311, 1798, 813, 89, 1021, 2859, 84, 842, 265, 995, 91, 90, 608, 72, 15])
        XCTAssertTrue(cases.contains { $0.text.isEmpty && $0.ids.isEmpty }, "the empty string encodes to no ids")
        // The same word composed (U+00E9) and decomposed (e + U+0301): Swift's == calls the two
        // texts equal, their scalars and ids differ; decoding must keep the scalars as written.
        let cafes = cases.filter { $0.text.unicodeScalars.starts(with: "caf".unicodeScalars) }
        XCTAssertEqual(cafes.count, 2)
        XCTAssertEqual(cafes[0].text, cafes[1].text)
        XCTAssertNotEqual(Array(cafes[0].text.unicodeScalars), Array(cafes[1].text.unicodeScalars))
        XCTAssertNotEqual(cafes[0].ids, cafes[1].ids)
    }

    /// Every CodingKeys raw value must be the JSON key: encoding what was decoded gives back the
    /// same keys at every level, and decoding that again gives the same value.
    func testCodingKeysAreTheJSONKeys() throws {
        for name in ["manifest", "encoder_manifest"] {
            let original = try Fixtures.data(name)
            let manifest = try Manifest.decode(original)
            let encoded = try JSONEncoder().encode(manifest)
            let a = try JSONSerialization.jsonObject(with: original)
            let b = try JSONSerialization.jsonObject(with: encoded)
            XCTAssertEqual(keyPaths(a), keyPaths(b), name)
            XCTAssertEqual(try Manifest.decode(encoded), manifest, name)
        }
    }

    func testNullBosTokenDecodesAndEncodesAsNull() throws {
        var object = try Fixtures.manifestObject()
        var model = try XCTUnwrap(object["model"] as? [String: Any])
        model["bos_token_id"] = NSNull()
        object["model"] = model
        let m = try Manifest.decode(Fixtures.encode(object))
        XCTAssertNil(m.model.bosTokenId)
        let again = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(m)) as? [String: Any])
        let encodedModel = try XCTUnwrap(again["model"] as? [String: Any])
        XCTAssertTrue(encodedModel["bos_token_id"] is NSNull)
    }

    func testMissingKeyIsReportedWithItsPath() throws {
        var object = try Fixtures.manifestObject()
        var model = try XCTUnwrap(object["model"] as? [String: Any])
        model.removeValue(forKey: "max_seq_len")
        object["model"] = model
        XCTAssertThrowsError(try Manifest.decode(Fixtures.encode(object))) { error in
            XCTAssertEqual(error as? ManifestError, .unreadable("missing key model/max_seq_len"))
        }
    }

    /// An encoder section must be complete: a decoder manifest given only a task is unreadable,
    /// with the path of what is missing.
    func testAnIncompleteEncoderSectionIsReportedWithItsPath() throws {
        var json = try XCTUnwrap(String(data: try Fixtures.data("manifest"), encoding: .utf8))
        json = json.replacingOccurrences(of: "\"target\": \"ios\"", with: "\"encoder\": {\"task\": \"question-answering\"}, \"target\": \"ios\"")
        XCTAssertThrowsError(try Manifest.decode(Data(json.utf8))) { error in
            XCTAssertEqual(error as? ManifestError, .unreadable("missing key encoder/inputs"))
        }
    }

    func testNotJSON() {
        XCTAssertThrowsError(try Manifest.decode(Data("not json".utf8))) { error in
            guard case .some(.unreadable) = error as? ManifestError else { return XCTFail("\(error)") }
        }
    }

    func testContractViolationsAreRejected() throws {
        func problems(_ edit: (inout [String: Any]) -> Void) throws -> [String] {
            var object = try Fixtures.manifestObject()
            edit(&object)
            do {
                _ = try Manifest.decode(Fixtures.encode(object))
                return []
            } catch ManifestError.invalid(let found) {
                return found
            }
        }
        XCTAssertEqual(try problems { $0["schema_version"] = 2 }.count, 1)
        XCTAssertFalse(try problems { object in
            var tokenizer = object["tokenizer"] as! [String: Any]
            tokenizer["path"] = "../tokenizer.json"
            object["tokenizer"] = tokenizer
        }.isEmpty)
        XCTAssertFalse(try problems { object in
            var files = object["files"] as! [[String: Any]]
            files[0]["sha256"] = "ABC"
            object["files"] = files
        }.isEmpty)
        XCTAssertFalse(try problems { object in
            var artifacts = object["artifacts"] as! [[String: Any]]
            var selfTest = artifacts[0]["self_test"] as! [String: Any]
            var cases = selfTest["cases"] as! [[String: Any]]
            cases[0]["must_match"] = 0
            selfTest["cases"] = cases
            artifacts[0]["self_test"] = selfTest
            object["artifacts"] = artifacts
        }.isEmpty)
        XCTAssertFalse(try problems { $0["artifacts"] = [[String: Any]]() }.isEmpty)
    }

    func testRelativePathRule() {
        XCTAssertTrue(Manifest.isRelativePath("coreml/model.mlpackage"))
        XCTAssertTrue(Manifest.isRelativePath("a..b/c"))
        XCTAssertFalse(Manifest.isRelativePath(""))
        XCTAssertFalse(Manifest.isRelativePath("/etc/passwd"))
        XCTAssertFalse(Manifest.isRelativePath(".."))
        XCTAssertFalse(Manifest.isRelativePath("a/../b"))
        XCTAssertFalse(Manifest.isRelativePath("a/.."))
        XCTAssertFalse(Manifest.isRelativePath("a b"))
        XCTAssertTrue(Manifest.isSha256(String(repeating: "0a", count: 32)))
        XCTAssertFalse(Manifest.isSha256(String(repeating: "0A", count: 32)))
        XCTAssertFalse(Manifest.isSha256("abc"))
    }

    func testAddSpecialTokensDefaultsToTrue() throws {
        var m = try Fixtures.manifest()
        m.tokenizer.addSpecialTokens = nil
        XCTAssertTrue(m.addsSpecialTokens)
        m.tokenizer.addSpecialTokens = false
        XCTAssertFalse(m.addsSpecialTokens)
    }

    /// All key paths of a JSON value ("model/max_seq_len", "artifacts/[]/self_test/cases/[]/name", ...).
    private func keyPaths(_ value: Any, prefix: String = "") -> Set<String> {
        var out = Set<String>()
        if let dict = value as? [String: Any] {
            for (key, child) in dict {
                let path = prefix.isEmpty ? key : "\(prefix)/\(key)"
                out.insert(path)
                // tools is a free-form map (tool name -> version): its keys are data, not schema keys.
                if key != "tools" { out.formUnion(keyPaths(child, prefix: path)) }
            }
        } else if let array = value as? [Any] {
            for child in array { out.formUnion(keyPaths(child, prefix: "\(prefix)/[]")) }
        }
        return out
    }
}
