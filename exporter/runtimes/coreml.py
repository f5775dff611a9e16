"""Core ML (.mlpackage, iOS 18 / macOS 15): a stateful model for the Swift ecosystem.

Interface (names of huggingface/swift-transformers' stateful `LanguageModel`):

    inputs   inputIds   int32 [1, q]          q flexible, 1 .. max_seq_len-1
             causalMask fp16  [1, 1, q, end]  end = tokens in the cache after this call
    states   keyCache, valueCache  fp16 [layers, 1, kv_heads, max_seq_len, head_dim]
    output   logits     fp16 [1, q, V]

The new tokens sit at positions end-q .. end-1 and are written into the states there. The model
builds its causal mask itself from those positions over the whole cache and reads only the
*shape* of `causalMask`: swift-transformers' driver passes an all-zero mask of shape
[1, 1, 1, tokens+1] even at prefill, other drivers pass a real causal mask, and both then give
the same result (tested). Attending over the full cache (masked) rather than slicing it to `end`
also avoids the torch.export guard that a slice whose bound may equal the cache length raises.

Precision: weights fp16 (or compressed), activations fp16, except the normalisation statistics
(pow, reduce_mean, the eps add, rsqrt; layer_norm), kept in fp32: x**2 overflows fp16 for
|x| > ~256, and mean(x**2) for a residual stream like SmolLM2-135M's (2.4e4 in one channel); and
the residual stream itself (the token embedding's output, every residual add, the multiplication
that normalises it), kept in fp32: Gemma 3 270M's reaches 1.04e5, past fp16's 65504, from layer 11
on. The blocks' own work (projections, attention, MLP) stays fp16; the casts sit where the
statistics already needed them.
Compression (coremltools.optimize.coreml) touches only `linear` weights, so the RoPE tables
(gathered constants) stay exact; a tied embedding shares the head's compressed weight.

Core ML cannot run on Linux; the session here is exporter.coreml_interp, a checked MIL
interpreter, and the macOS CI job runs the same parity with MLModel.predict.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..models import Decoder, release_weights
from ..recipes import QuantRecipe

log = logging.getLogger(__name__)

FORMAT = "coreml"
FILENAME = "model.mlpackage"
TOKENIZER_IN_ARTIFACT = False  # the app tokenizes with swift-transformers from the bundle's tokenizer.json
EXTRA_FILES: dict[str, str] = {}  # the phone loads every file of the artifact
FP32_STATISTICS = {"pow", "reduce_mean", "rsqrt", "layer_norm", "reduce_sum", "sqrt", "real_div"}


def _statistic_neighbours(op) -> tuple[list, list]:
    """The non-constant ops that feed `op`, and the ops that read its outputs."""
    inputs = [v for value in op.inputs.values() for v in (value if isinstance(value, (list, tuple)) else [value])]
    producers = [v.op for v in inputs if getattr(v, "op", None) is not None and v.op.op_type != "const"]
    return producers, [child for out in op.outputs for child in out.child_ops]


# Ops that pass the residual stream on unchanged in value (the last position sliced off for the head).
STREAM_CARRIERS = {"slice_by_index", "slice_by_size", "reshape", "squeeze", "expand_dims", "identity"}


def residual_stream(block) -> set[str]:
    """Names of the ops that carry the residual stream: after the token embedding's gather (the
    factor on it), through every add of two computed values that reaches it, to the
    multiplications that normalise it (x * rsqrt(...), whose output is ~1 and goes on in fp16)."""
    def is_embedding(op) -> bool:
        table = op.inputs.get("x") if op.op_type == "gather" else None
        return table is not None and table.op is not None and table.op.op_type == "const" \
            and "rotary" not in table.name and len(table.shape) == 2

    # The gather itself stays fp16: kept fp32 it would read an fp32 copy of a tied table, stored
    # apart from the head's (440 MB instead of 271 MB for Gemma 3 270M at int8).
    frontier = [op for op in block.operations if is_embedding(op)]
    stream: set[str] = set()
    while frontier:
        op = frontier.pop()
        for child in _statistic_neighbours(op)[1]:
            if child.name in stream:
                continue
            producers = _statistic_neighbours(child)[0]
            if (child.op_type == "add" and len(producers) == 2) or child.op_type in STREAM_CARRIERS \
                    or (child.op_type == "mul" and op.op_type == "gather" and len(producers) == 1):
                stream.add(child.name)
                frontier.append(child)
            elif child.op_type == "mul" and any(p.op_type == "rsqrt" for p in producers):
                stream.add(child.name)  # the normalising multiplication: the stream ends here
    return stream


class Fp16Selector:
    """coremltools' op_selector: True for the ops computed in fp16, i.e. all but the statistics
    (`keeps_fp32`) and, with `keep_stream`, the residual stream (found once per block)."""

    def __init__(self, statistics: set[str], keep_stream: bool):
        self.statistics, self.keep_stream = statistics, keep_stream
        self.streams: dict[int, set[str]] = {}

    def __call__(self, op) -> bool:
        block = op.enclosing_block
        if self.keep_stream and id(block) not in self.streams:
            self.streams[id(block)] = residual_stream(block)
        return not (op.name in self.streams.get(id(block), ()) or keeps_fp32(op, self.statistics))


def _fits_fp16(value: np.ndarray, chunk: int = 1 << 22) -> bool:
    """Whether every finite-magnitude entry of `value` (|v| < 1e38; larger ones are infinities in
    effect, such as a mask's -inf) lies within fp16's range, read in chunks: the same test as
    coremltools' add_fp16_cast.fp16_overflow, whose np.where over the whole tensor builds one int64
    index per entry and dimension (8 times the fp32 weight: 8.7 GB for Llama 3.2 1B's embedding)."""
    flat = value.reshape(-1)
    for start in range(0, flat.size, chunk):
        magnitude = np.abs(flat[start:start + chunk])
        if ((magnitude > 65504) & (magnitude < 1e38)).any():
            return False
    return True


def fp16_precision(op_selector, release_source: Callable[[], None] | None = None) -> dict[str, Any]:
    """ct.convert's arguments for an fp16 program computed in fp16 where `op_selector` says: its
    compute_precision, and its pass pipeline with coremltools' add_fp16_cast replaced by the same
    pass made frugal: its overflow check reads each constant in chunks (_fits_fp16), and its
    underflow check counts a constant's entries without copying it, and it folds a constant only
    one op reads to its fp16 value at once (coremltools leaves that to later passes, so every fp32
    weight lived beside its fp16 copy). `release_source`, called when the pass starts (after the
    torch frontend), frees the caller's references to the weights, so each fp32 array goes as it
    is folded. Same program (tested); benchmarks/coreml_memory.py and benchmarks/RESULTS.md give
    the memory (Llama-3.2-1B's shape: coremltools' pass adds 10.4 GB to the decoder's)."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.passes.defs.quantization import add_fp16_cast
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY, register_pass

    name = "slm_export::add_fp16_cast"
    if name not in PASS_REGISTRY:
        @register_pass(namespace="slm_export", name="add_fp16_cast")
        class _FrugalAddFp16Cast(add_fp16_cast):
            release_source = None  # a pass option, taken once per conversion

            def apply(self, prog) -> None:
                release, self.release_source = self.release_source, None
                if release is not None:
                    release()
                super().apply(prog)

            def fp16_overflow(self, op) -> bool:
                for value in op.inputs.values():
                    for var in value if isinstance(value, (list, tuple)) else [value]:
                        if (var.op is not None and var.op.op_type == "const" and var.is_tensor_or_scalar_of(dtype="fp32")
                                and not _fits_fp16(np.asarray(var.op.val.val))):
                            return True
                return False

            def _check_underflow_to_zero(self, new_var, var) -> None:
                # coremltools flattens every constant (a copy) only to count its entries.
                if np.size(var.val) < 400:
                    super()._check_underflow_to_zero(new_var, var)

            def transform_op(self, op) -> None:
                # A constant only this op reads is folded to its fp16 value at once (what
                # common::const_elimination and dead-code elimination do later in the pipeline),
                # so its fp32 array goes now, not after every weight has its fp16 copy.
                alone = [var for value in op.inputs.values()
                         for var in (value if isinstance(value, (list, tuple)) else [value])
                         if var.op is not None and var.op.op_type == "const" and len(var.child_ops) == 1
                         and var.is_tensor_or_scalar_of(dtype="fp32")]
                super().transform_op(op)
                for var in alone:
                    (cast,) = var.child_ops
                    folded = cast.outputs[0]
                    if cast.op_type != "cast" or folded.val is None:
                        continue
                    block, source = cast.enclosing_block, var.op
                    constant = mb.const(val=folded.val, before_op=cast, name=folded.name)
                    if block.try_replace_uses_of_var_after_op(anchor_op=cast, old_var=folded, new_var=constant):
                        folded.set_name(folded.name + "_ignored")
                        block.remove_ops([cast, source])
                        # The pass walks a copy of the block's op list, which keeps removed ops
                        # (this constant, the op it fed) alive to its end: drop their array now.
                        var._sym_val = source.val._sym_val = None

    pipeline = ct.PassPipeline()
    index = pipeline.passes.index("common::add_fp16_cast")
    pipeline.remove_pass(index)
    pipeline.insert_pass(index, name)
    pipeline.set_options(name, {"op_selector": op_selector, "release_source": release_source})
    # FLOAT16, not an FP16ComputePrecision: given one, ct.convert would set the op_selector on
    # coremltools' own pass, which this pipeline no longer holds.
    return {"compute_precision": ct.precision.FLOAT16, "pass_pipeline": pipeline}


def keeps_fp32(op, statistics: set[str] = FP32_STATISTICS) -> bool:
    """Whether an op of the fp16 program is computed in fp32: the normalisation statistics, and an
    op that only statistics feed and only statistics read. The latter is the eps added between
    reduce_mean and rsqrt: in fp16 it rounds mean(x**2), which is ~1e6 on SmolLM2-135M (its
    residual stream carries 2.4e4 in one channel from layer 11 on) and so overflows fp16's 65504,
    zeroing the normalised output of every such position."""
    if op.op_type in statistics:
        return True
    producers, consumers = _statistic_neighbours(op)
    return bool(producers and consumers) and all(p.op_type in statistics for p in producers) and all(
        c.op_type in statistics for c in consumers)


class _StateCache:
    """Writes this call's k/v into the state buffers at [start, end) and attends over the whole
    cache with the model's own causal mask."""

    def __init__(self, owner: CoreMLDecoder, start, end, masks: dict):
        self.owner, self.start, self.end, self.masks = owner, start, end, masks  # window -> mask

    def attend(self, layer_index, q, k, v):
        from ..models.cache import masked_attention

        keys, values = self.owner.keyCache, self.owner.valueCache
        keys[layer_index: layer_index + 1, :, :, self.start: self.end, :] = k.to(keys.dtype).unsqueeze(0)
        values[layer_index: layer_index + 1, :, :, self.start: self.end, :] = v.to(values.dtype).unsqueeze(0)
        mask = self.masks[self.owner.windows[layer_index]]
        return masked_attention(q, keys[layer_index].to(q.dtype), values[layer_index].to(q.dtype), mask)


class CoreMLDecoder(nn.Module):
    def __init__(self, decoder: Decoder, max_seq_len: int):
        super().__init__()
        spec = decoder.spec
        self.decoder = decoder
        shape = (spec.num_layers, 1, spec.num_kv_heads, max_seq_len, spec.head_dim)
        self.register_buffer("keyCache", torch.zeros(shape, dtype=torch.float16))
        self.register_buffer("valueCache", torch.zeros(shape, dtype=torch.float16))
        self.windows = spec.windows()  # each layer's sliding window (None: global)

    def forward(self, inputIds: torch.Tensor, causalMask: torch.Tensor) -> torch.Tensor:  # noqa: N803 (Swift names)
        q, end = inputIds.shape[1], causalMask.shape[-1]
        start = end - q
        positions = torch.arange(q) + start  # [q]
        slots = torch.arange(self.keyCache.shape[3])
        causal = slots[None, :] <= positions[:, None]
        masks = {}
        for window in dict.fromkeys(self.windows):  # one mask per distinct window, shared by its layers
            allowed = causal if window is None else torch.logical_and(causal, slots[None, :] > positions[:, None] - window)
            masks[window] = allowed[None, None]
        cache = _StateCache(self, start, end, masks)
        return self.decoder(inputIds.long(), positions[None], cache)


def artifact_metadata(checkpoint, max_seq_len: int) -> dict[str, str]:
    """User-defined metadata of the .mlpackage (all values are strings in Core ML)."""
    return {
        "co.huggingface.exporters.name": checkpoint.name,
        "co.huggingface.exporters.task": "text-generation",
        "slm_export.context_length": str(max_seq_len),
        "slm_export.bos_token_id": "" if checkpoint.bos_token_id is None else str(checkpoint.bos_token_id),
        "slm_export.eos_token_ids": json.dumps(list(checkpoint.eos_token_ids)),
        "slm_export.tokenizer": "tokenizer.json",
        "slm_export.family": checkpoint.model_type,
    }


def _convert(decoder: Decoder, max_seq_len: int, fp32: bool, fp32_statistics: bool = True,
             fp32_residual: bool = True):
    import coremltools as ct
    from torch.export import Dim, export

    from ..progress import stage

    module = CoreMLDecoder(decoder, max_seq_len).eval()
    query = Dim("query_length", min=1, max=max_seq_len - 1)
    end = Dim("end_step", min=1, max=max_seq_len)
    example = (torch.zeros(1, 4, dtype=torch.int32), torch.zeros(1, 1, 4, 6, dtype=torch.float16))
    with stage("torch.export (coreml)"), torch.no_grad():
        program = export(module, example, dynamic_shapes={"inputIds": {1: query}, "causalMask": {2: query, 3: end}},
                         strict=False).run_decompositions({})
    if fp32:
        precision = {"compute_precision": ct.precision.FLOAT32}
    else:
        # op_selector picks the ops computed in fp16; the normalisation statistics and the residual
        # stream stay fp32. fp32_statistics=False and fp32_residual=False exist to demonstrate the
        # overflows they prevent (tests).
        keep = FP32_STATISTICS if fp32_statistics else set()
        # Once the frontend has read the weights, the MIL constants are the only holders of the
        # fp32 arrays (views of the torch storage): each goes as the pass folds it to fp16.
        precision = fp16_precision(Fp16Selector(keep, fp32_residual), release_source=lambda: release_weights(decoder))
    state_shape = tuple(module.keyCache.shape)
    with stage("coremltools convert"):
        return ct.convert(
            program,
            inputs=[ct.TensorType(name="inputIds", shape=(1, ct.RangeDim(1, max_seq_len - 1)), dtype=np.int32),
                    ct.TensorType(name="causalMask", dtype=np.float16,
                                  shape=(1, 1, ct.RangeDim(1, max_seq_len - 1), ct.RangeDim(1, max_seq_len)))],
            outputs=[ct.TensorType(name="logits", dtype=np.float32 if fp32 else np.float16)],
            states=[ct.StateType(wrapped_type=ct.TensorType(shape=state_shape, dtype=np.float16), name="keyCache"),
                    ct.StateType(wrapped_type=ct.TensorType(shape=state_shape, dtype=np.float16), name="valueCache")],
            minimum_deployment_target=ct.target.iOS18, convert_to="mlprogram", skip_model_load=True, **precision)


def _weights_config(mlmodel, op_config):
    """Compress the weights of `linear` ops and of the token embedding's `gather`, never the
    RoPE tables (also gathered constants: compressing cos/sin shifts every position's angle).
    A tied embedding is one constant read by a gather and a linear: both must get one config."""
    import coremltools.optimize.coreml as cto

    keep_exact = {op.name: None for op in mlmodel._mil_program.functions["main"].operations
                  if op.op_type == "gather" and op.x.op is not None and op.x.op.op_type == "const"
                  and "rotary" in op.x.name}
    return cto.OptimizationConfig(op_type_configs={"linear": op_config, "gather": op_config},
                                  op_name_configs=keep_exact)


def compress(mlmodel, recipe: QuantRecipe):
    """none / fp32: as converted. int4: per-block (block_size, default 32) symmetric linear
    quantization. int8: per-channel symmetric linear quantization. palettize4 / palettize6:
    k-means look-up tables of 4 or 6 bits per weight, one table per tensor."""
    import coremltools.optimize.coreml as cto

    scheme = recipe.params.get("scheme", recipe.name)
    if scheme in ("none", "fp32"):
        return mlmodel
    if scheme == "int4":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int4", granularity="per_block",
                                         block_size=int(recipe.params.get("block_size", 32)))
        return cto.linear_quantize_weights(mlmodel, _weights_config(mlmodel, op))
    if scheme == "int8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return cto.linear_quantize_weights(mlmodel, _weights_config(mlmodel, op))
    if scheme in ("palettize4", "palettize6"):
        op = cto.OpPalettizerConfig(mode="kmeans", nbits=int(scheme[-1]), granularity="per_tensor")
        return cto.palettize_weights(mlmodel, _weights_config(mlmodel, op))
    raise ExportError(f"unknown Core ML compression scheme {scheme!r}")


def emit(decoder: Decoder, recipe: QuantRecipe, max_seq_len: int, metadata: dict[str, Any], out_dir: Path) -> Path:

    scheme = recipe.params.get("scheme", recipe.name)
    mlmodel = _convert(decoder, max_seq_len, fp32=scheme == "fp32",
                       fp32_statistics=bool(recipe.params.get("fp32_statistics", True)),
                       fp32_residual=bool(recipe.params.get("fp32_residual", True)))
    release_weights(decoder)  # the MIL program holds its own (fp16) copy; compression makes another
    return _compress_and_save(mlmodel, recipe, metadata, out_dir)


def _compress_and_save(mlmodel, recipe: QuantRecipe, metadata: dict[str, Any], out_dir: Path) -> Path:
    """The recipe's weight compression, the metadata, OUT/model.mlpackage written reproducibly."""
    from ..progress import stage

    with stage(f"compress coreml ({recipe.name})"):
        mlmodel = compress(mlmodel, recipe)
    mlmodel.user_defined_metadata.update(metadata)
    mlmodel.short_description = f"{metadata.get('co.huggingface.exporters.name', 'model')} (slm-export, {recipe.name})"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILENAME
    mlmodel.save(str(path))
    make_reproducible(path)
    return path


def make_reproducible(package: Path) -> None:
    """Two exports of the same input give byte-identical packages. coremltools 9 writes random
    item identifiers into Manifest.json, serialises the spec's metadata map in hash order, and
    adds a debug-handle map that Core ML never reads (it is not listed in Manifest.json)."""
    import uuid

    from coremltools.proto import Model_pb2

    (package / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)
    spec_path = package / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    renamed = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, "slm-export/" + entry["path"]))
               for old, entry in manifest["itemInfoEntries"].items()}
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in sorted(manifest["itemInfoEntries"].items(),
                                                                    key=lambda kv: kv[1]["path"])}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4) + "\n")


class Session:
    """The .mlpackage driven the way the Swift app drives Core ML: inputIds, an all-zero
    causalMask of the right shape, and the states. `engine` "interpreter" runs it with
    exporter.coreml_interp (fp16 emulation by default); "coreml" with Apple's Core ML through
    coremltools' MLModel.predict (macOS only)."""

    def __init__(self, path: Path, engine: str, precision: str = "fp16"):
        if engine == "coreml":
            import coremltools as ct

            self.program = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        else:
            from ..coreml_interp import MILProgram

            self.program = MILProgram.load(path, precision=precision)
        self.reset()

    def reset(self) -> None:
        self.state = self.program.make_state()
        self.length = 0

    def forward_all(self, ids: list[int]) -> torch.Tensor:
        """Every position's logits [len(ids), V]: the model computes them anyway."""
        end = self.length + len(ids)
        outputs = self.program.predict({"inputIds": np.asarray([ids], dtype=np.int32),
                                        "causalMask": np.zeros((1, 1, len(ids), end), dtype=np.float16)},
                                       state=self.state)
        self.length = end
        return torch.from_numpy(np.asarray(outputs["logits"], dtype=np.float32)[0].copy())

    def forward(self, ids: list[int]) -> torch.Tensor:
        return self.forward_all(ids)[-1]


def open_session(path: Path, engine: str | None = None, precision: str = "fp16") -> Session:
    """Apple's Core ML where it exists (macOS), else the MIL interpreter."""
    import sys

    return Session(path, engine or ("coreml" if sys.platform == "darwin" else "interpreter"), precision)


def read_metadata(path: Path) -> dict[str, Any]:
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    meta = dict(spec.description.metadata.userDefined)
    if "slm_export.context_length" not in meta:
        raise ExportError(f"{path}: not an slm-export Core ML model (no slm_export.context_length metadata)")
    bos, eos = special_ids(meta)
    return {**meta, "format": FORMAT, "max_seq_len": int(meta["slm_export.context_length"]), "eos_ids": eos,
            "bos_id": bos}


def special_ids(metadata: dict[str, Any]) -> tuple[int | None, list[int]]:
    """(bos, eos ids) from the model's user-defined metadata (bos "" when the model has none)."""
    bos = str(metadata.get("slm_export.bos_token_id", "")).strip()
    return (int(bos) if bos else None), [int(v) for v in json.loads(metadata.get("slm_export.eos_token_ids", "[]"))]


# Encoders (exporter.models.encoder): a stateless mlprogram over a whole text.
#
#     inputs   input_ids, attention_mask[, token_type_ids]  int32 [B, T]   B 1 .. MAX_BATCH, T 1 .. max_seq_len
#     outputs  the task's (embeddings [B, E], logits, start_logits/end_logits [B, T]), fp32
#
# fp16 compute with the normalisation statistics in fp32 (as for decoders; the residual stream of
# a post-norm encoder is renormalised after every add, so it stays fp16), or fp32 throughout.

def encoder_metadata(checkpoint, max_seq_len: int) -> dict[str, str]:
    from ..models.encoder import input_names

    spec = checkpoint.spec
    task = {"feature-extraction": "feature-extraction", "sequence-classification": "text-classification",
            "token-classification": "token-classification", "question-answering": "question-answering"}[spec.task]
    return {"co.huggingface.exporters.name": checkpoint.name, "co.huggingface.exporters.task": task,
            "slm_export.task": spec.task, "slm_export.max_seq_len": str(max_seq_len),
            "slm_export.inputs": json.dumps(list(input_names(spec))), "slm_export.outputs": json.dumps(list(spec.outputs)),
            "slm_export.labels": json.dumps(list(spec.labels)), "slm_export.pooling": json.dumps(spec.pooling.to_json()),
            "slm_export.tokenizer": "tokenizer.json", "slm_export.family": checkpoint.model_type}


def emit_encoder(encoder, recipe: QuantRecipe, max_seq_len: int, metadata: dict[str, str], out_dir: Path) -> Path:
    import coremltools as ct
    from torch.export import Dim, export

    from ..models.encoder import MAX_BATCH, graph_of, input_names
    from ..progress import stage

    spec = encoder.spec
    scheme = recipe.params.get("scheme", recipe.name)
    graph = graph_of(encoder)
    batch, tokens = Dim("batch", min=1, max=MAX_BATCH), Dim("tokens", min=1, max=max_seq_len)
    names = input_names(spec)
    example = tuple(torch.ones(2, 8, dtype=torch.int32) for _ in names)
    with stage("torch.export (coreml encoder)"), torch.no_grad():
        program = export(graph, example, dynamic_shapes=tuple({0: batch, 1: tokens} for _ in names),
                         strict=False).run_decompositions({})
    fp32 = scheme == "fp32"
    precision = ({"compute_precision": ct.precision.FLOAT32} if fp32
                 else fp16_precision(Fp16Selector(FP32_STATISTICS, keep_stream=False)))
    shape = (ct.RangeDim(1, MAX_BATCH, default=1), ct.RangeDim(1, max_seq_len, default=max_seq_len))
    with stage("coremltools convert"):
        mlmodel = ct.convert(program, inputs=[ct.TensorType(name=n, shape=shape, dtype=np.int32) for n in names],
                             outputs=[ct.TensorType(name=n, dtype=np.float32) for n in spec.outputs],
                             minimum_deployment_target=ct.target.iOS17, convert_to="mlprogram",
                             skip_model_load=True, **precision)
    return _compress_and_save(mlmodel, recipe, metadata, out_dir)


class EncoderSession:
    """The encoder .mlpackage through the MIL interpreter (fp16 emulated as the phone computes),
    or Apple's Core ML on macOS."""

    def __init__(self, path: Path, engine: str, precision: str = "fp16"):
        if engine == "coreml":
            import coremltools as ct

            self.program = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
        else:
            from ..coreml_interp import MILProgram

            self.program = MILProgram.load(path, precision=precision)
        from ..models.encoder import MAX_BATCH

        meta = read_encoder_metadata(path)
        self.inputs, self.outputs, self.max_batch = meta["inputs"], meta["outputs"], MAX_BATCH

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """inputs: integer arrays in the model's input order; returns its outputs as fp32 arrays."""
        result = self.program.predict({n: np.ascontiguousarray(x, dtype=np.int32)
                                       for n, x in zip(self.inputs, inputs, strict=True)})
        return [np.asarray(result[n], dtype=np.float32) for n in self.outputs]


def open_encoder_session(path: Path, engine: str | None = None, precision: str = "fp16") -> EncoderSession:
    import sys

    return EncoderSession(path, engine or ("coreml" if sys.platform == "darwin" else "interpreter"), precision)


def read_encoder_metadata(path: Path) -> dict[str, Any]:
    import coremltools as ct

    meta = dict(ct.utils.load_spec(str(path)).description.metadata.userDefined)
    if "slm_export.task" not in meta:
        raise ExportError(f"{path}: not an slm-export encoder (no slm_export.task metadata)")
    return {"format": FORMAT, "task": meta["slm_export.task"], "max_seq_len": int(meta["slm_export.max_seq_len"]),
            "inputs": json.loads(meta["slm_export.inputs"]), "outputs": json.loads(meta["slm_export.outputs"]),
            "labels": json.loads(meta["slm_export.labels"]), "pooling": json.loads(meta["slm_export.pooling"])}
