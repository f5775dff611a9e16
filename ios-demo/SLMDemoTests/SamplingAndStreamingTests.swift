import XCTest

final class SamplerTests: XCTestCase {
    func testArgmaxTakesTheFirstOfTies() {
        XCTAssertEqual(Sampler.argmax([1, 3, 3, 2]), 1)
        XCTAssertEqual(Sampler.argmax([-5, -1, -3]), 1)
        XCTAssertEqual(Sampler.argmax([.nan, 0, -1]), 1)
        XCTAssertEqual(Sampler.argmax([-.infinity, -.infinity, 2]), 2)
    }

    func testTemperatureZeroIsGreedy() {
        var sampler = Sampler(temperature: 0, seed: 1)
        for _ in 0..<10 { XCTAssertEqual(sampler.next([0.1, 2, 1.9]), 1) }
    }

    func testSamplingIsReproducibleWithASeed() {
        var a = Sampler(temperature: 1, seed: 42)
        var b = Sampler(temperature: 1, seed: 42)
        let logits: [Float] = [0, 0.5, 1, 1.5]
        let first = (0..<50).map { _ in a.next(logits) }
        let second = (0..<50).map { _ in b.next(logits) }
        XCTAssertEqual(first, second)
        XCTAssertGreaterThan(Set(first).count, 1, "temperature 1 over close logits should vary")
    }

    func testSamplingFollowsTheSoftmax() {
        // softmax([0, ln 3]) = [0.25, 0.75]
        var sampler = Sampler(temperature: 1, seed: 7)
        let draws = 4000
        let ones = (0..<draws).filter { _ in sampler.next([0, Float(log(3.0))]) == 1 }.count
        XCTAssertEqual(Double(ones) / Double(draws), 0.75, accuracy: 0.03)
    }

    func testLowTemperatureConcentratesOnTheArgmax() {
        var sampler = Sampler(temperature: 0.01, seed: 3)
        for _ in 0..<200 { XCTAssertEqual(sampler.next([1, 2, 1.5]), 1) }
    }

    func testMaskedLogitsAreNeverSampled() {
        var sampler = Sampler(temperature: 2, seed: 11)
        for _ in 0..<500 { XCTAssertNotEqual(sampler.next([0, -.infinity, 0]), 1) }
    }
}

final class StreamingDetokenizerTests: XCTestCase {
    /// A byte-level vocabulary: each id is some bytes; "é" is split across ids 2 and 3, "🙂"
    /// across 4, 5, 6.
    private let vocabulary: [Int: [UInt8]] = [
        0: Array("caf".utf8), 1: Array(" ".utf8),
        2: [0xC3], 3: [0xA9],
        4: [0xF0, 0x9F], 5: [0x99], 6: [0x82],
    ]

    private func decoder() -> StreamingDetokenizer {
        let vocabulary = self.vocabulary
        return StreamingDetokenizer { ids in String(decoding: ids.flatMap { vocabulary[$0] ?? [] }, as: UTF8.self) }
    }

    func testHoldsBackHalfCharacters() {
        var d = decoder()
        XCTAssertEqual(d.push(0), "caf")
        XCTAssertNil(d.push(2))
        XCTAssertEqual(d.push(3), "é")
        XCTAssertEqual(d.push(1), " ")
        XCTAssertNil(d.push(4))
        XCTAssertNil(d.push(5))
        XCTAssertEqual(d.push(6), "🙂")
        XCTAssertNil(d.flush())
        XCTAssertEqual(d.emitted, "café 🙂")
    }

    func testFlushGivesTheIncompleteTail() {
        var d = decoder()
        XCTAssertEqual(d.push(0), "caf")
        XCTAssertNil(d.push(2))
        XCTAssertEqual(d.flush(), "\u{FFFD}")
    }

    func testRewrittenPrefixEmitsOnlyTheNewPart() {
        // A decoder that strips a leading space until more text follows.
        var d = StreamingDetokenizer { ids in ids.count == 1 ? "a" : " a b" }
        XCTAssertEqual(d.push(0), "a")
        XCTAssertEqual(d.push(1), " a b")
        XCTAssertEqual(d.emitted, " a b")
    }
}

final class DecodeRateTests: XCTestCase {
    func testRateCountsTokensAfterTheFirst() {
        var rate = DecodeRate()
        XCTAssertEqual(rate.tokensPerSecond, 0)
        rate.tick(at: 10)
        XCTAssertEqual(rate.tokensPerSecond, 0, "one token has no rate")
        rate.tick(at: 10.5)
        rate.tick(at: 11)
        rate.tick(at: 12)
        XCTAssertEqual(rate.tokens, 4)
        XCTAssertEqual(rate.tokensPerSecond, 1.5, accuracy: 1e-9)
    }

    func testStopFlag() {
        let flag = StopFlag()
        XCTAssertFalse(flag.isSet)
        flag.set()
        XCTAssertTrue(flag.isSet)
    }

    func testRuntimeKindsAreManifestFormats() {
        XCTAssertEqual(RuntimeKind.allCases.map(\.manifestFormat), ["coreml", "executorch"])
        XCTAssertEqual(RuntimeKind(rawValue: "onnx"), nil)
    }

    func testReadableMessages() {
        XCTAssertEqual(Readable.message(for: GenerationError.emptyPrompt), GenerationError.emptyPrompt.errorDescription)
        let ns = NSError(domain: "org.pytorch.executorch.error", code: 34, userInfo: [NSLocalizedDescriptionKey: "Invalid program"])
        XCTAssertEqual(Readable.message(for: ns), "Invalid program [org.pytorch.executorch.error 34]")
    }
}
