"""ONNX Runtime Mobile for encoders: one model.ort run by plain onnxruntime (not GenAI, which
generates text). Android runs it through ONNX Runtime's Java API (`OrtSession`), iOS through its
Objective-C/Swift API; both load the ORT format the reduced-size mobile package reads.

    onnx/model.ort    inputs  input_ids, attention_mask[, token_type_ids]  int64 [B, T]
                      outputs the task's (exporter.models.encoder.TASK_OUTPUTS), fp32

B (1 .. MAX_BATCH) and T (1 .. max_seq_len) are dynamic. The task, inputs, outputs, pooling and
length are also in the model's metadata (`slm_export.*`), so the file describes itself.

`emit_encoder` also writes EXTRA_FILES beside it, which the pipeline moves to extras/onnx/.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ExportError
from ..recipes import QuantRecipe

log = logging.getLogger(__name__)

FORMAT = "onnx"
ORT_FILE, ONNX_FILE = "model.ort", "model.onnx"
EXTRA_FILES = {
    ONNX_FILE: "the same graph in standard ONNX, for desktop onnxruntime and inspection",
    "required_operators.config": "the operators a reduced-size ONNX Runtime build must include (build.py --include_ops_by_config)",
}
OPSET = 21
# Outputs of model.ort and model.onnx may differ by this much after onnxruntime's graph fusions.
ORT_TOLERANCE = 1e-4


def encoder_metadata(checkpoint, max_seq_len: int) -> dict[str, str]:
    """The model's metadata_props (strings), read back by `read_encoder_metadata`."""
    from ..models.encoder import input_names

    spec = checkpoint.spec
    return {"slm_export.task": spec.task, "slm_export.max_seq_len": str(max_seq_len),
            "slm_export.inputs": json.dumps(list(input_names(spec))), "slm_export.outputs": json.dumps(list(spec.outputs)),
            "slm_export.labels": json.dumps(list(spec.labels)), "slm_export.pooling": json.dumps(spec.pooling.to_json()),
            "slm_export.family": checkpoint.model_type}


def _export(encoder, max_seq_len: int):
    from torch.export import Dim

    from ..models.encoder import MAX_BATCH, example_inputs, graph_of, input_names

    spec = encoder.spec
    batch, tokens = Dim("batch", min=1, max=MAX_BATCH), Dim("tokens", min=1, max=max_seq_len)
    example = example_inputs(spec)
    with torch.no_grad():
        program = torch.onnx.export(graph_of(encoder), example, dynamo=True, input_names=list(input_names(spec)),
                                    output_names=list(spec.outputs),
                                    dynamic_shapes=tuple({0: batch, 1: tokens} for _ in example),
                                    opset_version=OPSET, verbose=False)
    model = program.model_proto
    from . import onnx_graph

    onnx_graph.strip_metadata(model)
    return model


def quantize(model, recipe: QuantRecipe, work_dir: Path):
    """none: fp32. int8: onnxruntime's dynamic quantization (per-channel int8 MatMul weights, int8
    activations per tensor at run time). int8w: MatMulNBits with 8-bit weights per block
    (`block_size`, default 32) and `accuracy_level` (default 4: activations quantized per block
    inside the kernel)."""
    from . import onnx_graph

    scheme = recipe.params.get("scheme", recipe.name)
    if scheme == "none":
        return model
    if scheme == "int8":
        return onnx_graph.quantize_int8_dynamic(model, work_dir)
    if scheme == "int8w":
        return onnx_graph.quantize_nbits(model, 8, int(recipe.params.get("block_size", 32)),
                                         int(recipe.params.get("accuracy_level", 4)))
    raise ExportError(f"unknown ONNX encoder quantization scheme {scheme!r} (encoders: none, int8, int8w)")


def emit_encoder(encoder, recipe: QuantRecipe, max_seq_len: int, metadata: dict[str, str], out_dir: Path) -> Path:
    import onnx

    from ..models.encoder import example_inputs, input_names
    from ..progress import stage
    from . import onnx_graph

    out_dir.mkdir(parents=True, exist_ok=True)
    with stage("torch.onnx.export (dynamo, encoder)"):
        model = _export(encoder, max_seq_len)
    with stage(f"quantize onnx ({recipe.name})"):
        model = quantize(model, recipe, out_dir)
    del model.metadata_props[:]
    for key, value in sorted(metadata.items()):
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(out_dir / ONNX_FILE))
    del model
    feeds = dict(zip(input_names(encoder.spec), (x.numpy() for x in example_inputs(encoder.spec, batch=2, tokens=7)),
                     strict=True))
    with stage("convert to ORT format"):
        difference = onnx_graph.convert_to_ort(out_dir / ONNX_FILE, out_dir / ORT_FILE, feeds)
    if difference > ORT_TOLERANCE:
        raise ExportError(f"model.ort and model.onnx disagree (max abs output difference {difference:.3g})")
    return out_dir / ORT_FILE


class EncoderSession:
    """model.ort through onnxruntime's CPU provider, as the phone's OrtSession runs it."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        from ..models.encoder import MAX_BATCH

        self.max_batch = MAX_BATCH

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """inputs: int64 arrays in the graph's input order; returns its outputs as fp32 arrays."""
        feeds = {name: np.ascontiguousarray(x, dtype=np.int64) for name, x in zip(self.inputs, inputs, strict=True)}
        return [np.asarray(o, dtype=np.float32) for o in self.session.run(None, feeds)]


def open_encoder_session(path: Path) -> EncoderSession:
    return EncoderSession(path)


def read_encoder_metadata(path: Path) -> dict[str, Any]:
    import onnxruntime as ort

    meta = dict(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map)
    if "slm_export.task" not in meta:
        raise ExportError(f"{path}: not an slm-export encoder (no slm_export.task metadata)")
    return {"format": FORMAT, "task": meta["slm_export.task"], "max_seq_len": int(meta["slm_export.max_seq_len"]),
            "inputs": json.loads(meta["slm_export.inputs"]), "outputs": json.loads(meta["slm_export.outputs"]),
            "labels": json.loads(meta["slm_export.labels"]), "pooling": json.loads(meta["slm_export.pooling"])}
