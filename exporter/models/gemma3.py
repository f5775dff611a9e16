"""Gemma 3 family (text decoder, `gemma3_text`; Gemma 3 270M, 1B): sliding-window layers
interleaved with global ones (`layer_types`), each kind with its own RoPE base, RMSNorm on each
head's q and k, four norms per block (on the attention and MLP inputs and outputs), RMSNorms
that scale by (1 + w), an embedding multiplied by sqrt(hidden_size) (the tied head is not), a
gated GELU-tanh MLP, and q.k scaled by query_pre_attn_scalar**-0.5.

(1 + w) is folded into the weights at load (in fp32, as Gemma computes it), so the decoder's
RMSNorm serves unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .decoder import DecoderSpec
from .family import ConfigError, Family, HFConfig, WeightRule, plausible_context, positive_float, positive_int
from .llama import parse_rope

LAYER_TYPES = ("sliding_attention", "full_attention")


@dataclass
class Gemma3Config(HFConfig):
    vocab_size: int = 262208
    hidden_size: int = 2304
    intermediate_size: int = 9216
    num_hidden_layers: int = 26
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int = 256
    hidden_activation: str = "gelu_pytorch_tanh"
    max_position_embeddings: int = 131072
    rms_norm_eps: float = 1e-6
    # transformers 5.x: {"full_attention": {...}, "sliding_attention": {...}}; 4.x: the three below.
    rope_parameters: dict | None = None
    rope_theta: float | None = None
    rope_scaling: dict | None = None
    rope_local_base_freq: float | None = None
    attention_bias: bool = False
    query_pre_attn_scalar: float = 256
    sliding_window: int | None = 4096
    layer_types: list | None = None
    sliding_window_pattern: int = 6  # 4.x configs without layer_types: every 6th layer is global
    final_logit_softcapping: float | None = None
    attn_logit_softcapping: float | None = None
    use_bidirectional_attention: bool | None = False
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        positive_int(self, "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
                     "sliding_window_pattern")
        positive_float(self, "rms_norm_eps", "query_pre_attn_scalar")
        plausible_context(self, "max_position_embeddings")
        # Refused by name: each changes the math and none is in the decoder (Gemma 3 sets neither
        # softcap; Gemma 2 does, and EmbeddingGemma is bidirectional).
        for name in ("final_logit_softcapping", "attn_logit_softcapping"):
            if getattr(self, name) is not None:
                raise ConfigError(f"config.json: {name}={getattr(self, name)!r} is not supported for gemma3_text "
                                  f"(logit soft-capping is not implemented; null works)")
        if self.use_bidirectional_attention:
            raise ConfigError("config.json: use_bidirectional_attention=true (an embedding model) is not supported "
                              "for gemma3_text: slm-export exports causal decoders")
        if self.layer_types is None:
            self.layer_types = ["sliding_attention" if (i + 1) % self.sliding_window_pattern else "full_attention"
                                for i in range(self.num_hidden_layers)]
        unknown = sorted(set(map(str, self.layer_types)) - set(LAYER_TYPES))
        if unknown or len(self.layer_types) != self.num_hidden_layers:
            raise ConfigError(f"config.json: layer_types lists {len(self.layer_types)} layers of types "
                              f"{sorted(set(map(str, self.layer_types)))}; expected {self.num_hidden_layers} of "
                              f"{' / '.join(LAYER_TYPES)}")
        if "sliding_attention" in self.layer_types:
            positive_int(self, "sliding_window")

    def rope(self) -> tuple[float, object, float]:
        """(global base, global scaling, local base) from either spelling, with Gemma's defaults."""
        params = self.rope_parameters or {}
        if params and not set(params) <= set(LAYER_TYPES):  # one dict for every layer: no local base
            params = {"full_attention": params}
        full = params.get("full_attention") or {}
        theta, scaling = parse_rope(self.rope_theta or 1_000_000.0, self.rope_scaling, full)
        local = params.get("sliding_attention") or {}
        if local.get("rope_type", "default") != "default":
            raise ConfigError(f"config.json: rope type {local['rope_type']!r} on sliding_attention layers is not "
                              f"supported for gemma3_text (default only)")
        local_theta = local.get("rope_theta") or self.rope_local_base_freq or 10_000.0
        return theta, scaling, float(local_theta)

    def to_spec(self) -> DecoderSpec:
        theta, scaling, local_theta = self.rope()
        windows = tuple(self.sliding_window if kind == "sliding_attention" else None for kind in self.layer_types)
        scale = self.query_pre_attn_scalar ** -0.5
        try:
            return DecoderSpec(
                vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_layers=self.num_hidden_layers,
                num_heads=self.num_attention_heads, num_kv_heads=self.num_key_value_heads, head_dim=self.head_dim,
                intermediate_size=self.intermediate_size, max_position_embeddings=self.max_position_embeddings,
                norm="rms", norm_eps=self.rms_norm_eps, mlp="gated", activation=self.hidden_activation,
                positions="rope", rope_theta=theta, rope_scaling=scaling,
                local_rope_theta=local_theta if local_theta != theta else None,
                qkv_bias=self.attention_bias, o_bias=self.attention_bias,
                tie_word_embeddings=self.tie_word_embeddings, qk_norm=True, sandwich_norms=True,
                layer_windows=windows, embedding_scale=math.sqrt(self.hidden_size),
                # The kernels' own 1/sqrt(head_dim) when it is the same (Gemma 3 270M: 256 and 256).
                attention_scale=None if math.isclose(scale, self.head_dim ** -0.5) else scale)
        except ValueError as e:
            raise ConfigError(f"config.json: {e}") from None


def _one_plus(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Gemma's RMSNorm scales by (1 + w), computed in fp32: the decoder's scales by its weight."""
    return (t.float() + 1.0,)


_NORMS = {"input_layernorm": "input_norm", "post_attention_layernorm": "attn_output_norm",
          "pre_feedforward_layernorm": "post_attention_norm", "post_feedforward_layernorm": "mlp_output_norm",
          "self_attn.q_norm": "attn.q_norm", "self_attn.k_norm": "attn.k_norm"}

GEMMA3_WEIGHTS = (
    WeightRule("model.embed_tokens.weight", ("embed_tokens.weight",)),
    WeightRule("model.norm.weight", ("norm.weight",), _one_plus),
    WeightRule("lm_head.weight", ("lm_head.weight",)),
    *(WeightRule(f"model.layers.{{i}}.{theirs}.weight", (f"layers.{{i}}.{ours}.weight",), _one_plus)
      for theirs, ours in _NORMS.items()),
    *(WeightRule(f"model.layers.{{i}}.self_attn.{p}_proj.{w}", (f"layers.{{i}}.attn.{p}_proj.{w}",))
      for p in "qkvo" for w in ("weight", "bias")),
    *(WeightRule(f"model.layers.{{i}}.mlp.{p}_proj.weight", (f"layers.{{i}}.mlp.{p}_proj.weight",))
      for p in ("gate", "up", "down")),
)

FAMILY = Family(
    model_type="gemma3_text", config_class=Gemma3Config, rules=GEMMA3_WEIGHTS, unused=(),
    # Two sliding layers (window 24, shorter than the test prompts) then a global one; head_dim 32
    # with 4 heads is wider than hidden 64, as Gemma's 256 x 4 is wider than its 640.
    tiny_config={"model_type": "gemma3_text", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
                 "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32,
                 "max_position_embeddings": 256, "sliding_window": 24, "query_pre_attn_scalar": 32,
                 "layer_types": ["sliding_attention", "sliding_attention", "full_attention"],
                 "rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                     "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
                 "bos_token_id": 2, "eos_token_id": 1},
    description="Gemma 3 (text): sliding and global layers with their own RoPE bases, QK norm, "
                "four (1+w) RMSNorms per block, scaled embedding, GELU-tanh gated MLP",
    test_variants=(("sliding-global-two-bases", {}),
                   ("global-first-scalar-16-gqa2", {"layer_types": ["full_attention", "sliding_attention",
                                                                    "sliding_attention"],
                                                    "num_key_value_heads": 2, "query_pre_attn_scalar": 16,
                                                    "sliding_window": 16})),
)
