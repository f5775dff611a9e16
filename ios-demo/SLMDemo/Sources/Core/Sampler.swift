import Foundation

/// Next-token choice: greedy (temperature 0, as the exporter's parity runs and the golden
/// self-test) or sampling from softmax(logits / temperature) with a seeded generator, so a run
/// can be repeated.
struct Sampler {
    var temperature: Float
    private var rng: SplitMix64

    init(temperature: Float, seed: UInt64) {
        self.temperature = temperature
        self.rng = SplitMix64(seed: seed)
    }

    mutating func next(_ logits: [Float]) -> Int {
        temperature > 0 ? Sampler.sample(logits, temperature: temperature, using: &rng) : Sampler.argmax(logits)
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
