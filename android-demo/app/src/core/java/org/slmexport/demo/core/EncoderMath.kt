package org.slmexport.demo.core

import kotlin.math.exp
import kotlin.math.max
import kotlin.math.sqrt

/**
 * What the encoder screens compute from a model's outputs, the way slm-export's `run` does
 * (exporter/encoder_run.py, encoder_verify.best_span): cosine ranking for Search, softmax label
 * scores for Classify, the best answer span for Ask. Sums are in Double, as numpy's float64.
 */
object EncoderMath {
    // The longest answer the Ask screen picks, in tokens (encoder_verify.MAX_ANSWER_TOKENS).
    const val MAX_ANSWER_TOKENS = 30

    /** Cosine similarity; the norm is floored as the exporter floors it (1e-12). */
    fun cosine(a: FloatArray, b: FloatArray): Double {
        require(a.size == b.size) { "embeddings of different sizes: ${a.size} and ${b.size}" }
        var dot = 0.0
        var na = 0.0
        var nb = 0.0
        for (i in a.indices) {
            dot += a[i].toDouble() * b[i]
            na += a[i].toDouble() * a[i]
            nb += b[i].toDouble() * b[i]
        }
        return dot / max(sqrt(na), 1e-12) / max(sqrt(nb), 1e-12)
    }

    /** A passage's place in a ranking. */
    data class Ranked(val index: Int, val cosine: Double)

    /** Every passage by cosine to the query, best first; ties keep the passages' order. */
    fun rank(query: FloatArray, passages: List<FloatArray>): List<Ranked> =
        passages.mapIndexed { i, p -> Ranked(i, cosine(query, p)) }.sortedByDescending { it.cosine }

    fun softmax(logits: FloatArray): DoubleArray {
        val top = logits.maxOrNull()?.toDouble() ?: return DoubleArray(0)
        val e = DoubleArray(logits.size) { exp(logits[it] - top) }
        val sum = e.sum()
        return DoubleArray(e.size) { e[it] / sum }
    }

    /** A label and its probability. */
    data class LabelScore(val label: String, val score: Double)

    /** Labels with their softmax scores, best first. */
    fun labelScores(logits: FloatArray, labels: List<String>): List<LabelScore> {
        require(logits.size == labels.size) { "the model gives ${logits.size} scores for ${labels.size} labels" }
        val p = softmax(logits)
        return labels.mapIndexed { i, label -> LabelScore(label, p[i]) }.sortedByDescending { it.score }
    }

    /**
     * The (start, end) token pair inside the passage's tokens [first, last] with the highest
     * start + end logit, at most MAX_ANSWER_TOKENS long; the first best wins a tie.
     */
    fun bestSpan(start: FloatArray, end: FloatArray, first: Int, last: Int, maxTokens: Int = MAX_ANSWER_TOKENS): IntArray {
        require(first in 0..last && last < start.size && last < end.size) { "passage tokens $first..$last outside ${start.size} logits" }
        var best = Double.NEGATIVE_INFINITY
        var span = intArrayOf(first, first)
        for (s in first..last) {
            val stop = minOf(last, s + maxTokens - 1)
            var e = s
            for (k in s + 1..stop) if (end[k] > end[e]) e = k
            val score = start[s].toDouble() + end[e]
            if (score > best) {
                best = score
                span = intArrayOf(s, e)
            }
        }
        return span
    }
}
