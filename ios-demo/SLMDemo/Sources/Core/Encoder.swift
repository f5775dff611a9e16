import Foundation

/// The app screen an encoder serves (a companion's `role` in the manifest).
///
/// The manifest's strings are matched in `init(manifestName:)` rather than spelled as enum raw
/// values: raw values in this app are manifest keys only (tests/test_app_contract.py).
enum EncoderRole: CaseIterable, Identifiable, Hashable, Sendable {
    case search
    case classify
    case answer

    init?(manifestName: String) {
        switch manifestName {
        case "search": self = .search
        case "classify": self = .classify
        case "answer": self = .answer
        default: return nil
        }
    }

    var manifestName: String {
        switch self {
        case .search: return "search"
        case .classify: return "classify"
        case .answer: return "answer"
        }
    }

    var id: String { manifestName }

    /// The tab's title.
    var title: String {
        switch self {
        case .search: return "Search"
        case .classify: return "Classify"
        case .answer: return "Ask"
        }
    }

    var systemImage: String {
        switch self {
        case .search: return "magnifyingglass"
        case .classify: return "tag"
        case .answer: return "questionmark.bubble"
        }
    }
}

/// What an encoder's graph computes (`encoder.task`), and what that means for its outputs.
enum EncoderTask: Equatable, Sendable {
    case featureExtraction
    case sequenceClassification
    case tokenClassification
    case questionAnswering

    init?(manifestName: String) {
        switch manifestName {
        case "feature-extraction": self = .featureExtraction
        case "sequence-classification": self = .sequenceClassification
        case "token-classification": self = .tokenClassification
        case "question-answering": self = .questionAnswering
        default: return nil
        }
    }

    var manifestName: String {
        switch self {
        case .featureExtraction: return "feature-extraction"
        case .sequenceClassification: return "sequence-classification"
        case .tokenClassification: return "token-classification"
        case .questionAnswering: return "question-answering"
        }
    }

    /// The screen that shows it.
    var role: EncoderRole {
        switch self {
        case .featureExtraction: return .search
        case .sequenceClassification, .tokenClassification: return .classify
        case .questionAnswering: return .answer
        }
    }

    /// `encoder.outputs` for this task, in the graph's order (docs/MANIFEST.md, Encoders).
    var outputs: [String] {
        switch self {
        case .featureExtraction: return ["embeddings"]
        case .sequenceClassification, .tokenClassification: return ["logits"]
        case .questionAnswering: return ["start_logits", "end_logits"]
        }
    }

    var hasLabels: Bool { self == .sequenceClassification || self == .tokenClassification }

    var displayName: String {
        switch self {
        case .featureExtraction: return "sentence embeddings"
        case .sequenceClassification: return "text classification"
        case .tokenClassification: return "token classification"
        case .questionAnswering: return "extractive question answering"
        }
    }
}

/// The graph's inputs for one text (a batch of one, no padding): `encoder.inputs` in order,
/// input_ids, an all-ones attention_mask and, where the model has segments, token_type_ids.
enum EncoderInputs {
    static let knownOrders: [[String]] = [
        ["input_ids", "attention_mask"],
        ["input_ids", "attention_mask", "token_type_ids"],
    ]

    enum InputError: LocalizedError, Equatable {
        case unknownInput(String)
        case lengthMismatch(ids: Int, typeIds: Int)

        var errorDescription: String? {
            switch self {
            case .unknownInput(let name): return "The encoder takes an input \(name) this app does not know."
            case let .lengthMismatch(ids, typeIds): return "\(ids) token ids but \(typeIds) token type ids."
            }
        }
    }

    /// One row per input name, each as long as `ids`.
    static func rows(names: [String], ids: [Int], typeIds: [Int]) throws -> [[Int]] {
        guard typeIds.count == ids.count else { throw InputError.lengthMismatch(ids: ids.count, typeIds: typeIds.count) }
        return try names.map { name -> [Int] in
            switch name {
            case "input_ids": return ids
            case "attention_mask": return [Int](repeating: 1, count: ids.count)
            case "token_type_ids": return typeIds
            default: throw InputError.unknownInput(name)
            }
        }
    }
}

/// A loaded encoder runtime (Core ML or ExecuTorch). Calls are blocking and must not overlap; the
/// app runs them on a background task.
protocol EncoderEngine: AnyObject, Sendable {
    var kind: RuntimeKind { get }

    /// One text (batch 1, no padding, attention mask all ones): the outputs in `encoder.outputs`
    /// order, each flattened ([H], [L], [T] or [T * L]).
    func run(ids: [Int], typeIds: [Int]) throws -> [[Float]]
}
