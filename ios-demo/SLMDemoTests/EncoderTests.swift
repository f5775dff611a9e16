import XCTest

/// The encoder screens' tokenizer and math against what slm-export computes
/// (Fixtures/encoder_vectors.json and Fixtures/encoder_tokenizer.json, the built-in encoder
/// student's tokenizer.json; written by tests/encoder_vectors.py, which the Python suite keeps
/// current). The same properties as the Android app's EncoderTest.kt, on the same vectors.
final class EncoderTests: XCTestCase {
    private var vectors: [String: Any] = [:]
    private var tokenizerJSON = Data()

    override func setUpWithError() throws {
        vectors = try XCTUnwrap(JSONSerialization.jsonObject(with: Fixtures.data("encoder_vectors")) as? [String: Any])
        let name = try XCTUnwrap(vectors["tokenizer"] as? String)
        tokenizerJSON = try Fixtures.data((name as NSString).deletingPathExtension)
    }

    private var maxTokens: Int { (vectors["max_tokens"] as? NSNumber)?.intValue ?? 0 }

    private func ints(_ value: Any?) -> [Int] { (value as? [NSNumber])?.map(\.intValue) ?? [] }
    private func floats(_ value: Any?) -> [Float] { (value as? [NSNumber])?.map(\.floatValue) ?? [] }
    private func doubles(_ value: Any?) -> [Double] { (value as? [NSNumber])?.map(\.doubleValue) ?? [] }
    private func list(_ value: Any?) -> [[String: Any]] { value as? [[String: Any]] ?? [] }

    /// The shipped tokenizer, or one with a normalizer variant (the cased one) over its vocabulary.
    private func makeTokenizer(variant: [String: Any]?) throws -> WordPieceTokenizer {
        let shipped = try WordPieceTokenizer.fromTokenizerJSON(tokenizerJSON)
        guard let variant else { return shipped }
        var config = shipped.config
        config.cleanText = try XCTUnwrap(variant["clean_text"] as? Bool)
        config.handleChineseChars = try XCTUnwrap(variant["handle_chinese_chars"] as? Bool)
        config.stripAccents = try XCTUnwrap(variant["strip_accents"] as? Bool)
        config.lowercase = try XCTUnwrap(variant["lowercase"] as? Bool)
        let root = try XCTUnwrap(JSONSerialization.jsonObject(with: tokenizerJSON) as? [String: Any])
        let model = try XCTUnwrap(root["model"] as? [String: Any])
        return try WordPieceTokenizer(config: config, vocab: WordPieceTokenizer.vocabulary(model["vocab"]))
    }

    private func assertEncoding(_ expected: [String: Any], _ actual: WordPieceEncoding, _ what: String,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.ids, ints(expected["ids"]), "ids of \(what)", file: file, line: line)
        XCTAssertEqual(actual.typeIds, ints(expected["type_ids"]), "type ids of \(what)", file: file, line: line)
        let offsets = (expected["offsets"] as? [[NSNumber]])?.map { $0.map(\.intValue) } ?? []
        XCTAssertEqual(actual.offsets.map { [$0.start, $0.end] }, offsets, "offsets of \(what)", file: file, line: line)
        let sequences = (expected["sequence_ids"] as? [Any])?.map { ($0 as? NSNumber)?.intValue } ?? []
        XCTAssertEqual(actual.sequenceIds, sequences, "sequence ids of \(what)", file: file, line: line)
    }

    // MARK: WordPiece

    func testWordPieceEncodesEveryTextAsTheExporter() throws {
        var checked = 0
        for tokenization in list(vectors["tokenizations"]) {
            let variant = tokenization["variant"] as? [String: Any]
            let tokenizer = try makeTokenizer(variant: variant)
            for c in list(tokenization["single"]) {
                let text = try XCTUnwrap(c["text"] as? String)
                let encoding = try tokenizer.encode(text, maxTokens: maxTokens)
                assertEncoding(c, encoding, "\(text.debugDescription) (\(variant.map { "\($0)" } ?? "shipped"))")
                checked += 1
            }
        }
        XCTAssertGreaterThanOrEqual(checked, 30, "only \(checked) texts checked")
    }

    func testTheCasedVariantIsReallyDifferent() throws {
        let tokenizations = list(vectors["tokenizations"])
        let cased = try XCTUnwrap(tokenizations.first { $0["variant"] is [String: Any] })
        let variant = try XCTUnwrap(cased["variant"] as? [String: Any])
        XCTAssertEqual(variant["lowercase"] as? Bool, false)
        let text = "Hello, World! HELLO world."
        XCTAssertNotEqual(try makeTokenizer(variant: nil).encode(text, maxTokens: maxTokens).ids,
                          try makeTokenizer(variant: variant).encode(text, maxTokens: maxTokens).ids)
    }

    func testQuestionPassagePairsTruncateThePassageOnly() throws {
        for tokenization in list(vectors["tokenizations"]) {
            let tokenizer = try makeTokenizer(variant: tokenization["variant"] as? [String: Any])
            var truncated = 0
            for c in list(tokenization["pair"]) {
                let question = try XCTUnwrap(c["question"] as? String), passage = try XCTUnwrap(c["passage"] as? String)
                let encoding = try tokenizer.encodePair(question: question, passage: passage, maxTokens: maxTokens)
                assertEncoding(c, encoding, "question \(question.debugDescription)")
                if encoding.ids.count == maxTokens { truncated += 1 }
                // The passage is sequence 1, between the two separators.
                if let range = encoding.tokenRange(sequence: 1) {
                    XCTAssertNil(encoding.sequenceIds[range.upperBound + 1])
                    XCTAssertEqual(range.upperBound + 2, encoding.ids.count)
                }
            }
            XCTAssertEqual(truncated, 1, "the long passage is cut to the input limit")
        }
    }

    func testAQuestionThatLeavesNoRoomForThePassageIsRefused() throws {
        let tokenizer = try makeTokenizer(variant: nil)
        XCTAssertThrowsError(try tokenizer.encodePair(question: String(repeating: "why ", count: 200), passage: "A passage.",
                                                      maxTokens: maxTokens)) { error in
            XCTAssertTrue(error.localizedDescription.contains("must fit \(maxTokens)"), error.localizedDescription)
        }
        XCTAssertThrowsError(try tokenizer.encode("x", maxTokens: 2))
    }

    func testOtherTokenizersAreRefusedByName() throws {
        let json = try XCTUnwrap(String(data: tokenizerJSON, encoding: .utf8))
        func refusal(_ edited: String) -> String {
            XCTAssertNotEqual(edited, json, "the edit changed nothing")
            do {
                _ = try WordPieceTokenizer.fromTokenizerJSON(Data(edited.utf8))
                return "accepted"
            } catch {
                return error.localizedDescription
            }
        }
        let regex = try NSRegularExpression(pattern: #"("model": *\{ *"type": *)"WordPiece""#)
        let bpe = regex.stringByReplacingMatches(in: json, range: NSRange(json.startIndex..., in: json), withTemplate: "$1\"BPE\"")
        XCTAssertTrue(refusal(bpe).contains("BPE tokenizer"), refusal(bpe))
        let normalizer = json.replacingOccurrences(of: #""type": "BertNormalizer""#, with: #""type": "Lowercase""#)
        XCTAssertTrue(refusal(normalizer).contains("normalizer is Lowercase"), refusal(normalizer))
        let post = json.replacingOccurrences(of: #""type": "TemplateProcessing""#, with: #""type": "RobertaProcessing""#)
        XCTAssertTrue(refusal(post).contains("post-processor"), refusal(post))
        let cut = String(json.prefix(500))
        XCTAssertTrue(refusal(cut).contains("not valid JSON"), refusal(cut))
    }

    /// Swift's String == calls a composed and a decomposed "é" equal; tokenizers does not, and
    /// neither does the vocabulary lookup.
    func testVocabularyLookupIsByScalars() throws {
        var config = try makeTokenizer(variant: nil).config
        config.stripAccents = false
        config.lowercase = false
        let vocab: [[Unicode.Scalar]: Int] = [
            Array("[UNK]".unicodeScalars): 0, Array("[CLS]".unicodeScalars): 1, Array("[SEP]".unicodeScalars): 2,
            Array("caf\u{E9}".unicodeScalars): 3,
        ]
        let tokenizer = try WordPieceTokenizer(config: config, vocab: vocab)
        XCTAssertEqual(try tokenizer.encode("caf\u{E9}", maxTokens: 8).ids, [1, 3, 2])
        XCTAssertEqual(try tokenizer.encode("cafe\u{301}", maxTokens: 8).ids, [1, 0, 2], "decomposed: not in the vocabulary")
        // Offsets are UTF-16: the emoji takes two code units.
        let emoji = try tokenizer.encode("\u{1F642} caf\u{E9}", maxTokens: 8)
        XCTAssertEqual(emoji.offsets.map { [$0.start, $0.end] }, [[0, 0], [0, 2], [3, 7], [0, 0]])
    }

    // MARK: Math

    func testSearchRanksPassagesByCosineAsTheExporter() throws {
        let ranking = try XCTUnwrap(vectors["ranking"] as? [String: Any])
        let passages = try XCTUnwrap(ranking["passage_embeddings"] as? [Any]).map { floats($0) }
        let query = floats(ranking["query_embedding"])
        let ranked = try EncoderMath.rank(query: query, passages: passages)
        XCTAssertEqual(ranked.map(\.index), ints(ranking["order"]))
        let cosines = doubles(ranking["cosines"])
        for r in ranked {
            XCTAssertEqual(r.cosine, cosines[r.index], accuracy: 1e-6, "cosine of passage \(r.index)")
        }
        // The pooling normalizes (the manifest's pooling.normalize): the cosine is the dot product.
        XCTAssertEqual(ranking["normalized"] as? Bool, true)
        XCTAssertEqual(query.reduce(0.0) { $0 + Double($1) * Double($1) }, 1.0, accuracy: 1e-5)
    }

    func testCosineDoesNotDependOnScale() throws {
        let a: [Float] = [1, 2, 3], b: [Float] = [-2, 0.5, 4]
        XCTAssertEqual(try EncoderMath.cosine(a, b), try EncoderMath.cosine(a.map { $0 * 40 }, b), accuracy: 1e-12)
        XCTAssertEqual(try EncoderMath.cosine([0, 0, 0], b), 0)
        XCTAssertThrowsError(try EncoderMath.cosine([1, 2], b))
    }

    func testRankingTiesKeepThePassagesOrder() throws {
        let ranked = try EncoderMath.rank(query: [1, 0], passages: [[0, 1], [1, 0], [2, 0], [0, 1]])
        XCTAssertEqual(ranked.map(\.index), [1, 2, 0, 3])
    }

    func testLabelScoresAreTheExportersSoftmaxBestFirst() throws {
        for c in list(vectors["softmax"]) {
            let expected = doubles(c["probabilities"])
            let labels = expected.indices.map { "label \($0)" }
            let scores = try EncoderMath.labelScores(logits: floats(c["logits"]), labels: labels)
            for s in scores {
                let index = try XCTUnwrap(labels.firstIndex(of: s.label))
                let p = expected[index]
                XCTAssertLessThanOrEqual(abs(s.score - p), 1e-6 * max(p, 1e-30) + 1e-12, "\(s.label): \(s.score) vs \(p)")
            }
            let best = try XCTUnwrap(expected.indices.max { expected[$0] < expected[$1] })
            XCTAssertEqual(scores.first?.label, labels[best])
        }
        XCTAssertThrowsError(try EncoderMath.labelScores(logits: [1, 2], labels: ["a"]))
    }

    func testAnswerSpansAreTheExportersBestSpan() throws {
        let spans = try XCTUnwrap(vectors["spans"] as? [String: Any])
        XCTAssertEqual((spans["max_answer_tokens"] as? NSNumber)?.intValue, EncoderMath.maxAnswerTokens)
        let cases = list(spans["cases"])
        XCTAssertFalse(cases.isEmpty)
        for c in cases {
            let passage = ints(c["passage"])
            let span = try EncoderMath.bestSpan(start: floats(c["start_logits"]), end: floats(c["end_logits"]),
                                                first: passage[0], last: passage[1])
            XCTAssertEqual([span.start, span.end], ints(c["span"]))
        }
    }

    // MARK: The built-in texts

    /// The Search screen's passages are the exporter's file itself (project.yml packages
    /// ../exporter/data/encoder_texts.json); read here from the checkout.
    func testTheSearchScreensPassagesAreTheExportersSet() throws {
        let repository = URL(fileURLWithPath: #filePath)  // ios-demo/SLMDemoTests/EncoderTests.swift
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let url = repository.appendingPathComponent("exporter/data").appendingPathComponent(EncoderTexts.fileName)
        let texts = try EncoderTexts.parse(Data(contentsOf: url))
        XCTAssertEqual(texts.passages, vectors["passages"] as? [String])
        let examples = list(vectors["qa_examples"]).map {
            EncoderTexts.QAExample(question: $0["question"] as? String ?? "", context: $0["context"] as? String ?? "")
        }
        XCTAssertEqual(texts.qaExamples, examples)
        XCTAssertFalse(texts.qaExamples.isEmpty)
    }

    func testGraphInputsFollowTheManifestOrder() throws {
        XCTAssertEqual(try EncoderInputs.rows(names: ["input_ids", "attention_mask", "token_type_ids"], ids: [2, 7, 3], typeIds: [0, 0, 0]),
                       [[2, 7, 3], [1, 1, 1], [0, 0, 0]])
        XCTAssertEqual(try EncoderInputs.rows(names: ["input_ids", "attention_mask"], ids: [2, 3], typeIds: [0, 1]), [[2, 3], [1, 1]])
        XCTAssertThrowsError(try EncoderInputs.rows(names: ["input_ids", "position_ids"], ids: [2], typeIds: [0]))
        XCTAssertThrowsError(try EncoderInputs.rows(names: ["input_ids"], ids: [2, 3], typeIds: [0]))
    }
}
