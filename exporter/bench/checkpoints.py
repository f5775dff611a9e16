"""Checkpoints for the benchmark: the random SmolLM2-135M-shaped llama of issue #9, and the Meta
layout that ExecuTorch's export_llama reads."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from ..errors import InputError

log = logging.getLogger(__name__)

# SmolLM2-135M's shape (HF config field names). Random weights: speed and size are what this
# checkpoint is for, never accuracy. bos/eos follow the byte-level tokenizers of this project
# (exporter.tokenizer: <|endoftext|> id 0, <|im_start|> id 1).
SMOLLM2_135M_SHAPE = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "head_dim": 64, "intermediate_size": 1536,
    "vocab_size": 49152, "tie_word_embeddings": True, "max_position_embeddings": 2048, "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "rope_scaling": None,
    "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 0,
}


def make_smollm2_shape(directory: Path, seed: int = 0) -> Path:
    """Writes a random-weight llama of SmolLM2-135M's shape to `directory` (HF layout, fp32
    safetensors, tied embeddings) with the built-in student's tokenizer padded to 49152 tokens."""
    import torch
    from safetensors.torch import save_file

    from ..student import STUDENT_DIR

    if directory.exists() and any(directory.iterdir()):
        raise InputError(f"{directory}: not empty; the checkpoint is written into a new or empty folder")
    config = SMOLLM2_135M_SHAPE
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
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            tensors[name] = torch.ones(shape)
        else:
            # std 0.02 (HF's initializer_range), scaled up as the test checkpoints are so that
            # logits are not flat: x4 for the embedding (also the tied head), x2 elsewhere.
            std = 0.02 * (4.0 if "embed" in name else 2.0)
            tensors[name] = torch.randn(shape, generator=generator) * std
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(STUDENT_DIR / name, directory / name)
    pad_tokenizer(directory / "tokenizer.json", config["vocab_size"])
    parameters = sum(math.prod(s) for s in shapes.values())
    log.info("%s: random SmolLM2-135M-shaped llama, %s parameters", directory, f"{parameters:,}")
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
