import Foundation

/// One encoder golden case on the phone.
struct EncoderCaseResult: Equatable, Identifiable {
    /// Position of the case in the manifest.
    var index: Int
    var name: String
    var passed: Bool
    /// What was compared, e.g. "cosine 0.999998 to the expected embedding (at least 0.999990)".
    var detail: String
    /// Set when the case could not run (does not fit, runtime error); counts as a failure.
    var error: String?

    var id: Int { index }

    var summary: String {
        if let error { return "\(name): not run (\(error))" }
        return "\(passed ? "PASS" : "FAIL") \(name): \(detail)"
    }
}

/// One runtime's encoder golden self-test over one artifact.
struct EncoderSelfTestReport: Equatable {
    var runtime: String
    var artifactPath: String
    var cases: [EncoderCaseResult]
    var seconds: Double
    /// Set when the runtime could not load or run at all.
    var error: String?

    var passed: Bool { error == nil && cases.allSatisfy { $0.passed && $0.error == nil } }

    var headline: String {
        if let error { return "FAIL: \(error)" }
        if cases.isEmpty { return "PASS (the manifest has no golden cases for this artifact)" }
        return "\(passed ? "PASS" : "FAIL"): \(cases.filter(\.passed).count) of \(cases.count) golden cases"
    }
}

/// The encoder golden rule (the artifact's `self_test.rule`; exporter/encoder_pipeline.py
/// `self_test`): run each case alone, no padding, attention mask all ones; then
///
/// - embeddings: cosine to the expected embedding at least the artifact's `parity.cosine_min`;
/// - labels: the same argmax (per token for token classification);
/// - question answering: the same best span (start, end token) inside the passage.
///
/// Pure logic: the runtimes only produce the outputs.
enum EncoderSelfTest {
    /// Allowed below `cosine_min`: the manifest rounds it to 6 decimals (an fp32 artifact's is
    /// written as 1.0), and a phone's kernels sum in another order than the host's. The same
    /// slack as the Android app (EncoderGolden.COSINE_SLACK).
    static let cosineSlack = 1e-5
    /// When an embedding artifact's parity has no cosine_min (not written by slm-export 0.1).
    static let defaultCosineMin = 0.99

    /// Why a case cannot be judged on this bundle, or nil.
    static func unrunnableReason(for c: Manifest.EncoderSelfTestCase, maxSeqLen: Int, vocabSize: Int) -> String? {
        if c.inputIds.isEmpty { return "no input ids" }
        if c.inputIds.count > maxSeqLen { return "\(c.inputIds.count) ids do not fit max_seq_len \(maxSeqLen)" }
        if c.tokenTypeIds.count != c.inputIds.count {
            return "\(c.tokenTypeIds.count) token type ids for \(c.inputIds.count) tokens"
        }
        if let bad = c.inputIds.first(where: { $0 < 0 || $0 >= vocabSize }) {
            return "id \(bad) is outside the vocabulary (\(vocabSize))"
        }
        return nil
    }

    /// The passage of a question/passage pair: [CLS] question [SEP] passage [SEP], the passage
    /// being the tokens of segment 1 but the closing [SEP] (as the exporter's sequence ids give
    /// them). nil when the type ids mark no passage.
    static func passageRange(typeIds: [Int]) -> ClosedRange<Int>? {
        guard let first = typeIds.firstIndex(of: 1), let closing = typeIds.lastIndex(of: 1), closing - 1 >= first else {
            return nil
        }
        return first...(closing - 1)
    }

    /// Judges one case's outputs (in `encoder.outputs` order, flattened).
    static func compare(_ c: Manifest.EncoderSelfTestCase, outputs: [[Float]], task: EncoderTask,
                        labelCount: Int, cosineMin: Double?, index: Int = 0) -> EncoderCaseResult {
        func result(_ passed: Bool, _ detail: String) -> EncoderCaseResult {
            EncoderCaseResult(index: index, name: c.name, passed: passed, detail: detail, error: nil)
        }
        guard outputs.count == c.expected.count else {
            return result(false, "the runtime gave \(outputs.count) outputs, the manifest expects \(c.expected.count)")
        }
        for (i, (got, want)) in zip(outputs, c.expected).enumerated() where got.count != want.count {
            return result(false, "output \(i) has \(got.count) values, the manifest expects \(want.count)")
        }
        let expected = c.expected.map { row in row.map { Float($0) } }
        guard let first = outputs.first, let firstExpected = expected.first, !first.isEmpty else {
            return result(false, "the runtime gave no values")
        }

        switch task {
        case .featureExtraction:
            let minimum = cosineMin ?? defaultCosineMin
            guard let cosine = try? EncoderMath.cosine(first, firstExpected) else {
                return result(false, "embedding sizes differ")
            }
            // NaN fails: the comparison is false.
            let floor = minimum - cosineSlack
            let passed = cosine >= floor
            return result(passed, String(format: "cosine %.6f to the host's embedding (needs %.6f: cosine_min %.6f%@ less %.0e)",
                                         cosine, floor, minimum, cosineMin == nil ? ", the default," : "", cosineSlack))

        case .sequenceClassification:
            let got = EncoderMath.argmax(first), want = EncoderMath.argmax(firstExpected)
            return result(got == want && got != nil,
                          got == want ? "label \(want ?? -1), as expected" : "label \(got ?? -1), expected \(want ?? -1)")

        case .tokenClassification:
            let tokens = c.inputIds.count
            let labels = labelCount > 0 ? labelCount : firstExpected.count / max(tokens, 1)
            guard labels > 0, firstExpected.count == tokens * labels else {
                return result(false, "\(firstExpected.count) logits are not \(tokens) tokens × \(labels) labels")
            }
            var mismatched: [Int] = []
            for t in 0..<tokens {
                let row = (t * labels)..<((t + 1) * labels)
                if EncoderMath.argmax(first[row]) != EncoderMath.argmax(firstExpected[row]) { mismatched.append(t) }
            }
            return result(mismatched.isEmpty, mismatched.isEmpty
                ? "all \(tokens) tokens' labels as expected"
                : "\(tokens - mismatched.count) of \(tokens) tokens' labels as expected (differ at \(mismatched.prefix(8).map(String.init).joined(separator: ", ")))")

        case .questionAnswering:
            guard outputs.count == 2, expected.count == 2 else { return result(false, "expected start and end logits") }
            let passage = passageRange(typeIds: c.tokenTypeIds)
            // Without segments the passage is unknown: the whole input between [CLS] and the last
            // token, for the phone's logits and the host's alike.
            let range = passage ?? (first.count >= 3 ? 1...(first.count - 2) : 0...(first.count - 1))
            guard let got = try? EncoderMath.bestSpan(start: outputs[0], end: outputs[1], first: range.lowerBound, last: range.upperBound),
                  let host = try? EncoderMath.bestSpan(start: expected[0], end: expected[1], first: range.lowerBound, last: range.upperBound) else {
                return result(false, "the logits do not cover the passage \(range.lowerBound)...\(range.upperBound)")
            }
            var want = [host.start, host.end]
            if passage != nil, let span = c.span, span.count == 2 { want = span }
            let passed = [got.start, got.end] == want
            return result(passed, passed
                ? "span \(want[0])...\(want[1]), as expected"
                : "span \(got.start)...\(got.end), expected \(want[0])...\(want[1])")
        }
    }

    static func notRun(_ c: Manifest.EncoderSelfTestCase, reason: String, index: Int) -> EncoderCaseResult {
        EncoderCaseResult(index: index, name: c.name, passed: false, detail: "", error: reason)
    }

    /// Runs every case through `forward(ids, typeIds)` (one text, the outputs in
    /// `encoder.outputs` order).
    static func run(cases: [Manifest.EncoderSelfTestCase], task: EncoderTask, labelCount: Int, cosineMin: Double?,
                    maxSeqLen: Int, vocabSize: Int,
                    forward: (_ ids: [Int], _ typeIds: [Int]) throws -> [[Float]]) -> [EncoderCaseResult] {
        cases.enumerated().map { (index, c) -> EncoderCaseResult in
            if let reason = unrunnableReason(for: c, maxSeqLen: maxSeqLen, vocabSize: vocabSize) {
                return notRun(c, reason: reason, index: index)
            }
            do {
                let outputs = try forward(c.inputIds, c.tokenTypeIds)
                return compare(c, outputs: outputs, task: task, labelCount: labelCount, cosineMin: cosineMin, index: index)
            } catch {
                return notRun(c, reason: Readable.message(for: error), index: index)
            }
        }
    }
}
