import CoreML
import Foundation
import SwiftUI

/// Core ML compute units offered in the UI.
enum ComputeUnitsChoice: CaseIterable, Identifiable, Hashable {
    case all
    case cpuAndNeuralEngine
    case cpuAndGPU
    case cpuOnly

    var id: Self { self }

    var units: MLComputeUnits {
        switch self {
        case .all: return .all
        case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
        case .cpuAndGPU: return .cpuAndGPU
        case .cpuOnly: return .cpuOnly
        }
    }

    var label: String {
        switch self {
        case .all: return "All units"
        case .cpuAndNeuralEngine: return "CPU + Neural Engine"
        case .cpuAndGPU: return "CPU + GPU"
        case .cpuOnly: return "CPU only"
        }
    }
}

/// Everything the screens show, and the actions behind their buttons. Blocking work (hashing,
/// loading, generating) runs on detached tasks; results come back to the main actor.
@MainActor
final class AppModel: ObservableObject {
    enum Phase: Equatable {
        case idle
        case verifying(fraction: Double)
        case ready
        case missing
        case failed(String)
    }

    // Bundle
    @Published private(set) var phase: Phase = .idle
    @Published private(set) var manifest: Manifest?
    @Published private(set) var location: BundleLocation?
    @Published private(set) var verification: VerificationReport?
    @Published private(set) var verifiedFromCache = false

    // Generation
    @Published var runtime: RuntimeKind = .coreml
    @Published var computeUnits: ComputeUnitsChoice = .all
    @Published var prompt = "def fibonacci(n):"
    @Published var maxNewTokens = 64
    @Published var temperature = 0.0
    @Published var topP = 1.0
    @Published private(set) var output = ""
    // Chat (bundles with a chat template the app can apply: manifest chat.portable)
    @Published private(set) var messages: [ChatMessage] = []
    @Published var draft = ""
    @Published var systemPrompt = ""
    /// Shown when earlier messages no longer fit the context and were left out of the prompt.
    @Published private(set) var historyNote: String?
    @Published private(set) var isGenerating = false
    @Published private(set) var status = ""
    @Published private(set) var tokensGenerated = 0
    @Published private(set) var tokensPerSecond = 0.0
    @Published private(set) var firstTokenSeconds: Double?
    @Published var errorMessage: String?

    // Encoders: the bundle itself when it is an encoder, or its companions (Search, Classify, Ask)
    @Published private(set) var encoders: [EncoderModel] = []
    /// Why a companion could not be shown (its bundle verified, but the app cannot use it).
    @Published private(set) var encoderProblems: [String] = []

    // Self-test
    @Published private(set) var selfTests: [RuntimeKind: SelfTestReport] = [:]
    @Published private(set) var previousSelfTest: [RuntimeKind: Bool] = [:]
    @Published private(set) var tokenizerSelfTest: TokenizerSelfTestReport?
    @Published private(set) var selfTestRunning: RuntimeKind?

    private var manifestDigest = ""
    private var engine: (any TextEngine)?
    private var engineKey: String?
    private var tokenizer: BundleTokenizer?
    private var stopFlag: StopFlag?
    /// The Core ML artifacts of the loaded bundle and its companions: their compiled models stay cached.
    private var coreMLDigests: Set<String> = []
    /// exporter/data/encoder_texts.json, packaged into the app (project.yml).
    private lazy var encoderTexts: Result<EncoderTexts, Swift.Error> = Result { try EncoderTexts.load() }

    /// The decoder's runtimes: none for an encoder bundle (its runtimes are its EncoderModel's).
    var availableRuntimes: [RuntimeKind] {
        guard let manifest, manifest.encoder == nil else { return [] }
        return RuntimeKind.allCases.filter { manifest.artifact(format: $0.manifestFormat) != nil }
    }

    /// Whether the loaded bundle is a decoder (chat or completion): the Generate tab.
    var hasDecoder: Bool { manifest != nil && manifest?.encoder == nil }

    /// Why the built-in texts could not be read (the Search and Ask screens then start empty).
    var encoderTextsProblem: String? {
        if case .failure(let error) = encoderTexts { return Readable.message(for: error) }
        return nil
    }

    var isBusy: Bool { isGenerating || selfTestRunning != nil || encoders.contains { $0.isBusy } }

    /// The chat template, when this is a chat model whose template the app can apply; nil shows
    /// the completion screen.
    var chatTemplate: PortableTemplate? { manifest?.chat?.portable.map(PortableTemplate.init) }

    /// Why a chat model's template cannot be applied here (shown on the completion screen).
    var chatUnsupported: String? {
        guard let chat = manifest?.chat, chat.portable == nil else { return nil }
        return chat.unsupported.joined(separator: "; ")
    }
    var canGenerate: Bool { phase == .ready && !isBusy && availableRuntimes.contains(runtime) }

    /// The most tokens a request may ask for (the whole cache).
    var maxTokenLimit: Int { max(1, (manifest?.model.maxSeqLen ?? 512) - 1) }

    static var isRunningUnitTests: Bool {
        ProcessInfo.processInfo.environment["XCTestConfigurationFilePath"] != nil
    }

    // MARK: Bundle

    /// Called once when the app appears (not under XCTest, whose tests drive things themselves).
    func start() async {
        guard phase == .idle, !AppModel.isRunningUnitTests else { return }
        await loadBundle()
    }

    func loadBundle() async {
        guard !isBusy else { return }
        engine = nil
        engineKey = nil
        tokenizer = nil
        manifest = nil
        verification = nil
        selfTests = [:]
        previousSelfTest = [:]
        tokenizerSelfTest = nil
        errorMessage = nil
        output = ""
        messages = []
        historyNote = nil
        encoders = []
        encoderProblems = []
        coreMLDigests = []

        guard let found = BundleLocator.find() else {
            location = nil
            phase = .missing
            return
        }
        location = found
        // Someone else's (side-loaded) bundle must stay inside its folder before any file is read.
        if found.source == .documents, let refusal = BundleContainment.refusal(for: found.url) {
            phase = .failed(refusal)
            return
        }
        let loaded: (manifest: Manifest, data: Data)
        do {
            loaded = try Manifest.load(from: found.url)
        } catch {
            phase = .failed(Readable.message(for: error))
            return
        }

        phase = .verifying(fraction: 0)
        let bundleURL = found.url
        let fingerprint = BundleVerifier.fingerprint(bundle: bundleURL, manifestData: loaded.data)
        let cacheKey = "verified.\(fingerprint)"
        let report: VerificationReport
        if UserDefaults.standard.bool(forKey: cacheKey) {
            report = VerificationReport(problems: [], checkedFiles: loaded.manifest.files.count,
                                        checkedBytes: loaded.manifest.files.reduce(0) { $0 + $1.bytes })
            verifiedFromCache = true
        } else {
            let manifest = loaded.manifest
            report = await Task.detached(priority: .userInitiated) {
                var lastShown = -1.0
                return BundleVerifier.verify(bundle: bundleURL, manifest: manifest) { done, total in
                    let fraction = total > 0 ? Double(done) / Double(total) : 1
                    guard fraction - lastShown >= 0.02 || fraction >= 1 else { return }
                    lastShown = fraction
                    Task { @MainActor [weak self] in
                        guard let self, case .verifying = self.phase else { return }
                        self.phase = .verifying(fraction: fraction)
                    }
                }
            }.value
            verifiedFromCache = false
            if report.passed { UserDefaults.standard.set(true, forKey: cacheKey) }
        }
        verification = report
        guard report.passed else {
            phase = .failed("The bundle does not match its manifest: "
                + report.problems.prefix(3).joined(separator: "; ")
                + (report.problems.count > 3 ? " (and \(report.problems.count - 3) more; see the Bundle tab)" : ""))
            return
        }

        manifest = loaded.manifest
        manifestDigest = FileDigest.sha256(of: loaded.data)
        loadEncoders(bundle: found.url, manifest: loaded.manifest, data: loaded.data)
        if !availableRuntimes.contains(runtime), let first = availableRuntimes.first { runtime = first }
        if let defaults = loaded.manifest.chat?.generation {  // the checkpoint's generation_config.json
            if let t = defaults.temperature { temperature = t }
            if let p = defaults.topP { topP = p }
            if let n = defaults.maxNewTokens { maxNewTokens = n }
        }
        maxNewTokens = min(maxNewTokens, maxTokenLimit)
        for kind in availableRuntimes {
            previousSelfTest[kind] = SelfTestStore.passedBefore(manifestDigest: manifestDigest, runtime: kind.rawValue)
        }
        phase = .ready

        if hasDecoder { await runTokenizerSelfTest() }
        // The golden self-test runs once per new bundle; its result is remembered.
        for kind in availableRuntimes where previousSelfTest[kind] == nil {
            await runSelfTest(kind)
        }
        for encoder in encoders { await encoder.runInitialSelfTests() }
    }

    /// The encoder screens' models: the bundle itself when it is an encoder, else one per companion
    /// (already verified with the bundle: BundleVerifier.checkCompanions).
    private func loadEncoders(bundle: URL, manifest: Manifest, data: Data) {
        var found: [(url: URL, manifest: Manifest, data: Data, companion: String?)] = []
        if manifest.encoder != nil {
            found.append((bundle, manifest, data, nil))
        }
        for companion in manifest.companions ?? [] {
            let url = bundle.appendingPathComponent(companion.path, isDirectory: true)
            do {
                let inner = try Manifest.load(from: url)
                found.append((url, inner.manifest, inner.data, companion.path))
            } catch {
                encoderProblems.append("\(companion.path)/: \(Readable.message(for: error))")
            }
        }
        coreMLDigests = Set(([manifest] + found.map { $0.manifest }).flatMap { m in
            m.artifacts.filter { $0.format == RuntimeKind.coreml.manifestFormat }.map(\.sha256)
        })
        let texts = try? encoderTexts.get()
        if let problem = encoderTextsProblem, !found.isEmpty { encoderProblems.append(problem) }
        var models: [EncoderModel] = []
        for entry in found {
            do {
                let model = try EncoderModel(url: entry.url, manifest: entry.manifest, manifestData: entry.data,
                                             companionPath: entry.companion, texts: texts, keepCompiled: coreMLDigests)
                if models.contains(where: { $0.role == model.role }) {
                    encoderProblems.append("\(entry.companion ?? ".")/: a second \(model.role.title) encoder; only the first is shown")
                } else {
                    models.append(model)
                }
            } catch {
                encoderProblems.append("\(entry.companion ?? ".")/: \(Readable.message(for: error))")
            }
        }
        encoders = models
    }

    func encoder(for role: EncoderRole) -> EncoderModel? { encoders.first { $0.role == role } }

    // MARK: Engines

    private func loadTokenizer() async throws -> BundleTokenizer {
        if let tokenizer { return tokenizer }
        guard let manifest, let location else { throw AppError.noBundle }
        let loaded = try await BundleTokenizer.load(bundle: location.url, manifest: manifest)
        tokenizer = loaded
        return loaded
    }

    /// The loaded engine for a runtime. One engine at a time: a larger model loaded twice (once
    /// per runtime) would not fit in a phone's memory.
    func engine(for kind: RuntimeKind) async throws -> any TextEngine {
        guard let manifest, let location else { throw AppError.noBundle }
        guard let artifact = manifest.artifact(format: kind.manifestFormat) else { throw AppError.noArtifact(kind) }
        let key = kind == .coreml ? "\(kind.rawValue).\(computeUnits.label)" : kind.rawValue
        if let engine, engineKey == key { return engine }
        engine = nil
        engineKey = nil
        let bundleURL = location.url
        status = "Loading \(kind.displayName)…"
        defer { status = "" }
        let loaded: any TextEngine
        switch kind {
        case .coreml:
            let tokenizer = try await loadTokenizer()
            let units = computeUnits.units
            loaded = try await CoreMLEngine.load(bundle: bundleURL, manifest: manifest, artifact: artifact,
                                                 tokenizer: tokenizer, computeUnits: units, keepCompiled: coreMLDigests)
        case .executorch:
            let tokenizer = try await loadTokenizer()
            loaded = try await Task.detached(priority: .userInitiated) {
                try ExecuTorchEngine.load(bundle: bundleURL, manifest: manifest, artifact: artifact, tokenizer: tokenizer)
            }.value
        }
        engine = loaded
        engineKey = key
        return loaded
    }

    // MARK: Generation

    func generate() {
        guard canGenerate else { return }
        output = ""
        run(prompt: prompt, chat: false)
    }

    func newChat() {
        guard !isGenerating else { return }
        messages = []
        historyNote = nil
        status = ""
    }

    /// Sends the draft: the conversation (system prompt, the earlier turns that still fit, the
    /// new message) rendered with the bundle's portable template, generated as a chat (no BOS
    /// added, stop ids end the reply and are never shown), streamed into a new assistant message.
    func send() {
        guard canGenerate, let template = chatTemplate, let manifest,
              !draft.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { return }
        let system = template.supportsSystem && !systemPrompt.isEmpty ? [ChatMessage(role: "system", content: systemPrompt)] : []
        let history = messages + [ChatMessage(role: "user", content: draft)]
        let reply = min(maxNewTokens, manifest.model.maxSeqLen / 2)
        do {
            // Counting needs the tokenizer: a chat bundle always loads it (both runtimes use it).
            guard let tokenizer else {
                Task {
                    do {
                        _ = try await loadTokenizer()
                        send()
                    } catch {
                        errorMessage = Readable.message(for: error)
                    }
                }
                return
            }
            let trimmed = try HistoryTrimmer.fit(system + history, contextTokens: manifest.model.maxSeqLen,
                                                 replyTokens: reply) { msgs in
                try tokenizer.encode(template.render(msgs, addGenerationPrompt: true), chat: true).count
            }
            historyNote = trimmed.dropped == 0 ? nil
                : "\(trimmed.dropped) earlier messages were left out to fit the \(manifest.model.maxSeqLen)-token context."
            let prompt = try template.render(trimmed.messages, addGenerationPrompt: true)
            messages = history + [ChatMessage(role: "assistant", content: "")]
            draft = ""
            run(prompt: prompt, chat: true, maxNewTokens: reply)
        } catch {
            errorMessage = Readable.message(for: error)
        }
    }

    private func run(prompt: String, chat: Bool, maxNewTokens: Int? = nil) {
        errorMessage = nil
        tokensGenerated = 0
        tokensPerSecond = 0
        firstTokenSeconds = nil
        isGenerating = true
        let stop = StopFlag()
        stopFlag = stop
        let options = GenerationOptions(maxNewTokens: maxNewTokens ?? self.maxNewTokens, temperature: Float(temperature),
                                        seed: UInt64.random(in: 0...UInt64.max), topP: Float(topP),
                                        topK: manifest?.chat?.generation.topK, chat: chat)
        let kind = runtime
        Task {
            defer {
                isGenerating = false
                stopFlag = nil
                // a reply that produced no text (failed, or stopped at once) is not kept as an empty turn
                if chat, let last = messages.last, last.role == "assistant", last.content.isEmpty { messages.removeLast() }
            }
            do {
                let engine = try await self.engine(for: kind)
                status = "Generating with \(kind.displayName)…"
                let events = AsyncThrowingStream<GenerationEvent, Swift.Error> { continuation in
                    let work = Task.detached(priority: .userInitiated) {
                        do {
                            try engine.generate(prompt: prompt, options: options, stop: stop) { continuation.yield($0) }
                            continuation.finish()
                        } catch {
                            continuation.finish(throwing: error)
                        }
                    }
                    continuation.onTermination = { termination in
                        if case .cancelled = termination {
                            stop.set()
                            engine.requestStop()
                            work.cancel()
                        }
                    }
                }
                for try await event in events { apply(event) }
            } catch {
                errorMessage = Readable.message(for: error)
                status = ""
            }
        }
    }

    func stop() {
        stopFlag?.set()
        engine?.requestStop()
        status = "Stopping…"
    }

    private func apply(_ event: GenerationEvent) {
        switch event {
        case let .prefill(promptTokens, seconds):
            firstTokenSeconds = seconds
            if let promptTokens { status = "Prompt: \(promptTokens) tokens in \(Int(seconds * 1000)) ms" }
        case .text(let piece):
            if chatTemplate != nil, let last = messages.last, last.role == "assistant" {
                messages[messages.count - 1].content += piece
            } else {
                output += piece
            }
        case let .progress(tokens, rate):
            tokensGenerated = tokens
            tokensPerSecond = rate
        case .finished(let reason):
            status = "Finished: \(reason.label)"
        }
    }

    // MARK: Self-test

    func runTokenizerSelfTest() async {
        // An encoder bundle's tokenizer is this app's WordPiece, checked by its EncoderModel.
        guard let manifest, manifest.encoder == nil else { return }
        let cases = manifest.tokenizer.selfTest ?? []
        guard !cases.isEmpty else {
            tokenizerSelfTest = TokenizerSelfTestReport(cases: [], error: nil)
            return
        }
        do {
            let tokenizer = try await loadTokenizer()
            tokenizerSelfTest = await Task.detached(priority: .userInitiated) {
                TokenizerSelfTestReport(cases: TokenizerSelfTest.run(cases: cases, encode: tokenizer.encode), error: nil)
            }.value
        } catch {
            tokenizerSelfTest = TokenizerSelfTestReport(cases: [], error: Readable.message(for: error))
        }
    }

    /// Greedy generation from every golden case's prompt ids through `kind`'s runtime.
    func runSelfTest(_ kind: RuntimeKind) async {
        guard let manifest, let artifact = manifest.artifact(format: kind.manifestFormat),
              !isGenerating, selfTestRunning == nil else { return }
        selfTestRunning = kind
        defer { selfTestRunning = nil }
        let started = monotonicSeconds()
        var report = SelfTestReport(runtime: kind.displayName, artifactPath: artifact.path, cases: [], seconds: 0, error: nil)
        do {
            let engine = try await self.engine(for: kind)
            status = "Self-test: \(kind.displayName)…"
            let cases = artifact.selfTest.cases
            let maxSeqLen = manifest.model.maxSeqLen
            let vocabSize = manifest.model.vocabSize
            report.cases = await Task.detached(priority: .userInitiated) {
                GoldenSelfTest.run(cases: cases, maxSeqLen: maxSeqLen, vocabSize: vocabSize) { promptIds, count in
                    try engine.greedyIds(promptIds: promptIds, count: count)
                }
            }.value
        } catch {
            report.error = Readable.message(for: error)
        }
        status = ""
        report.seconds = monotonicSeconds() - started
        selfTests[kind] = report
        previousSelfTest[kind] = report.passed
        SelfTestStore.record(report.passed, manifestDigest: manifestDigest, runtime: kind.rawValue)
    }
}

enum AppError: LocalizedError {
    case noBundle
    case noArtifact(RuntimeKind)

    var errorDescription: String? {
        switch self {
        case .noBundle: return "No verified model bundle is loaded."
        case .noArtifact(let kind): return "This bundle has no \(kind.displayName) artifact."
        }
    }
}
