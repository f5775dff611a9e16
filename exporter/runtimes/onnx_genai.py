"""ONNX Runtime Mobile in the ONNX Runtime GenAI layout: emit, open a session, metadata.

The artifact is a folder that `onnxruntime_genai.Model(folder)` loads as is (the same engine as
`com.microsoft.onnxruntime:onnxruntime-genai-android` and the iOS package):

    genai_config.json        -> filename: model.ort
    model.ort                ORT Mobile format (what the reduced-size mobile runtime loads)
    tokenizer.json, tokenizer_config.json   (GenAI requires both)

`emit` also writes EXTRA_FILES, which the pipeline moves out of the folder (to extras/onnx/):

    required_operators.config   operator list for a reduced ORT build (contrib ops included:
                             GroupQueryAttention, MatMulNBits, GatherBlockQuantized, ...)
    model.onnx               the same graph as ONNX (desktop runtimes, inspection)

Graph signature (batch b, new tokens s, past length p):

    input_ids int64 [b, s], attention_mask int64 [b, p+s],
    [position_ids int64 [b, s]: only where the graph reads it, see below],
    past_key_values.%d.key / .value fp32 [b, kv_heads, p, head_dim]
    -> logits fp32 [b, s, V], present.%d.key / .value fp32 [b, kv_heads, p+s, head_dim]

GenAI right-pads batched prompts (pad positions get mask 0), and keys are masked by
attention_mask. Attention is com.microsoft's GroupQueryAttention, which updates the cache in place
(genai_config sets past_present_share_buffer true) and, for RoPE families whose head size is a
multiple of 16, also applies RoPE with positions from the mask (do_rotary=1): the graph then has
no position_ids input. Learned positions (gpt2) and other head sizes read position_ids. The
graph is the GenAI model builder's layout (see onnx_ops and onnx_graph): SimplifiedLayerNormalization
and SkipSimplifiedLayerNormalization (residual Add fused), one q|k|v MatMul per block, the tied
embedding gathered from the int4 head.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..models import Decoder, release_weights
from ..recipes import QuantRecipe

log = logging.getLogger(__name__)

FORMAT = "onnx"
# GenAI loads the tokenizer from the model folder: the pipeline copies tokenizer.json and
# tokenizer_config.json into the artifact.
TOKENIZER_IN_ARTIFACT = True
ONNX_FILE, ORT_FILE, CONFIG_FILE = "model.onnx", "model.ort", "genai_config.json"
# What the export writes beside the folder GenAI loads (genai_config.json names model.ort). The
# pipeline keeps these in OUT/<target>/extras/onnx/, never in an app: model.onnx would double the
# bundle (1.87x the model builder's folder on SmolLM2-135M with it).
EXTRA_FILES = {
    ONNX_FILE: "the same graph in standard ONNX (opset 21 + com.microsoft ops), for desktop onnxruntime and inspection",
    ONNX_FILE + ".data": "model.onnx's external weights (written when the graph is above 1.8 GB)",
    "required_operators.config": "the operators a reduced-size ONNX Runtime build must include (build.py --include_ops_by_config)",
}
OPSET = 21
# The name suffix of the sliding layers' RoPE tables (cos_cache_local, sin_cache_local).
LOCAL_TABLES = "_local"


class GenAIDecoder(nn.Module):
    """The decoder in GenAI's signature: explicit past inputs and present outputs. Export it inside
    `onnx_ops.fused_modules(decoder)` so the fused RMSNorm and packed attention are traced."""

    def __init__(self, decoder: Decoder, num_layers: int | None = None):
        super().__init__()
        from .onnx_ops import rotary_in_attention

        self.decoder = decoder
        self.num_layers = num_layers or decoder.spec.num_layers
        # GroupQueryAttention's tables [max_pos, D/2]: the first half of the decoder's rotate_half
        # tables (both halves hold the same angles). None: RoPE is not done inside attention.
        half = decoder.spec.head_dim // 2
        rotary = rotary_in_attention(decoder.spec)
        for suffix, tables in (("", "rotary"), (LOCAL_TABLES, "rotary_local")):
            # The local tables only where sliding layers have a RoPE base of their own (Gemma 3).
            source = getattr(decoder, tables, None) if rotary else None
            self.register_buffer("cos_cache" + suffix, None if source is None else source.rope_cos[:, :half].clone(),
                                 persistent=False)
            self.register_buffer("sin_cache" + suffix, None if source is None else source.rope_sin[:, :half].clone(),
                                 persistent=False)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from .onnx_ops import GroupQueryAttentionCache

        cache = GroupQueryAttentionCache(list(past[: self.num_layers]), list(past[self.num_layers:]),
                                         attention_mask, self.decoder.spec.windows(),
                                         self.cos_cache, self.sin_cache,
                                         None if self.cos_cache_local is None else (self.cos_cache_local,
                                                                                    self.sin_cache_local))
        logits = self.decoder(input_ids, position_ids, cache)
        return (logits, *cache.present_keys, *cache.present_values)


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "attention_mask", "position_ids",
              *[f"past_key_values.{i}.key" for i in range(num_layers)],
              *[f"past_key_values.{i}.value" for i in range(num_layers)]]
    outputs = ["logits", *[f"present.{i}.key" for i in range(num_layers)],
               *[f"present.{i}.value" for i in range(num_layers)]]
    return inputs, outputs


def artifact_metadata(checkpoint, max_seq_len: int) -> dict[str, Any]:
    """genai_config.json. Every key is one GenAI 0.18 knows: an unknown key is a hard error there."""
    spec = checkpoint.spec
    eos = list(checkpoint.eos_token_ids)
    # GenAI masks batch padding by `token != pad_token_id`; eos never appears inside a prompt.
    pad = eos[0] if eos else 0
    return {
        "model": {
            "bos_token_id": checkpoint.bos_token_id if checkpoint.bos_token_id is not None else pad,
            "context_length": max_seq_len,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": ORT_FILE,
                "head_size": spec.head_dim,
                "hidden_size": spec.hidden_size,
                # GenAI feeds position_ids only when the graph has that input (see the docstring).
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": spec.num_heads,
                "num_hidden_layers": spec.num_layers,
                "num_key_value_heads": spec.num_kv_heads,
            },
            "eos_token_id": eos,
            "pad_token_id": pad,
            # "decoder" is GenAI's generic decoder-only type; the I/O names above define the rest.
            "type": "decoder",
            "vocab_size": spec.vocab_size,
        },
        "search": {"do_sample": False, "max_length": max_seq_len, "num_beams": 1,
                   "past_present_share_buffer": True, "temperature": 1.0, "top_k": 1, "top_p": 1.0},
    }


def _export(decoder: Decoder):
    """torch.onnx.export of GenAIDecoder with the fused modules (onnx_ops), then our graph passes.

    SmolLM2-135M (30 blocks), 2 shared cores: 29.5 s with the plain decoder and the exporter's
    optimizer, 4.6 s here. optimize=False: its pattern rewriter took 9.7 s, and onnxruntime's
    own optimizer does that work in the model.ort conversion. Only blocks 0 and 1 are traced
    (2.2 s); the trace and decompositions cost ~10 ms per op with 2 x num_layers dynamic past
    inputs (12.3 s for 30 blocks), and the other blocks are copies of block 1's nodes with their
    own weights (onnx_graph.repeat_block, 1.8 s)."""
    from . import onnx_graph
    from .onnx_ops import fused_block_weights, fused_modules, rotary_in_attention, translation_table

    spec = decoder.spec
    # Copying block 1 relies on every block being the same code with its own weights, as
    # Decoder's are (DecoderSpec has no per-block setting; one would need all blocks traced).
    traced = min(spec.num_layers, 2)
    if spec.local_rope_theta is not None and not rotary_in_attention(spec):
        # RoPE in the graph with two bases: a copy of block 1 would read block 1's kind of tables.
        traced = spec.num_layers
    inputs, outputs = io_names(traced)
    # Sample sizes >= 2 everywhere: torch.export specialises dimensions of size 0 and 1.
    b, s, p = 2, 3, 4
    example = (torch.randint(0, spec.vocab_size, (b, s)), torch.ones(b, p + s, dtype=torch.long),
               torch.arange(p, p + s).expand(b, s).contiguous(),
               *[torch.zeros(b, spec.num_kv_heads, p, spec.head_dim) for _ in range(2 * traced)])
    past = {0: "batch_size", 2: "past_sequence_length"}
    dynamic = ({0: "batch_size", 1: "sequence_length"}, {0: "batch_size", 1: "total_sequence_length"},
               {0: "batch_size", 1: "sequence_length"}, tuple(past for _ in range(2 * traced)))
    all_blocks = decoder.layers
    with torch.no_grad(), fused_modules(decoder, range(traced)):
        decoder.layers = nn.ModuleList(all_blocks[:traced])
        try:
            wrapper = GenAIDecoder(decoder, traced).eval()
            program = torch.onnx.export(wrapper, example, dynamo=True,
                                        input_names=inputs, output_names=outputs, dynamic_shapes=dynamic,
                                        opset_version=OPSET, optimize=False,
                                        custom_translation_table=translation_table(), verbose=False)
        finally:
            decoder.layers = all_blocks
    model = program.model_proto
    del program
    # The graph holds its own copy of what was traced (the embedding, head, final norm and blocks
    # 0-1): free the decoder's before the copies of the other blocks grow the graph (1.5 GB of the
    # 1B shape's peak).
    for module in (*all_blocks[:traced], *(m for name, m in decoder.named_children() if name != "layers")):
        release_weights(module)
    windows = spec.windows()

    def tables_of_layer(index: int, name: str) -> str:
        """A copied block reads the RoPE tables of its own layer kind (Gemma 3's blocks 0 and 1 are
        both sliding, and every sixth is global)."""
        base = name.removesuffix(LOCAL_TABLES)
        if spec.local_rope_theta is None or base not in ("cos_cache", "sin_cache"):
            return name
        return base + (LOCAL_TABLES if windows[index] else "")

    def consume_block(index: int) -> dict[str, np.ndarray]:
        """Block `index`'s weights for its copy in the graph; the decoder's own are freed as the
        graph takes them (their arrays live until copied), so the graph and the decoder never
        both hold every block (1B shape: 4.9 GB of fp32 weights)."""
        weights = {name: t.detach().numpy() for name, t in fused_block_weights(decoder, index).items()}
        release_weights(decoder.layers[index])
        return weights

    if spec.num_layers > traced:
        onnx_graph.repeat_block(model, spec.num_layers, consume_block, windows, tables_of_layer)
        # Tables the traced blocks did not read (both sliding: no global tables) but a copy does.
        from onnx import numpy_helper

        present = {i.name for i in model.graph.initializer}
        wanted = {i for n in model.graph.node for i in n.input if i.removesuffix(LOCAL_TABLES) in ("cos_cache", "sin_cache")}
        model.graph.initializer.extend(numpy_helper.from_array(getattr(wrapper, name).numpy(), name)
                                       for name in sorted(wanted - present))
    release_weights(decoder)  # the graph holds its own copy of every weight now
    onnx_graph.strip_metadata(model)
    # The shapes the exporter recorded for intermediate values and weights go stale under our
    # rewrites (weights transposed in place, copied blocks); onnxruntime infers its own.
    del model.graph.value_info[:]
    onnx_graph.merge_duplicate_nodes(model)
    onnx_graph.fuse_skip_norms(model)
    onnx_graph.drop_unused_inputs(model)
    return model


def int4_mlp_layers(depth: list[float], num_layers: int) -> range:
    """The blocks [from, to) a recipe's `int4_mlp_depth = [from, to]` names, as fractions of the
    depth: [0.55, 0.95] is blocks 16-27 of SmolLM2-135M's 30."""
    start, stop = (float(f) for f in depth)
    if not 0.0 <= start < stop <= 1.0:
        raise ExportError(f"int4_mlp_depth must be two fractions 0 <= from < to <= 1, got {depth!r}")
    return range(int(start * num_layers), int(stop * num_layers))


def quantize(model, recipe: QuantRecipe, tied: bool, work_dir: Path, num_layers: int = 0):
    """none: fp32. int4: MatMulNBits, symmetric, `block_size` (default 32), `accuracy_level`
    (default 4: int8 activations inside the kernel), the tied embedding read from the int4 head.
    int8w: the same with 8-bit weights (MatMulNBits bits=8); accuracy_level 0 keeps the
    activations fp32 (weight-only) but runs on onnxruntime's slow 8-bit path; the target uses 4.
    `int4_mlp_depth = [from, to]` (int8w): the MLPs of those blocks (fractions of the depth) at
    4 bits, block 32. int8: onnxruntime's dynamic quantization (int8 per-channel weights, int8
    activations)."""
    from . import onnx_graph

    scheme = recipe.params.get("scheme", recipe.name)
    onnx_graph.fold_weight_transposes(model, shared={"none": "fused", "int4": "keep", "int8w": "keep"}.get(scheme, "copy"))
    if scheme == "none":
        return model
    if scheme in ("int4", "int8w"):
        bits = 4 if scheme == "int4" else 8
        block = int(recipe.params.get("block_size", 32))
        level = int(recipe.params.get("accuracy_level", 4))
        if "int4_mlp_depth" in recipe.params:  # int8w with some blocks' MLPs at 4 bits (block 32) first
            four = onnx_graph.mlp_matmuls(model, int4_mlp_layers(recipe.params["int4_mlp_depth"], num_layers))
            model = onnx_graph.quantize_nbits(model, 4, 32, level,
                                              exclude=[n for n in onnx_graph.weight_matmuls(model) if n not in four])
        model = onnx_graph.quantize_nbits(model, bits, block, level)
        if tied and not onnx_graph.share_embedding_with_nbits_head(model, block, bits):
            log.warning("tied embedding could not be shared with the int%d head; it is stored separately", bits)
        return model
    if scheme == "int8":
        return onnx_graph.quantize_int8_dynamic(model, work_dir)
    raise ExportError(f"unknown ONNX quantization scheme {scheme!r}")


def _logits_feeds(spec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(0, spec.vocab_size, (1, 5), dtype=np.int64),
             "attention_mask": np.ones((1, 5), dtype=np.int64),
             "position_ids": np.arange(5, dtype=np.int64)[None]}
    for i in range(spec.num_layers):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), np.float32)
    return feeds


def _to_ort(folder: Path, spec) -> float:
    """model.onnx -> model.ort + required_operators.config (onnx_graph.convert_to_ort); the max
    abs difference of its outputs between the optimized model.onnx and model.ort loaded back."""
    from . import onnx_graph

    return onnx_graph.convert_to_ort(folder / ONNX_FILE, folder / ORT_FILE, _logits_feeds(spec))


def emit(decoder: Decoder, recipe: QuantRecipe, max_seq_len: int, metadata: dict[str, Any], out_dir: Path) -> Path:
    import onnx

    from ..progress import release_memory, stage

    out_dir.mkdir(parents=True, exist_ok=True)
    with stage("torch.onnx.export (dynamo, GroupQueryAttention)"):
        model = _export(decoder)
    release_memory()  # the trace's and the freed decoder's heap: the quantizer's peak stacks on it
    with stage(f"quantize onnx ({recipe.name})"):
        model = quantize(model, recipe, decoder.spec.tie_word_embeddings, out_dir, decoder.spec.num_layers)
    large = model.ByteSize() > 1_800_000_000  # protobuf's 2 GB limit, with headroom
    onnx.save_model(model, str(out_dir / ONNX_FILE), save_as_external_data=large,
                    all_tensors_to_one_file=True, location=ONNX_FILE + ".data")
    del model  # the conversion reads the file; this frees the graph before onnxruntime loads it
    with stage("convert to ORT format"):
        difference = _to_ort(out_dir, decoder.spec)
    if difference > 1e-4:
        raise ExportError(f"model.ort and model.onnx disagree (max abs logits difference {difference:.3g})")
    (out_dir / CONFIG_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return out_dir


class Session:
    """onnxruntime-genai over the artifact folder; forward feeds tokens and returns the last
    position's logits. reset() starts a new generator (a new sequence)."""

    def __init__(self, folder: Path):
        import onnxruntime_genai as og

        self._og = og
        self.model = og.Model(str(folder))
        self.reset()

    def reset(self) -> None:
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(do_sample=False, batch_size=1)
        self.generator = self._og.Generator(self.model, params)

    def forward(self, ids: list[int]) -> torch.Tensor:
        self.generator.append_tokens(np.asarray([ids], dtype=np.int32))
        return torch.from_numpy(np.array(self.generator.get_logits(), dtype=np.float32).reshape(-1))


def open_session(path: Path) -> Session:
    return Session(path)


def read_metadata(path: Path) -> dict[str, Any]:
    config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    bos, eos = special_ids(config)
    return {**config, "format": FORMAT, "max_seq_len": int(config["model"]["context_length"]), "eos_ids": eos,
            "bos_id": bos}


def special_ids(config: dict[str, Any]) -> tuple[int | None, list[int]]:
    """(bos, eos ids) from genai_config.json (eos an id or a list)."""
    bos, eos = config["model"].get("bos_token_id"), config["model"]["eos_token_id"]
    return (int(bos) if bos is not None else None), [int(v) for v in (eos if isinstance(eos, list) else [eos])]
