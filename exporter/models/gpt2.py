"""GPT-2 family: LayerNorm, learned positions, GELU MLP, biases everywhere.

Its checkpoints store Conv1D weights as [in, out] (transposed against nn.Linear) and q/k/v fused
in one `c_attn` tensor; the weight rules below split and transpose them at load time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .decoder import DecoderSpec
from .family import ConfigError, Family, HFConfig, WeightRule, plausible_context, positive_float, positive_int


def check_gpt_shape(config: HFConfig) -> None:
    """The checks every GPT-2-style config (n_embd, n_layer, n_head, n_inner, n_positions) needs;
    fills n_inner's default (4 x n_embd)."""
    positive_int(config, "vocab_size", "n_embd", "n_layer", "n_head", "n_positions")
    positive_float(config, "layer_norm_epsilon")
    plausible_context(config, "n_positions")
    if config.n_inner is None:
        config.n_inner = 4 * config.n_embd
    positive_int(config, "n_inner")
    if config.n_embd % config.n_head:
        raise ConfigError(f"config.json: n_embd ({config.n_embd}) is not divisible by n_head ({config.n_head})")


@dataclass
class GPT2Config(HFConfig):
    vocab_size: int = 50257
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    n_positions: int = 1024
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    reorder_and_upcast_attn: bool = False

    def __post_init__(self) -> None:
        check_gpt_shape(self)
        # These change the attention math; nothing we export uses them, so refuse rather than differ.
        if not self.scale_attn_weights or self.scale_attn_by_inverse_layer_idx:
            raise ConfigError("config.json: gpt2 attention scaling variants "
                              "(scale_attn_weights=false, scale_attn_by_inverse_layer_idx) are not supported")

    def to_spec(self) -> DecoderSpec:
        try:
            return DecoderSpec(
                vocab_size=self.vocab_size, hidden_size=self.n_embd, num_layers=self.n_layer,
                num_heads=self.n_head, num_kv_heads=self.n_head, head_dim=self.n_embd // self.n_head,
                intermediate_size=self.n_inner, max_position_embeddings=self.n_positions, norm="layer",
                norm_eps=self.layer_norm_epsilon, mlp="plain", activation=self.activation_function,
                positions="learned", qkv_bias=True, o_bias=True, mlp_bias=True,
                tie_word_embeddings=self.tie_word_embeddings)
        except ValueError as e:
            raise ConfigError(f"config.json: {e}") from None


def _transpose(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return (t.t().contiguous(),)


def _split_qkv_weight(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    # Conv1D c_attn.weight [E, 3E] -> three nn.Linear weights [E, E]
    return tuple(part.t().contiguous() for part in t.chunk(3, dim=1))


def _split_qkv_bias(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(part.contiguous() for part in t.chunk(3, dim=0))


_QKV = tuple(f"layers.{{i}}.attn.{p}_proj" for p in "qkv")
GPT2_WEIGHTS = (
    WeightRule("transformer.wte.weight", ("embed_tokens.weight",)),
    WeightRule("transformer.wpe.weight", ("embed_positions.weight",)),
    WeightRule("transformer.ln_f.weight", ("norm.weight",)),
    WeightRule("transformer.ln_f.bias", ("norm.bias",)),
    WeightRule("lm_head.weight", ("lm_head.weight",)),
    WeightRule("transformer.h.{i}.ln_1.weight", ("layers.{i}.input_norm.weight",)),
    WeightRule("transformer.h.{i}.ln_1.bias", ("layers.{i}.input_norm.bias",)),
    WeightRule("transformer.h.{i}.ln_2.weight", ("layers.{i}.post_attention_norm.weight",)),
    WeightRule("transformer.h.{i}.ln_2.bias", ("layers.{i}.post_attention_norm.bias",)),
    WeightRule("transformer.h.{i}.attn.c_attn.weight", tuple(f"{p}.weight" for p in _QKV), _split_qkv_weight),
    WeightRule("transformer.h.{i}.attn.c_attn.bias", tuple(f"{p}.bias" for p in _QKV), _split_qkv_bias),
    WeightRule("transformer.h.{i}.attn.c_proj.weight", ("layers.{i}.attn.o_proj.weight",), _transpose),
    WeightRule("transformer.h.{i}.attn.c_proj.bias", ("layers.{i}.attn.o_proj.bias",)),
    WeightRule("transformer.h.{i}.mlp.c_fc.weight", ("layers.{i}.mlp.up_proj.weight",), _transpose),
    WeightRule("transformer.h.{i}.mlp.c_fc.bias", ("layers.{i}.mlp.up_proj.bias",)),
    WeightRule("transformer.h.{i}.mlp.c_proj.weight", ("layers.{i}.mlp.down_proj.weight",), _transpose),
    WeightRule("transformer.h.{i}.mlp.c_proj.bias", ("layers.{i}.mlp.down_proj.bias",)),
)

# Old checkpoints carry the causal-mask buffers; the mask is rebuilt by the cache convention.
GPT2_UNUSED = (r"transformer\.h\.\d+\.attn\.(bias|masked_bias)",)

FAMILY = Family(
    model_type="gpt2", config_class=GPT2Config, rules=GPT2_WEIGHTS, unused=GPT2_UNUSED,
    tiny_config={"model_type": "gpt2", "vocab_size": 256, "n_embd": 64, "n_layer": 2, "n_head": 4,
                 "n_positions": 256, "bos_token_id": 1, "eos_token_id": 2},
    description="GPT-2: LayerNorm, learned positions, GELU MLP, fused Conv1D q/k/v",
    test_variants=(("tied", {}),),
)
