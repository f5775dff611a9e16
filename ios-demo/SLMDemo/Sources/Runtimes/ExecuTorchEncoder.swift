import ExecuTorch
import Foundation

// This file imports ExecuTorch, whose Swift API declares its own `Error`, `Module`, `Tensor` and
// `Value` types; Swift's error protocol is spelled `Swift.Error` here.

/// An encoder bundle's `executorch/model.pte` (XNNPACK; exporter/runtimes/executorch.py
/// `emit_encoder`) through ExecuTorch's `Module`: `forward` takes `encoder.inputs` in order, each
/// int64 [1, T] (batch 1: XNNPACK's reshape allows one dynamic dimension, spent on the length),
/// and returns `encoder.outputs` in order as float32 tensors.
///
/// API (ExecuTorch 1.5, extension/apple/ExecuTorch/Exported/ExecuTorch+Module.swift, +Tensor,
/// +Value): `Module(filePath:)`, `load(_:)`, `forward(_: [ValueConvertible]) throws -> [Value]`,
/// `Tensor<Int64>(_:shape:)`, `Value.anyTensor`, `AnyTensor.asTensor()`, `copy(to:)`,
/// `Tensor.scalars()`.
final class ExecuTorchEncoder: EncoderEngine, @unchecked Sendable {
    let kind = RuntimeKind.executorch
    private let module: Module
    private let inputNames: [String]
    private let outputCount: Int
    private let lock = NSLock()

    private init(module: Module, encoder: Manifest.EncoderInfo) {
        self.module = module
        self.inputNames = encoder.inputs
        self.outputCount = encoder.outputs.count
    }

    /// Loads the program (blocking; call off the main thread).
    static func load(bundle: URL, manifest: Manifest, artifact: Manifest.Artifact) throws -> ExecuTorchEncoder {
        guard let encoder = manifest.encoder else { throw ExecuTorchEncoderError.notAnEncoder }
        let module = Module(filePath: bundle.appendingPathComponent(artifact.path).path)
        do {
            try module.load("forward")
        } catch {
            throw ExecuTorchEncoderError.loadFailed(artifact.path, Readable.message(for: error))
        }
        return ExecuTorchEncoder(module: module, encoder: encoder)
    }

    func run(ids: [Int], typeIds: [Int]) throws -> [[Float]] {
        let rows = try EncoderInputs.rows(names: inputNames, ids: ids, typeIds: typeIds)
        let inputs: [ValueConvertible] = rows.map { row -> ValueConvertible in
            Tensor<Int64>(row.map { Int64($0) }, shape: [1, row.count])
        }
        lock.lock()
        defer { lock.unlock() }
        let outputs: [Value] = try module.forward(inputs)
        guard outputs.count >= outputCount else {
            throw ExecuTorchEncoderError.outputs(got: outputs.count, expected: outputCount)
        }
        return try outputs.prefix(outputCount).enumerated().map { (index, value) -> [Float] in
            guard let tensor = value.anyTensor else { throw ExecuTorchEncoderError.notATensor(index) }
            // The program returns float32; anything else is converted rather than misread.
            if let floats: Tensor<Float> = tensor.asTensor() { return floats.scalars() }
            guard let converted: Tensor<Float> = tensor.copy(to: .float).asTensor() else {
                throw ExecuTorchEncoderError.notATensor(index)
            }
            return converted.scalars()
        }
    }
}

enum ExecuTorchEncoderError: LocalizedError {
    case notAnEncoder
    case loadFailed(String, String)
    case outputs(got: Int, expected: Int)
    case notATensor(Int)

    var errorDescription: String? {
        switch self {
        case .notAnEncoder:
            return "This bundle's manifest has no encoder section."
        case let .loadFailed(path, why):
            return "ExecuTorch could not load \(path): \(why). An int8 recipe needs the quantized kernels linked "
                + "(kernels_quantized), and a .pte must not be newer than the runtime (1.5.1)."
        case let .outputs(got, expected):
            return "The encoder program returned \(got) outputs; the manifest lists \(expected)."
        case .notATensor(let index):
            return "The encoder program's output \(index) is not a float tensor."
        }
    }
}
