package org.slmexport.demo.core

import java.io.File
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertFalse
import kotlin.test.assertTrue
import org.junit.Test

/**
 * The portable template against the vectors slm-export writes (chat_vectors.json: the manifest's
 * chat section for a ChatML template as SmolLM2 ships it, Llama 3's and Gemma's; written by
 * tests/chat_vectors.py, which the Python suite keeps current).
 */
class ChatTest {
    @Suppress("UNCHECKED_CAST")
    private val styles: Map<String, Map<String, Any?>> by lazy {
        val file = listOf("src/coreTest/resources/chat_vectors.json", "app/src/coreTest/resources/chat_vectors.json")
            .map(::File).first { it.isFile }
        (MiniJson.parse(file.readText()) as Map<String, Any?>)["styles"] as Map<String, Map<String, Any?>>
    }

    @Suppress("UNCHECKED_CAST")
    private fun portable(chat: Map<String, Any?>): PortableTemplate {
        val p = chat["portable"] as Map<String, Any?>
        val roles = (p["roles"] as Map<String, Map<String, String>>).mapValues { Affix(it.value["prefix"]!!, it.value["suffix"]!!) }
        return PortableTemplate(p["prefix"] as String, roles, p["generation_prompt"] as String, p["default_system"] as String?)
    }

    @Suppress("UNCHECKED_CAST")
    private fun messages(vector: Map<String, Any?>) =
        (vector["messages"] as List<Map<String, String>>).map { ChatMessage(it["role"]!!, it["content"]!!) }

    @Test
    fun portableTemplateRendersEveryVectorAsTheExporter() {
        assertEquals(setOf("chatml", "gemma", "llama3"), styles.keys)
        var checked = 0
        for ((style, chat) in styles) {
            val template = portable(chat)
            @Suppress("UNCHECKED_CAST")
            for (vector in chat["vectors"] as List<Map<String, Any?>>) {
                val text = vector["text"] as String? ?: continue
                val msgs = messages(vector)
                if (msgs.any { it.role !in template.roles }) continue
                assertEquals(text, template.render(msgs, vector["add_generation_prompt"] as Boolean), "$style ${vector["name"]}")
                checked++
            }
        }
        assertTrue(checked >= 16, "only $checked vectors checked")
    }

    @Test
    fun aTemplateWithoutASystemTurnRefusesASystemMessage() {
        val gemma = portable(styles.getValue("gemma"))
        assertFalse(gemma.supportsSystem)
        assertFailsWith<IllegalArgumentException> { gemma.render(listOf(ChatMessage("system", "x")), true) }
        assertTrue(portable(styles.getValue("chatml")).supportsSystem)
    }

    @Test
    fun theDefaultSystemPromptAppearsOnlyWithoutAGivenOne() {
        val chatml = portable(styles.getValue("chatml"))
        val default = chatml.render(listOf(ChatMessage("user", "hi")), true)
        assertTrue(default.startsWith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"))
        val own = chatml.render(listOf(ChatMessage("system", "Be brief."), ChatMessage("user", "hi")), true)
        assertEquals("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", own)
    }

    @Test
    fun stopStringsAreHiddenEvenWhenSplitAcrossPieces() {
        @Suppress("UNCHECKED_CAST")
        val eot = styles.getValue("chatml")["end_of_turn_token"] as String
        val filter = StopTextFilter(listOf(eot))
        val shown = listOf("Paris", " is", "<|im", "_e", "nd|>", "never shown").joinToString("") { filter.push(it) }
        assertEquals("Paris is", shown)
        assertTrue(filter.stopped)
        assertEquals("", filter.flush())
    }

    @Test
    fun textThatOnlyLooksLikeAStopStringIsShown() {
        val filter = StopTextFilter(listOf("<|im_end|>"))
        val shown = filter.push("a <|im") + filter.push("age") + filter.push(" <|") + filter.flush()
        assertEquals("a <|image <|", shown)
        assertFalse(filter.stopped)
    }

    @Test
    fun stopTokensAreTheManifestsStopIds() {
        for ((style, chat) in styles) {
            @Suppress("UNCHECKED_CAST")
            val ids = (chat["stop_token_ids"] as List<Double>).map { it.toInt() }
            val stops = StopTokens(ids)
            assertTrue(ids.size >= 2 && ids.all(stops::isStop), style) // the tokenizer's eos and the end of turn
            assertFalse(stops.isStop(ids.max() + 1))
        }
    }

    @Test
    fun historyIsTrimmedOldestExchangeFirstKeepingTheSystemPrompt() {
        val history = listOf(
            ChatMessage("system", "S"),
            ChatMessage("user", "u1"), ChatMessage("assistant", "a1"),
            ChatMessage("user", "u2"), ChatMessage("assistant", "a2"),
            ChatMessage("user", "u3"),
        )
        val tokens = { msgs: List<ChatMessage> -> msgs.size * 10 } // 10 tokens a message
        assertEquals(Trimmed(history, 0), HistoryTrimmer.fit(history, contextTokens = 100, replyTokens = 40, countTokens = tokens))
        val trimmed = HistoryTrimmer.fit(history, contextTokens = 80, replyTokens = 40, countTokens = tokens)
        assertEquals(listOf("S", "u2", "a2", "u3"), trimmed.messages.map { it.content })
        assertEquals(2, trimmed.dropped)
        val newestOnly = HistoryTrimmer.fit(history, contextTokens = 30, replyTokens = 20, countTokens = tokens)
        assertEquals(listOf("S", "u3"), newestOnly.messages.map { it.content }) // never drops the question itself
    }

    @Test
    fun utf8PiecesBecomeWholeCharacters() {
        val text = "café 東京 🙂!"
        val bytes = text.toByteArray(Charsets.UTF_8)
        for (cut in 1 until bytes.size) { // every split point, including inside each character
            val buffer = Utf8Buffer()
            val first = buffer.push(bytes.copyOfRange(0, cut))
            assertFalse(first.contains('\uFFFD'), "cut $cut")
            assertEquals(text, first + buffer.push(bytes.copyOfRange(cut, bytes.size)) + buffer.flush(), "cut $cut")
        }
        val emoji = "🙂".toByteArray(Charsets.UTF_8)
        val buffer = Utf8Buffer()
        assertEquals("", emoji.dropLast(1).joinToString("") { buffer.push(byteArrayOf(it)) })
        assertEquals("🙂", buffer.push(byteArrayOf(emoji.last())))
    }
}
