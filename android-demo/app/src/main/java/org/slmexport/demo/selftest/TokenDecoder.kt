package org.slmexport.demo.selftest

import kotlinx.serialization.json.Json
import kotlinx.serialization.json.JsonArray
import kotlinx.serialization.json.JsonElement
import kotlinx.serialization.json.JsonNull
import kotlinx.serialization.json.JsonObject
import kotlinx.serialization.json.booleanOrNull
import kotlinx.serialization.json.contentOrNull
import kotlinx.serialization.json.intOrNull
import kotlinx.serialization.json.jsonArray
import kotlinx.serialization.json.jsonObject
import kotlinx.serialization.json.jsonPrimitive

class UnsupportedTokenizerException(message: String) : Exception(message)

/**
 * Turns token ids back into text with a Hugging Face tokenizer.json, the way `tokenizers`'
 * `decode(ids, skip_special_tokens=True)` does: ids become token strings (added tokens by their
 * content), special tokens are dropped, and the tokenizer's decoder chain runs. Supported decoders:
 * ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip, WordPiece and Sequence of these.
 *
 * The app needs it only for ExecuTorch's self-test (LlmModule takes text, not ids); chat output is
 * decoded by the runtimes themselves.
 */
class TokenDecoder private constructor(
    private val vocab: Array<String?>,
    private val special: Set<Int>,
    private val decoder: Step,
) {
    fun decode(ids: List<Int>, skipSpecialTokens: Boolean = true): String {
        val tokens = ids.mapNotNull { id ->
            if (skipSpecialTokens && id in special) null
            else vocab.getOrNull(id) ?: throw IllegalArgumentException("token id $id is not in the tokenizer's vocabulary")
        }
        return decoder.apply(tokens).joinToString("")
    }

    private fun interface Step {
        fun apply(tokens: List<String>): List<String>
    }

    companion object {
        fun fromJson(text: String): TokenDecoder {
            val root = Json.parseToJsonElement(text).jsonObject
            val model = root["model"]?.jsonObject ?: throw UnsupportedTokenizerException("tokenizer.json has no model")
            val byId = HashMap<Int, String>()
            when (val v = model["vocab"]) {
                is JsonObject -> v.forEach { (token, id) -> byId[id.jsonPrimitive.intOrNull ?: return@forEach] = token }
                is JsonArray -> v.forEachIndexed { i, e -> byId[i] = e.jsonArray[0].jsonPrimitive.content } // Unigram: [piece, score]
                else -> throw UnsupportedTokenizerException("tokenizer.json model has no vocab")
            }
            val special = HashSet<Int>()
            (root["added_tokens"] as? JsonArray)?.forEach { e ->
                val o = e.jsonObject
                val id = o["id"]?.jsonPrimitive?.intOrNull ?: return@forEach
                byId[id] = o["content"]?.jsonPrimitive?.content ?: return@forEach
                if (o["special"]?.jsonPrimitive?.booleanOrNull == true) special += id
            }
            val size = (byId.keys.maxOrNull() ?: -1) + 1
            val vocab = arrayOfNulls<String>(size)
            byId.forEach { (id, token) -> if (id >= 0) vocab[id] = token }
            return TokenDecoder(vocab, special, step(root["decoder"]))
        }

        private fun step(config: JsonElement?): Step {
            if (config == null || config is JsonNull) return Step { it }
            val o = config.jsonObject
            return when (val type = o["type"]?.jsonPrimitive?.contentOrNull) {
                "Sequence" -> {
                    val steps = o["decoders"]!!.jsonArray.map { step(it) }
                    Step { tokens -> steps.fold(tokens) { acc, s -> s.apply(acc) } }
                }
                "ByteLevel" -> Step { tokens -> listOf(byteLevel(tokens)) }
                "Metaspace" -> metaspace(o)
                "Replace" -> replace(o)
                "ByteFallback" -> Step(::byteFallback)
                "Fuse" -> Step { tokens -> listOf(tokens.joinToString("")) }
                "Strip" -> strip(o)
                "WordPiece" -> wordPiece(o)
                else -> throw UnsupportedTokenizerException("tokenizer.json decoder '$type' is not supported by the app's decoder")
            }
        }

        // GPT-2's byte <-> printable character table.
        private val byteOfChar: Map<Char, Int> by lazy {
            val bytes = (('!'.code..'~'.code) + ('¡'.code..'¬'.code) + ('®'.code..'ÿ'.code)).toMutableList()
            val chars = bytes.toMutableList()
            var n = 0
            for (b in 0 until 256) {
                if (b !in bytes) {
                    bytes += b
                    chars += 256 + n
                    n++
                }
            }
            chars.indices.associate { chars[it].toChar() to bytes[it] }
        }

        private fun byteLevel(tokens: List<String>): String {
            val out = java.io.ByteArrayOutputStream()
            for (t in tokens) {
                val mapped = t.map { byteOfChar[it] }
                if (mapped.all { it != null }) mapped.forEach { out.write(it!!) } else out.write(t.toByteArray(Charsets.UTF_8))
            }
            return out.toByteArray().toString(Charsets.UTF_8) // malformed input -> U+FFFD, as from_utf8_lossy
        }

        private fun metaspace(o: JsonObject): Step {
            val replacement = o["replacement"]?.jsonPrimitive?.content ?: "\u2581"
            val scheme = o["prepend_scheme"]?.jsonPrimitive?.contentOrNull
            val prepend = when {
                scheme != null -> scheme != "never"
                else -> o["add_prefix_space"]?.jsonPrimitive?.booleanOrNull ?: true
            }
            return Step { tokens ->
                tokens.mapIndexed { i, t ->
                    val s = t.replace(replacement, " ")
                    if (i == 0 && prepend && s.startsWith(" ")) s.substring(1) else s
                }
            }
        }

        private fun replace(o: JsonObject): Step {
            val pattern = o["pattern"]!!.jsonObject
            val content = o["content"]?.jsonPrimitive?.content ?: ""
            pattern["String"]?.jsonPrimitive?.content?.let { from -> return Step { ts -> ts.map { it.replace(from, content) } } }
            val regex = Regex(pattern["Regex"]!!.jsonPrimitive.content)
            return Step { ts -> ts.map { it.replace(regex, Regex.escapeReplacement(content)) } }
        }

        private val byteToken = Regex("^<0x([0-9A-Fa-f]{2})>$")

        private fun byteFallback(tokens: List<String>): List<String> {
            val out = mutableListOf<String>()
            val pending = java.io.ByteArrayOutputStream()
            fun flush() {
                if (pending.size() == 0) return
                val bytes = pending.toByteArray()
                val decoder = Charsets.UTF_8.newDecoder()
                val text = try {
                    decoder.decode(java.nio.ByteBuffer.wrap(bytes)).toString()
                } catch (e: java.nio.charset.CharacterCodingException) {
                    "\uFFFD".repeat(bytes.size) // as tokenizers: one replacement character per byte
                }
                out += text
                pending.reset()
            }
            for (t in tokens) {
                val m = byteToken.matchEntire(t)
                if (m != null) pending.write(m.groupValues[1].toInt(16)) else {
                    flush()
                    out += t
                }
            }
            flush()
            return out
        }

        private fun strip(o: JsonObject): Step {
            val content = o["content"]?.jsonPrimitive?.content?.firstOrNull() ?: ' '
            val start = o["start"]?.jsonPrimitive?.intOrNull ?: 0
            val stop = o["stop"]?.jsonPrimitive?.intOrNull ?: 0
            return Step { tokens ->
                tokens.map { t ->
                    var s = 0
                    while (s < start && s < t.length && t[s] == content) s++
                    var e = t.length
                    var k = 0
                    while (k < stop && e > s && t[e - 1] == content) { e--; k++ }
                    t.substring(s, e)
                }
            }
        }

        private fun wordPiece(o: JsonObject): Step {
            val prefix = o["prefix"]?.jsonPrimitive?.content ?: "##"
            return Step { tokens ->
                tokens.mapIndexed { i, t ->
                    when {
                        t.startsWith(prefix) -> t.removePrefix(prefix)
                        i == 0 -> t
                        else -> " $t"
                    }
                }
            }
        }
    }
}
