import XCTest

/// Encoder bundles and companions in the manifest (Fixtures/encoder_manifest.json is the `search/`
/// companion `slm-export --target ios --no-bundle` wrote for the built-in encoder student, copied
/// verbatim), and the encoder golden rule (EncoderSelfTest).
final class EncoderManifestTests: XCTestCase {
    private func encoderManifest() throws -> Manifest { try Manifest.decode(Fixtures.data("encoder_manifest")) }

    private func encoderObject() throws -> [String: Any] {
        try XCTUnwrap(JSONSerialization.jsonObject(with: Fixtures.data("encoder_manifest")) as? [String: Any])
    }

    private func problems(_ object: [String: Any]) throws -> [String] {
        do {
            _ = try Manifest.decode(Fixtures.encode(object))
            return []
        } catch ManifestError.invalid(let found) {
            return found
        }
    }

    // MARK: Encoder bundles

    func testAnEncoderBundleDecodes() throws {
        let m = try encoderManifest()
        XCTAssertTrue(m.problems().isEmpty, "\(m.problems())")
        let encoder = try XCTUnwrap(m.encoder)
        XCTAssertEqual(encoder.task, "feature-extraction")
        XCTAssertEqual(m.encoderTask, .featureExtraction)
        XCTAssertEqual(m.encoderTask?.role, .search)
        XCTAssertEqual(encoder.inputs, ["input_ids", "attention_mask", "token_type_ids"])
        XCTAssertEqual(encoder.outputs, ["embeddings"])
        XCTAssertEqual(encoder.labels, [])
        XCTAssertEqual(encoder.padTokenId, 0)
        XCTAssertEqual(encoder.pooling, Manifest.Pooling(mode: "mean", normalize: true, source: "sentence-transformers"))
        XCTAssertNil(m.chat)
        XCTAssertNil(m.companions)
        XCTAssertEqual(m.model.family, "bert")
        XCTAssertEqual(m.model.maxSeqLen, 256)
        XCTAssertNil(m.model.bosTokenId)
        XCTAssertEqual(m.tokenizer.selfTest?.count, 9)
        XCTAssertEqual(m.artifacts.map(\.format), ["executorch", "coreml"])

        for artifact in m.artifacts {
            XCTAssertTrue(artifact.selfTest.cases.isEmpty, "an encoder's cases are encoderCases")
            XCTAssertEqual(artifact.selfTest.encoderCases.count, 3)
            let first = try XCTUnwrap(artifact.selfTest.encoderCases.first)
            XCTAssertEqual(first.name, "text 0")
            XCTAssertEqual(first.inputIds.first, 2, "[CLS]")
            XCTAssertEqual(first.tokenTypeIds.count, first.inputIds.count)
            XCTAssertEqual(first.expected.count, 1)
            XCTAssertEqual(first.expected[0].count, 384)
            XCTAssertNil(first.span)
            XCTAssertNotNil(artifact.parity.cosineMin)
            XCTAssertNotNil(artifact.parity.neighbourAgreement)
            XCTAssertEqual(artifact.parity.texts, 57)
            XCTAssertNil(artifact.parity.top1)
            XCTAssertNotNil(artifact.seconds)
        }
        XCTAssertEqual(m.artifact(format: "executorch")?.parity.cosineMin, 1.0, "rounded to 6 decimals")
    }

    /// The manifest's tokenizer vectors (9 texts, one past the input limit) through this app's
    /// WordPiece; the tokenizer.json is the same file as Fixtures/encoder_tokenizer.json.
    func testTheManifestsTokenizerVectorsEncode() throws {
        let m = try encoderManifest()
        let data = try Fixtures.data("encoder_tokenizer")
        XCTAssertEqual(FileDigest.sha256(of: data), m.tokenizer.sha256, "the fixture tokenizer is this bundle's")
        let tokenizer = try WordPieceTokenizer.fromTokenizerJSON(data)
        let cases = try XCTUnwrap(m.tokenizer.selfTest)
        let results = TokenizerSelfTest.run(cases: cases) { (try? tokenizer.encode($0, maxTokens: m.model.maxSeqLen).ids) ?? [] }
        XCTAssertTrue(TokenizerSelfTestReport(cases: results, error: nil).passed,
                      results.filter { !$0.passed }.map { "\($0.text.debugDescription): \($0.gotIds) vs \($0.expectedIds)" }.joined(separator: "\n"))
        XCTAssertTrue(cases.contains { $0.ids.count == m.model.maxSeqLen }, "one text is cut to the input limit")
    }

    func testEncoderSectionChecks() throws {
        var object = try encoderObject()
        var encoder = try XCTUnwrap(object["encoder"] as? [String: Any])
        encoder["outputs"] = ["logits"]
        object["encoder"] = encoder
        let outputs = try problems(object)
        XCTAssertTrue(outputs.contains { $0.hasPrefix("encoder/outputs") }, "\(outputs)")

        object = try encoderObject()
        encoder["outputs"] = ["embeddings"]
        encoder["task"] = "summarization"
        object["encoder"] = encoder
        XCTAssertEqual(try problems(object), ["encoder/task summarization is unknown"])

        object = try encoderObject()
        var artifacts = try XCTUnwrap(object["artifacts"] as? [[String: Any]])
        var selfTest = try XCTUnwrap(artifacts[0]["self_test"] as? [String: Any])
        var cases = try XCTUnwrap(selfTest["cases"] as? [[String: Any]])
        cases[0]["token_type_ids"] = [0]
        selfTest["cases"] = cases
        artifacts[0]["self_test"] = selfTest
        object["artifacts"] = artifacts
        let typeIds = try problems(object)
        XCTAssertTrue(typeIds.contains { $0.contains("self_test/cases/0/token_type_ids") }, "\(typeIds)")
    }

    /// A decoder's golden cases decode as a decoder's; an encoder's as an encoder's: the shape is
    /// decided by the manifest's encoder section, not guessed.
    func testTheEncoderSectionDecidesTheCaseShape() throws {
        var object = try encoderObject()
        object.removeValue(forKey: "encoder")
        XCTAssertThrowsError(try Manifest.decode(Fixtures.encode(object))) { error in
            guard case .some(.unreadable(let why)) = error as? ManifestError else { return XCTFail("\(error)") }
            XCTAssertTrue(why.contains("prompt_ids"), why)
        }
        let decoder = try Fixtures.manifest()
        XCTAssertTrue(decoder.artifacts.allSatisfy { $0.selfTest.encoderCases.isEmpty && !$0.selfTest.cases.isEmpty })
        XCTAssertNil(decoder.encoder)
        XCTAssertNil(decoder.encoderTask)
    }

    func testADecoderArtifactNeedsItsParityFigures() throws {
        var object = try Fixtures.manifestObject()
        var artifacts = try XCTUnwrap(object["artifacts"] as? [[String: Any]])
        var parity = try XCTUnwrap(artifacts[0]["parity"] as? [String: Any])
        parity.removeValue(forKey: "top1")
        artifacts[0]["parity"] = parity
        object["artifacts"] = artifacts
        XCTAssertEqual(try problems(object), ["artifacts/0/parity/top1 is missing"])
    }

    // MARK: Companions

    private func withCompanion(role: String = "search", task: String = "feature-extraction",
                               path: String = "search") throws -> [String: Any] {
        var object = try Fixtures.manifestObject()
        object["companions"] = [["role": role, "path": path, "task": task,
                                 "manifest_sha256": "7b94bbf8a7071f9ea58951357b7b60af8ce0200d3f7887c479a3fd13b86ab989"]]
        return object
    }

    func testCompanionsAreRead() throws {
        let m = try Manifest.decode(Fixtures.encode(withCompanion()))
        XCTAssertEqual(m.companions, [Manifest.Companion(role: "search", path: "search", task: "feature-extraction",
                                                         manifestSha256: "7b94bbf8a7071f9ea58951357b7b60af8ce0200d3f7887c479a3fd13b86ab989")])
        XCTAssertNil(m.encoder, "the decoder bundle stays a decoder")
        // Encoded back under the schema's keys.
        let again = try XCTUnwrap(JSONSerialization.jsonObject(with: JSONEncoder().encode(m)) as? [String: Any])
        let companions = try XCTUnwrap(again["companions"] as? [[String: Any]])
        XCTAssertEqual(Set(companions[0].keys), ["role", "path", "task", "manifest_sha256"])
        XCTAssertNil(try Fixtures.manifest().companions)
    }

    func testCompanionChecks() throws {
        XCTAssertEqual(try problems(withCompanion(role: "classify")),
                       ["companions/0: role classify does not serve task feature-extraction (expected search)"])
        XCTAssertEqual(try problems(withCompanion(task: "translation")), ["companions/0/task translation is unknown"])
        XCTAssertFalse(try problems(withCompanion(path: "../search")).isEmpty)
        var object = try withCompanion()
        var companions = try XCTUnwrap(object["companions"] as? [[String: Any]])
        companions.append(companions[0])
        object["companions"] = companions
        XCTAssertEqual(try problems(object), ["companions/1/path search is listed twice"])
    }

    // MARK: The encoder golden rule

    private func embeddingCase() throws -> Manifest.EncoderSelfTestCase {
        try XCTUnwrap(encoderManifest().artifact(format: "coreml")?.selfTest.encoderCases.first)
    }

    func testAnEmbeddingPassesAtTheArtifactsCosineMin() throws {
        let c = try embeddingCase()
        let host = c.expected[0].map { Float($0) }
        // The host's own output, and a scaled copy (the cosine does not see the scale).
        for got in [host, host.map { $0 * 3 }] {
            let r = EncoderSelfTest.compare(c, outputs: [got], task: .featureExtraction, labelCount: 0, cosineMin: 1.0)
            XCTAssertTrue(r.passed, r.summary)
        }
        // A small error passes a low cosine_min, not cosine_min 1.0 (rounded) less the slack.
        var noisy = host
        for i in stride(from: 0, to: noisy.count, by: 2) { noisy[i] += 0.01 }
        let cosine = try EncoderMath.cosine(noisy, host)
        XCTAssertLessThan(cosine, 1 - EncoderSelfTest.cosineSlack)
        XCTAssertFalse(EncoderSelfTest.compare(c, outputs: [noisy], task: .featureExtraction, labelCount: 0, cosineMin: 1.0).passed)
        XCTAssertTrue(EncoderSelfTest.compare(c, outputs: [noisy], task: .featureExtraction, labelCount: 0, cosineMin: cosine).passed)
        let flipped = EncoderSelfTest.compare(c, outputs: [host.map { -$0 }], task: .featureExtraction, labelCount: 0, cosineMin: 0.99)
        XCTAssertFalse(flipped.passed)
        XCTAssertTrue(flipped.summary.hasPrefix("FAIL text 0: cosine -1.000000"), flipped.summary)
    }

    func testOutputsOfTheWrongShapeFail() throws {
        let c = try embeddingCase()
        let host = c.expected[0].map { Float($0) }
        XCTAssertFalse(EncoderSelfTest.compare(c, outputs: [], task: .featureExtraction, labelCount: 0, cosineMin: 0.9).passed)
        XCTAssertFalse(EncoderSelfTest.compare(c, outputs: [host, host], task: .featureExtraction, labelCount: 0, cosineMin: 0.9).passed)
        let short = EncoderSelfTest.compare(c, outputs: [Array(host.dropLast())], task: .featureExtraction, labelCount: 0, cosineMin: 0.9)
        XCTAssertFalse(short.passed)
        XCTAssertTrue(short.detail.contains("383 values"), short.detail)
        XCTAssertFalse(EncoderSelfTest.compare(c, outputs: [host.map { _ in Float.nan }], task: .featureExtraction,
                                               labelCount: 0, cosineMin: 0.9).passed, "NaN fails")
    }

    func testLabelsMustHaveTheSameArgmax() {
        let c = Manifest.EncoderSelfTestCase(name: "review", inputIds: [2, 9, 3], tokenTypeIds: [0, 0, 0],
                                             expected: [[0.1, 2.0, -1]], span: nil)
        XCTAssertTrue(EncoderSelfTest.compare(c, outputs: [[0.2, 1.5, -3]], task: .sequenceClassification, labelCount: 3, cosineMin: nil).passed)
        XCTAssertFalse(EncoderSelfTest.compare(c, outputs: [[3, 1.5, -3]], task: .sequenceClassification, labelCount: 3, cosineMin: nil).passed)

        // Token classification: [T = 3, L = 2] flattened; every token's label must agree.
        let tokens = Manifest.EncoderSelfTestCase(name: "ner", inputIds: [2, 9, 3], tokenTypeIds: [0, 0, 0],
                                                  expected: [[1, 0, 0, 1, 1, 0]], span: nil)
        XCTAssertTrue(EncoderSelfTest.compare(tokens, outputs: [[5, 1, -1, 0, 2, 1]], task: .tokenClassification, labelCount: 2, cosineMin: nil).passed)
        let wrong = EncoderSelfTest.compare(tokens, outputs: [[5, 1, 1, 0, 2, 1]], task: .tokenClassification, labelCount: 2, cosineMin: nil)
        XCTAssertFalse(wrong.passed)
        XCTAssertTrue(wrong.detail.contains("2 of 3"), wrong.detail)
        XCTAssertFalse(EncoderSelfTest.compare(tokens, outputs: [[5, 1, -1, 0, 2, 1]], task: .tokenClassification, labelCount: 4, cosineMin: nil).passed,
                       "6 logits are not 3 tokens × 4 labels")
    }

    /// Question answering on the exporter's span vectors: the case's passage is marked by its type
    /// ids ([CLS] question [SEP] passage [SEP]), and the best span must be the manifest's.
    func testAnswersMustHaveTheSameSpan() throws {
        let vectors = try XCTUnwrap(JSONSerialization.jsonObject(with: Fixtures.data("encoder_vectors")) as? [String: Any])
        let spans = try XCTUnwrap((vectors["spans"] as? [String: Any])?["cases"] as? [[String: Any]])
        for s in spans {
            let start = try XCTUnwrap(s["start_logits"] as? [NSNumber]).map(\.doubleValue)
            let end = try XCTUnwrap(s["end_logits"] as? [NSNumber]).map(\.doubleValue)
            let passage = try XCTUnwrap(s["passage"] as? [NSNumber]).map(\.intValue)
            let span = try XCTUnwrap(s["span"] as? [NSNumber]).map(\.intValue)
            let typeIds = start.indices.map { $0 >= passage[0] && $0 <= passage[1] + 1 ? 1 : 0 }
            XCTAssertEqual(EncoderSelfTest.passageRange(typeIds: typeIds), passage[0]...passage[1])
            let c = Manifest.EncoderSelfTestCase(name: "qa", inputIds: Array(repeating: 5, count: start.count),
                                                 tokenTypeIds: typeIds, expected: [start, end], span: span)
            let got = [start.map { Float($0) }, end.map { Float($0) }]
            let same = EncoderSelfTest.compare(c, outputs: got, task: .questionAnswering, labelCount: 0, cosineMin: nil)
            XCTAssertTrue(same.passed, same.summary)
            // Another token's logits far above the rest move the answer.
            guard passage[0] < passage[1] else { continue }
            var moved = got
            let other = span[0] == passage[0] ? passage[1] : passage[0]
            moved[0][other] = 100
            moved[1][other] = 100
            XCTAssertFalse(EncoderSelfTest.compare(c, outputs: moved, task: .questionAnswering, labelCount: 0, cosineMin: nil).passed)
        }
        XCTAssertNil(EncoderSelfTest.passageRange(typeIds: [0, 0, 0]))
    }

    func testTheRunnerRunsEachCaseAloneAndReportsFailures() throws {
        let cases = try XCTUnwrap(encoderManifest().artifact(format: "coreml")?.selfTest.encoderCases)
        var seen: [[Int]] = []
        let results = EncoderSelfTest.run(cases: cases, task: .featureExtraction, labelCount: 0, cosineMin: 0.999999,
                                          maxSeqLen: 256, vocabSize: 6144) { ids, typeIds in
            seen.append(ids)
            XCTAssertEqual(typeIds.count, ids.count)
            let c = try XCTUnwrap(cases.first { $0.inputIds == ids })
            return [c.expected[0].map { Float($0) }]
        }
        XCTAssertEqual(seen, cases.map(\.inputIds))
        let report = EncoderSelfTestReport(runtime: "Core ML", artifactPath: "coreml/model.mlpackage", cases: results, seconds: 1, error: nil)
        XCTAssertTrue(report.passed)
        XCTAssertEqual(report.headline, "PASS: 3 of 3 golden cases")

        struct Boom: LocalizedError { var errorDescription: String? { "runtime exploded" } }
        let failed = EncoderSelfTest.run(cases: cases, task: .featureExtraction, labelCount: 0, cosineMin: 0.9,
                                         maxSeqLen: 256, vocabSize: 6144) { _, _ in throw Boom() }
        XCTAssertEqual(failed.first?.error, "runtime exploded")
        XCTAssertEqual(EncoderSelfTestReport(runtime: "x", artifactPath: "y", cases: failed, seconds: 0, error: nil).headline,
                       "FAIL: 0 of 3 golden cases")

        var called = false
        let unrunnable = EncoderSelfTest.run(cases: cases, task: .featureExtraction, labelCount: 0, cosineMin: 0.9,
                                             maxSeqLen: 4, vocabSize: 6144) { _, _ in
            called = true
            return []
        }
        XCTAssertFalse(called, "cases longer than max_seq_len are not run")
        XCTAssertTrue(unrunnable.allSatisfy { !$0.passed && $0.error != nil })
        XCTAssertNotNil(EncoderSelfTest.unrunnableReason(for: cases[0], maxSeqLen: 256, vocabSize: 10), "ids outside the vocabulary")
    }
}
