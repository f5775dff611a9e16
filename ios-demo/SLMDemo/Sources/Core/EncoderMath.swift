import Foundation

/// What the encoder screens compute from a model's outputs, the way slm-export's `run` does
/// (exporter/encoder_run.py, encoder_verify.best_span): cosine ranking for Search, softmax label
/// scores for Classify, the best answer span for Ask. Cosines and softmax are summed in Double, as
/// numpy's float64; span scores in Float, as numpy adds the float32 logits.
/// The same functions as the Android app's EncoderMath.kt, checked against the same vectors.
enum EncoderMath {
    /// The longest answer the Ask screen picks, in tokens (encoder_verify.MAX_ANSWER_TOKENS).
    static let maxAnswerTokens = 30

    enum MathError: LocalizedError, Equatable {
        case sizeMismatch(String)

        var errorDescription: String? {
            switch self {
            case .sizeMismatch(let why): return why
            }
        }
    }

    /// Cosine similarity; each norm is floored as the exporter floors it (1e-12).
    static func cosine(_ a: [Float], _ b: [Float]) throws -> Double {
        guard a.count == b.count else {
            throw MathError.sizeMismatch("embeddings of different sizes: \(a.count) and \(b.count)")
        }
        var dot = 0.0, na = 0.0, nb = 0.0
        for i in a.indices {
            let x = Double(a[i]), y = Double(b[i])
            dot += x * y
            na += x * x
            nb += y * y
        }
        return dot / max(na.squareRoot(), 1e-12) / max(nb.squareRoot(), 1e-12)
    }

    /// A passage's place in a ranking.
    struct Ranked: Equatable {
        var index: Int
        var cosine: Double
    }

    /// Every passage by cosine to the query, best first; ties keep the passages' order.
    static func rank(query: [Float], passages: [[Float]]) throws -> [Ranked] {
        let scored = try passages.enumerated().map { try Ranked(index: $0.offset, cosine: cosine(query, $0.element)) }
        // A stable order: Swift's sort is not guaranteed stable, so ties fall back to the index.
        return scored.sorted { $0.cosine != $1.cosine ? $0.cosine > $1.cosine : $0.index < $1.index }
    }

    static func softmax(_ logits: [Float]) -> [Double] {
        guard let top = logits.max() else { return [] }
        let e = logits.map { exp(Double($0) - Double(top)) }
        let sum = e.reduce(0, +)
        return e.map { $0 / sum }
    }

    /// A label and its probability.
    struct LabelScore: Equatable {
        var label: String
        var score: Double
    }

    /// Labels with their softmax scores, best first (ties keep the labels' order).
    static func labelScores(logits: [Float], labels: [String]) throws -> [LabelScore] {
        guard logits.count == labels.count else {
            throw MathError.sizeMismatch("the model gives \(logits.count) scores for \(labels.count) labels")
        }
        let p = softmax(logits)
        return labels.indices
            .sorted { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }
            .map { LabelScore(label: labels[$0], score: p[$0]) }
    }

    /// Index of the largest value (the first one on a tie), nil for an empty array.
    static func argmax(_ values: ArraySlice<Float>) -> Int? {
        guard var best = values.indices.first else { return nil }
        for i in values.indices where values[i] > values[best] { best = i }
        return best - values.startIndex
    }

    static func argmax(_ values: [Float]) -> Int? { argmax(values[...]) }

    /// The (start, end) token pair inside the passage's tokens first...last with the highest
    /// start + end logit, at most `maxTokens` long; the first best wins a tie.
    static func bestSpan(start: [Float], end: [Float], first: Int, last: Int,
                         maxTokens: Int = maxAnswerTokens) throws -> (start: Int, end: Int) {
        guard first >= 0, first <= last, last < start.count, last < end.count else {
            throw MathError.sizeMismatch("passage tokens \(first)...\(last) outside \(start.count) logits")
        }
        // Scores are summed in Float, as numpy sums the float32 logits, so ties break alike.
        var best = -Float.infinity
        var span = (start: first, end: first)
        for s in first...last {
            let stop = min(last, s + maxTokens - 1)
            var e = s
            if s < stop {
                for k in (s + 1)...stop where end[k] > end[e] { e = k }
            }
            let score = start[s] + end[e]
            if score > best {
                best = score
                span = (start: s, end: e)
            }
        }
        return span
    }
}
