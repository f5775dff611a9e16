"""Write a `Decoder` as a Hugging Face llama checkpoint (the inverse of `LLAMA_WEIGHTS`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..models.decoder import Decoder
from ..models.llama import LLAMA_WEIGHTS


def llama_state_dict(model: Decoder) -> dict[str, torch.Tensor]:
    """HF tensor name -> tensor for every parameter of `model`, by the 1:1 LLAMA_WEIGHTS rules.

    Tied embeddings are stored once (as model.embed_tokens.weight; no lm_head.weight), as HF does.
    Raises if a parameter has no rule or a rule is not 1:1.
    """
    params = dict(model.named_parameters())  # a tied lm_head is the embedding, listed once
    out: dict[str, torch.Tensor] = {}
    covered: set[str] = set()
    for base in LLAMA_WEIGHTS:
        for rule in base.expand(model.spec.num_layers):
            if len(rule.ours) != 1:
                raise ValueError(f"rule {rule.checkpoint} is not 1:1")
            ours = rule.ours[0]
            if ours not in params or ours in covered:
                continue
            out[rule.checkpoint] = params[ours].detach().to(torch.float32).contiguous().clone()
            covered.add(ours)
    missing = sorted(set(params) - covered)
    if missing:
        raise ValueError(f"no llama checkpoint name for parameters {missing}")
    return out


def llama_config(model: Decoder, **extra: Any) -> dict[str, Any]:
    s = model.spec
    if s.norm != "rms" or s.mlp != "gated" or s.positions != "rope" or s.rope_scaling is not None:
        raise ValueError("only plain llama specs (rms norm, gated MLP, unscaled RoPE) are supported")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": s.vocab_size,
        "hidden_size": s.hidden_size,
        "intermediate_size": s.intermediate_size,
        "num_hidden_layers": s.num_layers,
        "num_attention_heads": s.num_heads,
        "num_key_value_heads": s.num_kv_heads,
        "head_dim": s.head_dim,
        "hidden_act": s.activation,
        "max_position_embeddings": s.max_position_embeddings,
        "rms_norm_eps": s.norm_eps,
        "rope_theta": s.rope_theta,
        "rope_scaling": None,
        "attention_bias": s.qkv_bias,
        "attention_dropout": 0.0,
        "mlp_bias": s.mlp_bias,
        "tie_word_embeddings": s.tie_word_embeddings,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": "float32",
        **extra,
    }


def save_llama_checkpoint(model: Decoder, directory: Path, bos_token_id: int, eos_token_id: int) -> Path:
    """config.json, model.safetensors and generation_config.json (the tokenizer is the caller's)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = llama_config(model, bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    weights = directory / "model.safetensors"
    save_file(llama_state_dict(model), str(weights), metadata={"format": "pt"})
    weights.chmod(0o644)  # safetensors creates it owner-only; it is package data
    generation = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return directory
