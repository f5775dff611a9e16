import CoreML
import XCTest

/// Positions, cache budget and causal masks of the stateful Core ML driver.
final class StatefulDecodingTests: XCTestCase {
    func testPrefillFeedsThePromptAtPositionsZeroToN() throws {
        let prompt = Array(100..<128)
        let step = try StatefulPlan.prefill(promptIds: prompt, maxSeqLen: 64)
        XCTAssertEqual(step.tokens, prompt)
        XCTAssertEqual(step.start, 0)
        XCTAssertEqual(step.queryLength, 28)
        XCTAssertEqual(step.end, 28)
        XCTAssertEqual(step.positions, 0..<28)
    }

    func testDecodeFeedsOneTokenAtTheNextPosition() throws {
        let step = try StatefulPlan.decode(token: 7, position: 28, maxSeqLen: 64)
        XCTAssertEqual(step.tokens, [7])
        XCTAssertEqual(step.queryLength, 1)
        XCTAssertEqual(step.end, 29)
        XCTAssertEqual(step.positions, 28..<29)
    }

    /// A whole sequence as the engines run it: prefill, then one call per generated token
    /// except the last, each call's new positions following the previous call's.
    func testASequenceCoversEachPositionOnce() throws {
        let maxSeqLen = 64
        let prompt = Array(repeating: 5, count: 10)
        let budget = StatefulPlan.maxNewTokens(promptLength: prompt.count, requested: 100, maxSeqLen: maxSeqLen)
        XCTAssertEqual(budget, 54)
        var steps = [try StatefulPlan.prefill(promptIds: prompt, maxSeqLen: maxSeqLen)]
        var generated = 1  // the prefill's logits give the first new token
        var position = prompt.count
        while generated < budget {
            steps.append(try StatefulPlan.decode(token: 1, position: position, maxSeqLen: maxSeqLen))
            position += 1
            generated += 1
        }
        XCTAssertEqual(steps.count, budget)  // 1 prefill + (budget - 1) decode calls
        var covered = 0
        for step in steps {
            XCTAssertEqual(step.start, covered, "each call continues where the cache ends")
            XCTAssertLessThanOrEqual(step.end, maxSeqLen)
            covered = step.end
        }
        XCTAssertEqual(covered, prompt.count + budget - 1)  // the last token is never fed back
    }

    func testPromptLimits() throws {
        XCTAssertThrowsError(try StatefulPlan.prefill(promptIds: [], maxSeqLen: 64)) {
            XCTAssertEqual($0 as? GenerationError, .emptyPrompt)
        }
        XCTAssertThrowsError(try StatefulPlan.prefill(promptIds: Array(repeating: 1, count: 64), maxSeqLen: 64)) {
            XCTAssertEqual($0 as? GenerationError, .promptTooLong(tokens: 64, limit: 64))
        }
        XCTAssertNoThrow(try StatefulPlan.prefill(promptIds: Array(repeating: 1, count: 63), maxSeqLen: 64))
        XCTAssertNoThrow(try StatefulPlan.decode(token: 1, position: 63, maxSeqLen: 64))
        XCTAssertThrowsError(try StatefulPlan.decode(token: 1, position: 64, maxSeqLen: 64)) {
            XCTAssertEqual($0 as? GenerationError, .contextFull(maxSeqLen: 64))
        }
        XCTAssertNotNil(GenerationError.promptTooLong(tokens: 600, limit: 512).errorDescription)
    }

    func testNewTokenBudget() {
        XCTAssertEqual(StatefulPlan.maxNewTokens(promptLength: 28, requested: 16, maxSeqLen: 64), 16)
        XCTAssertEqual(StatefulPlan.maxNewTokens(promptLength: 60, requested: 16, maxSeqLen: 64), 4)
        XCTAssertEqual(StatefulPlan.maxNewTokens(promptLength: 63, requested: 16, maxSeqLen: 64), 1)
        XCTAssertEqual(StatefulPlan.maxNewTokens(promptLength: 64, requested: 16, maxSeqLen: 64), 0)
    }

    func testVocabularyCheck() {
        XCTAssertNoThrow(try StatefulPlan.checkVocabulary([0, 4095], vocabSize: 4096))
        XCTAssertThrowsError(try StatefulPlan.checkVocabulary([0, 4096], vocabSize: 4096))
        XCTAssertThrowsError(try StatefulPlan.checkVocabulary([-1], vocabSize: 4096))
    }

    // MARK: Masks

    func testPrefillMaskIsLowerTriangular() {
        let ninf = -Float.infinity
        XCTAssertEqual(StatefulPlan.causalMask(queryLength: 3, end: 3), [
            0, ninf, ninf,
            0, 0, ninf,
            0, 0, 0,
        ])
    }

    func testMaskOfQueriesAfterACachedPrefix() {
        // Two cached positions, three new tokens at positions 2, 3, 4.
        let ninf = -Float.infinity
        XCTAssertEqual(StatefulPlan.causalMask(queryLength: 3, end: 5), [
            0, 0, 0, ninf, ninf,
            0, 0, 0, 0, ninf,
            0, 0, 0, 0, 0,
        ])
    }

    func testDecodeMaskSeesTheWholeCache() {
        XCTAssertEqual(StatefulPlan.causalMask(queryLength: 1, end: 7), Array(repeating: 0, count: 7))
    }

    func testCoreMLMaskArrayFP16() throws {
        let array = try CoreMLInputs.causalMask(queryLength: 3, end: 5, dataType: .float16)
        XCTAssertEqual(array.shape, [1, 1, 3, 5])
        XCTAssertEqual(array.dataType, .float16)
        let expected = StatefulPlan.causalMask(queryLength: 3, end: 5)
        let strides = array.strides.map(\.intValue)
        array.withUnsafeBytes { raw in
            let p = raw.bindMemory(to: UInt16.self)
            for i in 0..<3 {
                for j in 0..<5 {
                    XCTAssertEqual(Half.toFloat(p[i * strides[2] + j * strides[3]]), expected[i * 5 + j], "[\(i), \(j)]")
                }
            }
        }
    }

    func testCoreMLMaskArrayFP32() throws {
        let array = try CoreMLInputs.causalMask(queryLength: 2, end: 4, dataType: .float32)
        XCTAssertEqual(array.shape, [1, 1, 2, 4])
        XCTAssertEqual(array[index(0, 0, 0, 2)].floatValue, 0)
        XCTAssertEqual(array[index(0, 0, 0, 3)].floatValue, -.infinity)
        XCTAssertEqual(array[index(0, 0, 1, 3)].floatValue, 0)
    }

    func testCoreMLInputIds() throws {
        let array = try CoreMLInputs.inputIds([713, 672, 64])
        XCTAssertEqual(array.shape, [1, 3])
        XCTAssertEqual(array.dataType, .int32)
        XCTAssertEqual((0..<3).map { array[index(0, $0)].intValue }, [713, 672, 64])
    }

    // MARK: Logits

    func testLastRowOfLogits() throws {
        let array = try MLMultiArray(shape: [1, 3, 4], dataType: .float32)
        for q in 0..<3 {
            for v in 0..<4 { array[index(0, q, v)] = NSNumber(value: Float(q * 10 + v)) }
        }
        XCTAssertEqual(try LogitsReader.lastRow(of: array), [20, 21, 22, 23])
    }

    func testReadRowHonoursStridesAndHalfPrecision() throws {
        // Two rows of three fp16 values, each value followed by a padding element.
        let values: [Float] = [1, -2, 0.5, 3, 65504, -0.25]
        var storage = [UInt16](repeating: 0xFFFF, count: 12)
        for (k, v) in values.enumerated() { storage[k * 2] = Half.fromFloat(v) }
        let row = try storage.withUnsafeBytes { raw in
            try LogitsReader.readRow(raw, dataType: .float16, offset: 6, stride: 2, count: 3)
        }
        XCTAssertEqual(row, [3, 65504, -0.25])
    }

    private func index(_ coordinates: Int...) -> [NSNumber] {
        coordinates.map { NSNumber(value: $0) }
    }

    // MARK: Half precision

    func testHalfKnownValues() {
        XCTAssertEqual(Half.toFloat(0x3C00), 1)
        XCTAssertEqual(Half.toFloat(0xC000), -2)
        XCTAssertEqual(Half.toFloat(0x7BFF), 65504)
        XCTAssertEqual(Half.toFloat(0x0001), Float(bitPattern: 0x3380_0000))  // 2^-24
        XCTAssertEqual(Half.toFloat(0xFC00), -.infinity)
        XCTAssertTrue(Half.toFloat(0x7E00).isNaN)
        XCTAssertEqual(Half.toFloat(0x8000).sign, .minus)
        XCTAssertEqual(Half.fromFloat(0), 0x0000)
        XCTAssertEqual(Half.fromFloat(-.infinity), 0xFC00)
        XCTAssertEqual(Half.fromFloat(65504), 0x7BFF)
        XCTAssertEqual(Half.fromFloat(65520), 0x7C00, "rounds up past the largest half: infinity")
        XCTAssertEqual(Half.fromFloat(1 + 1 / 2048), 0x3C00, "a tie rounds to even")
        XCTAssertEqual(Half.fromFloat(1 + 3 / 2048), 0x3C02, "a tie rounds to even")
        let tiny = Float(bitPattern: 0x3380_0000)  // 2^-24
        XCTAssertEqual(Half.fromFloat(tiny), 0x0001)
        XCTAssertEqual(Half.fromFloat(tiny / 2), 0x0000, "a tie rounds to even (zero)")
        XCTAssertEqual(Half.fromFloat(tiny * 1.5), 0x0002, "a tie rounds to even")
        XCTAssertEqual(Half.fromFloat(1e-10), 0x0000)
        XCTAssertEqual(Half.fromFloat(-1e10), 0xFC00)
    }

    func testEveryHalfRoundTrips() {
        for bits in UInt16(0)...UInt16.max {
            let exponent = (bits >> 10) & 0x1F
            if exponent == 0x1F && bits & 0x03FF != 0 { continue }  // NaN payloads are not preserved
            XCTAssertEqual(Half.fromFloat(Half.toFloat(bits)), bits, String(bits, radix: 16))
        }
    }
}
