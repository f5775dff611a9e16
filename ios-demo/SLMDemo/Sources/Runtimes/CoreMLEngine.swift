import CoreML
import Foundation

/// A small driver for slm-export's stateful Core ML decoder (iOS 18): `MLModel.makeState()`
/// holds the KV cache (`keyCache`, `valueCache`); a sequence is one prefill call with every
/// prompt token, then one call per generated token, each with `inputIds` [1, q] and a causal
/// mask [1, 1, q, end] (positions end-q ..< end), through `prediction(from:using:)`.
final class CoreMLEngine: TextEngine, @unchecked Sendable {
    let kind = RuntimeKind.coreml
    private let model: MLModel
    private let tokenizer: BundleTokenizer
    private let maxSeqLen: Int
    private let vocabSize: Int
    private let eosIds: Set<Int>
    private let maskType: MLMultiArrayDataType
    private var state: MLState

    static let inputIdsName = "inputIds"
    static let causalMaskName = "causalMask"
    static let logitsName = "logits"

    private init(model: MLModel, tokenizer: BundleTokenizer, manifest: Manifest, maskType: MLMultiArrayDataType) {
        self.model = model
        self.tokenizer = tokenizer
        self.maxSeqLen = manifest.model.maxSeqLen
        self.vocabSize = manifest.model.vocabSize
        self.eosIds = Set(manifest.model.eosTokenIds)
        self.maskType = maskType
        self.state = model.makeState()
    }

    /// Compiles (once per artifact digest) and loads the verified `.mlpackage`.
    static func load(bundle: URL, manifest: Manifest, artifact: Manifest.Artifact, tokenizer: BundleTokenizer,
                     computeUnits: MLComputeUnits, keepCompiled: Set<String> = []) async throws -> CoreMLEngine {
        let package = bundle.appendingPathComponent(artifact.path)
        let compiled = try await CoreMLCompiler.compiledModel(packageURL: package, sha256: artifact.sha256,
                                                              keep: keepCompiled)
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        let model = try MLModel(contentsOf: compiled, configuration: configuration)
        let maskType = try checkInterface(model, manifest: manifest)
        return CoreMLEngine(model: model, tokenizer: tokenizer, manifest: manifest, maskType: maskType)
    }

    /// Fails early, with a readable message, on a model that is not slm-export's stateful decoder.
    static func checkInterface(_ model: MLModel, manifest: Manifest) throws -> MLMultiArrayDataType {
        let description = model.modelDescription
        guard description.inputDescriptionsByName[inputIdsName] != nil,
              let mask = description.inputDescriptionsByName[causalMaskName],
              description.outputDescriptionsByName[logitsName] != nil else {
            throw CoreMLEngineError.notAStatefulDecoder(inputs: description.inputDescriptionsByName.keys.sorted(),
                                                        outputs: description.outputDescriptionsByName.keys.sorted())
        }
        if let metadata = description.metadata[MLModelMetadataKey.creatorDefinedKey] as? [String: String],
           let context = metadata["slm_export.context_length"].flatMap(Int.init),
           context != manifest.model.maxSeqLen {
            throw CoreMLEngineError.contextMismatch(model: context, manifest: manifest.model.maxSeqLen)
        }
        return mask.multiArrayConstraint?.dataType ?? .float16
    }

    // MARK: TextEngine

    func generate(prompt: String, options: GenerationOptions, stop: StopFlag,
                  emit: @escaping @Sendable (GenerationEvent) -> Void) throws {
        let promptIds = tokenizer.encode(prompt, chat: options.chat)
        let prefill = try StatefulPlan.prefill(promptIds: promptIds, maxSeqLen: maxSeqLen)
        try StatefulPlan.checkVocabulary(promptIds, vocabSize: vocabSize)
        let budget = StatefulPlan.maxNewTokens(promptLength: promptIds.count, requested: options.maxNewTokens,
                                               maxSeqLen: maxSeqLen)
        state = model.makeState()  // a fresh KV cache: a new sequence

        let started = monotonicSeconds()
        var logits = try forward(prefill)
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
            if eosIds.contains(token) {
                reason = .eos
                break
            }
            if let piece = text.push(token) { emit(.text(piece)) }
            emit(.progress(tokens: rate.tokens, tokensPerSecond: rate.tokensPerSecond))
            if rate.tokens < budget {
                logits = try forward(StatefulPlan.decode(token: token, position: position, maxSeqLen: maxSeqLen))
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
        state = model.makeState()
        var logits = try forward(StatefulPlan.prefill(promptIds: promptIds, maxSeqLen: maxSeqLen))
        var ids: [Int] = []
        var position = promptIds.count
        while ids.count < count {
            let token = Sampler.argmax(logits)
            ids.append(token)
            if ids.count == count { break }
            logits = try forward(StatefulPlan.decode(token: token, position: position, maxSeqLen: maxSeqLen))
            position += 1
        }
        return ids
    }

    // MARK: One call

    /// Runs one prediction on the current state and returns the last position's logits.
    private func forward(_ step: DecodeStep) throws -> [Float] {
        let inputs = try MLDictionaryFeatureProvider(dictionary: [
            CoreMLEngine.inputIdsName: MLFeatureValue(multiArray: try CoreMLInputs.inputIds(step.tokens)),
            CoreMLEngine.causalMaskName: MLFeatureValue(multiArray: try CoreMLInputs.causalMask(
                queryLength: step.queryLength, end: step.end, dataType: maskType)),
        ])
        // The synchronous stateful prediction (iOS 18); predictions on one MLState must not overlap.
        let output = try model.prediction(from: inputs, using: state)
        guard let logits = output.featureValue(for: CoreMLEngine.logitsName)?.multiArrayValue else {
            throw CoreMLEngineError.noLogits
        }
        return try LogitsReader.lastRow(of: logits)
    }
}

enum CoreMLEngineError: LocalizedError {
    case notAStatefulDecoder(inputs: [String], outputs: [String])
    case contextMismatch(model: Int, manifest: Int)
    case noLogits

    var errorDescription: String? {
        switch self {
        case let .notAStatefulDecoder(inputs, outputs):
            return "The Core ML model is not slm-export's stateful decoder (inputs \(inputs), outputs \(outputs); "
                + "expected inputIds, causalMask -> logits)."
        case let .contextMismatch(model, manifest):
            return "The Core ML model's context is \(model) tokens but the manifest says \(manifest); the bundle is inconsistent."
        case .noLogits:
            return "The Core ML model returned no logits."
        }
    }
}

/// Why the bundle carries the `.mlpackage` and not an `.mlmodelc`: the manifest's sha256 covers
/// the package's files, so the app can verify exactly what the exporter verified, and only then
/// compile it on the device. Compiling takes a few seconds once per artifact; the result is kept
/// in Application Support under the artifact's sha256. Older ones are removed, except those in
/// `keep`: the other Core ML artifacts of the loaded bundle (a decoder and its companion encoders).
enum CoreMLCompiler {
    static func compiledModel(packageURL: URL, sha256: String, keep: Set<String> = []) async throws -> URL {
        let fm = FileManager.default
        let support = try fm.url(for: .applicationSupportDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        let folder = support.appendingPathComponent("CompiledModels", isDirectory: true)
        try fm.createDirectory(at: folder, withIntermediateDirectories: true)
        let destination = folder.appendingPathComponent("\(sha256).mlmodelc", isDirectory: true)
        if fm.fileExists(atPath: destination.path) { return destination }

        let compiled = try await MLModel.compileModel(at: packageURL)
        let kept = Set(keep.map { "\($0).mlmodelc" })
        for old in (try? fm.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)) ?? []
        where !kept.contains(old.lastPathComponent) {
            try? fm.removeItem(at: old)
        }
        do {
            try fm.moveItem(at: compiled, to: destination)
        } catch {
            try fm.copyItem(at: compiled, to: destination)
            try? fm.removeItem(at: compiled)
        }
        return destination
    }
}
