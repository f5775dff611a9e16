package org.slmexport.demo.selftest

import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Test

class TokenDecoderTest {
    // A GPT-2 style byte-level BPE vocabulary: 'Ġ' is the space byte, "Ã©" the two UTF-8 bytes of 'é'.
    private val byteLevel = """
        {"model": {"type": "BPE", "vocab": {"Hello": 0, "Ġworld": 1, "Ġcaf": 2, "Ã©": 3, "!": 4, "Ã": 5}},
         "added_tokens": [{"id": 6, "content": "<|endoftext|>", "special": true},
                          {"id": 7, "content": "<tool>", "special": false}],
         "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}}
    """.trimIndent()

    @Test
    fun decodesByteLevelTokens() {
        val d = TokenDecoder.fromJson(byteLevel)
        assertEquals("Hello world café!", d.decode(listOf(0, 1, 2, 3, 4)))
    }

    @Test
    fun skipsSpecialTokensButKeepsOtherAddedTokens() {
        val d = TokenDecoder.fromJson(byteLevel)
        assertEquals("Hello<tool> world", d.decode(listOf(6, 0, 7, 1, 6)))
        assertEquals("<|endoftext|>Hello", d.decode(listOf(6, 0), skipSpecialTokens = false))
    }

    @Test
    fun aSplitCharacterBecomesAReplacementCharacter() {
        val d = TokenDecoder.fromJson(byteLevel)
        assertEquals(" caf\uFFFD", d.decode(listOf(2, 5)))
    }

    @Test
    fun decodesSentencePieceStyleChains() {
        // Llama-style: Replace('▁', ' '), ByteFallback, Fuse, Strip(' ', 1, 0).
        val json = """
            {"model": {"type": "BPE", "vocab": {"<unk>": 0, "<s>": 1, "▁Hello": 2, "▁world": 3, "<0xC3>": 4, "<0xA9>": 5}},
             "added_tokens": [{"id": 1, "content": "<s>", "special": true}],
             "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}}
        """.trimIndent()
        val d = TokenDecoder.fromJson(json)
        assertEquals("Hello worldé", d.decode(listOf(1, 2, 3, 4, 5)))
        assertEquals("Hello world", d.decode(listOf(1, 2, 3)))
    }

    @Test
    fun decodesMetaspace() {
        val json = """
            {"model": {"type": "Unigram", "vocab": [["<unk>", 0.0], ["▁Hi", -1.0], ["▁there", -2.0]]},
             "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}}
        """.trimIndent()
        assertEquals("Hi there", TokenDecoder.fromJson(json).decode(listOf(1, 2)))
    }

    @Test
    fun unknownDecoderIsReported() {
        val json = """{"model": {"vocab": {"a": 0}}, "decoder": {"type": "CTC"}}"""
        val e = assertThrows(UnsupportedTokenizerException::class.java) { TokenDecoder.fromJson(json) }
        assertEquals("tokenizer.json decoder 'CTC' is not supported by the app's decoder", e.message)
    }

    @Test
    fun unknownIdIsAnError() {
        val d = TokenDecoder.fromJson(byteLevel)
        assertThrows(IllegalArgumentException::class.java) { d.decode(listOf(999)) }
    }
}
