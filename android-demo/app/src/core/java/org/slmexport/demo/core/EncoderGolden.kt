package org.slmexport.demo.core

/** One golden case's outcome on the phone. */
data class GoldenOutcome(val name: String, val passed: Boolean, val detail: String)

/**
 * An encoder artifact's golden self-test (the manifest's artifact self_test, written by
 * slm-export from what the same artifact returned on the host): each case runs alone, unpadded.
 * Embeddings must reach the artifact's parity cosine_min (what the exporter proved for it against
 * the fp32 reference) in cosine to the host's; labels must have the same argmax; an answer must be
 * the same span.
 */
object EncoderGolden {
    const val COSINE_SLACK = 1e-5

    /** The manifest's tokenizer.self_test: the app's tokenizer must give the exporter's ids. */
    fun compareTokenizer(text: String, expected: List<Int>, actual: IntArray): GoldenOutcome {
        val shown = if (text.length > 24) text.take(24) + "…" else text
        val at = expected.indices.firstOrNull { it >= actual.size || actual[it] != expected[it] } ?: if (actual.size > expected.size) expected.size else -1
        return if (at < 0) GoldenOutcome("tokenizer", true, "Tokenizer: '$shown' gives the exporter's ${expected.size} ids.")
        else GoldenOutcome("tokenizer", false, "Tokenizer: '$shown' differs from the exporter at token ${at + 1} (${actual.getOrNull(at)} vs ${expected.getOrNull(at)}).")
    }

    fun compare(
        name: String,
        task: String,
        expected: List<DoubleArray>,
        actual: List<FloatArray>,
        cosineMin: Double?,
        labelCount: Int,
        tokenTypeIds: List<Int>,
        span: List<Int>? = null,
    ): GoldenOutcome {
        if (actual.size != expected.size) return GoldenOutcome(name, false, "Case '$name': the model returned ${actual.size} outputs, the host ${expected.size}.")
        for (i in expected.indices) {
            if (actual[i].size != expected[i].size) {
                return GoldenOutcome(name, false, "Case '$name': output ${i + 1} has ${actual[i].size} values, the host's ${expected[i].size}.")
            }
        }
        return when (task) {
            "feature-extraction" -> {
                val cosine = EncoderMath.cosine(actual[0], FloatArray(expected[0].size) { expected[0][it].toFloat() })
                // The manifest rounds cosine_min to 6 decimals (1.0 for an fp32 artifact), and a
                // phone's kernels sum in another order than the host's: allow COSINE_SLACK below it.
                val floor = (cosineMin ?: 0.99) - COSINE_SLACK
                GoldenOutcome(name, cosine >= floor, "Case '$name': cosine to the host's embedding %.6f (needs %.6f).".format(cosine, floor))
            }
            "sequence-classification", "token-classification" -> {
                if (labelCount < 1 || expected[0].size % labelCount != 0) {
                    return GoldenOutcome(name, false, "Case '$name': ${expected[0].size} scores do not divide into $labelCount labels.")
                }
                val want = argmaxRows(FloatArray(expected[0].size) { expected[0][it].toFloat() }, labelCount)
                val got = argmaxRows(actual[0], labelCount)
                val differ = want.indices.count { want[it] != got[it] }
                GoldenOutcome(name, differ == 0, if (differ == 0) "Case '$name': same label${if (want.size > 1) "s on all ${want.size} tokens" else ""} as the host." else "Case '$name': $differ of ${want.size} labels differ from the host's.")
            }
            "question-answering" -> {
                val want = span ?: return GoldenOutcome(name, false, "Case '$name': the manifest gives no answer span.")
                val range = passageTokens(tokenTypeIds) ?: return GoldenOutcome(name, false, "Case '$name': no passage tokens (token type 1).")
                val got = EncoderMath.bestSpan(actual[0], actual[1], range.first, range.last).toList()
                GoldenOutcome(name, got == want, if (got == want) "Case '$name': same answer span (tokens ${want[0]}-${want[1]})." else "Case '$name': answer span tokens ${got[0]}-${got[1]}, the host's ${want[0]}-${want[1]}.")
            }
            else -> GoldenOutcome(name, false, "Case '$name': unknown task $task.")
        }
    }

    /**
     * The passage's tokens in a [CLS] question [SEP] passage [SEP] case: those of segment 1 but the
     * closing [SEP] (as the exporter's sequence ids give them); null when there are none.
     */
    fun passageTokens(tokenTypeIds: List<Int>): IntRange? {
        val first = tokenTypeIds.indexOfFirst { it == 1 }
        val last = tokenTypeIds.indexOfLast { it == 1 } - 1
        return if (first < 0 || last < first) null else first..last
    }

    // Row-wise argmax of [rows, width] scores, flattened (one row for a sequence's label).
    private fun argmaxRows(values: FloatArray, width: Int): IntArray {
        val n = values.size / width
        return IntArray(n) { r ->
            var best = 0
            for (c in 1 until width) if (values[r * width + c] > values[r * width + best]) best = c
            best
        }
    }
}
