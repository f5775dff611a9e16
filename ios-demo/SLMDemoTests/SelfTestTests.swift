import XCTest

final class SelfTestTests: XCTestCase {
    private func fixtureCase() throws -> Manifest.SelfTestCase {
        try XCTUnwrap(Fixtures.manifest().artifact(format: "coreml")?.selfTest.cases.first)
    }

    func testLeadingMatch() {
        XCTAssertEqual(GoldenSelfTest.leadingMatch([1, 2, 3], [1, 2, 4]), 2)
        XCTAssertEqual(GoldenSelfTest.leadingMatch([1, 2, 3], [1, 2, 3, 4]), 3)
        XCTAssertEqual(GoldenSelfTest.leadingMatch([1], [2]), 0)
        XCTAssertEqual(GoldenSelfTest.leadingMatch([], [2]), 0)
    }

    func testFixtureCaseGeneratesAllExpectedIds() throws {
        let c = try fixtureCase()
        XCTAssertNil(GoldenSelfTest.unrunnableReason(for: c, maxSeqLen: 64, vocabSize: 4096))
        XCTAssertEqual(GoldenSelfTest.tokensToGenerate(for: c, maxSeqLen: 64), 16)
        XCTAssertEqual(GoldenSelfTest.tokensToGenerate(for: c, maxSeqLen: 32), 4, "the cache bounds the count")
    }

    func testPassesWhenThePhoneReproducesTheExpectedIds() throws {
        let c = try fixtureCase()
        var requested: [(prompt: [Int], count: Int)] = []
        let results = GoldenSelfTest.run(cases: [c], maxSeqLen: 64, vocabSize: 4096) { prompt, count in
            requested.append((prompt, count))
            return Array(c.expectedIds.prefix(count))
        }
        XCTAssertEqual(requested.count, 1)
        XCTAssertEqual(requested.first?.prompt, c.promptIds)
        XCTAssertEqual(requested.first?.count, 16)
        let result = try XCTUnwrap(results.first)
        XCTAssertTrue(result.passed)
        XCTAssertEqual(result.matchedPrefix, 16)
        XCTAssertTrue(result.summary.hasPrefix("PASS code"), result.summary)
    }

    /// Only the first must_match ids are binding: later ids may differ (they were close calls on
    /// the host), earlier ones may not.
    func testOnlyTheFirstMustMatchIdsAreBinding() throws {
        var c = try fixtureCase()
        c.mustMatch = 3
        var later = c.expectedIds
        later[3] += 1
        XCTAssertTrue(GoldenSelfTest.evaluate(c, generated: later).passed)
        var early = c.expectedIds
        early[2] += 1
        let failed = GoldenSelfTest.evaluate(c, generated: early)
        XCTAssertFalse(failed.passed)
        XCTAssertEqual(failed.matchedPrefix, 2)
        XCTAssertTrue(failed.summary.hasPrefix("FAIL code: 2 of 16 ids match, 3 required"), failed.summary)
    }

    func testRuntimeErrorsFailTheCase() throws {
        struct Boom: LocalizedError { var errorDescription: String? { "runtime exploded" } }
        let results = GoldenSelfTest.run(cases: [try fixtureCase()], maxSeqLen: 64, vocabSize: 4096) { _, _ in throw Boom() }
        XCTAssertEqual(results.first?.error, "runtime exploded")
        XCTAssertEqual(results.first?.passed, false)
    }

    func testCasesThatCannotRunOnThisBundle() throws {
        var c = try fixtureCase()
        XCTAssertNotNil(GoldenSelfTest.unrunnableReason(for: c, maxSeqLen: 28, vocabSize: 4096), "prompt does not fit")
        XCTAssertNotNil(GoldenSelfTest.unrunnableReason(for: c, maxSeqLen: 64, vocabSize: 500), "ids outside the vocabulary")
        c.mustMatch = 17
        XCTAssertNotNil(GoldenSelfTest.unrunnableReason(for: c, maxSeqLen: 64, vocabSize: 4096), "must_match > expected")
        var called = false
        let results = GoldenSelfTest.run(cases: [c], maxSeqLen: 64, vocabSize: 4096) { _, _ in
            called = true
            return []
        }
        XCTAssertFalse(called)
        XCTAssertEqual(results.first?.passed, false)
    }

    func testReportVerdicts() throws {
        let c = try fixtureCase()
        let pass = GoldenSelfTest.evaluate(c, generated: c.expectedIds)
        let fail = GoldenSelfTest.evaluate(c, generated: [0])
        var report = SelfTestReport(runtime: "Core ML", artifactPath: "coreml/model.mlpackage", cases: [pass], seconds: 1, error: nil)
        XCTAssertTrue(report.passed)
        XCTAssertEqual(report.headline, "PASS: 1 of 1 golden cases")
        report.cases.append(fail)
        XCTAssertFalse(report.passed)
        XCTAssertEqual(report.headline, "FAIL: 1 of 2 golden cases")
        report.error = "could not load"
        XCTAssertEqual(report.headline, "FAIL: could not load")
        XCTAssertTrue(SelfTestReport(runtime: "x", artifactPath: "y", cases: [], seconds: 0, error: nil).passed)
    }

    func testTokenizerSelfTest() throws {
        let cases = try XCTUnwrap(Fixtures.manifest().tokenizer.selfTest)
        // Keyed by scalars: Swift's String equality would merge the composed and decomposed "café".
        func key(_ text: String) -> [UInt32] { text.unicodeScalars.map(\.value) }
        let table = Dictionary(uniqueKeysWithValues: cases.map { (key($0.text), $0.ids) })
        let good = TokenizerSelfTest.run(cases: cases) { table[key($0)] ?? [-1] }
        XCTAssertTrue(TokenizerSelfTestReport(cases: good, error: nil).passed)
        XCTAssertEqual(good.map(\.id), Array(0..<cases.count), "rows are identified by position")

        let bad = TokenizerSelfTest.run(cases: cases) { text in
            var ids = table[key(text)] ?? []
            if text.hasPrefix("The quick brown fox") { ids[1] = 0 }
            return ids
        }
        let report = TokenizerSelfTestReport(cases: bad, error: nil)
        XCTAssertFalse(report.passed)
        XCTAssertEqual(report.headline, "FAIL: 28 of 29 strings encode to the expected ids")
        XCTAssertEqual(bad.first { !$0.passed }?.firstDifference, 1)
        XCTAssertTrue(TokenizerSelfTestReport(cases: [], error: nil).headline.hasPrefix("not part of this bundle"))
    }

    func testResultsAreRememberedPerBundleAndRuntime() throws {
        let suite = "SelfTestTests-\(UUID().uuidString)"
        let defaults = try XCTUnwrap(UserDefaults(suiteName: suite))
        defer { defaults.removePersistentDomain(forName: suite) }
        XCTAssertNil(SelfTestStore.passedBefore(manifestDigest: "abc", runtime: "coreml", defaults: defaults))
        SelfTestStore.record(true, manifestDigest: "abc", runtime: "coreml", defaults: defaults)
        SelfTestStore.record(false, manifestDigest: "abc", runtime: "executorch", defaults: defaults)
        XCTAssertEqual(SelfTestStore.passedBefore(manifestDigest: "abc", runtime: "coreml", defaults: defaults), true)
        XCTAssertEqual(SelfTestStore.passedBefore(manifestDigest: "abc", runtime: "executorch", defaults: defaults), false)
        XCTAssertNil(SelfTestStore.passedBefore(manifestDigest: "def", runtime: "coreml", defaults: defaults))
    }
}
