"""The decoder math, written once for every family.

A family (llama, qwen2, qwen3, mistral, phi3, gpt2, gptj, ...) is a `DecoderSpec`: which norm, which MLP, which
position scheme, which biases. The runtimes differ only in how the KV cache enters and leaves
the graph; that difference lives in a cache object passed to `Decoder.forward` (see cache.py),
never in copies of the model.

Shapes used throughout: B batch, T query tokens of this call, S key positions visible to this
call (the cache length for a static cache), H query heads, K kv heads, D head_dim, E hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RopeScaling:
    """Static RoPE frequency scaling. `kind` follows HF `rope_type`: "linear" or "llama3"."""

    kind: Literal["linear", "llama3"]
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class DecoderSpec:
    """Everything the math needs, normalized from a family's HF config."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    norm: Literal["rms", "layer"] = "rms"
    norm_eps: float = 1e-6
    mlp: Literal["gated", "plain"] = "gated"
    activation: str = "silu"
    positions: Literal["rope", "learned"] = "rope"
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    qk_norm: bool = False  # RMSNorm over each head's q and k before RoPE (Qwen3, Gemma 3)
    rotary_dim: int | None = None  # RoPE on the first rotary_dim dims of each head only (None: all; Phi-3)
    parallel_block: bool = False  # attention and MLP both read one norm of x, their sum is added (GPT-J)
    head_bias: bool = False  # the LM head has a bias (GPT-J)
    # Per layer: its sliding window, or None for global attention (GPT-Neo, Gemma 3); None here:
    # every layer has `sliding_window`.
    layer_windows: tuple[int | None, ...] | None = None
    # The factor on q.k (None: 1/sqrt(head_dim)); GPT-Neo uses 1.0, Gemma 3 query_pre_attn_scalar**-0.5.
    attention_scale: float | None = None
    # The RoPE base of the layers that have a sliding window, when it differs from `rope_theta`
    # (Gemma 3: 10k on local layers, 1M on global ones; `rope_scaling` is the global layers' only).
    local_rope_theta: float | None = None
    # Norms on the attention and MLP outputs too, before each residual add (Gemma 2/3: four per block).
    sandwich_norms: bool = False
    # A factor on the embedding rows as gathered, not on the tied head (Gemma: sqrt(hidden_size)).
    embedding_scale: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def windows(self) -> list[int | None]:
        """Each layer's sliding window (None: global attention)."""
        return list(self.layer_windows) if self.layer_windows is not None else [self.sliding_window] * self.num_layers

    @property
    def rope_dim(self) -> int:
        """How many leading dims of each head RoPE rotates."""
        return self.rotary_dim or self.head_dim

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "head_dim", "intermediate_size", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_attention_heads ({self.num_heads}) is not a multiple of "
                             f"num_key_value_heads ({self.num_kv_heads})")
        if self.positions == "rope" and self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if self.rotary_dim is not None and not (0 < self.rotary_dim <= self.head_dim and self.rotary_dim % 2 == 0):
            raise ValueError(f"the rotary dimension must be even and within head_dim ({self.head_dim}), "
                             f"got {self.rotary_dim}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {self.activation!r} "
                             f"(supported: {', '.join(sorted(ACTIVATIONS))})")
        if not (self.norm_eps > 0):
            raise ValueError(f"norm eps must be positive, got {self.norm_eps!r}")
        if self.local_rope_theta is not None and not (self.positions == "rope" and self.local_rope_theta > 0):
            raise ValueError(f"a local RoPE base needs RoPE positions and a positive value, got {self.local_rope_theta!r}")
        if self.sandwich_norms and self.parallel_block:
            raise ValueError("sandwich norms and a parallel block do not combine")
        if self.layer_windows is not None and (len(self.layer_windows) != self.num_layers or any(
                w is not None and (not isinstance(w, int) or w <= 0) for w in self.layer_windows)):
            raise ValueError(f"layer_windows needs one positive window (or None) per layer ({self.num_layers}), "
                             f"got {self.layer_windows!r}")

    @property
    def num_parameters(self) -> int:
        e, f, v = self.hidden_size, self.intermediate_size, self.vocab_size
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        attn = e * q + 2 * e * kv + q * e + (q + 2 * kv if self.qkv_bias else 0) + (e if self.o_bias else 0)
        mlp = (3 if self.mlp == "gated" else 2) * e * f + ((2 * f + e) if self.mlp_bias else 0)
        norms = (1 if self.parallel_block else 4 if self.sandwich_norms else 2) * (1 if self.norm == "rms" else 2) * e \
            + (2 * self.head_dim if self.qk_norm else 0)
        per_layer = attn + mlp + norms
        head = (0 if self.tie_word_embeddings else v * e) + (v if self.head_bias else 0)
        learned = self.max_position_embeddings * e if self.positions == "learned" else 0
        final_norm = e if self.norm == "rms" else 2 * e
        return v * e + learned + self.num_layers * per_layer + final_norm + head


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    # Written out rather than F.gelu(approximate="tanh"): coremltools 9 converts the latter from
    # torch.export as EXACT gelu (it reads the mode positionally; export passes it by keyword).
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


ACTIVATIONS = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": F.relu,
}


class RMSNorm(nn.Module):
    """Written by hand: nn.RMSNorm does not convert in coremltools 9.0 (torch 2.13).

    The statistics are computed in fp32 whatever the input dtype, because x**2 overflows fp16
    for |x| > ~256.
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)


def make_norm(spec: DecoderSpec) -> nn.Module:
    return RMSNorm(spec.hidden_size, spec.norm_eps) if spec.norm == "rms" else LayerNorm(spec.hidden_size, spec.norm_eps)


def rope_inverse_frequencies(spec: DecoderSpec, local: bool = False) -> torch.Tensor:
    """HF-compatible inverse frequencies, including static scaling (linear, llama3). `local`: those
    of the sliding-window layers when they have a base of their own (no scaling there)."""
    d = spec.rope_dim
    theta = spec.local_rope_theta if local and spec.local_rope_theta is not None else spec.rope_theta
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    scaling = None if local and spec.local_rope_theta is not None else spec.rope_scaling
    if scaling is None:
        return inv_freq.float()
    if scaling.kind == "linear":
        return (inv_freq / scaling.factor).float()
    # llama3: long wavelengths are divided by `factor`, short ones kept, a smooth ramp between.
    old_ctx = scaling.original_max_position_embeddings
    low_wavelen = old_ctx / scaling.low_freq_factor
    high_wavelen = old_ctx / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_ctx / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled).float()


class RotaryTables(nn.Module):
    """Precomputed cos/sin for every position up to the context length.

    Tables instead of computing sin/cos in the graph: one gather per call, identical numerics on
    every runtime, and the exporters can keep them out of weight compression by name.
    """

    def __init__(self, spec: DecoderSpec, max_positions: int, local: bool = False):
        super().__init__()
        inv_freq = rope_inverse_frequencies(spec, local)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)  # [P, D/2]
        angles = torch.cat([angles, angles], dim=-1)  # [P, D]: HF's rotate_half layout
        self.register_buffer("rope_cos", angles.cos(), persistent=False)
        self.register_buffer("rope_sin", angles.sin(), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # positions [B, T] -> cos, sin [B, 1, T, D] (broadcast over heads)
        return self.rope_cos[positions].unsqueeze(1), self.rope_sin[positions].unsqueeze(1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    rotated_dims = cos.shape[-1]
    if rotated_dims < x.shape[-1]:  # partial rotary: the rest of each head passes through
        return torch.cat([apply_rope(x[..., :rotated_dims], cos, sin), x[..., rotated_dims:]], dim=-1)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, spec: DecoderSpec, layer_index: int):
        super().__init__()
        self.layer_index = layer_index
        self.num_heads, self.num_kv_heads, self.head_dim = spec.num_heads, spec.num_kv_heads, spec.head_dim
        e = spec.hidden_size
        self.q_proj = nn.Linear(e, self.num_heads * self.head_dim, bias=spec.qkv_bias)
        self.k_proj = nn.Linear(e, self.num_kv_heads * self.head_dim, bias=spec.qkv_bias)
        self.v_proj = nn.Linear(e, self.num_kv_heads * self.head_dim, bias=spec.qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, e, bias=spec.o_bias)
        # Every attention kernel scales q.k by 1/sqrt(head_dim); another scale is folded into q.
        self.q_factor = None if spec.attention_scale is None else spec.attention_scale * math.sqrt(self.head_dim)
        if spec.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, spec.norm_eps)
            self.k_norm = RMSNorm(self.head_dim, spec.norm_eps)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None, cache) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim)  # [B,T,H,D]
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim)  # [B,T,K,D]
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if self.q_factor is not None:
            q = q * self.q_factor
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim)
        if getattr(cache, "token_major", False):
            # The cache takes [B,T,H,D] as projected (ExecuTorch's LLM kernels): no transposes,
            # which are copies in an exported graph.
            if rope is not None:
                cos, sin = (r.transpose(1, 2) for r in rope)  # [B,T,1,D]
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            return self.o_proj(cache.attend(self.layer_index, q, k, v).reshape(b, t, -1))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B,H,T,D], [B,K,T,D]
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.o_proj(cache.attend(self.layer_index, q, k, v).transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, spec: DecoderSpec):
        super().__init__()
        e, f = spec.hidden_size, spec.intermediate_size
        self.gated = spec.mlp == "gated"
        if self.gated:
            self.gate_proj = nn.Linear(e, f, bias=spec.mlp_bias)
        self.up_proj = nn.Linear(e, f, bias=spec.mlp_bias)
        self.down_proj = nn.Linear(f, e, bias=spec.mlp_bias)
        self.act = ACTIVATIONS[spec.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, spec: DecoderSpec, layer_index: int):
        super().__init__()
        self.parallel = spec.parallel_block
        self.input_norm = make_norm(spec)
        self.attn = Attention(spec, layer_index)
        if not self.parallel:
            self.post_attention_norm = make_norm(spec)  # the MLP's input norm (Llama's name for it)
        if spec.sandwich_norms:
            self.attn_output_norm, self.mlp_output_norm = make_norm(spec), make_norm(spec)
        self.mlp = MLP(spec)

    def forward(self, x, rope, cache):
        if self.parallel:
            h = self.input_norm(x)
            return x + self.attn(h, rope, cache) + self.mlp(h)
        h = self.attn(self.input_norm(x), rope, cache)
        x = x + (self.attn_output_norm(h) if hasattr(self, "attn_output_norm") else h)
        h = self.mlp(self.post_attention_norm(x))
        return x + (self.mlp_output_norm(h) if hasattr(self, "mlp_output_norm") else h)


class Decoder(nn.Module):
    """Token ids and positions in, logits out; the KV cache is whatever `cache` implements.

    forward(tokens [B,T] int64, positions [B,T] int64, cache) -> logits [B,T,V] fp32
    """

    def __init__(self, spec: DecoderSpec, max_positions: int | None = None):
        super().__init__()
        self.spec = spec
        self.max_positions = max_positions or spec.max_position_embeddings
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        if spec.positions == "learned":
            self.embed_positions = nn.Embedding(spec.max_position_embeddings, spec.hidden_size)
        else:
            self.rotary = RotaryTables(spec, self.max_positions)
            if spec.local_rope_theta is not None:
                self.rotary_local = RotaryTables(spec, self.max_positions, local=True)
        self.layers = nn.ModuleList(Block(spec, i) for i in range(spec.num_layers))
        self.norm = make_norm(spec)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=spec.head_bias)
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight  # one tensor, stored once

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, cache, last_only: bool = False) -> torch.Tensor:
        """`last_only`: logits for the last position only ([B,1,V]), for runtimes that sample
        from it; a prefill then does not multiply all T positions by the [V,E] head."""
        x = self.embed_tokens(tokens)
        if self.spec.embedding_scale is not None:
            x = x * self.spec.embedding_scale
        ropes = [None] * len(self.layers)
        if self.spec.positions == "learned":
            x = x + self.embed_positions(positions)
        else:
            rope = self.rotary(positions)
            local = self.rotary_local(positions) if hasattr(self, "rotary_local") else rope
            ropes = [rope if window is None else local for window in self.spec.windows()[: len(self.layers)]]
        for layer, rope in zip(self.layers, ropes, strict=True):
            x = layer(x, rope, cache)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x))
