"""Qwen3 family: the Llama layout with an RMSNorm over each head's q and k (before RoPE), no
q/k/v biases by default, and a head_dim of its own (not hidden / heads)."""

from __future__ import annotations

from dataclasses import dataclass

from .decoder import DecoderSpec
from .family import ConfigError, Family, same_names
from .llama import LLAMA_UNUSED, LLAMA_WEIGHTS, LlamaConfig, tiny_llama_config


@dataclass
class Qwen3Config(LlamaConfig):
    max_position_embeddings: int = 40960
    use_sliding_window: bool = False
    layer_types: list | None = None
    max_window_layers: int | None = None

    def __post_init__(self) -> None:
        # Qwen3 keeps `sliding_window` in its config even when it is off; only the flag counts.
        if self.use_sliding_window:
            raise ConfigError("config.json: use_sliding_window=true is not supported for qwen3 "
                              "(its window applies to some layers only)")
        self.sliding_window = None
        super().__post_init__()

    def to_spec(self) -> DecoderSpec:
        import dataclasses

        return dataclasses.replace(super().to_spec(), qk_norm=True)


QWEN3_WEIGHTS = LLAMA_WEIGHTS + same_names({
    f"model.layers.{{i}}.self_attn.{p}_norm.weight": f"layers.{{i}}.attn.{p}_norm.weight" for p in "qk"})

FAMILY = Family(
    model_type="qwen3", config_class=Qwen3Config, rules=QWEN3_WEIGHTS, unused=LLAMA_UNUSED,
    # head_dim 32 with hidden 64 and 4 heads: q is 128 wide, wider than the hidden state
    tiny_config=tiny_llama_config(model_type="qwen3", rope_scaling=None, head_dim=32, rope_theta=1000000.0),
    description="Qwen3: Llama layout, RMSNorm on q and k per head, explicit head_dim",
    test_variants=(("qk-norm-head-dim-32-tied", {}),
                   ("qk-norm-gqa4-untied-bias", {"num_key_value_heads": 1, "tie_word_embeddings": False,
                                                 "attention_bias": True})),
)
