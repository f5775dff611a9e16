import CoreML
import Foundation

/// An encoder bundle's `coreml/model.mlpackage` (exporter/runtimes/coreml.py `emit_encoder`):
/// inputs named as `encoder.inputs`, int32 [B, T] with B flexible in 1...64 and T in
/// 1...max_seq_len; outputs float32 named as `encoder.outputs`. The app sends one text at a time
/// (B = 1, no padding, attention mask all ones), as the golden rule runs each case.
final class CoreMLEncoder: EncoderEngine, @unchecked Sendable {
    let kind = RuntimeKind.coreml
    private let model: MLModel
    private let inputNames: [String]
    private let outputNames: [String]
    private let lock = NSLock()

    private init(model: MLModel, encoder: Manifest.EncoderInfo) {
        self.model = model
        self.inputNames = encoder.inputs
        self.outputNames = encoder.outputs
    }

    /// Compiles (once per artifact digest, after the bundle's digests were checked) and loads the
    /// verified `.mlpackage`.
    static func load(bundle: URL, manifest: Manifest, artifact: Manifest.Artifact,
                     computeUnits: MLComputeUnits, keepCompiled: Set<String> = []) async throws -> CoreMLEncoder {
        guard let encoder = manifest.encoder else { throw CoreMLEncoderError.notAnEncoder }
        let package = bundle.appendingPathComponent(artifact.path)
        let compiled = try await CoreMLCompiler.compiledModel(packageURL: package, sha256: artifact.sha256,
                                                              keep: keepCompiled)
        let configuration = MLModelConfiguration()
        configuration.computeUnits = computeUnits
        let model = try MLModel(contentsOf: compiled, configuration: configuration)
        try checkInterface(model, encoder: encoder)
        return CoreMLEncoder(model: model, encoder: encoder)
    }

    /// Fails early, with a readable message, on a model whose inputs or outputs are not the
    /// manifest's.
    static func checkInterface(_ model: MLModel, encoder: Manifest.EncoderInfo) throws {
        let description = model.modelDescription
        let inputs = Set(description.inputDescriptionsByName.keys)
        let outputs = Set(description.outputDescriptionsByName.keys)
        guard inputs == Set(encoder.inputs), Set(encoder.outputs).isSubset(of: outputs) else {
            throw CoreMLEncoderError.interfaceMismatch(inputs: inputs.sorted(), outputs: outputs.sorted(),
                                                       expectedInputs: encoder.inputs, expectedOutputs: encoder.outputs)
        }
    }

    func run(ids: [Int], typeIds: [Int]) throws -> [[Float]] {
        let rows = try EncoderInputs.rows(names: inputNames, ids: ids, typeIds: typeIds)
        var features: [String: MLFeatureValue] = [:]
        for (name, row) in zip(inputNames, rows) {
            // int32 [1, T], written through its strides.
            features[name] = MLFeatureValue(multiArray: try CoreMLInputs.inputIds(row))
        }
        let provider = try MLDictionaryFeatureProvider(dictionary: features)
        lock.lock()
        defer { lock.unlock() }
        let output = try model.prediction(from: provider)
        return try outputNames.map { name -> [Float] in
            guard let array = output.featureValue(for: name)?.multiArrayValue else {
                throw CoreMLEncoderError.missingOutput(name)
            }
            return try CoreMLEncoder.flatten(array)
        }
    }

    /// Every element of a multiarray in row-major order, as Floats, through its strides (Core ML
    /// may hand back padded rows); the leading batch dimension of 1 included.
    static func flatten(_ array: MLMultiArray) throws -> [Float] {
        let shape = array.shape.map(\.intValue)
        let strides = array.strides.map(\.intValue)
        guard let last = shape.last, !shape.contains(where: { $0 < 1 }) else {
            throw LogitsReader.ReadError.badShape(shape)
        }
        let rows = shape.dropLast().reduce(1, *)
        let type = array.dataType
        return try array.withUnsafeBytes { raw -> [Float] in
            var out: [Float] = []
            out.reserveCapacity(rows * last)
            for r in 0..<rows {
                // The element offset of row r: its index in each leading dimension times that stride.
                var rest = r, offset = 0
                for d in stride(from: shape.count - 2, through: 0, by: -1) {
                    offset += (rest % shape[d]) * strides[d]
                    rest /= shape[d]
                }
                out += try LogitsReader.readRow(raw, dataType: type, offset: offset, stride: strides[strides.count - 1], count: last)
            }
            return out
        }
    }
}

enum CoreMLEncoderError: LocalizedError {
    case notAnEncoder
    case interfaceMismatch(inputs: [String], outputs: [String], expectedInputs: [String], expectedOutputs: [String])
    case missingOutput(String)

    var errorDescription: String? {
        switch self {
        case .notAnEncoder:
            return "This bundle's manifest has no encoder section."
        case let .interfaceMismatch(inputs, outputs, expectedInputs, expectedOutputs):
            return "The Core ML model is not the manifest's encoder (inputs \(inputs), outputs \(outputs); "
                + "expected \(expectedInputs) -> \(expectedOutputs))."
        case .missingOutput(let name):
            return "The Core ML model returned no \(name)."
        }
    }
}
