import CoreML
import Foundation
import SwiftUI

/// One encoder bundle the app shows: the loaded bundle itself when it is an encoder, or a
/// companion of a decoder bundle (docs/MANIFEST.md, Companions). It holds the screen's state
/// (Search, Classify or Ask, after its task), its runtimes and its self-tests. Blocking work
/// (loading, forward passes) runs on detached tasks; results come back to the main actor.
@MainActor
final class EncoderModel: ObservableObject, Identifiable {
    let role: EncoderRole
    let task: EncoderTask
    /// The encoder bundle's folder (the bundle itself, or its companion folder).
    let url: URL
    let manifest: Manifest
    let encoder: Manifest.EncoderInfo
    let manifestDigest: String
    /// The companion's folder inside the decoder bundle; nil when the bundle is this encoder.
    let companionPath: String?
    /// Compiled Core ML models of the loaded bundle that must not be evicted from the cache.
    private let keepCompiled: Set<String>

    nonisolated var id: String { companionPath ?? "." }

    // Runtime
    @Published var runtime: RuntimeKind = .coreml
    @Published var computeUnits: ComputeUnitsChoice = .all
    @Published private(set) var status = ""
    @Published var errorMessage: String?
    @Published private(set) var isRunning = false

    // Tokenizer (this app's WordPiece, checked against the manifest's tokenizer.self_test)
    @Published private(set) var tokenizerError: String?
    @Published private(set) var tokenizerSelfTest: TokenizerSelfTestReport?

    // Golden self-test
    @Published private(set) var selfTests: [RuntimeKind: EncoderSelfTestReport] = [:]
    @Published private(set) var previousSelfTest: [RuntimeKind: Bool] = [:]
    @Published private(set) var selfTestRunning: RuntimeKind?

    // Search
    struct SearchHit: Identifiable, Equatable {
        var index: Int
        var passage: String
        var cosine: Double
        var id: Int { index }
    }
    @Published var query = "Who is playing music?"
    @Published private(set) var passages: [String] = []
    @Published private(set) var hits: [SearchHit] = []
    /// Embedding the built-in passages (once per runtime), and the last query.
    @Published private(set) var indexMilliseconds: Double?
    @Published private(set) var queryMilliseconds: Double?

    // Classify
    struct TokenLabel: Identifiable, Equatable {
        var index: Int
        var text: String
        var label: String
        var score: Double
        var id: Int { index }
    }
    @Published var classifyText = "I love this movie, the acting was wonderful!"
    @Published private(set) var labelScores: [EncoderMath.LabelScore] = []
    @Published private(set) var tokenLabels: [TokenLabel] = []
    @Published private(set) var classifyMilliseconds: Double?

    // Ask
    struct Answer: Equatable {
        var passage: String
        /// The answer's UTF-16 range in `passage`.
        var range: NSRange
        var text: String
        var startToken: Int
        var endToken: Int
        var score: Double
    }
    @Published var question = ""
    @Published var context = ""
    @Published private(set) var qaExamples: [EncoderTexts.QAExample] = []
    @Published private(set) var answer: Answer?
    @Published private(set) var askMilliseconds: Double?
    /// The question and passage took this many tokens, and the passage was cut to fit.
    @Published private(set) var askNote: String?

    private var tokenizer: WordPieceTokenizer?
    private var engine: (any EncoderEngine)?
    private var engineKey: String?
    /// The built-in passages' embeddings for the engine they were computed with.
    private var passageEmbeddings: (key: String, vectors: [[Float]])?

    init(url: URL, manifest: Manifest, manifestData: Data, companionPath: String?, texts: EncoderTexts?,
         keepCompiled: Set<String>) throws {
        guard let encoder = manifest.encoder, let task = manifest.encoderTask else {
            throw EncoderModelError.notAnEncoder
        }
        self.url = url
        self.manifest = manifest
        self.encoder = encoder
        self.task = task
        self.role = task.role
        self.manifestDigest = FileDigest.sha256(of: manifestData)
        self.companionPath = companionPath
        self.keepCompiled = keepCompiled
        self.passages = texts?.passages ?? []
        self.qaExamples = texts?.qaExamples ?? []
        if let first = qaExamples.first {
            question = first.question
            context = first.context
        }
        if let first = availableRuntimes.first { runtime = first }
        for kind in availableRuntimes {
            previousSelfTest[kind] = SelfTestStore.passedBefore(manifestDigest: manifestDigest, runtime: kind.rawValue)
        }
    }

    var availableRuntimes: [RuntimeKind] {
        RuntimeKind.allCases.filter { manifest.artifact(format: $0.manifestFormat) != nil }
    }

    var isBusy: Bool { isRunning || selfTestRunning != nil }
    var canRun: Bool { !isBusy && availableRuntimes.contains(runtime) && tokenizerError == nil }
    var maxTokens: Int { manifest.model.maxSeqLen }

    /// Where the model comes from, for the screens' header.
    var sourceLine: String {
        let place = companionPath.map { "companion \($0)/" } ?? "the bundle"
        return "\(manifest.model.name) · \(task.displayName) · \(place)"
    }

    // MARK: Tokenizer and engines

    private func loadTokenizer() throws -> WordPieceTokenizer {
        if let tokenizer { return tokenizer }
        do {
            let data = try Data(contentsOf: url.appendingPathComponent(manifest.tokenizer.path))
            let loaded = try WordPieceTokenizer.fromTokenizerJSON(data)
            tokenizer = loaded
            tokenizerError = nil
            return loaded
        } catch {
            tokenizerError = Readable.message(for: error)
            throw error
        }
    }

    private func engine(for kind: RuntimeKind) async throws -> any EncoderEngine {
        guard let artifact = manifest.artifact(format: kind.manifestFormat) else { throw AppError.noArtifact(kind) }
        let key = kind == .coreml ? "\(kind.rawValue).\(computeUnits.label)" : kind.rawValue
        if let engine, engineKey == key { return engine }
        engine = nil
        engineKey = nil
        status = "Loading \(kind.displayName)…"
        defer { status = "" }
        let bundleURL = url
        let manifest = self.manifest
        let loaded: any EncoderEngine
        switch kind {
        case .coreml:
            loaded = try await CoreMLEncoder.load(bundle: bundleURL, manifest: manifest, artifact: artifact,
                                                  computeUnits: computeUnits.units, keepCompiled: keepCompiled)
        case .executorch:
            loaded = try await Task.detached(priority: .userInitiated) {
                try ExecuTorchEncoder.load(bundle: bundleURL, manifest: manifest, artifact: artifact)
            }.value
        }
        engine = loaded
        engineKey = key
        return loaded
    }

    /// Runs `body` with the current runtime's engine on a background task, timing it.
    private func withEngine<T: Sendable>(_ body: @escaping @Sendable (any EncoderEngine) throws -> T) async throws -> (T, Double) {
        let engine = try await self.engine(for: runtime)
        return try await Task.detached(priority: .userInitiated) {
            let started = monotonicSeconds()
            let value = try body(engine)
            return (value, (monotonicSeconds() - started) * 1000)
        }.value
    }

    private func perform(_ what: String, _ action: @escaping @MainActor () async throws -> Void) {
        guard canRun else { return }
        isRunning = true
        errorMessage = nil
        Task {
            defer {
                isRunning = false
                status = ""
            }
            do {
                status = what
                try await action()
            } catch {
                errorMessage = Readable.message(for: error)
            }
        }
    }

    // MARK: Search

    func search() { perform("Searching…") { [self] in try await runSearch() } }

    /// Embeds the built-in passages (once per runtime), then the query, and ranks the passages.
    func runSearch() async throws {
        let text = query
        let tokenizer = try loadTokenizer()
        let limit = maxTokens
        let key = engineKey(for: runtime)
        var vectors = passageEmbeddings?.key == key ? passageEmbeddings?.vectors : nil
        if vectors == nil {
            status = "Embedding \(passages.count) passages…"
            let encoded = try passages.map { try tokenizer.encode($0, maxTokens: limit) }
            let (embedded, ms) = try await withEngine { engine in
                try encoded.map { try Self.firstOutput(engine.run(ids: $0.ids, typeIds: $0.typeIds)) }
            }
            passageEmbeddings = (key: key, vectors: embedded)
            indexMilliseconds = ms
            vectors = embedded
        }
        status = "Searching…"
        let encoding = try tokenizer.encode(text, maxTokens: limit)
        let (embedding, ms) = try await withEngine { engine in
            try Self.firstOutput(engine.run(ids: encoding.ids, typeIds: encoding.typeIds))
        }
        queryMilliseconds = ms
        let ranked = try EncoderMath.rank(query: embedding, passages: vectors ?? [])
        hits = ranked.map { SearchHit(index: $0.index, passage: passages[$0.index], cosine: $0.cosine) }
    }

    private func engineKey(for kind: RuntimeKind) -> String {
        kind == .coreml ? "\(kind.rawValue).\(computeUnits.label)" : kind.rawValue
    }

    private nonisolated static func firstOutput(_ outputs: [[Float]]) throws -> [Float] {
        guard let first = outputs.first else { throw EncoderModelError.noOutput }
        return first
    }

    // MARK: Classify

    func classify() { perform("Classifying…") { [self] in try await runClassify() } }

    func runClassify() async throws {
        let text = classifyText
        let tokenizer = try loadTokenizer()
        let encoding = try tokenizer.encode(text, maxTokens: maxTokens)
        let (logits, ms) = try await withEngine { engine in
            try Self.firstOutput(engine.run(ids: encoding.ids, typeIds: encoding.typeIds))
        }
        classifyMilliseconds = ms
        let labels = encoder.labels
        switch task {
        case .tokenClassification:
            labelScores = []
            tokenLabels = try Self.tokenLabels(logits: logits, labels: labels, encoding: encoding, text: text)
        default:
            tokenLabels = []
            labelScores = try EncoderMath.labelScores(logits: logits, labels: labels)
        }
    }

    /// Token classification: each real token's best label and its probability.
    private static func tokenLabels(logits: [Float], labels: [String], encoding: WordPieceEncoding,
                                    text: String) throws -> [TokenLabel] {
        let count = labels.count
        guard count > 0, logits.count == encoding.ids.count * count else {
            throw EncoderMath.MathError.sizeMismatch("\(logits.count) logits for \(encoding.ids.count) tokens × \(count) labels")
        }
        let nsText = text as NSString
        var out: [TokenLabel] = []
        for (t, sequence) in encoding.sequenceIds.enumerated() where sequence != nil {
            let row = Array(logits[(t * count)..<((t + 1) * count)])
            let p = EncoderMath.softmax(row)
            guard let best = EncoderMath.argmax(row) else { continue }
            let offset = encoding.offsets[t]
            let piece = nsText.substring(with: NSRange(location: offset.start, length: offset.end - offset.start))
            out.append(TokenLabel(index: t, text: piece, label: labels[best], score: p[best]))
        }
        return out
    }

    // MARK: Ask

    func useExample(_ example: EncoderTexts.QAExample) {
        question = example.question
        context = example.context
        answer = nil
        askNote = nil
    }

    func ask() { perform("Answering…") { [self] in try await runAsk() } }

    /// Encodes question and passage as a pair, and picks the best answer span in the passage.
    func runAsk() async throws {
        let question = self.question, passage = context
        let tokenizer = try loadTokenizer()
        let encoding = try tokenizer.encodePair(question: question, passage: passage, maxTokens: maxTokens)
        guard let range = encoding.tokenRange(sequence: 1) else {
            throw EncoderModelError.emptyPassage
        }
        let (outputs, ms) = try await withEngine { engine in
            try engine.run(ids: encoding.ids, typeIds: encoding.typeIds)
        }
        askMilliseconds = ms
        guard outputs.count == 2 else { throw EncoderModelError.noOutput }
        let span = try EncoderMath.bestSpan(start: outputs[0], end: outputs[1], first: range.lowerBound, last: range.upperBound)
        let from = encoding.offsets[span.start].start, to = encoding.offsets[span.end].end
        let nsRange = NSRange(location: from, length: max(0, to - from))
        answer = Answer(passage: passage, range: nsRange, text: (passage as NSString).substring(with: nsRange),
                        startToken: span.start, endToken: span.end,
                        score: Double(outputs[0][span.start]) + Double(outputs[1][span.end]))
        // The passage lost its tail when text remains after its last token.
        let rest = (passage as NSString).substring(from: encoding.offsets[range.upperBound].end)
        askNote = rest.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty ? nil
            : "The passage was cut after \(range.count) tokens to fit the model's \(maxTokens)-token input; the rest was not searched."
    }

    /// `SLMDemo --self-test`: this screen's action once, with the default texts, as one line.
    func headlessSmoke() async -> (passed: Bool, text: String) {
        isRunning = true
        defer { isRunning = false }
        do {
            switch role {
            case .search:
                try await runSearch()
                guard let top = hits.first else { return (false, "search: FAIL no passages ranked") }
                return (true, String(format: "search %@: best %.3f %@ (%ld passages in %.0f ms, query %.0f ms)",
                                     query.debugDescription, top.cosine, top.passage.debugDescription, hits.count,
                                     indexMilliseconds ?? 0, queryMilliseconds ?? 0))
            case .classify:
                try await runClassify()
                if let best = labelScores.first {
                    return (true, String(format: "classify %@: %@ %.3f (%.0f ms)", classifyText.debugDescription,
                                         best.label, best.score, classifyMilliseconds ?? 0))
                }
                guard !tokenLabels.isEmpty else { return (false, "classify: FAIL no labels") }
                return (true, "classify \(classifyText.debugDescription): "
                    + tokenLabels.map { "\($0.text)/\($0.label)" }.joined(separator: " "))
            case .answer:
                try await runAsk()
                guard let answer else { return (false, "ask: FAIL no answer") }
                return (true, String(format: "ask %@: %@ (tokens %ld...%ld, %.0f ms)", question.debugDescription,
                                     answer.text.debugDescription, answer.startToken, answer.endToken, askMilliseconds ?? 0))
            }
        } catch {
            return (false, "\(role.title.lowercased()): FAIL \(Readable.message(for: error))")
        }
    }

    // MARK: Self-tests

    /// The tokenizer check: this app's WordPiece must give the ids the exporter's tokenizer gave.
    func runTokenizerSelfTest() {
        let cases = manifest.tokenizer.selfTest ?? []
        do {
            let tokenizer = try loadTokenizer()
            let limit = maxTokens
            tokenizerSelfTest = TokenizerSelfTestReport(cases: TokenizerSelfTest.run(cases: cases) { text in
                (try? tokenizer.encode(text, maxTokens: limit).ids) ?? []
            }, error: nil)
        } catch {
            tokenizerSelfTest = TokenizerSelfTestReport(cases: [], error: Readable.message(for: error))
        }
    }

    /// Every golden case through `kind`'s runtime, each text alone.
    func runSelfTest(_ kind: RuntimeKind) async {
        guard let artifact = manifest.artifact(format: kind.manifestFormat), !isRunning, selfTestRunning == nil else { return }
        selfTestRunning = kind
        defer { selfTestRunning = nil }
        let started = monotonicSeconds()
        var report = EncoderSelfTestReport(runtime: kind.displayName, artifactPath: artifact.path, cases: [], seconds: 0, error: nil)
        do {
            let engine = try await self.engine(for: kind)
            status = "Self-test: \(kind.displayName)…"
            let cases = artifact.selfTest.encoderCases
            let task = self.task
            let labelCount = encoder.labels.count
            let cosineMin = artifact.parity.cosineMin
            let maxSeqLen = manifest.model.maxSeqLen
            let vocabSize = manifest.model.vocabSize
            report.cases = await Task.detached(priority: .userInitiated) {
                EncoderSelfTest.run(cases: cases, task: task, labelCount: labelCount, cosineMin: cosineMin,
                                    maxSeqLen: maxSeqLen, vocabSize: vocabSize) { ids, typeIds in
                    try engine.run(ids: ids, typeIds: typeIds)
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

    /// After a new bundle loads: the tokenizer check, and the golden cases of every runtime not
    /// run on this bundle before.
    func runInitialSelfTests() async {
        runTokenizerSelfTest()
        for kind in availableRuntimes where previousSelfTest[kind] == nil {
            await runSelfTest(kind)
        }
    }
}

enum EncoderModelError: LocalizedError {
    case notAnEncoder
    case noOutput
    case emptyPassage

    var errorDescription: String? {
        switch self {
        case .notAnEncoder: return "This manifest has no encoder section the app knows."
        case .noOutput: return "The encoder returned fewer outputs than its manifest lists."
        case .emptyPassage: return "The passage is empty."
        }
    }
}
