package org.slmexport.demo.core

import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNull
import kotlin.test.assertTrue
import org.junit.Test

/** The encoder golden self-test's rule: cosine floor for embeddings, argmax for labels, the span for answers. */
class EncoderGoldenTest {
    private val host = doubleArrayOf(0.6, -0.8, 0.0, 0.0)

    private fun embedding(vararg v: Float) = listOf(v)

    @Test
    fun anEmbeddingPassesAtTheArtifactsCosineFloorAndFailsBelowIt() {
        val close = EncoderGolden.compare("a", "feature-extraction", listOf(host), embedding(0.61f, -0.79f, 0.01f, 0f), 0.999, 0, emptyList())
        assertTrue(close.passed, close.detail)
        val far = EncoderGolden.compare("b", "feature-extraction", listOf(host), embedding(0.8f, -0.6f, 0f, 0f), 0.999, 0, emptyList())
        assertFalse(far.passed, far.detail)
        assertTrue("needs 0.998990" in far.detail, far.detail)
        // An fp32 artifact's manifest says 1.0: a phone's last-bit differences still pass.
        val fp32 = EncoderGolden.compare("d", "feature-extraction", listOf(host), embedding(0.6f, -0.8f, 1e-4f, 0f), 1.0, 0, emptyList())
        assertTrue(fp32.passed, fp32.detail)
        val short = EncoderGolden.compare("c", "feature-extraction", listOf(host), embedding(0.6f, -0.8f), 0.999, 0, emptyList())
        assertFalse(short.passed)
    }

    @Test
    fun theTokenizerMustGiveTheExportersIds() {
        assertTrue(EncoderGolden.compareTokenizer("hi", listOf(2, 7, 3), intArrayOf(2, 7, 3)).passed)
        val differs = EncoderGolden.compareTokenizer("hi", listOf(2, 7, 3), intArrayOf(2, 8, 3))
        assertFalse(differs.passed)
        assertTrue("token 2 (8 vs 7)" in differs.detail, differs.detail)
        assertFalse(EncoderGolden.compareTokenizer("hi", listOf(2, 7, 3), intArrayOf(2, 7, 3, 3)).passed)
        assertFalse(EncoderGolden.compareTokenizer("hi", listOf(2, 7, 3), intArrayOf(2, 7)).passed)
    }

    @Test
    fun labelsCompareByArgmaxPerRow() {
        val hostLogits = doubleArrayOf(0.1, 2.0, -1.0, 3.0, 0.0, 0.5)  // two tokens x three labels
        val same = EncoderGolden.compare("t", "token-classification", listOf(hostLogits), listOf(floatArrayOf(0f, 1f, 0f, 9f, 1f, 2f)), null, 3, emptyList())
        assertTrue(same.passed, same.detail)
        val oneOff = EncoderGolden.compare("t", "token-classification", listOf(hostLogits), listOf(floatArrayOf(0f, 1f, 0f, 0f, 1f, 2f)), null, 3, emptyList())
        assertFalse(oneOff.passed)
        assertTrue("1 of 2 labels" in oneOff.detail, oneOff.detail)
        val sequence = EncoderGolden.compare("s", "sequence-classification", listOf(doubleArrayOf(-1.0, 1.0)), listOf(floatArrayOf(1f, -1f)), null, 2, emptyList())
        assertFalse(sequence.passed)
    }

    @Test
    fun anAnswerMustBeTheSameSpanInsideThePassage() {
        // [CLS] q q [SEP] p p p p [SEP]
        val types = listOf(0, 0, 0, 0, 1, 1, 1, 1, 1)
        assertEquals(4..7, EncoderGolden.passageTokens(types))
        val start = floatArrayOf(9f, 0f, 0f, 0f, 0f, 3f, 0f, 0f, 9f)  // the highest starts lie outside the passage
        val end = floatArrayOf(0f, 0f, 0f, 0f, 0f, 0f, 4f, 0f, 9f)
        val hostOutputs = listOf(DoubleArray(9) { start[it].toDouble() }, DoubleArray(9) { end[it].toDouble() })
        val same = EncoderGolden.compare("qa", "question-answering", hostOutputs, listOf(start, end), null, 0, types, listOf(5, 6))
        assertTrue(same.passed, same.detail)
        val other = EncoderGolden.compare("qa", "question-answering", hostOutputs, listOf(start, end), null, 0, types, listOf(4, 6))
        assertFalse(other.passed, other.detail)
        assertNull(EncoderGolden.passageTokens(listOf(0, 0, 0)))
    }
}
