import Foundation

/// Turns generated ids into text pieces for streaming without ever showing half a character: a
/// byte-level vocabulary can end a token inside a UTF-8 sequence (CJK, emoji), and the decoder
/// then yields U+FFFD for the incomplete tail. Pieces are held back until the text decodes
/// cleanly, the same contract as `tokenizers`' DecodeStream in the exporter's `slm-export run`.
struct StreamingDetokenizer {
    private let decode: ([Int]) -> String
    private(set) var ids: [Int] = []
    /// Text already handed out.
    private(set) var emitted = ""

    init(decode: @escaping ([Int]) -> String) {
        self.decode = decode
    }

    /// Adds one id; returns the new text it completes, if any.
    mutating func push(_ id: Int) -> String? {
        ids.append(id)
        let text = decode(ids)
        if text.hasSuffix("\u{FFFD}") { return nil }  // an incomplete character: wait for more
        return take(text)
    }

    /// Whatever is left at the end of generation (a replacement character included).
    mutating func flush() -> String? {
        take(decode(ids))
    }

    private mutating func take(_ text: String) -> String? {
        guard text.hasPrefix(emitted) else {
            // A decoder may rewrite earlier text (e.g. strip a leading space once more tokens
            // arrive); hand out only what extends the longest common prefix.
            let common = text.commonPrefix(with: emitted)
            let piece = String(text.dropFirst(common.count))
            emitted = text
            return piece.isEmpty ? nil : piece
        }
        let piece = String(text.dropFirst(emitted.count))
        emitted = text
        return piece.isEmpty ? nil : piece
    }
}
