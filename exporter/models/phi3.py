"""Phi-3 family (Phi-3 / Phi-3.5 mini, Phi-4-mini): the Llama math with q|k|v stored as one
`qkv_proj` and gate|up as one `gate_up_proj` (split here at load), RoPE on the first
`partial_rotary_factor` of each head, and a sliding window on every layer when the config has one.
Long-context RoPE scaling (`longrope`, `su`) is refused by name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .decoder import DecoderSpec
from .family import ConfigError, Family, WeightRule, positive_float, same_names, split_rows
from .llama import LLAMA_UNUSED, LlamaConfig, tiny_llama_config


@dataclass
class Phi3Config(LlamaConfig):
    max_position_embeddings: int = 4096
    rope_theta: float | None = 10000.0
    partial_rotary_factor: float = 1.0
    original_max_position_embeddings: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        positive_float(self, "partial_rotary_factor")
        kind = (self.rope_scaling or {}).get("rope_type", (self.rope_scaling or {}).get("type"))
        if kind in ("longrope", "su"):
            raise ConfigError(f"config.json: rope scaling {kind!r} (Phi-3 long context) is not supported; "
                              "export a short-context Phi-3 checkpoint (rope_scaling null)")
        rotary = int(self.head_dim * self.partial_rotary_factor)
        if self.partial_rotary_factor > 1 or rotary % 2:
            raise ConfigError(f"config.json: partial_rotary_factor {self.partial_rotary_factor} gives "
                              f"{rotary} rotary dims of head_dim {self.head_dim}; it must be an even number up to it")

    def to_spec(self) -> DecoderSpec:
        rotary = int(self.head_dim * self.partial_rotary_factor)
        return dataclasses.replace(super().to_spec(), rotary_dim=None if rotary == self.head_dim else rotary)


PHI3_WEIGHTS = same_names({
    "model.embed_tokens.weight": "embed_tokens.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "lm_head.weight",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.input_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.post_attention_norm.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "layers.{i}.attn.o_proj.weight",
    "model.layers.{i}.mlp.down_proj.weight": "layers.{i}.mlp.down_proj.weight",
}) + (
    WeightRule("model.layers.{i}.self_attn.qkv_proj.weight",
               ("layers.{i}.attn.q_proj.weight", "layers.{i}.attn.k_proj.weight", "layers.{i}.attn.v_proj.weight"),
               split_rows),
    # HF chunks gate_up_proj's output in two, gate first
    WeightRule("model.layers.{i}.mlp.gate_up_proj.weight",
               ("layers.{i}.mlp.gate_proj.weight", "layers.{i}.mlp.up_proj.weight"), split_rows),
)

FAMILY = Family(
    model_type="phi3", config_class=Phi3Config, rules=PHI3_WEIGHTS, unused=LLAMA_UNUSED,
    # pad_token_id inside the tiny vocabulary (Phi-3's default, 32000, is not)
    tiny_config=tiny_llama_config(model_type="phi3", rope_scaling=None, tie_word_embeddings=False,
                                  partial_rotary_factor=0.5, pad_token_id=0, rope_theta=5000.0),
    description="Phi-3 / Phi-3.5 mini, Phi-4-mini: fused qkv and gate_up, partial rotary, sliding window",
    test_variants=(("partial-rotary-half-gqa2", {}),
                   ("full-rotary-window-24-tied", {"partial_rotary_factor": 1.0, "sliding_window": 24,
                                                   "tie_word_embeddings": True, "num_key_value_heads": 4})),
)
