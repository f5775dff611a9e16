"""onnxruntime's 4-bit MatMulNBits kernels on one decode-sized matrix-vector product (the figures
in docs/PARITY.md): round-to-nearest symmetric and asymmetric (uint8 zero points) at accuracy
level 4, and HQQ (float zero points). Prints microseconds per run and the largest error against
the fp32 product. Usage: python benchmarks/onnx_nbits_kernels.py [K N]"""

from __future__ import annotations

import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer


def main(k: int = 576, n: int = 1536, runs: int = 2000) -> None:
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((k, n)) * 0.05).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "t", n])],
                              [numpy_helper.from_array(weight, "W")])
    x = rng.standard_normal((1, 1, k)).astype(np.float32)
    for name, options in (("rtn symmetric", {"is_symmetric": True, "accuracy_level": 4}),
                          ("rtn asymmetric", {"is_symmetric": False, "accuracy_level": 4}),
                          ("hqq", {"algo_config": HQQWeightOnlyQuantConfig(block_size=32, bits=4)})):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                        helper.make_opsetid("com.microsoft", 1)])
        model.ir_version = 10
        quantizer = MatMulNBitsQuantizer(onnx.ModelProto.FromString(model.SerializeToString()), bits=4,
                                         block_size=32, op_types_to_quantize=("MatMul",), **options)
        quantizer.process()
        session = ort.InferenceSession(quantizer.model.model.SerializeToString(), providers=["CPUExecutionProvider"])
        error = float(np.abs(session.run(None, {"x": x})[0] - x[0] @ weight).max())
        start = time.perf_counter()
        for _ in range(runs):
            session.run(None, {"x": x})
        print(f"{name:15s} {(time.perf_counter() - start) / runs * 1e6:8.1f} us/run  max error {error:.3f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
