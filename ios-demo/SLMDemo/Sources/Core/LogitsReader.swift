import CoreML
import Foundation

/// Reads the logits of the last query position out of Core ML's `logits` output ([1, q, V],
/// fp16 for the compressed and fp16 recipes, fp32 for `fp32`), honouring the array's strides:
/// Core ML may hand back padded rows.
enum LogitsReader {
    enum ReadError: LocalizedError {
        case unsupportedType(MLMultiArrayDataType)
        case badShape([Int])

        var errorDescription: String? {
            switch self {
            case .unsupportedType(let t): return "The model's logits have an unsupported data type (\(t.rawValue))."
            case .badShape(let s): return "The model's logits have an unexpected shape \(s); expected [1, q, vocab]."
            }
        }
    }

    /// The last row of a [..., q, V] multiarray as Floats.
    static func lastRow(of array: MLMultiArray) throws -> [Float] {
        let shape = array.shape.map(\.intValue)
        let strides = array.strides.map(\.intValue)
        guard shape.count >= 2, let vocab = shape.last, vocab > 0, shape[shape.count - 2] > 0 else {
            throw ReadError.badShape(shape)
        }
        // All leading dimensions are 1 for a batch of one; take index 0 there and the last row.
        let offset = (shape[shape.count - 2] - 1) * strides[strides.count - 2]
        let stride = strides[strides.count - 1]
        let type = array.dataType
        return try array.withUnsafeBytes { raw in
            try readRow(raw, dataType: type, offset: offset, stride: stride, count: vocab)
        }
    }

    /// `count` elements starting at element `offset`, `stride` elements apart.
    static func readRow(_ raw: UnsafeRawBufferPointer, dataType: MLMultiArrayDataType,
                        offset: Int, stride: Int, count: Int) throws -> [Float] {
        var out = [Float](repeating: 0, count: count)
        switch dataType {
        case .float16:
            let p = raw.bindMemory(to: UInt16.self)
            for i in 0..<count { out[i] = Half.toFloat(p[offset + i * stride]) }
        case .float32:
            let p = raw.bindMemory(to: Float.self)
            for i in 0..<count { out[i] = p[offset + i * stride] }
        case .double:
            let p = raw.bindMemory(to: Double.self)
            for i in 0..<count { out[i] = Float(p[offset + i * stride]) }
        default:
            throw ReadError.unsupportedType(dataType)
        }
        return out
    }
}
