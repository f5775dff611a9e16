import Foundation

/// The golden self-test the app runs once after loading a new bundle (docs/MANIFEST.md,
/// `artifacts[].self_test` and `tokenizer.self_test`). Pure logic; the runtimes only produce ids.
struct GoldenCaseResult: Equatable, Identifiable {
    /// Position of the case in the manifest (names need not be unique).
    var index: Int
    var name: String
    var promptIds: [Int]
    var expectedIds: [Int]
    var generatedIds: [Int]
    var mustMatch: Int
    /// Leading ids equal in expected and generated.
    var matchedPrefix: Int
    /// Set when the case could not run (e.g. does not fit the cache); counts as a failure.
    var error: String?

    var id: Int { index }
    var passed: Bool { error == nil && matchedPrefix >= mustMatch }

    var summary: String {
        if let error { return "\(name): not run (\(error))" }
        let verdict = passed ? "PASS" : "FAIL"
        return "\(verdict) \(name): \(matchedPrefix) of \(expectedIds.count) ids match, \(mustMatch) required"
    }
}

struct TokenizerCaseResult: Equatable, Identifiable {
    /// Position of the case in the manifest: texts need not be unique to Swift, whose `==` treats
    /// canonically equivalent strings ("é" composed and decomposed) as equal.
    var index: Int
    var text: String
    var expectedIds: [Int]
    var gotIds: [Int]

    var id: Int { index }
    var passed: Bool { expectedIds == gotIds }
    /// Index of the first differing id, or nil when equal.
    var firstDifference: Int? {
        passed ? nil : GoldenSelfTest.leadingMatch(expectedIds, gotIds)
    }
}

/// One runtime's golden self-test over one artifact.
struct SelfTestReport: Equatable {
    var runtime: String
    var artifactPath: String
    var cases: [GoldenCaseResult]
    var seconds: Double
    /// Set when the runtime could not load or run at all.
    var error: String?

    var passed: Bool { error == nil && cases.allSatisfy(\.passed) }

    var headline: String {
        if let error { return "FAIL: \(error)" }
        if cases.isEmpty { return "PASS (the manifest has no golden cases for this artifact)" }
        return "\(passed ? "PASS" : "FAIL"): \(cases.filter(\.passed).count) of \(cases.count) golden cases"
    }
}

/// The bundle's tokenizer check: swift-transformers must give the ids the exporter's tokenizer
/// gave (`tokenizer.self_test`). It concerns the Core ML path, which tokenizes in Swift;
/// ExecuTorch's runner tokenizes tokenizer.json in C++.
struct TokenizerSelfTestReport: Equatable {
    var cases: [TokenizerCaseResult]
    var error: String?

    var passed: Bool { error == nil && cases.allSatisfy(\.passed) }

    var headline: String {
        if let error { return "FAIL: \(error)" }
        if cases.isEmpty { return "not part of this bundle (the manifest has no tokenizer/self_test)" }
        return "\(passed ? "PASS" : "FAIL"): \(cases.filter(\.passed).count) of \(cases.count) strings encode to the expected ids"
    }
}

enum GoldenSelfTest {
    static func leadingMatch(_ a: [Int], _ b: [Int]) -> Int {
        zip(a, b).prefix(while: { $0.0 == $0.1 }).count
    }

    /// How many ids to generate for a case: all expected ids, as far as the cache allows.
    static func tokensToGenerate(for c: Manifest.SelfTestCase, maxSeqLen: Int) -> Int {
        StatefulPlan.maxNewTokens(promptLength: c.promptIds.count, requested: c.expectedIds.count, maxSeqLen: maxSeqLen)
    }

    /// Why a case cannot be judged on this bundle, or nil.
    static func unrunnableReason(for c: Manifest.SelfTestCase, maxSeqLen: Int, vocabSize: Int) -> String? {
        if c.promptIds.isEmpty { return "empty prompt" }
        if c.promptIds.count > maxSeqLen - 1 { return "prompt of \(c.promptIds.count) ids does not fit max_seq_len \(maxSeqLen)" }
        if c.mustMatch > c.expectedIds.count { return "must_match \(c.mustMatch) exceeds the \(c.expectedIds.count) expected ids" }
        if tokensToGenerate(for: c, maxSeqLen: maxSeqLen) < c.mustMatch {
            return "max_seq_len \(maxSeqLen) leaves room for fewer than must_match \(c.mustMatch) ids"
        }
        if let bad = (c.promptIds + c.expectedIds).first(where: { $0 < 0 || $0 >= vocabSize }) {
            return "id \(bad) is outside the vocabulary (\(vocabSize))"
        }
        return nil
    }

    static func evaluate(_ c: Manifest.SelfTestCase, generated: [Int], index: Int = 0) -> GoldenCaseResult {
        GoldenCaseResult(index: index, name: c.name, promptIds: c.promptIds, expectedIds: c.expectedIds, generatedIds: generated,
                         mustMatch: c.mustMatch, matchedPrefix: leadingMatch(c.expectedIds, generated), error: nil)
    }

    static func notRun(_ c: Manifest.SelfTestCase, reason: String, index: Int = 0) -> GoldenCaseResult {
        GoldenCaseResult(index: index, name: c.name, promptIds: c.promptIds, expectedIds: c.expectedIds, generatedIds: [],
                         mustMatch: c.mustMatch, matchedPrefix: 0, error: reason)
    }

    /// Runs every case through `generate(promptIds, count)` (greedy ids from a fresh sequence).
    static func run(cases: [Manifest.SelfTestCase], maxSeqLen: Int, vocabSize: Int,
                    generate: (_ promptIds: [Int], _ count: Int) throws -> [Int]) -> [GoldenCaseResult] {
        cases.enumerated().map { (index, c) -> GoldenCaseResult in
            if let reason = unrunnableReason(for: c, maxSeqLen: maxSeqLen, vocabSize: vocabSize) {
                return notRun(c, reason: reason, index: index)
            }
            do {
                let generated = try generate(c.promptIds, tokensToGenerate(for: c, maxSeqLen: maxSeqLen))
                return evaluate(c, generated: generated, index: index)
            } catch {
                return notRun(c, reason: error.localizedDescription, index: index)
            }
        }
    }
}

enum TokenizerSelfTest {
    static func run(cases: [Manifest.TokenizerCase], encode: (String) -> [Int]) -> [TokenizerCaseResult] {
        cases.enumerated().map { (index, c) -> TokenizerCaseResult in
            TokenizerCaseResult(index: index, text: c.text, expectedIds: c.ids, gotIds: encode(c.text))
        }
    }
}

/// Remembers self-test reports per bundle so the test runs once per new bundle.
enum SelfTestStore {
    static func key(manifestDigest: String, runtime: String) -> String {
        "selftest.\(manifestDigest).\(runtime)"
    }

    static func passedBefore(manifestDigest: String, runtime: String, defaults: UserDefaults = .standard) -> Bool? {
        defaults.object(forKey: key(manifestDigest: manifestDigest, runtime: runtime)) as? Bool
    }

    static func record(_ passed: Bool, manifestDigest: String, runtime: String, defaults: UserDefaults = .standard) {
        defaults.set(passed, forKey: key(manifestDigest: manifestDigest, runtime: runtime))
    }
}
