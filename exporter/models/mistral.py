"""Mistral family: the Llama layout; a sliding window that only matters past its length."""

from __future__ import annotations

from dataclasses import dataclass

from .family import Family
from .llama import LLAMA_UNUSED, LLAMA_WEIGHTS, LlamaConfig, tiny_llama_config


@dataclass
class MistralConfig(LlamaConfig):
    max_position_embeddings: int = 131072


FAMILY = Family(
    model_type="mistral", config_class=MistralConfig, rules=LLAMA_WEIGHTS, unused=LLAMA_UNUSED,
    # A window shorter than the test prompts, so the tests exercise the windowed mask.
    tiny_config=tiny_llama_config(model_type="mistral", tie_word_embeddings=False, rope_scaling=None,
                                  head_dim=32, sliding_window=24),
    description="Mistral: Llama layout, explicit head_dim, sliding-window attention",
    test_variants=(("head-dim-32-window-24", {}),),
)
