package org.slmexport.demo.core

import java.io.File
import kotlin.math.abs
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import org.junit.Test

/**
 * The encoder screens' tokenizer and math against what slm-export computes (encoder_vectors.json
 * and encoder_tokenizer.json, the built-in encoder student's tokenizer.json; written by
 * tests/encoder_vectors.py, which the Python suite keeps current).
 */
@Suppress("UNCHECKED_CAST")
class EncoderTest {
    private fun resource(name: String): File =
        listOf("src/coreTest/resources/$name", "app/src/coreTest/resources/$name").map(::File).first { it.isFile }

    private val vectors: Map<String, Any?> by lazy { MiniJson.parse(resource("encoder_vectors.json").readText()) as Map<String, Any?> }
    private val tokenizerJson: String by lazy { resource(vectors["tokenizer"] as String).readText() }
    private val maxTokens: Int get() = (vectors["max_tokens"] as Double).toInt()

    private fun ints(value: Any?): List<Int> = (value as List<Double>).map { it.toInt() }
    private fun floats(value: Any?): FloatArray = (value as List<Double>).map { it.toFloat() }.toFloatArray()

    private fun tokenizerFor(variant: Map<String, Any?>?): WordPieceTokenizer {
        val shipped = WordPieceTokenizer.fromTokenizerJson(tokenizerJson)
        if (variant == null) return shipped
        val config = shipped.config.copy(
            cleanText = variant["clean_text"] as Boolean, handleChineseChars = variant["handle_chinese_chars"] as Boolean,
            stripAccents = variant["strip_accents"] as Boolean, lowercase = variant["lowercase"] as Boolean,
        )
        val vocab = ((MiniJson.parse(tokenizerJson) as Map<String, Any?>)["model"] as Map<String, Any?>)["vocab"] as Map<String, Double>
        return WordPieceTokenizer(config, vocab.mapValues { it.value.toInt() })
    }

    private fun assertEncoding(expected: Map<String, Any?>, actual: Encoding, what: String) {
        assertEquals(ints(expected["ids"]), actual.ids.toList(), "ids of $what")
        assertEquals(ints(expected["type_ids"]), actual.typeIds.toList(), "type ids of $what")
        assertEquals((expected["offsets"] as List<List<Double>>).map { it.map(Double::toInt) }, actual.offsets.map { it.toList() }, "offsets of $what")
        assertEquals((expected["sequence_ids"] as List<Double?>).map { it?.toInt() }, actual.sequenceIds, "sequence ids of $what")
    }

    @Test
    fun wordPieceEncodesEveryTextAsTheExporter() {
        var checked = 0
        for (tokenization in vectors["tokenizations"] as List<Map<String, Any?>>) {
            val tokenizer = tokenizerFor(tokenization["variant"] as Map<String, Any?>?)
            for (case in tokenization["single"] as List<Map<String, Any?>>) {
                assertEncoding(case, tokenizer.encode(case["text"] as String, maxTokens), "'${case["text"]}' (${tokenization["variant"]})")
                checked++
            }
        }
        assertTrue(checked >= 30, "only $checked texts checked")
    }

    @Test
    fun questionPassagePairsTruncateThePassageOnly() {
        val tokenizer = tokenizerFor(null)
        var truncated = 0
        for (case in (vectors["tokenizations"] as List<Map<String, Any?>>)[0]["pair"] as List<Map<String, Any?>>) {
            val encoding = tokenizer.encodePair(case["question"] as String, case["passage"] as String, maxTokens)
            assertEncoding(case, encoding, "question '${case["question"]}'")
            if (encoding.ids.size == maxTokens) truncated++
        }
        assertEquals(1, truncated, "the long passage is cut to the input limit")
    }

    @Test
    fun aQuestionThatLeavesNoRoomForThePassageIsRefused() {
        val tokenizer = tokenizerFor(null)
        val error = assertFailsWith<TokenizerException> { tokenizer.encodePair("why ".repeat(200), "A passage.", maxTokens) }
        assertTrue("must fit $maxTokens" in error.message!!, error.message)
    }

    @Test
    fun otherTokenizersAreRefusedByName() {
        val bpe = Regex("(\"model\": *\\{ *\"type\": *)\"WordPiece\"").replace(tokenizerJson, "$1\"BPE\"")
        assertTrue(bpe != tokenizerJson)
        assertTrue("BPE tokenizer" in assertFailsWith<TokenizerException> { WordPieceTokenizer.fromTokenizerJson(bpe) }.message!!)
        assertTrue("not valid JSON" in assertFailsWith<TokenizerException> { WordPieceTokenizer.fromTokenizerJson(tokenizerJson.take(500)) }.message!!)
    }

    @Test
    fun searchRanksPassagesByCosineAsTheExporter() {
        val ranking = vectors["ranking"] as Map<String, Any?>
        val passages = (ranking["passage_embeddings"] as List<Any?>).map(::floats)
        val ranked = EncoderMath.rank(floats(ranking["query_embedding"]), passages)
        assertEquals(ints(ranking["order"]), ranked.map { it.index })
        val cosines = ranking["cosines"] as List<Double>
        for (r in ranked) assertTrue(abs(r.cosine - cosines[r.index]) < 1e-6, "cosine of passage ${r.index}: ${r.cosine} vs ${cosines[r.index]}")
        // The pooling normalizes (the manifest's pooling.normalize): the cosine is the dot product.
        assertEquals(true, ranking["normalized"])
        val query = floats(ranking["query_embedding"])
        assertTrue(abs(query.sumOf { it.toDouble() * it } - 1.0) < 1e-5)
    }

    @Test
    fun cosineDoesNotDependOnScale() {
        val a = floatArrayOf(1f, 2f, 3f)
        val b = floatArrayOf(-2f, 0.5f, 4f)
        val scaled = FloatArray(3) { a[it] * 40f }
        assertTrue(abs(EncoderMath.cosine(a, b) - EncoderMath.cosine(scaled, b)) < 1e-12)
        assertEquals(0.0, EncoderMath.cosine(FloatArray(3), b))
    }

    @Test
    fun labelScoresAreTheExportersSoftmaxBestFirst() {
        for (case in vectors["softmax"] as List<Map<String, Any?>>) {
            val expected = case["probabilities"] as List<Double>
            val labels = expected.indices.map { "label $it" }
            val scores = EncoderMath.labelScores(floats(case["logits"]), labels)
            for (s in scores) {
                val p = expected[labels.indexOf(s.label)]
                assertTrue(abs(s.score - p) <= 1e-6 * maxOf(p, 1e-30) + 1e-12, "${s.label}: ${s.score} vs $p")
            }
            assertEquals(labels[expected.indices.maxBy { expected[it] }], scores.first().label)
        }
    }

    @Test
    fun answerSpansAreTheExportersBestSpan() {
        val spans = vectors["spans"] as Map<String, Any?>
        assertEquals((spans["max_answer_tokens"] as Double).toInt(), EncoderMath.MAX_ANSWER_TOKENS)
        for (case in spans["cases"] as List<Map<String, Any?>>) {
            val (first, last) = ints(case["passage"])
            val span = EncoderMath.bestSpan(floats(case["start_logits"]), floats(case["end_logits"]), first, last)
            assertEquals(ints(case["span"]), span.toList())
        }
    }

    @Test
    fun theSearchScreensPassagesAreTheExportersSet() {
        val file = listOf("../../exporter/data/${EncoderTexts.FILE}", "../exporter/data/${EncoderTexts.FILE}").map(::File).first { it.isFile }
        val texts = EncoderTexts.parse(file.readText())
        assertEquals(vectors["passages"] as List<String>, texts.passages)
        assertEquals((vectors["qa_examples"] as List<Map<String, String>>).map { it["question"] to it["context"] }, texts.qaExamples)
    }
}
