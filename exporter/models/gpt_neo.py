"""GPT-Neo family: GPT-2's layout (LayerNorm, learned positions, GELU MLP with biases, tied head)
with separate q/k/v projections without biases, attention that is NOT scaled by 1/sqrt(head_dim),
and layers that alternate between global and local attention (`attention_types`, a sliding window
of `window_size` keys on the local ones)."""

from __future__ import annotations

from dataclasses import dataclass

from .decoder import DecoderSpec
from .family import ConfigError, Family, HFConfig, WeightRule, plausible_context, positive_float, positive_int


@dataclass
class GPTNeoConfig(HFConfig):
    vocab_size: int = 50257
    max_position_embeddings: int = 2048
    hidden_size: int = 2048
    num_layers: int = 24
    attention_types: list | None = None
    num_heads: int = 16
    intermediate_size: int | None = None
    window_size: int = 256
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    tie_word_embeddings: bool = True

    def __post_init__(self) -> None:
        positive_int(self, "vocab_size", "hidden_size", "num_layers", "num_heads", "max_position_embeddings",
                     "window_size")
        positive_float(self, "layer_norm_epsilon")
        plausible_context(self, "max_position_embeddings")
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        positive_int(self, "intermediate_size")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"config.json: hidden_size ({self.hidden_size}) is not divisible by "
                              f"num_heads ({self.num_heads})")
        if self.attention_types is None:
            self.attention_types = [[["global", "local"], self.num_layers // 2]]
        try:  # [[["global", "local"], 12]] -> one type per layer
            self.layer_types = [kind for kinds, repeat in self.attention_types for _ in range(repeat) for kind in kinds]
        except (TypeError, ValueError):
            raise ConfigError(f"config.json: attention_types must look like [[[\"global\", \"local\"], 12]], "
                              f"got {self.attention_types!r}") from None
        unknown = sorted(set(self.layer_types) - {"global", "local"})
        if unknown or len(self.layer_types) != self.num_layers:
            raise ConfigError(f"config.json: attention_types gives {len(self.layer_types)} layers of types "
                              f"{sorted(set(self.layer_types))}; expected {self.num_layers} of global/local")

    def to_spec(self) -> DecoderSpec:
        try:
            return DecoderSpec(
                vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
                num_heads=self.num_heads, num_kv_heads=self.num_heads, head_dim=self.hidden_size // self.num_heads,
                intermediate_size=self.intermediate_size, max_position_embeddings=self.max_position_embeddings,
                norm="layer", norm_eps=self.layer_norm_epsilon, mlp="plain", activation=self.activation_function,
                positions="learned", qkv_bias=False, o_bias=True, mlp_bias=True,
                tie_word_embeddings=self.tie_word_embeddings, attention_scale=1.0,
                layer_windows=tuple(self.window_size if kind == "local" else None for kind in self.layer_types))
        except ValueError as e:
            raise ConfigError(f"config.json: {e}") from None


_LAYER = "transformer.h.{i}"
GPT_NEO_WEIGHTS = (
    WeightRule("transformer.wte.weight", ("embed_tokens.weight",)),
    WeightRule("transformer.wpe.weight", ("embed_positions.weight",)),
    WeightRule("transformer.ln_f.weight", ("norm.weight",)),
    WeightRule("transformer.ln_f.bias", ("norm.bias",)),
    WeightRule("lm_head.weight", ("lm_head.weight",)),
    *(WeightRule(f"{_LAYER}.{theirs}.{w}", (f"layers.{{i}}.{ours}.{w}",))
      for theirs, ours in (("ln_1", "input_norm"), ("ln_2", "post_attention_norm"), ("mlp.c_fc", "mlp.up_proj"),
                           ("mlp.c_proj", "mlp.down_proj"), ("attn.attention.out_proj", "attn.o_proj"))
      for w in ("weight", "bias")),
    *(WeightRule(f"{_LAYER}.attn.attention.{p}_proj.weight", (f"layers.{{i}}.attn.{p}_proj.weight",)) for p in "qkv"),
)

# Checkpoints may carry the causal-mask buffers; masks are rebuilt by the cache convention.
GPT_NEO_UNUSED = (r"transformer\.h\.\d+\.attn\.attention\.(bias|masked_bias)",)

FAMILY = Family(
    model_type="gpt_neo", config_class=GPTNeoConfig, rules=GPT_NEO_WEIGHTS, unused=GPT_NEO_UNUSED,
    # A window of 24 keys on the local layers, shorter than the test prompts: the window is exercised.
    tiny_config={"model_type": "gpt_neo", "vocab_size": 256, "hidden_size": 64, "num_layers": 4, "num_heads": 4,
                 "attention_types": [[["global", "local"], 2]], "window_size": 24, "max_position_embeddings": 256,
                 "bos_token_id": 1, "eos_token_id": 2},
    description="GPT-Neo: global and local (windowed) attention layers, unscaled attention, learned positions",
    test_variants=(("global-local-window-24", {}),
                   ("local-first-window-16", {"attention_types": [[["local", "global"], 2]], "window_size": 16})),
)
