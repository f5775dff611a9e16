"""Llama family (Llama 2/3, SmolLM, TinyLlama): RMSNorm, gated SiLU MLP, RoPE, optional GQA.

Also the base of qwen2 and mistral, which differ only in their config defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .decoder import DecoderSpec, RopeScaling
from .family import ConfigError, Family, HFConfig, plausible_context, positive_float, positive_int, same_names


def parse_rope(rope_theta: float | None, rope_scaling: dict | None,
               rope_parameters: dict | None) -> tuple[float, RopeScaling | None]:
    """Reads both spellings: transformers 4.x (`rope_theta` + `rope_scaling`) and 5.x
    (`rope_parameters` holding `rope_theta` and the scaling keys)."""
    params = dict(rope_scaling or {})
    if rope_parameters:
        params.update(rope_parameters)
    theta = params.pop("rope_theta", None) or rope_theta or 10000.0
    kind = params.get("rope_type", params.get("type", "default"))
    if kind in (None, "default"):
        return float(theta), None
    if kind not in ("linear", "llama3"):
        raise ConfigError(f"config.json: rope type {kind!r} is not supported (supported: default, linear, llama3)")
    if not isinstance(params.get("factor"), int | float) or params["factor"] <= 0:
        raise ConfigError(f"config.json: rope scaling {kind!r} needs a positive 'factor'")
    keys = ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    scaling = RopeScaling(kind=kind, factor=float(params["factor"]),
                          **{k: params[k] for k in keys if kind == "llama3" and k in params})
    return float(theta), scaling


@dataclass
class LlamaConfig(HFConfig):
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float | None = None
    rope_scaling: dict | None = None
    rope_parameters: dict | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None

    # Families built on this one override these two.
    qkv_bias_always = False
    o_bias_follows_attention_bias = True

    def __post_init__(self) -> None:
        positive_int(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "max_position_embeddings")
        positive_float(self, "rms_norm_eps")
        plausible_context(self, "max_position_embeddings")
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        positive_int(self, "num_key_value_heads")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(f"config.json: hidden_size ({self.hidden_size}) is not divisible by "
                                  f"num_attention_heads ({self.num_attention_heads})")
            self.head_dim = self.hidden_size // self.num_attention_heads
        positive_int(self, "head_dim")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"config.json: num_attention_heads ({self.num_attention_heads}) is not a "
                              f"multiple of num_key_value_heads ({self.num_key_value_heads})")
        if self.sliding_window is not None:
            positive_int(self, "sliding_window")

    def to_spec(self) -> DecoderSpec:
        theta, scaling = parse_rope(self.rope_theta, self.rope_scaling, self.rope_parameters)
        try:
            return DecoderSpec(
                vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_layers=self.num_hidden_layers,
                num_heads=self.num_attention_heads, num_kv_heads=self.num_key_value_heads,
                head_dim=self.head_dim, intermediate_size=self.intermediate_size,
                max_position_embeddings=self.max_position_embeddings, norm="rms", norm_eps=self.rms_norm_eps,
                mlp="gated", activation=self.hidden_act, positions="rope", rope_theta=theta,
                rope_scaling=scaling, qkv_bias=self.qkv_bias_always or self.attention_bias,
                o_bias=self.attention_bias and self.o_bias_follows_attention_bias, mlp_bias=self.mlp_bias,
                tie_word_embeddings=self.tie_word_embeddings, sliding_window=self.sliding_window)
        except ValueError as e:
            raise ConfigError(f"config.json: {e}") from None


# Checkpoint name -> Decoder parameter name. Rules whose parameter does not exist in the built
# model (a bias the config turns off) are skipped; the checkpoint tensor then counts as leftover.
LLAMA_WEIGHTS = same_names({
    "model.embed_tokens.weight": "embed_tokens.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "lm_head.weight",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.input_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.post_attention_norm.weight",
    **{f"model.layers.{{i}}.self_attn.{p}_proj.{w}": f"layers.{{i}}.attn.{p}_proj.{w}"
       for p in "qkvo" for w in ("weight", "bias")},
    **{f"model.layers.{{i}}.mlp.{p}_proj.{w}": f"layers.{{i}}.mlp.{p}_proj.{w}"
       for p in ("gate", "up", "down") for w in ("weight", "bias")},
})

# Older checkpoints store RoPE's inverse frequencies; we recompute them from the config.
LLAMA_UNUSED = (r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq",)


def tiny_llama_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32},
        "bos_token_id": 1, "eos_token_id": 2,
    }
    return {**config, **overrides}


FAMILY = Family(
    model_type="llama", config_class=LlamaConfig, rules=LLAMA_WEIGHTS, unused=LLAMA_UNUSED,
    tiny_config=tiny_llama_config(),
    description="Llama 2/3, SmolLM, TinyLlama: RMSNorm, SwiGLU, RoPE (default/linear/llama3), GQA",
    test_variants=(("llama3-rope-tied-gqa2", {}),
                   ("mha-untied-linear-rope", {"num_key_value_heads": 4, "tie_word_embeddings": False,
                                               "rope_scaling": {"rope_type": "linear", "factor": 2.0}})),
)
