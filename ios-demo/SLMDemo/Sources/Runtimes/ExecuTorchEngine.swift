import ExecuTorch
import Foundation

// This file imports ExecuTorch, whose Swift API declares its own `Error`, `Module`, `Tensor` and
// `Value` types; Swift's error protocol is spelled `Swift.Error` here.

/// The bundle's `executorch/model.pte` (XNNPACK) through ExecuTorch's `Module` (module
/// ExecuTorch, SwiftPM product `executorch`; the LLM kernels come from `kernels_llm`). Pinned to
/// ExecuTorch 1.5.1 (the exporter's executorch==1.5.1), branch swiftpm-1.5.1.
///
/// The program is `forward(tokens int64 [1, T], input_pos int64 [1]) -> logits fp32 [1, V]`
/// (docs/MANIFEST.md, "ExecuTorch artifact"): one call with the whole prompt, then one per token.
/// The app encodes and decodes with the bundle's tokenizer (swift-transformers), as on the Core
/// ML path, rather than through `TextRunner`: TextRunner's token callback converts each piece with
/// `@(token.c_str())`, which gives nil for a piece that ends inside a UTF-8 character (emoji, CJK),
/// so those bytes were lost; decoding from ids through `StreamingDetokenizer` keeps them, and stop
/// ids (end of turn) are seen as ids, so their text is never shown.
///
/// The KV cache lives in the program's mutable buffers and is indexed by position: a new sequence
/// starting at position 0 overwrites what it attends to, so one loaded Module serves every
/// generation.
final class ExecuTorchEngine: TextEngine, @unchecked Sendable {
    let kind = RuntimeKind.executorch
    private let module: Module
    private let tokenizer: BundleTokenizer
    private let maxSeqLen: Int
    private let vocabSize: Int
    private let stopIds: Set<Int>

    private init(module: Module, tokenizer: BundleTokenizer, manifest: Manifest) {
        self.module = module
        self.tokenizer = tokenizer
        self.maxSeqLen = manifest.model.maxSeqLen
        self.vocabSize = manifest.model.vocabSize
        self.stopIds = Set(manifest.chat?.stopTokenIds ?? manifest.model.eosTokenIds)
    }

    /// Loads the program (blocking; call off the main thread).
    static func load(bundle: URL, manifest: Manifest, artifact: Manifest.Artifact,
                     tokenizer: BundleTokenizer) throws -> ExecuTorchEngine {
        let module = Module(filePath: bundle.appendingPathComponent(artifact.path).path)
        do {
            try module.load("forward")
        } catch {
            throw ExecuTorchEngineError.loadFailed(Readable.message(for: error))
        }
        return ExecuTorchEngine(module: module, tokenizer: tokenizer, manifest: manifest)
    }

    func generate(prompt: String, options: GenerationOptions, stop: StopFlag,
                  emit: @escaping @Sendable (GenerationEvent) -> Void) throws {
        if stop.isSet { return emit(.finished(.stopped)) }
        let promptIds = tokenizer.encode(prompt, chat: options.chat)
        try StatefulPlan.checkVocabulary(promptIds, vocabSize: vocabSize)
        guard !promptIds.isEmpty, promptIds.count <= maxSeqLen - 1 else {
            throw GenerationError.promptTooLong(tokens: promptIds.count, limit: maxSeqLen)
        }
        let budget = StatefulPlan.maxNewTokens(promptLength: promptIds.count, requested: options.maxNewTokens,
                                               maxSeqLen: maxSeqLen)
        let started = monotonicSeconds()
        var logits = try forward(tokens: promptIds, start: 0)
        emit(.prefill(promptTokens: promptIds.count, seconds: monotonicSeconds() - started))

        var sampler = Sampler(temperature: options.temperature, seed: options.seed, topP: options.topP, topK: options.topK)
        let tokenizer = self.tokenizer
        var text = StreamingDetokenizer { tokenizer.decode($0) }
        var rate = DecodeRate()
        var position = promptIds.count
        var reason = FinishReason.length
        while rate.tokens < budget {
            if stop.isSet {
                reason = .stopped
                break
            }
            let token = sampler.next(logits)
            rate.tick(at: monotonicSeconds())
            if stopIds.contains(token) {
                reason = .eos
                break
            }
            if let piece = text.push(token) { emit(.text(piece)) }
            emit(.progress(tokens: rate.tokens, tokensPerSecond: rate.tokensPerSecond))
            if rate.tokens < budget {
                logits = try forward(tokens: [token], start: position)
                position += 1
            }
        }
        if let rest = text.flush() { emit(.text(rest)) }
        emit(.progress(tokens: rate.tokens, tokensPerSecond: rate.tokensPerSecond))
        emit(.finished(reason))
    }

    func requestStop() {
        // generate() checks its StopFlag before every step; nothing else to interrupt.
    }

    func greedyIds(promptIds: [Int], count: Int) throws -> [Int] {
        try StatefulPlan.checkVocabulary(promptIds, vocabSize: vocabSize)
        guard promptIds.count <= maxSeqLen - 1 else {
            throw GenerationError.promptTooLong(tokens: promptIds.count, limit: maxSeqLen)
        }
        var logits = try forward(tokens: promptIds, start: 0)
        var ids: [Int] = []
        var position = promptIds.count
        while ids.count < count {
            let token = Sampler.argmax(logits)
            ids.append(token)
            if ids.count == count { break }
            guard position + 1 <= maxSeqLen else { throw GenerationError.contextFull(maxSeqLen: maxSeqLen) }
            logits = try forward(tokens: [token], start: position)
            position += 1
        }
        return ids
    }

    /// One call of the program's `forward`: the last position's logits.
    private func forward(tokens: [Int], start: Int) throws -> [Float] {
        let input = Tensor<Int64>(tokens.map { Int64($0) }, shape: [1, tokens.count])
        let position = Tensor<Int64>([Int64(start)], shape: [1])
        let logits: Tensor<Float> = try module.forward([input, position])
        return logits.scalars()
    }
}

enum ExecuTorchEngineError: LocalizedError {
    case loadFailed(String)

    var errorDescription: String? {
        switch self {
        case .loadFailed(let why):
            return "ExecuTorch could not load executorch/model.pte: \(why). A recipe with quantized embeddings "
                + "needs the quantized kernels linked (kernels_quantized), and a .pte must not be newer than the runtime (1.5.1)."
        }
    }
}
