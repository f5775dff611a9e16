import Foundation

/// The encoder screens' built-in texts: exporter/data/encoder_texts.json, packaged into the app
/// as-is (project.yml lists the exporter's file as a resource; there is no copy in ios-demo), so
/// the Search screen ranks the same passages as `slm-export run BUNDLE --task search` and the Ask
/// screen offers the exporter's question-answering examples.
struct EncoderTexts: Equatable {
    static let resourceName = "encoder_texts"
    static let fileName = "encoder_texts.json"

    struct QAExample: Equatable, Hashable {
        var question: String
        var context: String
    }

    /// `sentences`: the Search screen's passages.
    var passages: [String]
    /// `qa`: question and passage pairs for the Ask screen.
    var qaExamples: [QAExample]

    enum TextsError: LocalizedError {
        case missing
        case invalid(String)

        var errorDescription: String? {
            switch self {
            case .missing: return "\(EncoderTexts.fileName) is not in the app (project.yml packages exporter/data/\(EncoderTexts.fileName))."
            case .invalid(let why): return "\(EncoderTexts.fileName): \(why)"
            }
        }
    }

    static func parse(_ data: Data) throws -> EncoderTexts {
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TextsError.invalid("not a JSON object")
        }
        guard let passages = root["sentences"] as? [String] else { throw TextsError.invalid("no sentences") }
        var qa: [QAExample] = []
        for item in root["qa"] as? [Any] ?? [] {
            guard let pair = item as? [String: Any], let question = pair["question"] as? String,
                  let context = pair["context"] as? String else {
                throw TextsError.invalid("a qa entry without question and context")
            }
            qa.append(QAExample(question: question, context: context))
        }
        return EncoderTexts(passages: passages, qaExamples: qa)
    }

    /// The copy packaged into `bundle` (the app's).
    static func load(from bundle: Bundle = .main) throws -> EncoderTexts {
        guard let url = bundle.url(forResource: resourceName, withExtension: "json") else { throw TextsError.missing }
        return try parse(Data(contentsOf: url))
    }
}
