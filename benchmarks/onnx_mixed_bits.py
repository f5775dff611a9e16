"""ONNX Runtime weight layouts between the int4 and int8w recipes, on a real model (the figures in
docs/PARITY.md): 8-bit MatMulNBits at other block sizes, and 4-bit MatMulNBits on chosen MLPs with
8 bits elsewhere. One fp32 export, then each variant quantized, converted to model.ort, run through
onnxruntime-genai over the held-out text; prints bytes, text top-1 and perplexity change per variant.

Usage: python benchmarks/onnx_mixed_bits.py MODEL_DIR [VARIANTS_JSON]   (default: the 12 layouts in PARITY.md)
A variant: {"b8": 64} (8-bit block size), plus "int4": ["mlp."] and "layers": [8, 9, ...] to put
the matching weights of those layers at 4 bits (block 32)."""

from __future__ import annotations

import copy
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import onnx
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

from exporter.checkpoint import build_model, load_checkpoint
from exporter.pipeline import build_reference, copy_tokenizer_files
from exporter.runtimes import onnx_genai, onnx_graph
from exporter.verify import measure_text

# Every row of docs/PARITY.md's table, in its order.
DEFAULT_VARIANTS = [
    {"b8": 32}, {"b8": 64}, {"b8": 128},
    *({"b8": 64, "int4": ["mlp."], "layers": list(range(first, first + 12))} for first in (2, 8, 14, 16, 17, 18)),
    {"b8": 64, "int4": ["gate_proj", "up_proj"], "layers": list(range(6, 24))},
    {"b8": 64, "int4": ["down_proj"], "layers": list(range(12, 18))},
    {"b8": 64, "int4": ["mlp."], "layers": list(range(4, 26))},
]


def quantize(base, weights: dict[str, str], variant: dict):
    model = copy.deepcopy(base)
    four = [node for node, weight in weights.items() if any(p in weight for p in variant.get("int4", []))
            and any(f"layers.{i}." in weight for i in variant.get("layers", []))]
    if four:
        # nodes_to_exclude, not nodes_to_include: onnxruntime 1.31 quantizes a node that is included
        # OR of a listed op type, so an include list still quantizes every MatMul.
        quantizer = MatMulNBitsQuantizer(model, bits=4, block_size=32, is_symmetric=True, accuracy_level=4,
                                         nodes_to_exclude=[n for n in weights if n not in four],
                                         op_types_to_quantize=("MatMul",))
        quantizer.process()
        model = quantizer.model.model
    quantizer = MatMulNBitsQuantizer(model, bits=8, block_size=variant.get("b8", 32), is_symmetric=True,
                                     accuracy_level=4, op_types_to_quantize=("MatMul",))
    quantizer.process()
    model = quantizer.model.model
    shared = onnx_graph.share_embedding_with_nbits_head(model, variant.get("b8", 32), 8)
    return model, len(four), shared


def main(model_dir: str, variants: list[dict]) -> None:
    checkpoint = load_checkpoint(Path(model_dir))
    max_seq_len = 512
    references = build_reference(checkpoint, max_seq_len)
    metadata = onnx_genai.artifact_metadata(checkpoint, max_seq_len)
    decoder = build_model(checkpoint, max_seq_len)
    spec = decoder.spec
    base = onnx_genai._export(decoder)  # consumes the decoder's weights
    onnx_graph.fold_weight_transposes(base, shared="copy")
    initializers = {i.name for i in base.graph.initializer}
    weights = {n.name: n.input[1] for n in base.graph.node
               if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in initializers}
    for variant in variants:
        model, quantized4, shared = quantize(base, weights, variant)
        folder = Path(tempfile.mkdtemp(prefix="onnx-mixed-"))
        try:
            onnx.save_model(model, str(folder / onnx_genai.ONNX_FILE))
            onnx_genai._to_ort(folder, spec)
            (folder / onnx_genai.CONFIG_FILE).write_text(json.dumps(metadata))
            copy_tokenizer_files(checkpoint, folder)
            start = time.monotonic()
            figures = measure_text(onnx_genai.open_session(folder), references.text)
            print(json.dumps({"variant": variant, "int4_matmuls": quantized4, "embedding_shared": shared,
                              "model_ort_mb": round((folder / onnx_genai.ORT_FILE).stat().st_size / 1e6, 1),
                              "text_top1": round(figures["text_top1"], 4), "ppl_change": round(figures["ppl_change"], 4),
                              "seconds": round(time.monotonic() - start)}), flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_VARIANTS)
