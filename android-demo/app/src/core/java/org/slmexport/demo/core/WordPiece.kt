package org.slmexport.demo.core

import java.text.Normalizer

/** A tokenizer.json this app cannot apply, or a text it cannot encode, with a message for people. */
class TokenizerException(message: String) : Exception(message)

/** BERT's normalizer (tokenizers' BertNormalizer) and WordPiece model settings, from tokenizer.json. */
data class WordPieceConfig(
    val cleanText: Boolean,
    val handleChineseChars: Boolean,
    // tokenizers' `strip_accents: null` means "as lowercase"; resolved when the file is read.
    val stripAccents: Boolean,
    val lowercase: Boolean,
    val unkToken: String,
    val continuingSubwordPrefix: String,
    val maxInputCharsPerWord: Int,
    val clsToken: String,
    val sepToken: String,
)

/**
 * One encoded text or question/passage pair: ids with the segment of each token, and where each
 * token came from in its own text, in UTF-16 code units (String indices) as [start, end); special
 * tokens have (0, 0) and a null sequence id. Sequence 0 is the text (or question), 1 the passage.
 */
class Encoding(
    val ids: IntArray,
    val typeIds: IntArray,
    val offsets: List<IntArray>,
    val sequenceIds: List<Int?>,
) {
    /** The tokens of one sequence, as (first, last) token indices; null when it has none. */
    fun tokenRange(sequence: Int): IntRange? {
        val first = sequenceIds.indexOfFirst { it == sequence }
        return if (first < 0) null else first..sequenceIds.indexOfLast { it == sequence }
    }
}

/**
 * BERT's WordPiece tokenizer as Hugging Face `tokenizers` applies a WordPiece tokenizer.json with
 * BertNormalizer, BertPreTokenizer and the [CLS] A [SEP] (B [SEP]) post-processor: the
 * tokenization slm-export proves in its parity checks and writes as the manifest's
 * tokenizer.self_test. Truncation is the exporter's (encoder_verify.tokenizer_for): a single text
 * loses its tail; a question/passage pair loses the passage's tail only.
 */
class WordPieceTokenizer(val config: WordPieceConfig, private val vocab: Map<String, Int>) {
    private val unkId = vocab[config.unkToken] ?: throw TokenizerException("tokenizer.json: the unknown token ${config.unkToken} is not in the vocabulary")
    private val clsId = vocab[config.clsToken] ?: throw TokenizerException("tokenizer.json: ${config.clsToken} is not in the vocabulary")
    private val sepId = vocab[config.sepToken] ?: throw TokenizerException("tokenizer.json: ${config.sepToken} is not in the vocabulary")

    val vocabSize: Int get() = vocab.size

    /** A token before the post-processor: its id and its [start, end) in the original text. */
    private class Piece(val id: Int, val start: Int, val end: Int)

    /** [CLS] text [SEP], the text's tokens cut to `maxTokens` - 2. */
    fun encode(text: String, maxTokens: Int): Encoding {
        require(maxTokens >= 3) { "maxTokens must leave room for [CLS], one token and [SEP]" }
        val pieces = pieces(text).take(maxTokens - 2)
        return assemble(listOf(pieces))
    }

    /** [CLS] question [SEP] passage [SEP], the passage cut so that the whole fits `maxTokens`. */
    fun encodePair(question: String, passage: String, maxTokens: Int): Encoding {
        val questionPieces = pieces(question)
        val room = maxTokens - 3 - questionPieces.size
        val passagePieces = pieces(passage)
        if (room < 1 && passagePieces.isNotEmpty()) {
            throw TokenizerException("the question takes ${questionPieces.size} tokens; with the passage it must fit $maxTokens")
        }
        return assemble(listOf(questionPieces, passagePieces.take(maxOf(room, 0))))
    }

    private fun assemble(sequences: List<List<Piece>>): Encoding {
        val ids = ArrayList<Int>()
        val types = ArrayList<Int>()
        val offsets = ArrayList<IntArray>()
        val sequenceIds = ArrayList<Int?>()
        fun special(id: Int, type: Int) {
            ids += id; types += type; offsets += intArrayOf(0, 0); sequenceIds += null
        }
        special(clsId, 0)
        sequences.forEachIndexed { index, pieces ->
            for (p in pieces) {
                ids += p.id; types += index; offsets += intArrayOf(p.start, p.end); sequenceIds += index
            }
            special(sepId, index)
        }
        return Encoding(ids.toIntArray(), types.toIntArray(), offsets, sequenceIds)
    }

    /** A normalized code point and the original text's [start, end) it came from. */
    private class Normalized(val codePoint: Int, val start: Int, val end: Int)

    private fun pieces(text: String): List<Piece> = words(normalize(text)).flatMap(::wordPieces)

    // BertNormalizer: drop NUL, U+FFFD and control/format/unassigned characters, turn whitespace
    // into spaces, put spaces around CJK ideographs, strip accents (NFD, then drop non-spacing
    // marks), lowercase; each output code point keeps the span of the character it came from.
    private fun normalize(text: String): List<Normalized> {
        val out = ArrayList<Normalized>(text.length)
        var i = 0
        while (i < text.length) {
            val cp = text.codePointAt(i)
            val end = i + Character.charCount(cp)
            val start = i
            i = end
            if (config.cleanText) {
                if (cp == 0 || cp == 0xFFFD || isControl(cp)) continue
                if (isWhitespace(cp)) {
                    out += Normalized(' '.code, start, end); continue
                }
            }
            if (config.handleChineseChars && isChinese(cp)) {
                out += Normalized(' '.code, start, end)
                out += Normalized(cp, start, end)
                out += Normalized(' '.code, start, end)
                continue
            }
            var piece = String(Character.toChars(cp))
            if (config.stripAccents) {
                piece = Normalizer.normalize(piece, Normalizer.Form.NFD)
                    .codePoints().filter { Character.getType(it) != Character.NON_SPACING_MARK.toInt() }
                    .collect(::StringBuilder, StringBuilder::appendCodePoint, StringBuilder::append).toString()
            }
            if (config.lowercase) piece = piece.lowercase()
            piece.codePoints().forEach { out += Normalized(it, start, end) }
        }
        return out
    }

    // BertPreTokenizer: split on whitespace (dropped) and around each punctuation character.
    private fun words(chars: List<Normalized>): List<List<Normalized>> {
        val words = ArrayList<List<Normalized>>()
        var current = ArrayList<Normalized>()
        fun flush() {
            if (current.isNotEmpty()) words += current
            current = ArrayList()
        }
        for (c in chars) {
            when {
                isWhitespace(c.codePoint) -> flush()
                isPunctuation(c.codePoint) -> { flush(); words += listOf(c) }
                else -> current += c
            }
        }
        flush()
        return words
    }

    // WordPiece: greedy longest match from the left, continuations carry the prefix; a word with
    // a part outside the vocabulary, or longer than max_input_chars_per_word, is one [UNK].
    private fun wordPieces(word: List<Normalized>): List<Piece> {
        if (word.size > config.maxInputCharsPerWord) return listOf(Piece(unkId, word.first().start, word.last().end))
        val text = StringBuilder()
        val boundaries = IntArray(word.size + 1)
        word.forEachIndexed { k, c ->
            boundaries[k] = text.length
            text.appendCodePoint(c.codePoint)
        }
        boundaries[word.size] = text.length
        val out = ArrayList<Piece>()
        var begin = 0
        while (begin < word.size) {
            var end = word.size
            var id: Int? = null
            while (end > begin) {
                val sub = text.substring(boundaries[begin], boundaries[end])
                id = vocab[if (begin > 0) config.continuingSubwordPrefix + sub else sub]
                if (id != null) break
                end--
            }
            if (id == null) return listOf(Piece(unkId, word.first().start, word.last().end))
            out += Piece(id, word[begin].start, word[end - 1].end)
            begin = end
        }
        return out
    }

    companion object {
        /**
         * Reads a WordPiece tokenizer.json (BERT, DistilBERT, MiniLM). Anything else (BPE, Unigram,
         * another normalizer or post-processor) is refused by name: this app would tokenize it
         * differently from the exporter.
         */
        fun fromTokenizerJson(text: String): WordPieceTokenizer {
            val root = try {
                MiniJson.parse(text) as? Map<*, *>
            } catch (e: RuntimeException) {
                throw TokenizerException("tokenizer.json is not valid JSON: ${e.message}")
            } ?: throw TokenizerException("tokenizer.json is not a JSON object")
            val model = root["model"] as? Map<*, *> ?: throw TokenizerException("tokenizer.json has no model")
            if (model["type"] != "WordPiece") {
                throw TokenizerException("tokenizer.json is a ${model["type"]} tokenizer; this app tokenizes WordPiece (BERT-family) encoders only")
            }
            val normalizer = root["normalizer"] as? Map<*, *>
            if (normalizer?.get("type") != "BertNormalizer") {
                throw TokenizerException("tokenizer.json's normalizer is ${normalizer?.get("type")}; this app applies BertNormalizer only")
            }
            val pre = root["pre_tokenizer"] as? Map<*, *>
            if (pre?.get("type") != "BertPreTokenizer") {
                throw TokenizerException("tokenizer.json's pre-tokenizer is ${pre?.get("type")}; this app applies BertPreTokenizer only")
            }
            val (cls, sep) = specialTokens(root["post_processor"] as? Map<*, *>)
            @Suppress("UNCHECKED_CAST")
            val vocabJson = model["vocab"] as? Map<String, Any?> ?: throw TokenizerException("tokenizer.json has no vocabulary")
            val vocab = HashMap<String, Int>(vocabJson.size * 2)
            for ((token, id) in vocabJson) vocab[token] = (id as Double).toInt()
            val lowercase = normalizer["lowercase"] as? Boolean ?: true
            val config = WordPieceConfig(
                cleanText = normalizer["clean_text"] as? Boolean ?: true,
                handleChineseChars = normalizer["handle_chinese_chars"] as? Boolean ?: true,
                stripAccents = normalizer["strip_accents"] as? Boolean ?: lowercase,
                lowercase = lowercase,
                unkToken = model["unk_token"] as? String ?: "[UNK]",
                continuingSubwordPrefix = model["continuing_subword_prefix"] as? String ?: "##",
                maxInputCharsPerWord = (model["max_input_chars_per_word"] as? Double)?.toInt() ?: 100,
                clsToken = cls,
                sepToken = sep,
            )
            return WordPieceTokenizer(config, vocab)
        }

        // BertProcessing, or a TemplateProcessing of BERT's shape: [CLS] $A [SEP] and
        // [CLS] $A [SEP] $B:1 [SEP]:1. Returns the two special tokens.
        private fun specialTokens(post: Map<*, *>?): Pair<String, String> {
            when (post?.get("type")) {
                "BertProcessing" -> {
                    val cls = (post["cls"] as? List<*>)?.firstOrNull() as? String
                    val sep = (post["sep"] as? List<*>)?.firstOrNull() as? String
                    if (cls != null && sep != null) return cls to sep
                }
                "TemplateProcessing" -> {
                    val single = (post["single"] as? List<*>)?.map(::templateItem)
                    val pair = (post["pair"] as? List<*>)?.map(::templateItem)
                    if (single != null && single.size == 3 && single[1] == "\$A:0" && pair != null && pair.size == 5) {
                        val cls = single[0].removeSuffix(":0")
                        val sep = single[2].removeSuffix(":0")
                        if (pair == listOf("$cls:0", "\$A:0", "$sep:0", "\$B:1", "$sep:1")) return cls to sep
                    }
                }
            }
            throw TokenizerException("tokenizer.json's post-processor is not BERT's [CLS] A [SEP] (B [SEP]); this app cannot add its special tokens")
        }

        private fun templateItem(item: Any?): String {
            val entry = item as? Map<*, *> ?: return "?"
            (entry["SpecialToken"] as? Map<*, *>)?.let { return "${it["id"]}:${(it["type_id"] as? Double)?.toInt()}" }
            (entry["Sequence"] as? Map<*, *>)?.let { return "\$${it["id"]}:${(it["type_id"] as? Double)?.toInt()}" }
            return "?"
        }

        // Rust's char::is_whitespace (Unicode White_Space), which tokenizers uses; Java's
        // Character.isWhitespace leaves out the no-break spaces.
        fun isWhitespace(cp: Int): Boolean = when (cp) {
            in 0x09..0x0D, 0x20, 0x85, 0xA0, 0x1680, in 0x2000..0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000 -> true
            else -> false
        }

        // tokenizers' is_control: the "other" categories (Cc, Cf, Co, Cn), except tab and newlines.
        private fun isControl(cp: Int): Boolean {
            if (cp == 0x09 || cp == 0x0A || cp == 0x0D) return false
            return when (Character.getType(cp)) {
                Character.CONTROL.toInt(), Character.FORMAT.toInt(), Character.PRIVATE_USE.toInt(),
                Character.UNASSIGNED.toInt(), Character.SURROGATE.toInt() -> true
                else -> false
            }
        }

        // ASCII punctuation (which includes $ + < = > ^ ` | ~) or a Unicode P* category.
        private fun isPunctuation(cp: Int): Boolean {
            if (cp in 33..47 || cp in 58..64 || cp in 91..96 || cp in 123..126) return true
            return when (Character.getType(cp)) {
                Character.CONNECTOR_PUNCTUATION.toInt(), Character.DASH_PUNCTUATION.toInt(),
                Character.START_PUNCTUATION.toInt(), Character.END_PUNCTUATION.toInt(),
                Character.INITIAL_QUOTE_PUNCTUATION.toInt(), Character.FINAL_QUOTE_PUNCTUATION.toInt(),
                Character.OTHER_PUNCTUATION.toInt() -> true
                else -> false
            }
        }

        // BERT's "Chinese character" blocks: CJK Unified Ideographs and their extensions and
        // compatibility forms (not kana or hangul, which stay inside words).
        private fun isChinese(cp: Int): Boolean =
            cp in 0x4E00..0x9FFF || cp in 0x3400..0x4DBF || cp in 0x20000..0x2A6DF || cp in 0x2A700..0x2B73F ||
                cp in 0x2B740..0x2B81F || cp in 0x2B920..0x2CEAF || cp in 0xF900..0xFAFF || cp in 0x2F800..0x2FA1F
    }
}
