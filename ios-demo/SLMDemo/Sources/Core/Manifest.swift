import Foundation

/// `manifest.json`, the contract between slm-export and this app.
///
/// Mirrors `exporter/schema/manifest.schema.json` (documented in docs/MANIFEST.md). Every
/// `CodingKeys` raw value is a key of that schema, spelled exactly as in the JSON; a Python test
/// (tests/) extracts every enum case's explicit raw string from ios-demo/**/*.swift and checks it
/// against the schema, so explicit raw strings in this app are manifest keys only.
///
/// Decoding ignores keys it does not know (the exporter's schema forbids unknown keys, so the two
/// can only disagree by this file missing a new optional key, which is harmless).
struct Manifest: Codable, Equatable {
    var schemaVersion: Int
    var generator: Generator
    var target: String
    var model: ModelInfo
    var tokenizer: TokenizerInfo
    /// Only for a chat model (docs/MANIFEST.md, Chat): template, stop ids, generation defaults.
    var chat: ChatInfo?
    /// Only for an encoder bundle (docs/MANIFEST.md, Encoders): its task, graph inputs and outputs.
    /// Its artifacts' golden cases are then `selfTest.encoderCases`.
    var encoder: EncoderInfo?
    var artifacts: [Artifact]
    /// Encoder bundles carried beside a decoder, each in its own folder (docs/MANIFEST.md,
    /// Companions); their files are listed in `files` too.
    var companions: [Companion]?
    var parity: ParityFiles
    var files: [FileEntry]

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version"
        case generator = "generator"
        case target = "target"
        case model = "model"
        case tokenizer = "tokenizer"
        case chat = "chat"
        case encoder = "encoder"
        case artifacts = "artifacts"
        case companions = "companions"
        case parity = "parity"
        case files = "files"
    }

    /// `encoder`: what an encoder bundle's graph computes and takes.
    struct EncoderInfo: Codable, Equatable {
        /// feature-extraction, sequence-classification, token-classification or question-answering.
        var task: String
        /// The graph's inputs in order: input_ids, attention_mask[, token_type_ids].
        var inputs: [String]
        /// embeddings | logits | start_logits, end_logits.
        var outputs: [String]
        /// id2label in id order (classification).
        var labels: [String]
        var padTokenId: Int
        /// Feature extraction only.
        var pooling: Pooling?

        enum CodingKeys: String, CodingKey {
            case task = "task"
            case inputs = "inputs"
            case outputs = "outputs"
            case labels = "labels"
            case padTokenId = "pad_token_id"
            case pooling = "pooling"
        }
    }

    struct Pooling: Codable, Equatable {
        /// mean, cls or max.
        var mode: String
        var normalize: Bool
        /// sentence-transformers or default.
        var source: String

        enum CodingKeys: String, CodingKey {
            case mode = "mode"
            case normalize = "normalize"
            case source = "source"
        }
    }

    /// One encoder bundle beside a decoder: a complete bundle in the folder `path`.
    struct Companion: Codable, Equatable {
        /// The app screen it serves: search, classify or answer.
        var role: String
        var path: String
        var task: String
        /// sha256 of the companion's manifest.json.
        var manifestSha256: String

        enum CodingKeys: String, CodingKey {
            case role = "role"
            case path = "path"
            case task = "task"
            case manifestSha256 = "manifest_sha256"
        }
    }

    struct ChatInfo: Codable, Equatable {
        var template: String
        var templateSource: String
        var templateVariables: [String: String]
        var stopTokenIds: [Int]
        var endOfTurnToken: String?
        var bosInTemplate: Bool
        /// Always false and 0: a rendered chat is encoded without the post-processor and no BOS
        /// is added (the template writes it where the model wants one).
        var addSpecialTokens: Bool
        var bosAddedByRuntime: Int
        /// The template as strings to concatenate; nil when the app cannot apply it.
        var portable: PortableTemplate?
        var unsupported: [String]
        var generation: GenerationDefaults
        var vectors: [ChatVector]

        enum CodingKeys: String, CodingKey {
            case template = "template"
            case templateSource = "template_source"
            case templateVariables = "template_variables"
            case stopTokenIds = "stop_token_ids"
            case endOfTurnToken = "end_of_turn_token"
            case bosInTemplate = "bos_in_template"
            case addSpecialTokens = "add_special_tokens"
            case bosAddedByRuntime = "bos_added_by_runtime"
            case portable = "portable"
            case unsupported = "unsupported"
            case generation = "generation"
            case vectors = "vectors"
        }
    }

    struct PortableTemplate: Codable, Equatable {
        var prefix: String
        var roles: [String: RoleAffix]
        var generationPrompt: String
        var defaultSystem: String?

        enum CodingKeys: String, CodingKey {
            case prefix = "prefix"
            case roles = "roles"
            case generationPrompt = "generation_prompt"
            case defaultSystem = "default_system"
        }
    }

    struct RoleAffix: Codable, Equatable {
        var prefix: String
        var suffix: String

        enum CodingKeys: String, CodingKey {
            case prefix = "prefix"
            case suffix = "suffix"
        }
    }

    struct GenerationDefaults: Codable, Equatable {
        var temperature: Double?
        var topP: Double?
        var topK: Int?
        var repetitionPenalty: Double?
        var maxNewTokens: Int?

        enum CodingKeys: String, CodingKey {
            case temperature = "temperature"
            case topP = "top_p"
            case topK = "top_k"
            case repetitionPenalty = "repetition_penalty"
            case maxNewTokens = "max_new_tokens"
        }
    }

    struct ChatVector: Codable, Equatable {
        var name: String
        var messages: [ChatMessage]
        var addGenerationPrompt: Bool
        var text: String?
        var ids: [Int]?
        var error: String?

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case messages = "messages"
            case addGenerationPrompt = "add_generation_prompt"
            case text = "text"
            case ids = "ids"
            case error = "error"
        }
    }

    struct ChatMessage: Codable, Equatable {
        var role: String
        var content: String

        enum CodingKeys: String, CodingKey {
            case role = "role"
            case content = "content"
        }
    }

    struct Generator: Codable, Equatable {
        var name: String
        var version: String
        /// Versions of every tool that touched the artifacts (torch, executorch, ...).
        var tools: [String: String]

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case version = "version"
            case tools = "tools"
        }
    }

    struct ModelInfo: Codable, Equatable {
        var name: String
        var family: String
        var parameters: Int
        var vocabSize: Int
        /// KV-cache length: prompt plus generated tokens must fit.
        var maxSeqLen: Int
        var bosTokenId: Int?
        var eosTokenIds: [Int]
        var sourceSha256: String

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case family = "family"
            case parameters = "parameters"
            case vocabSize = "vocab_size"
            case maxSeqLen = "max_seq_len"
            case bosTokenId = "bos_token_id"
            case eosTokenIds = "eos_token_ids"
            case sourceSha256 = "source_sha256"
        }

        // bos_token_id is required but nullable: encode an explicit null rather than omitting it.
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(family, forKey: .family)
            try c.encode(parameters, forKey: .parameters)
            try c.encode(vocabSize, forKey: .vocabSize)
            try c.encode(maxSeqLen, forKey: .maxSeqLen)
            try c.encode(bosTokenId, forKey: .bosTokenId)
            try c.encode(eosTokenIds, forKey: .eosTokenIds)
            try c.encode(sourceSha256, forKey: .sourceSha256)
        }
    }

    struct TokenizerInfo: Codable, Equatable {
        var path: String
        var sha256: String
        var configPath: String?
        var configSha256: String?
        /// Encode prompts with tokenizer.json's post-processor (its bos template, if any).
        var addSpecialTokens: Bool?
        /// Strings and the ids the checkpoint's tokenizer gives them (with add_special_tokens):
        /// swift-transformers must reproduce them.
        var selfTest: [TokenizerCase]?

        enum CodingKeys: String, CodingKey {
            case path = "path"
            case sha256 = "sha256"
            case configPath = "config_path"
            case configSha256 = "config_sha256"
            case addSpecialTokens = "add_special_tokens"
            case selfTest = "self_test"
        }
    }

    struct TokenizerCase: Codable, Equatable {
        var text: String
        var ids: [Int]

        enum CodingKeys: String, CodingKey {
            case text = "text"
            case ids = "ids"
        }
    }

    struct Artifact: Codable, Equatable {
        /// `executorch`, `onnx` or `coreml`.
        var format: String
        /// Relative path: a file, or a folder for folder formats (`.mlpackage`, the ONNX folder).
        var path: String
        var quantization: String
        var bytes: Int64
        /// For a folder: sha256 over `relpath sha256\n` lines of its files in sorted order.
        var sha256: String
        var parity: ArtifactParity
        var selfTest: SelfTestSpec
        /// Encoder artifacts: export and verification time.
        var seconds: Double?
        /// Present when `--quant auto` chose this artifact: the candidates tried, smallest first.
        var search: Search?
        /// Present when the artifact missed its quality gate and was shipped anyway
        /// (--accept-quality-loss): shown beside the runtime.
        var qualityLoss: QualityLoss?

        enum CodingKeys: String, CodingKey {
            case format = "format"
            case path = "path"
            case quantization = "quantization"
            case bytes = "bytes"
            case sha256 = "sha256"
            case parity = "parity"
            case selfTest = "self_test"
            case seconds = "seconds"
            case search = "search"
            case qualityLoss = "quality_loss"
        }
    }

    struct QualityLoss: Codable, Equatable {
        var acceptedWith: String
        var failures: [String]

        enum CodingKeys: String, CodingKey {
            case acceptedWith = "accepted_with"
            case failures = "failures"
        }
    }

    struct Search: Codable, Equatable {
        var seconds: Double
        var tried: [SearchCandidate]

        enum CodingKeys: String, CodingKey {
            case seconds = "seconds"
            case tried = "tried"
        }
    }

    struct SearchCandidate: Codable, Equatable {
        var quantization: String
        var passed: Bool
        var bytes: Int64?

        enum CodingKeys: String, CodingKey {
            case quantization = "quantization"
            case passed = "passed"
            case bytes = "bytes"
        }
    }

    /// Golden vectors. A decoder's (`cases`): greedy generation from `promptIds` must reproduce
    /// the first `mustMatch` ids of `expectedIds`. An encoder's (`encoderCases`): each case's ids,
    /// run alone, must give its expected outputs (docs/MANIFEST.md, Encoders).
    ///
    /// Both shapes live under the same JSON key `cases`; which one an artifact has is decided by
    /// the manifest's `encoder` section, as in the schema (`if encoder then encoderArtifact`):
    /// `Manifest.decode` tells the decoder through `userInfo[.encoderBundle]`.
    struct SelfTestSpec: Codable, Equatable {
        var rule: String
        /// A decoder's golden cases (empty in an encoder bundle).
        var cases: [SelfTestCase]
        /// An encoder's golden cases (empty in a decoder bundle).
        var encoderCases: [EncoderSelfTestCase]

        enum CodingKeys: String, CodingKey {
            case rule = "rule"
            case cases = "cases"
        }

        init(rule: String, cases: [SelfTestCase] = [], encoderCases: [EncoderSelfTestCase] = []) {
            self.rule = rule
            self.cases = cases
            self.encoderCases = encoderCases
        }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            rule = try c.decode(String.self, forKey: .rule)
            if decoder.userInfo[.encoderBundle] as? Bool == true {
                encoderCases = try c.decode([EncoderSelfTestCase].self, forKey: .cases)
                cases = []
            } else {
                cases = try c.decode([SelfTestCase].self, forKey: .cases)
                encoderCases = []
            }
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(rule, forKey: .rule)
            if encoderCases.isEmpty {
                try c.encode(cases, forKey: .cases)
            } else {
                try c.encode(encoderCases, forKey: .cases)
            }
        }
    }

    /// An encoder artifact's golden case: `inputIds` (with an all-ones attention mask and
    /// `tokenTypeIds`), run alone, give `expected`: one flattened list per output, in
    /// `encoder.outputs` order, as this artifact computed them on the host.
    struct EncoderSelfTestCase: Codable, Equatable {
        var name: String
        var inputIds: [Int]
        var tokenTypeIds: [Int]
        var expected: [[Double]]
        /// Question answering: the answer's first and last token.
        var span: [Int]?

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case inputIds = "input_ids"
            case tokenTypeIds = "token_type_ids"
            case expected = "expected"
            case span = "span"
        }
    }

    struct SelfTestCase: Codable, Equatable {
        var name: String
        var promptIds: [Int]
        var expectedIds: [Int]
        var mustMatch: Int

        enum CodingKeys: String, CodingKey {
            case name = "name"
            case promptIds = "prompt_ids"
            case expectedIds = "expected_ids"
            case mustMatch = "must_match"
        }
    }

    /// The parity summary of one artifact (the full data is in parity.json). A decoder's always has
    /// top1, kl_mean and greedy_prefix_min (`problems()` checks); an encoder's has max_abs, texts
    /// and its task's figures (cosine_min, cosine_mean, neighbour_agreement; label_agreement,
    /// labels_compared; span_match).
    struct ArtifactParity: Codable, Equatable {
        var passed: Bool
        var reference: String
        var top1: Double?
        var top5Overlap: Double?
        var klMean: Double?
        var klMax: Double?
        var cosineMin: Double?
        var cosineMean: Double?
        var neighbourAgreement: Double?
        var labelAgreement: Double?
        var labelsCompared: Int?
        var spanMatch: Double?
        var texts: Int?
        var maxAbs: Double?
        var greedyPrefixMin: Double?
        var ties: Int?
        var steps: Int?
        var failures: [String]?
        /// On the held-out text (docs/PARITY.md): top-1 agreement and relative perplexity change.
        var textTop1: Double?
        var pplChange: Double?

        enum CodingKeys: String, CodingKey {
            case passed = "passed"
            case reference = "reference"
            case top1 = "top1"
            case top5Overlap = "top5_overlap"
            case klMean = "kl_mean"
            case klMax = "kl_max"
            case cosineMin = "cosine_min"
            case cosineMean = "cosine_mean"
            case neighbourAgreement = "neighbour_agreement"
            case labelAgreement = "label_agreement"
            case labelsCompared = "labels_compared"
            case spanMatch = "span_match"
            case texts = "texts"
            case maxAbs = "max_abs"
            case greedyPrefixMin = "greedy_prefix_min"
            case ties = "ties"
            case steps = "steps"
            case failures = "failures"
            case textTop1 = "text_top1"
            case pplChange = "ppl_change"
        }
    }

    struct ParityFiles: Codable, Equatable {
        var results: String
        var report: String
        var reference: String

        enum CodingKeys: String, CodingKey {
            case results = "results"
            case report = "report"
            case reference = "reference"
        }
    }

    struct FileEntry: Codable, Equatable {
        var path: String
        var bytes: Int64
        var sha256: String

        enum CodingKeys: String, CodingKey {
            case path = "path"
            case bytes = "bytes"
            case sha256 = "sha256"
        }
    }
}

// MARK: - Reading and checking

enum ManifestError: LocalizedError, Equatable {
    case unreadable(String)
    case invalid([String])

    var errorDescription: String? {
        switch self {
        case .unreadable(let why):
            return "manifest.json could not be read: \(why)"
        case .invalid(let problems):
            let shown = problems.prefix(3).joined(separator: "; ")
            let more = problems.count > 3 ? " (and \(problems.count - 3) more)" : ""
            return "manifest.json does not follow the slm-export contract: \(shown)\(more)"
        }
    }
}

extension Manifest {
    static let fileName = "manifest.json"
    static let supportedSchemaVersion = 1

    /// Whether the JSON has an `encoder` section: it decides the shape of the artifacts' golden
    /// cases (the schema's `if encoder then encoderArtifact else decoderArtifact`).
    static func hasEncoderSection(_ data: Data) -> Bool {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let section = object["encoder"] else { return false }
        return !(section is NSNull)
    }

    /// Decodes and checks a manifest (a decoder's or an encoder's). Throws `ManifestError` with a
    /// readable message.
    static func decode(_ data: Data) throws -> Manifest {
        let manifest: Manifest
        do {
            let decoder = JSONDecoder()
            decoder.userInfo[.encoderBundle] = hasEncoderSection(data)
            manifest = try decoder.decode(Manifest.self, from: data)
        } catch let DecodingError.keyNotFound(key, context) {
            let at = (context.codingPath.map(\.stringValue) + [key.stringValue]).joined(separator: "/")
            throw ManifestError.unreadable("missing key \(at)")
        } catch let DecodingError.typeMismatch(_, context) {
            let at = context.codingPath.map(\.stringValue).joined(separator: "/")
            throw ManifestError.unreadable("wrong type at \(at.isEmpty ? "(top level)" : at)")
        } catch let DecodingError.valueNotFound(_, context) {
            let at = context.codingPath.map(\.stringValue).joined(separator: "/")
            throw ManifestError.unreadable("null at \(at)")
        } catch let DecodingError.dataCorrupted(context) {
            throw ManifestError.unreadable("not valid JSON (\(context.debugDescription))")
        }
        let problems = manifest.problems()
        if !problems.isEmpty { throw ManifestError.invalid(problems) }
        return manifest
    }

    static func load(from bundle: URL) throws -> (manifest: Manifest, data: Data) {
        let url = bundle.appendingPathComponent(fileName)
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw ManifestError.unreadable("\(url.path): \(error.localizedDescription)")
        }
        return (try decode(data), data)
    }

    /// The schema's constraints that matter on the phone (a subset of the JSON Schema: the
    /// exporter validated the whole schema when it wrote the file).
    func problems() -> [String] {
        var out: [String] = []
        if schemaVersion != Manifest.supportedSchemaVersion {
            out.append("schema_version is \(schemaVersion); this app reads version \(Manifest.supportedSchemaVersion)")
        }
        if generator.name != "slm-export" { out.append("generator/name is \(generator.name), not slm-export") }
        if model.vocabSize < 1 { out.append("model/vocab_size must be at least 1") }
        if model.maxSeqLen < 1 { out.append("model/max_seq_len must be at least 1") }
        if model.eosTokenIds.contains(where: { $0 < 0 }) { out.append("model/eos_token_ids has a negative id") }
        if let bos = model.bosTokenId, bos < 0 { out.append("model/bos_token_id is negative") }
        if !Manifest.isSha256(model.sourceSha256) { out.append("model/source_sha256 is not a sha256") }

        func checkPath(_ path: String, _ at: String) {
            if !Manifest.isRelativePath(path) { out.append("\(at) \(path) is not a safe relative path") }
        }
        func checkSha(_ sha: String, _ at: String) {
            if !Manifest.isSha256(sha) { out.append("\(at) is not a lowercase hex sha256") }
        }
        checkPath(tokenizer.path, "tokenizer/path")
        checkSha(tokenizer.sha256, "tokenizer/sha256")
        if let p = tokenizer.configPath { checkPath(p, "tokenizer/config_path") }
        if let s = tokenizer.configSha256 { checkSha(s, "tokenizer/config_sha256") }
        for (i, c) in (tokenizer.selfTest ?? []).enumerated() where c.ids.contains(where: { $0 < 0 }) {
            out.append("tokenizer/self_test/\(i)/ids has a negative id")
        }

        if let encoder { out += encoderProblems(encoder) }

        if artifacts.isEmpty { out.append("artifacts is empty") }
        for (i, a) in artifacts.enumerated() {
            let at = "artifacts/\(i)"
            if !["executorch", "onnx", "coreml"].contains(a.format) { out.append("\(at)/format \(a.format) is unknown") }
            checkPath(a.path, "\(at)/path")
            checkSha(a.sha256, "\(at)/sha256")
            if a.bytes < 1 { out.append("\(at)/bytes must be at least 1") }
            if !a.parity.passed && a.qualityLoss == nil {
                out.append("\(at)/parity/passed is false without quality_loss")
            }
            if let encoder {
                out += encoderCaseProblems(a.selfTest.encoderCases, encoder: encoder, at: "\(at)/self_test/cases")
                continue
            }
            for (key, value) in [("top1", a.parity.top1), ("kl_mean", a.parity.klMean),
                                 ("greedy_prefix_min", a.parity.greedyPrefixMin)] where value == nil {
                out.append("\(at)/parity/\(key) is missing")
            }
            for (j, c) in a.selfTest.cases.enumerated() {
                let cat = "\(at)/self_test/cases/\(j)"
                if c.promptIds.isEmpty { out.append("\(cat)/prompt_ids is empty") }
                if c.expectedIds.isEmpty { out.append("\(cat)/expected_ids is empty") }
                if c.mustMatch < 1 { out.append("\(cat)/must_match must be at least 1") }
                if (c.promptIds + c.expectedIds).contains(where: { $0 < 0 }) { out.append("\(cat) has a negative id") }
            }
        }
        checkPath(parity.results, "parity/results")
        checkPath(parity.report, "parity/report")
        checkPath(parity.reference, "parity/reference")
        if encoder != nil && chat != nil { out.append("an encoder bundle has no chat section") }
        if let companions {
            if companions.isEmpty { out.append("companions is empty") }
            for (i, c) in companions.enumerated() {
                let at = "companions/\(i)"
                checkPath(c.path, "\(at)/path")
                checkSha(c.manifestSha256, "\(at)/manifest_sha256")
                if let task = EncoderTask(manifestName: c.task) {
                    if task.role.manifestName != c.role {
                        out.append("\(at): role \(c.role) does not serve task \(c.task) (expected \(task.role.manifestName))")
                    }
                } else {
                    out.append("\(at)/task \(c.task) is unknown")
                }
                if companions.prefix(i).contains(where: { $0.path == c.path }) { out.append("\(at)/path \(c.path) is listed twice") }
            }
        }
        for (i, f) in files.enumerated() {
            checkPath(f.path, "files/\(i)/path")
            checkSha(f.sha256, "files/\(i)/sha256")
            if f.bytes < 0 { out.append("files/\(i)/bytes is negative") }
        }
        return out
    }

    /// `^(?!/)(?!.*(^|/)\.\.(/|$))[A-Za-z0-9._/-]+$` from the schema's `relpath`.
    static func isRelativePath(_ path: String) -> Bool {
        guard !path.isEmpty, !path.hasPrefix("/") else { return false }
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/-")
        guard path.allSatisfy({ allowed.contains($0) }) else { return false }
        return !path.split(separator: "/", omittingEmptySubsequences: false).contains("..")
    }

    static func isSha256(_ s: String) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    func artifact(format: String) -> Artifact? { artifacts.first { $0.format == format } }

    /// The checks of the `encoder` section: a task this app knows, the graph inputs in the
    /// exporter's order, and the outputs that task has.
    private func encoderProblems(_ encoder: EncoderInfo) -> [String] {
        var out: [String] = []
        guard let task = EncoderTask(manifestName: encoder.task) else {
            return ["encoder/task \(encoder.task) is unknown"]
        }
        if !EncoderInputs.knownOrders.contains(encoder.inputs) {
            out.append("encoder/inputs \(encoder.inputs) are not input_ids, attention_mask[, token_type_ids]")
        }
        if encoder.outputs != task.outputs {
            out.append("encoder/outputs \(encoder.outputs) are not \(task.outputs) (the outputs of \(encoder.task))")
        }
        if task.hasLabels && encoder.labels.isEmpty { out.append("encoder/labels is empty for \(encoder.task)") }
        if encoder.padTokenId < 0 { out.append("encoder/pad_token_id is negative") }
        return out
    }

    private func encoderCaseProblems(_ cases: [EncoderSelfTestCase], encoder: EncoderInfo, at: String) -> [String] {
        var out: [String] = []
        for (j, c) in cases.enumerated() {
            let cat = "\(at)/\(j)"
            if c.inputIds.isEmpty { out.append("\(cat)/input_ids is empty") }
            if c.inputIds.contains(where: { $0 < 0 }) { out.append("\(cat)/input_ids has a negative id") }
            if c.tokenTypeIds.count != c.inputIds.count {
                out.append("\(cat)/token_type_ids has \(c.tokenTypeIds.count) ids for \(c.inputIds.count) tokens")
            }
            if c.expected.count != encoder.outputs.count {
                out.append("\(cat)/expected has \(c.expected.count) outputs; the encoder has \(encoder.outputs.count)")
            }
            if let span = c.span, span.count != 2 || span[0] > span[1] || span[1] >= c.inputIds.count {
                out.append("\(cat)/span \(span) is not a first and last token")
            }
        }
        return out
    }

    /// Whether prompts are encoded with tokenizer.json's post-processor (default: yes).
    var addsSpecialTokens: Bool { tokenizer.addSpecialTokens ?? true }

    /// The encoder's task, for an encoder bundle (nil for a decoder, or a task this app does not know).
    var encoderTask: EncoderTask? { encoder.flatMap { EncoderTask(manifestName: $0.task) } }
}

extension CodingUserInfoKey {
    /// Set by `Manifest.decode`: whether the manifest being decoded has an `encoder` section, so its
    /// artifacts' golden cases are an encoder's.
    static let encoderBundle = CodingUserInfoKey(rawValue: "org.slmexport.demo.encoderBundle")!
}
