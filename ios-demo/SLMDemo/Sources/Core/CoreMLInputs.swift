import CoreML
import Foundation

/// The model's input arrays, written through their strides.
enum CoreMLInputs {
    static func inputIds(_ tokens: [Int]) throws -> MLMultiArray {
        let array = try MLMultiArray(shape: [NSNumber(value: 1), NSNumber(value: tokens.count)], dataType: .int32)
        array.withUnsafeMutableBufferPointer(ofType: Int32.self) { pointer, strides in
            for (i, t) in tokens.enumerated() { pointer[i * strides[1]] = Int32(t) }
        }
        return array
    }

    /// [1, 1, q, end] additive causal mask (0 allowed, -inf masked) in the model's mask type.
    static func causalMask(queryLength q: Int, end: Int, dataType: MLMultiArrayDataType) throws -> MLMultiArray {
        let values = StatefulPlan.causalMask(queryLength: q, end: end)
        let shape = [1, 1, q, end].map { NSNumber(value: $0) }
        let array = try MLMultiArray(shape: shape, dataType: dataType)
        try array.withUnsafeMutableBytes { raw, strides in
            func offset(_ i: Int, _ j: Int) -> Int { i * strides[2] + j * strides[3] }
            switch dataType {
            case .float16:
                let p = raw.bindMemory(to: UInt16.self)
                for i in 0..<q { for j in 0..<end { p[offset(i, j)] = Half.fromFloat(values[i * end + j]) } }
            case .float32:
                let p = raw.bindMemory(to: Float.self)
                for i in 0..<q { for j in 0..<end { p[offset(i, j)] = values[i * end + j] } }
            case .double:
                let p = raw.bindMemory(to: Double.self)
                for i in 0..<q { for j in 0..<end { p[offset(i, j)] = Double(values[i * end + j]) } }
            default:
                throw LogitsReader.ReadError.unsupportedType(dataType)
            }
        }
        return array
    }
}
