import ExecuTorch
import ExecuTorchLLM
import Foundation

// This file imports ExecuTorch, whose Swift API declares its own `Error`, `Module`, `Tensor` and
// `Value` types; Swift's error protocol is spelled `Swift.Error` here.

/// The bundle's `executorch/model.pte` (XNNPACK) through ExecuTorch's LLM runner, `TextRunner`
/// (module ExecuTorchLLM, SwiftPM product `executorch_llm`): it reads tokenizer.json itself,
/// prefills the prompt in one call (the program's `enable_dynamic_shape`) and streams decoded
/// text. Pinned to ExecuTorch 1.5.1 (the exporter's executorch==1.5.1), branch swiftpm-1.5.1.
///
/// The golden self-test needs ids in and ids out, which TextRunner (text in, text out) cannot
/// give, so it drives the same program with ExecuTorch's `Module`: `forward(tokens int64 [1, T],
/// input_pos int64 [1]) -> logits fp32 [1, V]` (docs/MANIFEST.md, "ExecuTorch artifact").
final class ExecuTorchEngine: TextEngine, @unchecked Sendable {
    let kind = RuntimeKind.executorch
    private let runner: TextRunner
    private let modelPath: String
    private let maxSeqLen: Int
    private let vocabSize: Int
    private let addSpecialTokens: Bool

    private init(runner: TextRunner, modelPath: String, manifest: Manifest) {
        self.runner = runner
        self.modelPath = modelPath
        self.maxSeqLen = manifest.model.maxSeqLen
        self.vocabSize = manifest.model.vocabSize
        self.addSpecialTokens = manifest.addsSpecialTokens
    }

    /// Creates the runner and loads the program (blocking; call off the main thread).
    static func load(bundle: URL, manifest: Manifest, artifact: Manifest.Artifact) throws -> ExecuTorchEngine {
        let modelPath = bundle.appendingPathComponent(artifact.path).path
        let tokenizerPath = bundle.appendingPathComponent(manifest.tokenizer.path).path
        let runner = TextRunner(modelPath: modelPath, tokenizerPath: tokenizerPath)
        do {
            try runner.load()
        } catch {
            throw ExecuTorchEngineError.loadFailed(Readable.message(for: error))
        }
        return ExecuTorchEngine(runner: runner, modelPath: modelPath, manifest: manifest)
    }

    func generate(prompt: String, options: GenerationOptions, stop: StopFlag,
                  emit: @escaping @Sendable (GenerationEvent) -> Void) throws {
        if stop.isSet { return emit(.finished(.stopped)) }
        runner.reset()  // drop the previous sequence's KV cache and position
        let started = monotonicSeconds()
        var rate = DecodeRate()
        let config = Config {
            $0.sequenceLength = self.maxSeqLen
            $0.maximumNewTokens = options.maxNewTokens
            $0.temperature = Double(options.temperature)
            $0.isEchoEnabled = false  // the callback gets generated text only, not the prompt
            // num_bos=1 makes the runner apply tokenizer.json's post-processor, as the exporter
            // encodes prompts (docs/MANIFEST.md, tokenizer.add_special_tokens).
            $0.bosCount = self.addSpecialTokens ? 1 : 0
        }
        try runner.generate(prompt, config) { token in
            let now = monotonicSeconds()
            if rate.tokens == 0 { emit(.prefill(promptTokens: nil, seconds: now - started)) }
            rate.tick(at: now)
            emit(.text(token))
            emit(.progress(tokens: rate.tokens, tokensPerSecond: rate.tokensPerSecond))
        }
        emit(.finished(stop.isSet ? .stopped : .runnerDone))
    }

    func requestStop() {
        runner.stop()
    }

    func greedyIds(promptIds: [Int], count: Int) throws -> [Int] {
        try StatefulPlan.checkVocabulary(promptIds, vocabSize: vocabSize)
        guard promptIds.count <= maxSeqLen - 1 else {
            throw GenerationError.promptTooLong(tokens: promptIds.count, limit: maxSeqLen)
        }
        // The KV cache lives in the program's mutable buffers: a freshly loaded Module is a fresh
        // sequence.
        let module = Module(filePath: modelPath)
        try module.load("forward")
        var logits = try forward(module, tokens: promptIds, start: 0)
        var ids: [Int] = []
        var position = promptIds.count
        while ids.count < count {
            let token = Sampler.argmax(logits)
            ids.append(token)
            if ids.count == count { break }
            guard position + 1 <= maxSeqLen else { throw GenerationError.contextFull(maxSeqLen: maxSeqLen) }
            logits = try forward(module, tokens: [token], start: position)
            position += 1
        }
        return ids
    }

    /// One call of the program's `forward`: the last position's logits.
    private func forward(_ module: Module, tokens: [Int], start: Int) throws -> [Float] {
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
