import Foundation

/// The two runtimes of the iOS bundle. Raw values are the manifest's `artifacts[].format`.
enum RuntimeKind: String, CaseIterable, Identifiable, Sendable {
    case coreml
    case executorch

    var id: String { rawValue }
    var manifestFormat: String { rawValue }

    var displayName: String {
        switch self {
        case .coreml: return "Core ML"
        case .executorch: return "ExecuTorch"
        }
    }

    var detail: String {
        switch self {
        case .coreml: return "stateful ML Program, tokenized by swift-transformers"
        case .executorch: return "XNNPACK, ExecuTorch's Module, tokenized by swift-transformers"
        }
    }
}

struct GenerationOptions: Equatable, Sendable {
    var maxNewTokens: Int
    /// 0 is greedy.
    var temperature: Float
    var seed: UInt64
    /// Sampling keeps the smallest set of ids whose probability reaches top-p (1: all).
    var topP: Float = 1
    var topK: Int? = nil
    /// The prompt is a conversation rendered with the manifest's chat template: encoded without
    /// the tokenizer's post-processor, no BOS added (manifest chat.add_special_tokens,
    /// chat.bos_added_by_runtime).
    var chat = false
}

enum FinishReason: Equatable, Sendable {
    case eos
    case length
    case stopped

    var label: String {
        switch self {
        case .eos: return "stop token (end of turn or text)"
        case .length: return "token limit"
        case .stopped: return "stopped"
        }
    }
}

enum GenerationEvent: Equatable, Sendable {
    /// The prompt was processed (one call with every prompt token), in `seconds`.
    case prefill(promptTokens: Int?, seconds: Double)
    case text(String)
    case progress(tokens: Int, tokensPerSecond: Double)
    case finished(FinishReason)
}

/// A loaded runtime. Calls are blocking and must not overlap (one generation at a time); the
/// app runs them on a background task.
protocol TextEngine: AnyObject, Sendable {
    var kind: RuntimeKind { get }

    /// Generates from a text prompt, emitting events as they happen.
    func generate(prompt: String, options: GenerationOptions, stop: StopFlag,
                  emit: @escaping @Sendable (GenerationEvent) -> Void) throws

    /// Asks a running `generate` to stop soon (called from another thread).
    func requestStop()

    /// Greedy ids from a fresh sequence (the golden self-test), without stopping at eos.
    func greedyIds(promptIds: [Int], count: Int) throws -> [Int]
}

/// A thread-safe flag the UI sets to stop generation.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false

    var isSet: Bool {
        lock.lock()
        defer { lock.unlock() }
        return value
    }

    func set() {
        lock.lock()
        value = true
        lock.unlock()
    }
}

/// Decode speed as the exporter reports it: tokens after the first, over the time since the
/// first (the first token's latency is prefill, reported separately).
struct DecodeRate: Equatable {
    private(set) var tokens = 0
    private var first: Double?
    private var last: Double?

    mutating func tick(at time: Double) {
        tokens += 1
        if first == nil { first = time }
        last = time
    }

    var tokensPerSecond: Double {
        guard tokens > 1, let first, let last, last > first else { return 0 }
        return Double(tokens - 1) / (last - first)
    }
}

func monotonicSeconds() -> Double {
    Double(DispatchTime.now().uptimeNanoseconds) / 1e9
}

/// Turns any error into one readable line for the UI.
enum Readable {
    static func message(for error: Swift.Error) -> String {
        if let local = error as? LocalizedError, let description = local.errorDescription {
            return description
        }
        let ns = error as NSError
        var text = ns.localizedDescription
        if let reason = ns.localizedFailureReason, !text.contains(reason) { text += " (\(reason))" }
        // Runtime errors from Objective-C (Core ML, ExecuTorch) carry their domain and code;
        // keep them, they are what a bug report needs.
        if ns.domain != NSCocoaErrorDomain { text += " [\(ns.domain) \(ns.code)]" }
        return text
    }
}
