"""ExecuTorch (.pte, XNNPACK): emit, open a session for parity, generate with the LLM runner.

Exported program (what Android's LlmModule and iOS's TextRunner call through the C++ LLM runner):

    forward(tokens: int64 [1, T], input_pos: int64 [1]) -> logits fp32 [1, V]

T is dynamic (1 .. max_seq_len-1); `input_pos` is the position of tokens[0, 0]. The KV cache is
a set of mutable buffers per layer, updated in place, that persist across calls of one loaded
method. Attention runs on ExecuTorch's LLM kernels, the ones its own export_llama uses
(`llama::update_cache` writes this call's keys/values into a [1, max_seq_len, kv_heads, head_dim]
buffer; `llama::custom_sdpa` attends over the filled prefix only, causal, grouped-query, with no
mask tensor): 5-8x faster decoding than index_copy + masked SDPA over the whole buffer
(benchmarks/RESULTS.md), which remains the path for sliding-window models (custom_sdpa has no
window). Any process that runs such
a .pte must have the kernels registered (`load_kernels`; the Android AAR and iOS `kernels_llm`
link them). Only the last position's logits are computed: the runner samples from them, and
prefill does not materialise [T, V].

Constant methods carry what the runner reads (see `runner_metadata`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..models import Decoder
from ..models.cache import StaticKVCache
from ..recipes import QuantRecipe

log = logging.getLogger(__name__)

FORMAT = "executorch"
FILENAME = "model.pte"
TOKENIZER_IN_ARTIFACT = False  # the runner takes the tokenizer path separately
EXTRA_FILES: dict[str, str] = {}  # the phone loads every file of the artifact


def load_kernels() -> None:
    # Kernels outside the core runtime register themselves when their module is imported (the
    # apps link the same libraries): ExecuTorch's LLM ops (llama::update_cache, custom_sdpa) and
    # the quantized embedding kernels. The custom-ops import also defines torch.ops.llama.* for
    # export.
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401
    import executorch.kernels.quantized  # noqa: F401


def uses_llm_kernels(spec, max_seq_len: int) -> bool:
    """custom_sdpa is plain causal attention: a sliding window narrower than the cache (on any
    layer) needs the mask path."""
    return all(w is None or w >= max_seq_len for w in spec.windows())


class LLMKernelsKVCache(nn.Module):
    """Per layer [1,S,K,D] key/value buffers written by llama::update_cache, read by
    llama::custom_sdpa (which attends to positions 0 .. start+t for query t, nothing beyond)."""

    def __init__(self, num_layers: int, num_kv_heads: int, max_seq_len: int, head_dim: int):
        super().__init__()
        load_kernels()  # defines torch.ops.llama.*
        self.max_seq_len = max_seq_len
        shape = (1, max_seq_len, num_kv_heads, head_dim)
        for i in range(num_layers):
            self.register_buffer(f"k_{i}", torch.zeros(shape), persistent=False)
            self.register_buffer(f"v_{i}", torch.zeros(shape), persistent=False)

    def bind(self, start: int) -> _BoundLLMKernelsCache:
        return _BoundLLMKernelsCache(self, start)


class _BoundLLMKernelsCache:
    token_major = True  # attend() takes and returns [B,T,H,D], the kernels' layout

    def __init__(self, cache: LLMKernelsKVCache, start: int):
        self.cache, self.start = cache, start

    def attend(self, layer_index, q, k, v):
        k_cache = getattr(self.cache, f"k_{layer_index}")
        v_cache = getattr(self.cache, f"v_{layer_index}")
        torch.ops.llama.update_cache(k, k_cache, self.start)
        torch.ops.llama.update_cache(v, v_cache, self.start)
        return torch.ops.llama.custom_sdpa(q, k_cache, v_cache, self.start, None, 0, True)


class ExecuTorchLM(nn.Module):
    """The decoder with an in-place KV cache, in the runner's signature."""

    def __init__(self, decoder: Decoder, max_seq_len: int):
        super().__init__()
        spec = decoder.spec
        self.decoder = decoder
        if uses_llm_kernels(spec, max_seq_len):
            self.cache = LLMKernelsKVCache(spec.num_layers, spec.num_kv_heads, max_seq_len, spec.head_dim)
        else:
            self.cache = StaticKVCache(spec.num_layers, spec.num_kv_heads, max_seq_len, spec.head_dim, spec.windows())

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        positions = input_pos[0] + torch.arange(tokens.shape[1], dtype=torch.long)  # [T]
        if isinstance(self.cache, LLMKernelsKVCache):
            # The kernels take the start position as an int: a data-dependent size for export.
            start = input_pos[0].item()
            torch._check(start >= 0)
            torch._check(start < self.cache.max_seq_len)
            bound = self.cache.bind(start)
        else:
            bound = self.cache.bind(positions)
        return self.decoder(tokens, positions[None], bound, last_only=True)[:, -1, :]


def artifact_metadata(checkpoint, max_seq_len: int) -> dict[str, Any]:
    """Constant methods read by executorch's LLM runner (extension/llm/runner)."""
    spec = checkpoint.spec
    meta: dict[str, Any] = {
        "get_max_seq_len": max_seq_len,
        "get_max_context_len": max_seq_len,
        "get_vocab_size": spec.vocab_size,
        "get_n_layers": spec.num_layers,
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": uses_llm_kernels(spec, max_seq_len),
        # One forward call for the whole prompt; without it the runner prefills token by token.
        "enable_dynamic_shape": True,
        "get_eos_ids": list(checkpoint.eos_token_ids),
    }
    if checkpoint.bos_token_id is not None:
        meta["get_bos_id"] = checkpoint.bos_token_id
    return meta


def quantize(module: nn.Module, recipe: QuantRecipe, only: Callable[[str], bool] | None = None) -> None:
    """Applies an ExecuTorch recipe in place with torchao (before torch.export).

    none: fp32. 8da4w: int8 dynamic activations, int4 weights grouped by `group_size`, scales
    chosen with torchao's hqq_scale_only (what ExecuTorch's own export_llama uses; plain affine
    scales agreed worse in free-running greedy). 8da8w: int8 dynamic activations, int8 weights per
    channel. There is no int8 *weight-only* recipe: torchao's IntxWeightOnlyConfig on linears
    lowers to XNNPACK with wrong outputs (max error ~2000 on one Linear) and no size gain
    (executorch 1.5.1), so 8da8w is the 8-bit choice. `embedding_bits` (4 or 8) additionally
    quantizes the token embedding (needs the quantized kernels at run time). `only`: quantize just
    the modules whose qualified name it accepts (`slm-export sensitivity`).
    """
    from torchao.quantization import (
        Int8DynamicActivationIntxWeightConfig,
        IntxWeightOnlyConfig,
        PerAxis,
        PerGroup,
        quantize_,
    )

    params = recipe.params
    scheme = params.get("scheme", recipe.name)
    group = int(params.get("group_size", 32))
    bits = params.get("embedding_bits")
    if bits:  # embeddings first: quantize_ on linears would otherwise see a tied weight
        quantize_(module, IntxWeightOnlyConfig(weight_dtype=torch.int4 if bits == 4 else torch.int8,
                                               granularity=PerGroup(group) if bits == 4 else PerAxis(0)),
                  filter_fn=lambda m, fqn: isinstance(m, nn.Embedding) and (only is None or only(fqn)))
    if scheme == "8da4w":
        config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group),
                                                       intx_choose_qparams_algorithm="hqq_scale_only")
    elif scheme == "8da8w":
        config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int8, weight_granularity=PerAxis(0))
    elif scheme == "none":
        return
    else:
        raise ExportError(f"unknown ExecuTorch quantization scheme {scheme!r}")
    quantize_(module, config,
              filter_fn=lambda m, fqn: (isinstance(m, nn.Linear) and (scheme != "8da4w" or m.in_features % group == 0)
                                        and (only is None or only(fqn))))


def estimate_session(decoder: Decoder, recipe: QuantRecipe, max_seq_len: int,
                     only: Callable[[str], bool] | None = None):
    """The recipe's quantization applied by torchao to `decoder` in place (as emit, it consumes
    its decoder: a caller that reuses one passes a copy), behind the Session interface: the same
    integer arithmetic XNNPACK runs (dynamic int8 activations, the same quantized weights), in
    seconds instead of an export. `--quant auto` uses it to skip a candidate that is far from its
    gate without exporting it. `only`: as in `quantize`."""
    from ..reference import ReferenceLM

    decoder.eval()
    quantize(decoder, recipe, only)
    return _EagerSession(ReferenceLM(decoder, max_seq_len))


class _EagerSession:
    def __init__(self, lm):
        self.lm = lm
        self.forward_all = lm.forward

    def reset(self) -> None:
        self.lm.reset()

    def forward(self, ids: list[int]) -> torch.Tensor:
        return self.lm.forward(ids)[-1]


def emit(decoder: Decoder, recipe: QuantRecipe, max_seq_len: int, metadata: dict[str, Any],
         out_dir: Path) -> Path:
    """Quantize, torch.export with a dynamic T, lower to XNNPACK, write OUT/model.pte."""
    from executorch.exir.passes import MemoryPlanningPass
    from torch.export import Dim, export

    from ..progress import stage

    module = ExecuTorchLM(decoder, max_seq_len).eval()
    with stage(f"quantize executorch ({recipe.name})"):
        quantize(module, recipe)
    example = (torch.zeros(1, 4, dtype=torch.long), torch.tensor([0], dtype=torch.long))
    # max = max_seq_len - 1: a dynamic dim whose max equals the cache length trips an export guard.
    dynamic = ({1: Dim("tokens", min=1, max=max_seq_len - 1)}, None)
    with stage("torch.export (executorch)"), torch.no_grad():
        program = export(module, example, dynamic_shapes=dynamic, strict=False).run_decompositions({})
    # The KV-cache buffers are planned into the program's own memory, so they persist.
    return _lower_and_write(program, metadata, out_dir, MemoryPlanningPass(alloc_graph_input=False))


def _lower_and_write(program, metadata: dict[str, Any], out_dir: Path, memory_planning=None) -> Path:
    """XNNPACK lowering of an exported program, the constant methods added, written to OUT/model.pte."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    from ..progress import stage

    try:
        with stage("lower to XNNPACK"):
            edge = to_edge_transform_and_lower(
                program, partitioner=[XnnpackPartitioner()],
                compile_config=EdgeCompileConfig(_check_ir_validity=False), constant_methods=metadata)
            et = edge.to_executorch(ExecutorchBackendConfig(
                extract_delegate_segments=True,
                do_quant_fusion_and_const_prop=True,  # needed by quantized embeddings
                **({"memory_planning_pass": memory_planning} if memory_planning is not None else {}),
                sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass()))
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / FILENAME
        with open(path, "wb") as f:
            et.write_to_file(f)
    finally:
        _forget_lowered_graphs()
    return path


def _forget_lowered_graphs() -> None:
    """ExecuTorch's lowering keeps the last lowered program alive in module globals: the
    partitioners' `why` loggers (WhyNoPartition) remember the last node they refused, and
    `exir.backend.utils.is_same_node` is an unbounded lru_cache of node pairs; a node holds its
    graph, the graph its lowered module, and that the original exported program with the
    quantized weights. That kept 3 GB per ExecuTorch emit of the 1B shape resident for the rest
    of the run (two emits under `--target all`, so 6 GB under Core ML's conversion). Clearing
    both: +35 MB per emit of a 4-layer model instead of +135 MB (benchmarks/executorch_memory.py); what holds the rest (torch's
    fake-tensor and ShapeEnv caches are on the path; clearing those changed nothing) is not found."""
    import sys

    from executorch.exir.backend.utils import WhyNoPartition, is_same_node

    is_same_node.cache_clear()
    for name, module in list(sys.modules.items()):
        if name.startswith("executorch.") and module is not None:
            for value in list(vars(module).values()):
                if isinstance(value, WhyNoPartition):
                    value.node = None


class Session:
    """One loaded `forward` method; calls continue the sequence (the cache persists)."""

    def __init__(self, path: Path):
        from executorch.runtime import Runtime

        load_kernels()
        self._program = Runtime.get().load_program(str(path))
        self._method = None
        self.length = 0
        self.reset()

    def reset(self) -> None:
        # A freshly loaded method starts with a zeroed cache; positions past `length` are masked
        # anyway, so reloading is for hygiene, not correctness.
        self._method = self._program.load_method("forward")
        self.length = 0

    def forward(self, ids: list[int]) -> torch.Tensor:
        """Feed ids at the next positions; returns the last position's logits [V] (fp32)."""
        tokens = torch.tensor([ids], dtype=torch.long)
        out = self._method.execute([tokens, torch.tensor([self.length], dtype=torch.long)])[0]
        self.length += len(ids)
        return out.reshape(-1, out.shape[-1])[-1].float()


def open_session(path: Path) -> Session:
    return Session(path)


def read_metadata(path: Path) -> dict[str, Any]:
    """The constant methods stored in a .pte, as the runner reads them, plus the keys every
    runtime module reports: `format`, `max_seq_len`, `eos_ids` and `bos_id`."""
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(path))
    meta: dict[str, Any] = {}
    for name in sorted(program.method_names - {"forward"}):
        values = program.load_method(name).execute([])
        meta[name] = list(values) if name == "get_eos_ids" else values[0]
    if "get_max_seq_len" not in meta:
        raise ExportError(f"{path}: no get_max_seq_len method; the LLM runner cannot load it")
    meta["max_seq_len"] = int(meta["get_max_seq_len"])
    meta["bos_id"], meta["eos_ids"] = special_ids(meta)
    meta["format"] = FORMAT
    return meta


def special_ids(metadata: dict[str, Any]) -> tuple[int | None, list[int]]:
    """(bos, eos ids) as the runner reads them from the constant methods."""
    bos = metadata.get("get_bos_id")
    return (int(bos) if bos is not None else None), [int(v) for v in metadata.get("get_eos_ids", [])]


def operators(path: Path) -> set[str]:
    """The operator names `forward` calls outside delegates (the kernels a runtime must link)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(Path(path).read_bytes()).program
    plan = next(p for p in program.execution_plan if p.name == "forward")
    return {op.name for op in plan.operators}


def runner_generate(path: Path, tokenizer_path: Path, prompt: str, max_new_tokens: int) -> tuple[bytes, dict]:
    """Greedy generation by executorch's C++ LLM runner (TextLLMRunner: the runner under Android's
    LlmModule and iOS's TextRunner), given only the .pte and tokenizer.json.

    Returns (the bytes the runner printed, its stats as a dict). The runner writes each piece to
    C stdout itself, skipping single-byte pieces that are not printable (its safe_printf); we
    capture that stream rather than use the token callback, because the Python binding converts
    each piece to `str` and raises UnicodeDecodeError on a piece that ends inside a UTF-8
    character. `exporter.generate` is the byte-safe streaming path for users.
    """
    import json

    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    from ..native_output import native_output

    load_kernels()
    runner = TextLLMRunner(str(path), str(tokenizer_path))
    stats: list[str] = []
    config = GenerationConfig(echo=False, max_new_tokens=max_new_tokens, temperature=0.0, num_bos=1)
    with native_output((1,)) as captured:
        runner.generate(prompt, config, None, lambda s: stats.append(s.to_json_string()))
    printed = captured.data
    # The runner ends with its own observer line: "\nPyTorchObserver {...}".
    text = printed.split(b"PyTorchObserver")[0].removesuffix(b"\n")
    return text, json.loads(stats[-1]) if stats else {}


# Encoders (exporter.models.encoder): one `forward` over a whole text, no cache, no LLM kernels.
#
#     forward(input_ids int64 [B, T], attention_mask int64 [B, T], [token_type_ids int64 [B, T]])
#         -> the task's outputs (embeddings [B, E], logits, or start/end logits [B, T])
#
# B is 1 (XNNPACK's reshape allows one dynamic dimension, and the length is the one a phone
# needs); T is dynamic (1 .. max_seq_len), with padding masked as in a batch. Android calls it
# through ExecuTorch's `Module`; constant methods carry the task and the input length.
MAX_ENCODER_BATCH = 1

def encoder_metadata(checkpoint, max_seq_len: int) -> dict[str, Any]:
    """The constant methods of an encoder .pte (integers and strings only, as ExecuTorch holds)."""
    from ..models.encoder import input_names

    spec = checkpoint.spec
    return {"get_max_seq_len": max_seq_len, "get_task": spec.task, "get_inputs": ",".join(input_names(spec)),
            "get_outputs": ",".join(spec.outputs)}


def emit_encoder(encoder, recipe: QuantRecipe, max_seq_len: int, metadata: dict[str, Any], out_dir: Path) -> Path:
    """Quantize (none, or 8da8w: int8 dynamic activations and per-channel int8 weights), export with
    a dynamic length, lower to XNNPACK, write OUT/model.pte."""
    from torch.export import Dim, export

    from ..models.encoder import example_inputs, graph_of
    from ..progress import stage

    load_kernels()  # the quantized embedding's out variants, for to_executorch
    graph = graph_of(encoder)
    with stage(f"quantize executorch ({recipe.name})"):
        quantize(graph, recipe)
    example = example_inputs(encoder.spec, batch=MAX_ENCODER_BATCH)
    tokens = Dim("tokens", min=1, max=max_seq_len)
    dynamic = tuple({1: tokens} for _ in example)
    with stage("torch.export (executorch encoder)"), torch.no_grad():
        program = export(graph, example, dynamic_shapes=dynamic, strict=False).run_decompositions({})
    return _lower_and_write(program, metadata, out_dir)


class EncoderSession:
    """The encoder .pte through ExecuTorch's runtime: run(inputs) -> the task's outputs."""

    def __init__(self, path: Path):
        from executorch.runtime import Runtime

        load_kernels()  # the 8-bit recipe's quantized embedding
        self._method = Runtime.get().load_program(str(path)).load_method("forward")
        self.max_batch = MAX_ENCODER_BATCH

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """inputs: int64 arrays in the graph's input order; returns its outputs as fp32 arrays."""
        outputs = self._method.execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64)) for x in inputs])
        return [o.float().numpy() for o in outputs]


def open_encoder_session(path: Path) -> EncoderSession:
    return EncoderSession(path)


def read_encoder_metadata(path: Path) -> dict[str, Any]:
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(path))
    names = program.method_names
    if "get_task" not in names:
        raise ExportError(f"{path}: not an slm-export encoder (no get_task method)")
    meta = {name: program.load_method(name).execute([])[0] for name in sorted(names - {"forward"})}
    return {"format": FORMAT, "task": meta["get_task"], "max_seq_len": int(meta["get_max_seq_len"]),
            "inputs": meta["get_inputs"].split(","), "outputs": meta["get_outputs"].split(",")}
