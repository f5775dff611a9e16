import Foundation

/// Next-token choice: greedy (temperature 0, as the exporter's parity runs and the golden
/// self-test) or sampling from softmax(logits / temperature) with a seeded generator, so a run
/// can be repeated.
struct Sampler {
    var temperature: Float
    var topP: Float
    var topK: Int?
    private var rng: SplitMix64

    init(temperature: Float, seed: UInt64, topP: Float = 1, topK: Int? = nil) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.rng = SplitMix64(seed: seed)
    }

    mutating func next(_ logits: [Float]) -> Int {
        guard temperature > 0 else { return Sampler.argmax(logits) }
        return Sampler.sample(Sampler.nucleus(logits, temperature: temperature, topP: topP, topK: topK),
                              temperature: temperature, using: &rng)
    }

    /// The logits with every id outside the top-k, and outside the smallest set whose probability
    /// at this temperature reaches top-p, set to -infinity (temperature first, then top-k and
    /// top-p, as transformers' warpers and `slm-export run` apply them).
    static func nucleus(_ logits: [Float], temperature: Float, topP: Float, topK: Int?) -> [Float] {
        let k = topK.map { $0 > 0 ? $0 : logits.count } ?? logits.count
        guard topP < 1 || k < logits.count, !logits.isEmpty else { return logits }
        let order = logits.indices.sorted { logits[$0] > logits[$1] }
        let peak = Double(logits[order[0]])
        let weights = order.map { exp((Double(logits[$0]) - peak) / Double(temperature)) }
        let total = weights.reduce(0, +)
        var kept = [Float](repeating: -Float.infinity, count: logits.count)
        var before = 0.0
        for (rank, id) in order.enumerated() where rank < k && before < Double(topP) * total {
            kept[id] = logits[id]
            before += weights[rank]
        }
        return kept
    }

    /// Index of the largest logit; the first one on ties (as `torch.argmax`). NaNs never win.
    static func argmax(_ logits: [Float]) -> Int {
        var best = 0
        var bestValue = -Float.infinity
        for (i, v) in logits.enumerated() where v > bestValue {
            best = i
            bestValue = v
        }
        return best
    }

    /// Draws from softmax(logits / temperature), computed stably (max subtracted, in Double).
    static func sample<G: RandomNumberGenerator>(_ logits: [Float], temperature: Float, using rng: inout G) -> Int {
        let peak = Double(logits.max() ?? 0)
        let t = Double(temperature)
        var weights = [Double](repeating: 0, count: logits.count)
        var total = 0.0
        for (i, v) in logits.enumerated() where v.isFinite {
            let w = exp((Double(v) - peak) / t)
            weights[i] = w
            total += w
        }
        guard total > 0, total.isFinite else { return argmax(logits) }
        var r = Double.random(in: 0..<total, using: &rng)
        for (i, w) in weights.enumerated() {
            r -= w
            if r < 0 { return i }
        }
        return weights.lastIndex { $0 > 0 } ?? argmax(logits)
    }
}

/// A small, fast, seedable generator (Steele, Lea, Flood 2014); the system generator cannot be
/// seeded.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
