package org.slmexport.demo.core

/**
 * Turns a stream of byte pieces into complete characters. A byte-level vocabulary can end a token
 * inside a UTF-8 sequence (emoji, CJK); decoding such a piece alone shows U+FFFD or, in some
 * bindings, drops the piece. [push] returns the complete characters so far and keeps an
 * incomplete tail (at most 3 bytes) for the next piece.
 */
class Utf8Buffer {
    private var tail = ByteArray(0)

    fun push(piece: ByteArray): String {
        val bytes = tail + piece
        val end = completeLength(bytes)
        tail = bytes.copyOfRange(end, bytes.size)
        return String(bytes, 0, end, Charsets.UTF_8)
    }

    /** What is left when the stream ends: an incomplete sequence decodes as U+FFFD. */
    fun flush(): String {
        val rest = String(tail, Charsets.UTF_8)
        tail = ByteArray(0)
        return rest
    }

    private fun completeLength(bytes: ByteArray): Int {
        // look back over at most 3 bytes for the lead byte of an unfinished sequence
        for (back in 1..minOf(3, bytes.size)) {
            val b = bytes[bytes.size - back].toInt() and 0xFF
            if (b and 0xC0 == 0x80) continue // continuation byte
            val need = when {
                b and 0x80 == 0 -> 1
                b and 0xE0 == 0xC0 -> 2
                b and 0xF0 == 0xE0 -> 3
                b and 0xF8 == 0xF0 -> 4
                else -> 1 // not a lead byte: let the decoder replace it
            }
            return if (need > back) bytes.size - back else bytes.size
        }
        return bytes.size
    }
}
