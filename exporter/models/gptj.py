"""GPT-J family: one LayerNorm feeding attention and the MLP in parallel (their outputs summed
into the residual), RoPE on the first `rotary_dim` dims of each head with GPT-J's interleaved
pairs, no q/k/v/out biases, a plain GELU MLP with biases, and a biased, untied LM head.

Interleaved RoPE rotates pairs (x0, x1), (x2, x3), ...; the decoder rotates (x_j, x_{j+r/2}). The
two are the same rotation after one fixed permutation of each head's rotary dims, applied to q
and k alike, which leaves every attention score unchanged: the q/k weights are permuted at load
time, so no runtime needs an interleaved RoPE kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .decoder import DecoderSpec
from .family import ConfigError, Family, HFConfig, SpecTransform, WeightRule
from .gpt2 import check_gpt_shape


@dataclass
class GPTJConfig(HFConfig):
    vocab_size: int = 50400
    n_embd: int = 4096
    n_layer: int = 28
    n_head: int = 16
    rotary_dim: int | None = 64
    n_inner: int | None = None
    n_positions: int = 2048
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        check_gpt_shape(self)
        head_dim = self.n_embd // self.n_head
        if self.rotary_dim is not None and not (0 < self.rotary_dim <= head_dim and self.rotary_dim % 2 == 0):
            raise ConfigError(f"config.json: rotary_dim must be an even number up to the head size ({head_dim}), "
                              f"got {self.rotary_dim!r}")
        if self.tie_word_embeddings:
            raise ConfigError("config.json: tie_word_embeddings=true is not supported for gptj (its head has a bias "
                              "the embedding does not)")

    def to_spec(self) -> DecoderSpec:
        head_dim = self.n_embd // self.n_head
        try:
            return DecoderSpec(
                vocab_size=self.vocab_size, hidden_size=self.n_embd, num_layers=self.n_layer,
                num_heads=self.n_head, num_kv_heads=self.n_head, head_dim=head_dim,
                intermediate_size=self.n_inner, max_position_embeddings=self.n_positions, norm="layer",
                norm_eps=self.layer_norm_epsilon, mlp="plain", activation=self.activation_function,
                positions="rope", rope_theta=10000.0, mlp_bias=True, parallel_block=True, head_bias=True,
                rotary_dim=None if self.rotary_dim in (None, head_dim) else self.rotary_dim)
        except ValueError as e:
            raise ConfigError(f"config.json: {e}") from None


def _deinterleave_rotary_rows(t: torch.Tensor, spec: DecoderSpec) -> tuple[torch.Tensor, ...]:
    """q/k weight rows [H*D, E]: within each head, the rotary rows 0,2,4,...,1,3,5,... (GPT-J's
    pairs become the decoder's halves); the rows past rotary_dim stay in place."""
    r, d = spec.rope_dim, spec.head_dim
    order = torch.cat([torch.arange(0, r, 2), torch.arange(1, r, 2), torch.arange(r, d)])
    heads = t.view(-1, d, t.shape[-1])
    return (heads[:, order].reshape(t.shape).contiguous(),)


GPTJ_WEIGHTS = (
    WeightRule("transformer.wte.weight", ("embed_tokens.weight",)),
    WeightRule("transformer.ln_f.weight", ("norm.weight",)),
    WeightRule("transformer.ln_f.bias", ("norm.bias",)),
    WeightRule("lm_head.weight", ("lm_head.weight",)),
    WeightRule("lm_head.bias", ("lm_head.bias",)),
    WeightRule("transformer.h.{i}.ln_1.weight", ("layers.{i}.input_norm.weight",)),
    WeightRule("transformer.h.{i}.ln_1.bias", ("layers.{i}.input_norm.bias",)),
    WeightRule("transformer.h.{i}.attn.q_proj.weight", ("layers.{i}.attn.q_proj.weight",),
               SpecTransform(_deinterleave_rotary_rows)),
    WeightRule("transformer.h.{i}.attn.k_proj.weight", ("layers.{i}.attn.k_proj.weight",),
               SpecTransform(_deinterleave_rotary_rows)),
    WeightRule("transformer.h.{i}.attn.v_proj.weight", ("layers.{i}.attn.v_proj.weight",)),
    WeightRule("transformer.h.{i}.attn.out_proj.weight", ("layers.{i}.attn.o_proj.weight",)),
    WeightRule("transformer.h.{i}.mlp.fc_in.weight", ("layers.{i}.mlp.up_proj.weight",)),
    WeightRule("transformer.h.{i}.mlp.fc_in.bias", ("layers.{i}.mlp.up_proj.bias",)),
    WeightRule("transformer.h.{i}.mlp.fc_out.weight", ("layers.{i}.mlp.down_proj.weight",)),
    WeightRule("transformer.h.{i}.mlp.fc_out.bias", ("layers.{i}.mlp.down_proj.bias",)),
)

# Old checkpoints carry the causal-mask buffers; the mask is rebuilt by the cache convention.
GPTJ_UNUSED = (r"transformer\.h\.\d+\.attn\.(bias|masked_bias)",)

FAMILY = Family(
    model_type="gptj", config_class=GPTJConfig, rules=GPTJ_WEIGHTS, unused=GPTJ_UNUSED,
    tiny_config={"model_type": "gptj", "vocab_size": 256, "n_embd": 64, "n_layer": 2, "n_head": 4, "rotary_dim": 8,
                 "n_positions": 256, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False},
    description="GPT-J: parallel attention and MLP from one LayerNorm, interleaved partial RoPE, biased head",
    test_variants=(("rotary-8-of-16", {}), ("rotary-full-head", {"rotary_dim": 16})),
)
