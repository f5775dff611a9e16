"""Model families, keyed by Hugging Face `model_type`.

To add a family: write `exporter/models/<name>.py` with a config class (HF field names), a weight
table and a tiny test config, and add its FAMILY here. The family parity tests pick it up and fail
until transformers' model and ours agree on it.
"""

from __future__ import annotations

from . import gemma3, gpt2, gpt_neo, gptj, llama, mistral, phi3, qwen2, qwen3
from .decoder import Decoder, DecoderSpec
from .family import ConfigError, Family, HFConfig

MODELS: dict[str, Family] = {f.model_type: f for f in (llama.FAMILY, qwen2.FAMILY, qwen3.FAMILY, mistral.FAMILY,
                                                      phi3.FAMILY, gpt2.FAMILY, gptj.FAMILY,
                                                      gpt_neo.FAMILY, gemma3.FAMILY)}

__all__ = ["MODELS", "ConfigError", "Decoder", "DecoderSpec", "Family", "HFConfig"]
