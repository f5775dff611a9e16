import Foundation

/// A tokenizer.json this app cannot apply, or a text it cannot encode, with a message for people.
struct WordPieceError: LocalizedError, Equatable {
    var message: String

    init(_ message: String) { self.message = message }

    var errorDescription: String? { message }
}

/// BERT's normalizer (tokenizers' BertNormalizer) and WordPiece model settings, from tokenizer.json.
struct WordPieceConfig: Equatable {
    var cleanText: Bool
    var handleChineseChars: Bool
    /// tokenizers' `strip_accents: null` means "as lowercase"; resolved when the file is read.
    var stripAccents: Bool
    var lowercase: Bool
    var unkToken: String
    var continuingSubwordPrefix: String
    var maxInputCharsPerWord: Int
    var clsToken: String
    var sepToken: String
}

/// Where a token came from in its own text: [start, end) in UTF-16 code units (NSString / NSRange
/// indices, as tokenizers' offsets on a Python str of BMP text and as Android's String indices).
struct TokenOffset: Equatable, Hashable, Sendable {
    var start: Int
    var end: Int
}

/// One encoded text or question/passage pair: ids with the segment of each token, and where each
/// token came from in its own text; special tokens have (0, 0) and a nil sequence id. Sequence 0 is
/// the text (or question), 1 the passage.
struct WordPieceEncoding: Equatable, Sendable {
    var ids: [Int]
    var typeIds: [Int]
    var offsets: [TokenOffset]
    var sequenceIds: [Int?]

    /// The tokens of one sequence, as first...last token index; nil when it has none.
    func tokenRange(sequence: Int) -> ClosedRange<Int>? {
        guard let first = sequenceIds.firstIndex(where: { $0 == sequence }),
              let last = sequenceIds.lastIndex(where: { $0 == sequence }) else { return nil }
        return first...last
    }
}

/// BERT's WordPiece tokenizer as Hugging Face `tokenizers` applies a WordPiece tokenizer.json with
/// BertNormalizer, BertPreTokenizer and the [CLS] A [SEP] (B [SEP]) post-processor: the
/// tokenization slm-export proves in its parity checks and writes as the manifest's
/// tokenizer.self_test. Truncation is the exporter's (encoder_verify.tokenizer_for): a single text
/// loses its tail; a question/passage pair loses the passage's tail only.
///
/// The same algorithm as the Android app's WordPiece.kt, checked against the same vectors
/// (SLMDemoTests/Fixtures/encoder_vectors.json). Vocabulary keys are compared scalar by scalar:
/// Swift's `String ==` treats canonically equivalent strings as equal, tokenizers does not.
final class WordPieceTokenizer: @unchecked Sendable {
    let config: WordPieceConfig
    private let vocab: [[Unicode.Scalar]: Int]
    private let unkId: Int
    private let clsId: Int
    private let sepId: Int
    private let prefix: [Unicode.Scalar]

    var vocabSize: Int { vocab.count }

    /// `vocab`: token -> id, each token as its Unicode scalars.
    init(config: WordPieceConfig, vocab: [[Unicode.Scalar]: Int]) throws {
        func id(_ token: String, _ what: String) throws -> Int {
            guard let id = vocab[Array(token.unicodeScalars)] else {
                throw WordPieceError("tokenizer.json: \(what)\(token) is not in the vocabulary")
            }
            return id
        }
        self.config = config
        self.vocab = vocab
        self.unkId = try id(config.unkToken, "the unknown token ")
        self.clsId = try id(config.clsToken, "")
        self.sepId = try id(config.sepToken, "")
        self.prefix = Array(config.continuingSubwordPrefix.unicodeScalars)
    }

    /// A token before the post-processor: its id and its [start, end) in the original text.
    private struct Piece {
        var id: Int
        var start: Int
        var end: Int
    }

    /// A normalized scalar and the original text's [start, end) (UTF-16) it came from.
    private struct Normalized {
        var scalar: Unicode.Scalar
        var start: Int
        var end: Int
    }

    /// [CLS] text [SEP], the text's tokens cut to `maxTokens` - 2.
    func encode(_ text: String, maxTokens: Int) throws -> WordPieceEncoding {
        guard maxTokens >= 3 else { throw WordPieceError("maxTokens must leave room for [CLS], one token and [SEP]") }
        return assemble([Array(pieces(text).prefix(maxTokens - 2))])
    }

    /// [CLS] question [SEP] passage [SEP], the passage cut so that the whole fits `maxTokens`.
    func encodePair(question: String, passage: String, maxTokens: Int) throws -> WordPieceEncoding {
        let questionPieces = pieces(question)
        let room = maxTokens - 3 - questionPieces.count
        let passagePieces = pieces(passage)
        if room < 1 && !passagePieces.isEmpty {
            throw WordPieceError("the question takes \(questionPieces.count) tokens; with the passage it must fit \(maxTokens)")
        }
        return assemble([questionPieces, Array(passagePieces.prefix(max(room, 0)))])
    }

    private func assemble(_ sequences: [[Piece]]) -> WordPieceEncoding {
        var out = WordPieceEncoding(ids: [], typeIds: [], offsets: [], sequenceIds: [])
        func special(_ id: Int, _ type: Int) {
            out.ids.append(id)
            out.typeIds.append(type)
            out.offsets.append(TokenOffset(start: 0, end: 0))
            out.sequenceIds.append(nil)
        }
        special(clsId, 0)
        for (index, pieces) in sequences.enumerated() {
            for p in pieces {
                out.ids.append(p.id)
                out.typeIds.append(index)
                out.offsets.append(TokenOffset(start: p.start, end: p.end))
                out.sequenceIds.append(index)
            }
            special(sepId, index)
        }
        return out
    }

    private func pieces(_ text: String) -> [Piece] {
        words(normalize(text)).flatMap { wordPieces($0) }
    }

    // BertNormalizer: drop NUL, U+FFFD and control/format/unassigned characters, turn whitespace
    // into spaces, put spaces around CJK ideographs, strip accents (NFD, then drop non-spacing
    // marks), lowercase; each output scalar keeps the span of the character it came from.
    private func normalize(_ text: String) -> [Normalized] {
        var out: [Normalized] = []
        out.reserveCapacity(text.utf16.count)
        var position = 0
        let space: Unicode.Scalar = " "
        for scalar in text.unicodeScalars {
            let start = position
            let end = position + (scalar.value > 0xFFFF ? 2 : 1)
            position = end
            if config.cleanText {
                if scalar.value == 0 || scalar.value == 0xFFFD || WordPieceTokenizer.isControl(scalar) { continue }
                if WordPieceTokenizer.isWhitespace(scalar) {
                    out.append(Normalized(scalar: space, start: start, end: end))
                    continue
                }
            }
            if config.handleChineseChars && WordPieceTokenizer.isChinese(scalar) {
                out.append(Normalized(scalar: space, start: start, end: end))
                out.append(Normalized(scalar: scalar, start: start, end: end))
                out.append(Normalized(scalar: space, start: start, end: end))
                continue
            }
            var piece: [Unicode.Scalar] = [scalar]
            if config.stripAccents {
                piece = Array(String(scalar).decomposedStringWithCanonicalMapping.unicodeScalars)
                    .filter { $0.properties.generalCategory != .nonspacingMark }
            }
            if config.lowercase {
                // Rust's char::to_lowercase per character (the full mapping, no context), as
                // tokenizers' NormalizedString::lowercase applies it.
                piece = piece.flatMap { Array($0.properties.lowercaseMapping.unicodeScalars) }
            }
            for s in piece { out.append(Normalized(scalar: s, start: start, end: end)) }
        }
        return out
    }

    // BertPreTokenizer: split on whitespace (dropped) and around each punctuation character.
    private func words(_ chars: [Normalized]) -> [[Normalized]] {
        var words: [[Normalized]] = []
        var current: [Normalized] = []
        for c in chars {
            if WordPieceTokenizer.isWhitespace(c.scalar) {
                if !current.isEmpty { words.append(current) }
                current = []
            } else if WordPieceTokenizer.isPunctuation(c.scalar) {
                if !current.isEmpty { words.append(current) }
                current = []
                words.append([c])
            } else {
                current.append(c)
            }
        }
        if !current.isEmpty { words.append(current) }
        return words
    }

    // WordPiece: greedy longest match from the left, continuations carry the prefix; a word with
    // a part outside the vocabulary, or longer than max_input_chars_per_word, is one [UNK].
    private func wordPieces(_ word: [Normalized]) -> [Piece] {
        guard let firstChar = word.first, let lastChar = word.last else { return [] }
        let unknown = [Piece(id: unkId, start: firstChar.start, end: lastChar.end)]
        if word.count > config.maxInputCharsPerWord { return unknown }
        let scalars = word.map(\.scalar)
        var out: [Piece] = []
        var begin = 0
        while begin < scalars.count {
            var end = scalars.count
            var found: Int?
            while end > begin {
                let sub = Array(scalars[begin..<end])
                if let id = vocab[begin > 0 ? prefix + sub : sub] {
                    found = id
                    break
                }
                end -= 1
            }
            guard let id = found else { return unknown }
            out.append(Piece(id: id, start: word[begin].start, end: word[end - 1].end))
            begin = end
        }
        return out
    }

    // MARK: Reading tokenizer.json

    /// Reads a WordPiece tokenizer.json (BERT, DistilBERT, MiniLM). Anything else (BPE, Unigram,
    /// another normalizer, pre-tokenizer or post-processor) is refused by name: this app would
    /// tokenize it differently from the exporter.
    static func fromTokenizerJSON(_ data: Data) throws -> WordPieceTokenizer {
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw WordPieceError("tokenizer.json is not valid JSON: \(error.localizedDescription)")
        }
        guard let root = parsed as? [String: Any] else { throw WordPieceError("tokenizer.json is not a JSON object") }
        guard let model = root["model"] as? [String: Any] else { throw WordPieceError("tokenizer.json has no model") }
        let modelType = model["type"] as? String
        guard modelType == "WordPiece" else {
            throw WordPieceError("tokenizer.json is a \(modelType ?? "nil") tokenizer; this app tokenizes WordPiece (BERT-family) encoders only")
        }
        let normalizer = root["normalizer"] as? [String: Any]
        let normalizerType = normalizer?["type"] as? String
        guard let normalizer, normalizerType == "BertNormalizer" else {
            throw WordPieceError("tokenizer.json's normalizer is \(normalizerType ?? "nil"); this app applies BertNormalizer only")
        }
        let preType = (root["pre_tokenizer"] as? [String: Any])?["type"] as? String
        guard preType == "BertPreTokenizer" else {
            throw WordPieceError("tokenizer.json's pre-tokenizer is \(preType ?? "nil"); this app applies BertPreTokenizer only")
        }
        let (cls, sep) = try specialTokens(root["post_processor"] as? [String: Any])
        let vocab = try vocabulary(model["vocab"])
        let lowercase = bool(normalizer["lowercase"]) ?? true
        let config = WordPieceConfig(
            cleanText: bool(normalizer["clean_text"]) ?? true,
            handleChineseChars: bool(normalizer["handle_chinese_chars"]) ?? true,
            stripAccents: bool(normalizer["strip_accents"]) ?? lowercase,
            lowercase: lowercase,
            unkToken: model["unk_token"] as? String ?? "[UNK]",
            continuingSubwordPrefix: model["continuing_subword_prefix"] as? String ?? "##",
            maxInputCharsPerWord: (model["max_input_chars_per_word"] as? NSNumber)?.intValue ?? 100,
            clsToken: cls,
            sepToken: sep)
        return try WordPieceTokenizer(config: config, vocab: vocab)
    }

    /// tokenizer.json's `model.vocab` keyed by scalars. Read through NSDictionary: bridging it to a
    /// `[String: Int]` would merge canonically equivalent tokens (and trap on them).
    static func vocabulary(_ value: Any?) throws -> [[Unicode.Scalar]: Int] {
        guard let dictionary = value as? NSDictionary, dictionary.count > 0 else {
            throw WordPieceError("tokenizer.json has no vocabulary")
        }
        var vocab: [[Unicode.Scalar]: Int] = [:]
        vocab.reserveCapacity(dictionary.count)
        for (key, id) in dictionary {
            guard let token = key as? String, let number = id as? NSNumber else {
                throw WordPieceError("tokenizer.json's vocabulary is not token -> id")
            }
            vocab[Array(token.unicodeScalars)] = number.intValue
        }
        return vocab
    }

    /// A JSON boolean; nil for null or a missing key.
    private static func bool(_ value: Any?) -> Bool? {
        guard let value, !(value is NSNull) else { return nil }
        return value as? Bool
    }

    /// BertProcessing, or a TemplateProcessing of BERT's shape: [CLS] $A [SEP] and
    /// [CLS] $A [SEP] $B:1 [SEP]:1. Returns the two special tokens.
    private static func specialTokens(_ post: [String: Any]?) throws -> (String, String) {
        switch post?["type"] as? String {
        case "BertProcessing":
            if let cls = (post?["cls"] as? [Any])?.first as? String, let sep = (post?["sep"] as? [Any])?.first as? String {
                return (cls, sep)
            }
        case "TemplateProcessing":
            let single = (post?["single"] as? [Any])?.map(templateItem)
            let pair = (post?["pair"] as? [Any])?.map(templateItem)
            if let single, let pair, single.count == 3, single[1] == "$A:0", pair.count == 5,
               single[0].hasSuffix(":0"), single[2].hasSuffix(":0") {
                let cls = String(single[0].dropLast(2))
                let sep = String(single[2].dropLast(2))
                if pair == ["\(cls):0", "$A:0", "\(sep):0", "$B:1", "\(sep):1"] { return (cls, sep) }
            }
        default:
            break
        }
        throw WordPieceError("tokenizer.json's post-processor is not BERT's [CLS] A [SEP] (B [SEP]); this app cannot add its special tokens")
    }

    private static func templateItem(_ item: Any) -> String {
        guard let entry = item as? [String: Any] else { return "?" }
        if let special = entry["SpecialToken"] as? [String: Any], let id = special["id"] as? String {
            return "\(id):\((special["type_id"] as? NSNumber)?.intValue ?? -1)"
        }
        if let sequence = entry["Sequence"] as? [String: Any], let id = sequence["id"] as? String {
            return "$\(id):\((sequence["type_id"] as? NSNumber)?.intValue ?? -1)"
        }
        return "?"
    }

    // MARK: Character classes (tokenizers' bert normalizer and pre-tokenizer)

    /// Rust's char::is_whitespace (Unicode White_Space), which tokenizers uses.
    static func isWhitespace(_ s: Unicode.Scalar) -> Bool { s.properties.isWhitespace }

    /// tokenizers' is_control: the "other" categories (Cc, Cf, Co, Cn), except tab and newlines.
    static func isControl(_ s: Unicode.Scalar) -> Bool {
        if s == "\t" || s == "\n" || s == "\r" { return false }
        switch s.properties.generalCategory {
        case .control, .format, .privateUse, .unassigned, .surrogate: return true
        default: return false
        }
    }

    /// ASCII punctuation (which includes $ + < = > ^ ` | ~) or a Unicode P* category.
    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v) { return true }
        switch s.properties.generalCategory {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            return true
        default:
            return false
        }
    }

    /// BERT's "Chinese character" blocks: CJK Unified Ideographs and their extensions and
    /// compatibility forms (not kana or hangul, which stay inside words).
    static func isChinese(_ s: Unicode.Scalar) -> Bool {
        switch s.value {
        case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F,
             0x2B740...0x2B81F, 0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F:
            return true
        default:
            return false
        }
    }
}
