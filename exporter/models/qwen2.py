"""Qwen2 family: the Llama layout with biases on q/k/v (not on o)."""

from __future__ import annotations

from dataclasses import dataclass

from .family import ConfigError, Family
from .llama import LLAMA_UNUSED, LLAMA_WEIGHTS, LlamaConfig, tiny_llama_config


@dataclass
class Qwen2Config(LlamaConfig):
    max_position_embeddings: int = 32768
    use_sliding_window: bool = False

    qkv_bias_always = True
    o_bias_follows_attention_bias = False

    def __post_init__(self) -> None:
        # Qwen2 keeps `sliding_window` in its config even when it is off; only the flag counts.
        if self.use_sliding_window:
            raise ConfigError("config.json: use_sliding_window=true is not supported for qwen2 "
                              "(its window applies to some layers only)")
        self.sliding_window = None
        super().__post_init__()


FAMILY = Family(
    model_type="qwen2", config_class=Qwen2Config, rules=LLAMA_WEIGHTS, unused=LLAMA_UNUSED,
    tiny_config=tiny_llama_config(model_type="qwen2", tie_word_embeddings=False, rope_scaling=None,
                                  num_key_value_heads=1, rope_theta=1000000.0),
    description="Qwen2 / Qwen2.5: Llama layout with q/k/v biases",
    test_variants=(("gqa4-untied", {}), ("tied-gqa2", {"tie_word_embeddings": True, "num_key_value_heads": 2})),
)
