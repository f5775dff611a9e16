"""Checkpoints for the benchmark: random llamas shaped like the models people ship to phones
(SmolLM2-135M of issue #9; SmolLM2-360M, Qwen2.5-0.5B and Llama-3.2-1B for the size sweep of
issue #20), and the Meta layout that ExecuTorch's export_llama reads."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)

def _llama_shape(hidden: int, layers: int, heads: int, kv_heads: int, intermediate: int, vocab: int,
                 rope_theta: float) -> dict:
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "head_dim": 64, "intermediate_size": intermediate, "vocab_size": vocab, "tie_word_embeddings": True,
            "max_position_embeddings": 2048, "rope_theta": rope_theta, "rms_norm_eps": 1e-5, "hidden_act": "silu",
            "attention_bias": False, "mlp_bias": False, "rope_scaling": None, "torch_dtype": "float32",
            "bos_token_id": 1, "eos_token_id": 0}


# The shapes of the models people ship to phones (HF config field names; each model's own
# config.json): layers, widths, heads, vocabulary and tied embeddings as published, as plain llama
# checkpoints with random weights, so that every peer takes them (export_llama reads llama only).
# Speed, size and export cost are what they are for, never accuracy. What differs from the real
# model: Qwen2.5's q/k/v biases (0.1% of its weights) and Llama 3.2's rope_scaling (a position
# remap, no weights) are left out; max_position_embeddings is 2048 (the export's cache is the
# target's anyway). bos/eos follow the byte-level tokenizers of this project (<|endoftext|> id 0,
# <|im_start|> id 1).
SHAPES = {
    "smollm2-135m": _llama_shape(576, 30, 9, 3, 1536, 49152, 100000.0),
    "smollm2-360m": _llama_shape(960, 32, 15, 5, 2560, 49152, 100000.0),
    "qwen2.5-0.5b": _llama_shape(896, 24, 14, 2, 4864, 151936, 1000000.0),
    "llama-3.2-1b": _llama_shape(2048, 16, 32, 8, 8192, 128256, 500000.0),
}
SMOLLM2_135M_SHAPE = SHAPES["smollm2-135m"]


def shape_parameters(config: dict) -> int:
    """Parameters of a SHAPES config (tied embeddings counted once)."""
    return sum(math.prod(s) for s in _tensor_shapes(config).values())


def _tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    e, f, d = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    shapes = {"model.embed_tokens.weight": (config["vocab_size"], e), "model.norm.weight": (e,)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": (q, e), p + "self_attn.k_proj.weight": (kv, e),
                   p + "self_attn.v_proj.weight": (kv, e), p + "self_attn.o_proj.weight": (e, q),
                   p + "mlp.gate_proj.weight": (f, e), p + "mlp.up_proj.weight": (f, e),
                   p + "mlp.down_proj.weight": (e, f),
                   p + "input_layernorm.weight": (e,), p + "post_attention_layernorm.weight": (e,)}
    return shapes


def make_smollm2_shape(directory: Path, seed: int = 0) -> Path:
    """A random-weight llama of SmolLM2-135M's shape (see make_shape)."""
    return make_shape(directory, "smollm2-135m", seed)


def make_shape(directory: Path, name: str, seed: int = 0) -> Path:
    """Writes a random-weight llama of the shape SHAPES[name] to `directory` (HF layout, fp32
    safetensors, tied embeddings) with the built-in student's tokenizer padded to its vocabulary."""
    import torch
    from safetensors.torch import save_file

    from ..student import STUDENT_DIR

    if name not in SHAPES:
        raise InputError(f"unknown shape {name!r} (known: {', '.join(SHAPES)})")
    if directory.exists() and any(directory.iterdir()):
        raise InputError(f"{directory}: not empty; the checkpoint is written into a new or empty folder")
    config = SHAPES[name]
    shapes = _tensor_shapes(config)
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for tensor_name, shape in shapes.items():
        if len(shape) == 1:
            tensors[tensor_name] = torch.ones(shape)
        else:
            # std 0.02 (HF's initializer_range), scaled up as the test checkpoints are so that
            # logits are not flat: x4 for the embedding (also the tied head), x2 elsewhere.
            std = 0.02 * (4.0 if "embed" in tensor_name else 2.0)
            tensors[tensor_name] = torch.randn(shape, generator=generator) * std
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    del tensors
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for file_name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(STUDENT_DIR / file_name, directory / file_name)
    pad_tokenizer(directory / "tokenizer.json", config["vocab_size"])
    log.info("%s: random %s-shaped llama, %s parameters", directory, name, f"{shape_parameters(config):,}")
    return directory


def pad_tokenizer(path: Path, vocab_size: int) -> None:
    """Pads tokenizer.json with plain added tokens `<fN>` up to `vocab_size`. A random model
    emits any id; the C++ runner fails on an id the tokenizer cannot decode. The padding does not
    change how text encodes."""
    from tokenizers import Tokenizer

    have = Tokenizer.from_file(str(path)).get_vocab_size()
    if have >= vocab_size:
        return
    data = json.loads(path.read_text())
    data.setdefault("added_tokens", []).extend(
        {"id": i, "content": f"<f{i}>", "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": False} for i in range(have, vocab_size))
    path.write_text(json.dumps(data))
    if Tokenizer.from_file(str(path)).get_vocab_size() != vocab_size:
        raise InputError(f"{path}: padding the tokenizer to {vocab_size} tokens failed")


# HF llama tensor names -> Meta (export_llama) names, per layer.
_META_LAYER_NAMES = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
                     "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
                     "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
                     "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
                     "post_attention_layernorm": "ffn_norm"}


def check_meta_convertible(checkpoint) -> None:
    """export_llama is compared on plain llama checkpoints: refuse others before any work."""
    if checkpoint.model_type != "llama":
        raise InputError(f"{checkpoint.path}: the ExecuTorch peer (export_llama) is benchmarked on llama "
                         f"checkpoints only, not {checkpoint.model_type}; pass --formats without executorch")
    if checkpoint.spec.rope_scaling is not None:
        raise InputError(f"{checkpoint.path}: rope_scaling is not converted to export_llama's params.json; "
                         "pass --formats without executorch")


def write_meta_checkpoint(checkpoint_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """consolidated.00.pth + params.json for export_llama, from an HF llama checkpoint. q/k keep the
    HF (rotate-half) layout: `use_hf_rope`. A tied head is written out as `output.weight`."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((checkpoint_dir / "config.json").read_text())
    hf: dict[str, torch.Tensor] = {}
    for file in sorted(checkpoint_dir.glob("*.safetensors")):
        hf.update(load_file(str(file)))
    layers = config["num_hidden_layers"]
    embedding = hf["model.embed_tokens.weight"]
    state = {"tok_embeddings.weight": embedding, "norm.weight": hf["model.norm.weight"],
             "output.weight": hf.get("lm_head.weight", embedding).clone()}
    for i in range(layers):
        for hf_name, meta_name in _META_LAYER_NAMES.items():
            state[f"layers.{i}.{meta_name}.weight"] = hf[f"model.layers.{i}.{hf_name}.weight"]
    state = {k: v.to(torch.float32).contiguous() for k, v in state.items()}
    heads = config["num_attention_heads"]
    params = {"dim": config["hidden_size"], "n_layers": layers, "n_heads": heads,
              "n_kv_heads": config.get("num_key_value_heads", heads), "vocab_size": config["vocab_size"],
              "hidden_dim": config["intermediate_size"], "norm_eps": config.get("rms_norm_eps", 1e-5),
              "rope_theta": float(config.get("rope_theta", 10000.0)), "use_hf_rope": True}
    head_dim = config.get("head_dim")
    if head_dim and head_dim != config["hidden_size"] // heads:
        params["head_dim"] = head_dim
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(state, out_dir / "consolidated.00.pth")
    (out_dir / "params.json").write_text(json.dumps(params, indent=1))
    return out_dir / "consolidated.00.pth", out_dir / "params.json"
