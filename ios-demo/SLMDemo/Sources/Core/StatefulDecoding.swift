import Foundation

/// Position and mask bookkeeping for slm-export's stateful Core ML decoder (docs/MANIFEST.md,
/// "Core ML artifact"): inputs `inputIds` int32 [1, q] and `causalMask` fp16 [1, 1, q, end];
/// the q new tokens occupy positions end-q ..< end and the KV cache (`keyCache`, `valueCache`
/// states) holds max_seq_len positions. Pure Swift, unit tested without a model.
struct DecodeStep: Equatable {
    /// Token ids fed in this call.
    var tokens: [Int]
    /// Position of `tokens[0]`; every earlier position is already in the KV cache.
    var start: Int

    /// q: the `inputIds` length and the mask's third dimension.
    var queryLength: Int { tokens.count }
    /// end: the mask's last dimension, the cache length after this call.
    var end: Int { start + tokens.count }
    /// Positions of the fed tokens.
    var positions: Range<Int> { start..<end }
}

enum GenerationError: LocalizedError, Equatable {
    case emptyPrompt
    case promptTooLong(tokens: Int, limit: Int)
    case contextFull(maxSeqLen: Int)
    case tokenOutOfRange(token: Int, vocabSize: Int)

    var errorDescription: String? {
        switch self {
        case .emptyPrompt:
            return "The prompt is empty after tokenization. Type some text."
        case let .promptTooLong(tokens, limit):
            return "The prompt is \(tokens) tokens; this model's context holds \(limit) tokens in all, "
                + "so the prompt may use at most \(limit - 1). Shorten it, or export with a larger --max-seq-len."
        case let .contextFull(maxSeqLen):
            return "The context (\(maxSeqLen) tokens) is full."
        case let .tokenOutOfRange(token, vocabSize):
            return "Token id \(token) is outside the model's vocabulary (\(vocabSize))."
        }
    }
}

enum StatefulPlan {
    /// The first call of a sequence: every prompt token at once, positions 0 ..< n.
    /// `inputIds` accepts 1 ... max_seq_len-1 tokens, and at least one position must stay free
    /// for a generated token.
    static func prefill(promptIds: [Int], maxSeqLen: Int) throws -> DecodeStep {
        guard !promptIds.isEmpty else { throw GenerationError.emptyPrompt }
        guard promptIds.count <= maxSeqLen - 1 else {
            throw GenerationError.promptTooLong(tokens: promptIds.count, limit: maxSeqLen)
        }
        return DecodeStep(tokens: promptIds, start: 0)
    }

    /// One generated token fed back at `position` (the number of tokens already cached).
    static func decode(token: Int, position: Int, maxSeqLen: Int) throws -> DecodeStep {
        guard position >= 0, position + 1 <= maxSeqLen else { throw GenerationError.contextFull(maxSeqLen: maxSeqLen) }
        return DecodeStep(tokens: [token], start: position)
    }

    /// How many tokens may be generated after a prompt so that prompt plus generated tokens fit
    /// the cache (the same budget as the exporter's parity runs).
    static func maxNewTokens(promptLength: Int, requested: Int, maxSeqLen: Int) -> Int {
        max(0, min(requested, maxSeqLen - promptLength))
    }

    /// The causal mask of one call as row-major [q][end] additive values: row i is the token at
    /// position end-q+i, which may attend to positions 0 ... end-q+i (0) and not beyond (-inf).
    /// The exported model builds its own mask and reads only this input's shape, but a real
    /// mask keeps the app correct for models that do read it (swift-transformers' convention).
    static func causalMask(queryLength q: Int, end: Int) -> [Float] {
        precondition(q >= 1 && end >= q, "mask needs 1 <= q <= end")
        var mask = [Float](repeating: -.infinity, count: q * end)
        for i in 0..<q {
            let last = end - q + i
            for j in 0...last { mask[i * end + j] = 0 }
        }
        return mask
    }

    /// Checks ids against the vocabulary before they reach the model (an out-of-range id in an
    /// embedding lookup is undefined behaviour in some runtimes).
    static func checkVocabulary(_ ids: [Int], vocabSize: Int) throws {
        if let bad = ids.first(where: { $0 < 0 || $0 >= vocabSize }) {
            throw GenerationError.tokenOutOfRange(token: bad, vocabSize: vocabSize)
        }
    }
}

/// IEEE 754 half precision <-> Float, without the `Float16` type (unavailable on some
/// simulator architectures). Core ML's fp16 arrays are read and written as raw bits.
enum Half {
    static func toFloat(_ bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = Int((bits >> 10) & 0x1F)
        let mantissa = UInt32(bits & 0x03FF)
        if exponent == 0x1F {  // inf / nan
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        if exponent == 0 {
            if mantissa == 0 { return Float(bitPattern: sign) }  // +-0
            // subnormal: mantissa * 2^-24
            let value = Float(mantissa) * Float(bitPattern: 0x3380_0000)  // 2^-24
            return sign == 0 ? value : -value
        }
        return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (mantissa << 13))
    }

    /// Round-to-nearest-even conversion; overflows to infinity.
    static func fromFloat(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16((bits >> 16) & 0x8000)
        let exponent = Int((bits >> 23) & 0xFF)
        var mantissa = bits & 0x007F_FFFF
        if exponent == 0xFF {  // inf / nan
            return sign | 0x7C00 | (mantissa != 0 ? 0x0200 : 0)
        }
        var e = exponent - 127 + 15
        if e >= 0x1F { return sign | 0x7C00 }
        if e <= 0 {
            if e < -10 { return sign }  // underflows to zero
            mantissa |= 0x0080_0000  // implicit leading 1
            let shift = UInt32(14 - e)
            var half = mantissa >> shift
            let remainder = mantissa & ((1 << shift) - 1)
            let halfway = UInt32(1) << (shift - 1)
            if remainder > halfway || (remainder == halfway && (half & 1) == 1) { half += 1 }
            return sign | UInt16(half)
        }
        var half = UInt32(e) << 10 | (mantissa >> 13)
        let remainder = mantissa & 0x1FFF
        if remainder > 0x1000 || (remainder == 0x1000 && (half & 1) == 1) { half += 1 }  // may carry into the exponent: correct
        e = Int(half >> 10)
        if e >= 0x1F { return sign | 0x7C00 }
        return sign | UInt16(half)
    }
}
