"""Model families, keyed by Hugging Face `model_type`.

To add a family: write `exporter/models/<name>.py` with a config class (HF field names), a weight
table and a tiny test config, and add its FAMILY here (decoders in MODELS, encoders in ENCODERS).
The family parity tests pick it up and fail until transformers' model and ours agree on it.
"""

from __future__ import annotations

from . import bert, distilbert, gemma3, gpt2, gpt_neo, gptj, llama, mistral, phi3, qwen2, qwen3
from .decoder import Decoder, DecoderSpec
from .encoder import Encoder, EncoderSpec
from .family import ConfigError, Family, HFConfig

MODELS: dict[str, Family] = {f.model_type: f for f in (llama.FAMILY, qwen2.FAMILY, qwen3.FAMILY, mistral.FAMILY,
                                                      phi3.FAMILY, gpt2.FAMILY, gptj.FAMILY,
                                                      gpt_neo.FAMILY, gemma3.FAMILY)}
ENCODERS: dict[str, Family] = {f.model_type: f for f in (bert.FAMILY, bert.ROBERTA_FAMILY, distilbert.FAMILY)}
# Encoder families we know of and refuse by name until they pass parity (why, for the message).
REFUSED_ENCODERS = {
    "deberta-v2": "DeBERTa-v2's disentangled relative attention is not implemented yet",
    "deberta": "DeBERTa's disentangled relative attention is not implemented yet",
}


def release_weights(module) -> None:
    """Frees every parameter of `module` in place (each becomes an empty tensor), whoever else
    holds the module: an emit that has copied the weights into its own graph gives them back
    before its next, memory-hungry step. The module cannot compute afterwards."""
    import torch

    for parameter in module.parameters():
        parameter.data = torch.empty(0, dtype=parameter.dtype)


def family_of(model_type: str) -> Family | None:
    return MODELS.get(model_type) or ENCODERS.get(model_type)


def supported_model_types() -> list[str]:
    return sorted([*MODELS, *ENCODERS])


def build(spec: DecoderSpec | EncoderSpec, max_positions: int | None = None) -> Decoder | Encoder:
    """The untrained model a spec describes."""
    return Encoder(spec) if isinstance(spec, EncoderSpec) else Decoder(spec, max_positions)


__all__ = ["ENCODERS", "MODELS", "REFUSED_ENCODERS", "ConfigError", "Decoder", "DecoderSpec", "Encoder",
           "EncoderSpec", "Family", "HFConfig", "build", "family_of", "release_weights", "supported_model_types"]
