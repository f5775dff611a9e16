import Foundation
import Tokenizers

/// The bundle's tokenizer.json through huggingface/swift-transformers' `Tokenizers`, for both
/// runtimes (the app encodes prompts and decodes ids itself, so streaming is byte-safe and stop
/// ids are seen as ids).
final class BundleTokenizer: @unchecked Sendable {
    private let tokenizer: any Tokenizer
    let addSpecialTokens: Bool

    private init(tokenizer: any Tokenizer, addSpecialTokens: Bool) {
        self.tokenizer = tokenizer
        self.addSpecialTokens = addSpecialTokens
    }

    /// Encodes a prompt as the exporter does: with tokenizer.json's post-processor when the
    /// manifest's `tokenizer.add_special_tokens` is true; a rendered chat (`chat`) without it,
    /// as apply_chat_template encodes (its template already wrote any BOS).
    func encode(_ text: String, chat: Bool = false) -> [Int] {
        tokenizer.encode(text: text, addSpecialTokens: chat ? false : addSpecialTokens)
    }

    /// Decodes generated ids for display, special tokens left out.
    func decode(_ ids: [Int]) -> String {
        tokenizer.decode(tokens: ids, skipSpecialTokens: true)
    }

    /// Loads the (already verified) tokenizer files with `AutoTokenizer.from(modelFolder:)`.
    ///
    /// The loader's expectations of a model folder changed across swift-transformers releases
    /// (some require `config.json`, and `tokenizer_config.json` must exist), and the bundle
    /// holds neither a config.json nor, for some checkpoints, a tokenizer_config.json. Adding
    /// files to the bundle would break its manifest, so the loader gets a staging folder in
    /// Caches: copies of the bundle's tokenizer files plus the minimal files it needs.
    static func load(bundle: URL, manifest: Manifest) async throws -> BundleTokenizer {
        let folder = try stagingFolder(bundle: bundle, manifest: manifest)
        let tokenizer = try await AutoTokenizer.from(modelFolder: folder)
        return BundleTokenizer(tokenizer: tokenizer, addSpecialTokens: manifest.addsSpecialTokens)
    }

    static func stagingFolder(bundle: URL, manifest: Manifest) throws -> URL {
        let fm = FileManager.default
        let caches = try fm.url(for: .cachesDirectory, in: .userDomainMask, appropriateFor: nil, create: true)
        let folder = caches.appendingPathComponent("tokenizer-\(manifest.tokenizer.sha256.prefix(16))", isDirectory: true)
        try? fm.removeItem(at: folder)
        try fm.createDirectory(at: folder, withIntermediateDirectories: true)
        try fm.copyItem(at: bundle.appendingPathComponent(manifest.tokenizer.path),
                        to: folder.appendingPathComponent("tokenizer.json"))
        if let configPath = manifest.tokenizer.configPath {
            try fm.copyItem(at: bundle.appendingPathComponent(configPath),
                            to: folder.appendingPathComponent("tokenizer_config.json"))
        } else {
            // A tokenizer.json without a config: the generic fast tokenizer class.
            try Data(#"{"tokenizer_class": "PreTrainedTokenizerFast"}"#.utf8)
                .write(to: folder.appendingPathComponent("tokenizer_config.json"))
        }
        let modelConfig = ["model_type": manifest.model.family]
        try JSONSerialization.data(withJSONObject: modelConfig)
            .write(to: folder.appendingPathComponent("config.json"))
        return folder
    }
}
