package org.slmexport.demo.core

/**
 * A small JSON reader for the core source set, which has no JSON library (it is compiled with
 * bare kotlinc in CI): tokenizer.json for the encoder screens, and the tests' fixtures. Objects
 * become Map<String, Any?>, arrays List<Any?>, numbers Double, plus String, Boolean and null.
 * Malformed text throws IllegalArgumentException or IllegalStateException (callers say which file).
 */
class MiniJson private constructor(private val text: String) {
    private var i = 0

    companion object {
        fun parse(text: String): Any? = MiniJson(text).run {
            val value = try {
                value()
            } catch (e: IndexOutOfBoundsException) {
                throw IllegalArgumentException("the JSON text ends early")
            }
            space()
            require(i == text.length) { "trailing text at $i" }
            value
        }
    }

    private fun space() {
        while (i < text.length && text[i] in " \t\r\n") i++
    }

    private fun value(): Any? {
        space()
        return when (val c = text[i]) {
            '{' -> obj()
            '[' -> arr()
            '"' -> str()
            't' -> literal("true", true)
            'f' -> literal("false", false)
            'n' -> literal("null", null)
            else -> if (c == '-' || c.isDigit()) num() else error("unexpected '$c' at $i")
        }
    }

    private fun literal(word: String, value: Any?): Any? {
        require(text.startsWith(word, i)) { "bad literal at $i" }
        i += word.length
        return value
    }

    private fun num(): Double {
        val start = i
        while (i < text.length && text[i] in "+-0123456789.eE") i++
        return text.substring(start, i).toDouble()
    }

    private fun str(): String {
        val out = StringBuilder()
        i++ // opening quote
        while (true) {
            val c = text[i++]
            when (c) {
                '"' -> return out.toString()
                '\\' -> {
                    when (val e = text[i++]) {
                        'n' -> out.append('\n')
                        't' -> out.append('\t')
                        'r' -> out.append('\r')
                        'b' -> out.append('\b')
                        'f' -> out.append('\u000c')
                        'u' -> {
                            out.append(text.substring(i, i + 4).toInt(16).toChar())
                            i += 4
                        }
                        else -> out.append(e)
                    }
                }
                else -> out.append(c)
            }
        }
    }

    private fun obj(): Map<String, Any?> {
        val out = LinkedHashMap<String, Any?>()
        i++
        space()
        if (text[i] == '}') return out.also { i++ }
        while (true) {
            space()
            val key = str()
            space()
            require(text[i++] == ':') { "expected ':' at ${i - 1}" }
            out[key] = value()
            space()
            when (text[i++]) {
                ',' -> continue
                '}' -> return out
                else -> error("expected ',' or '}' at ${i - 1}")
            }
        }
    }

    private fun arr(): List<Any?> {
        val out = ArrayList<Any?>()
        i++
        space()
        if (text[i] == ']') return out.also { i++ }
        while (true) {
            out += value()
            space()
            when (text[i++]) {
                ',' -> continue
                ']' -> return out
                else -> error("expected ',' or ']' at ${i - 1}")
            }
        }
    }
}
