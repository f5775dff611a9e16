"""KV-cache conventions: the one seam between the decoder math and a runtime.

`Decoder.forward` calls `cache.attend(layer_index, q, k, v)` in every layer with this call's
queries and new keys/values ([B,H,T,D] and [B,K,T,D]); the cache stores what it must and returns
the attention output [B,H,T,D]. A cache whose `token_major` attribute is true gets and returns
[B,T,H,D] instead. Each runtime module supplies the convention its runtime expects;
the ones here serve the reference and ExecuTorch (static in-place cache) and training (no cache).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def expand_kv_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B,K,S,D] -> [B,H,S,D] for grouped-query attention (each kv head serves H/K query heads)."""
    b, k, s, d = x.shape
    if k == num_heads:
        return x
    return x[:, :, None].expand(b, k, num_heads // k, s, d).reshape(b, num_heads, s, d)


def causal_mask(query_positions: torch.Tensor, key_positions: torch.Tensor,
                sliding_window: int | None) -> torch.Tensor:
    """Boolean [T,S] mask: True where query at position p may attend to a key at position j."""
    q = query_positions[:, None]
    k = key_positions[None, :]
    allowed = k <= q
    if sliding_window is not None:
        allowed = allowed & (k > q - sliding_window)
    return allowed


def per_layer(windows, num_layers: int | None = None) -> list[int | None]:
    """One window (or None) per layer from a single window or a per-layer list."""
    if isinstance(windows, list | tuple):
        return list(windows)
    return [windows] * (num_layers or 0)


def layer_masks(query_positions, key_positions, windows: list[int | None]) -> dict[int | None, torch.Tensor]:
    """The causal mask of each distinct window among the layers' (built once each)."""
    return {w: causal_mask(query_positions, key_positions, w) for w in dict.fromkeys(windows)}


def masked_attention(q, k, v, mask):
    """q [B,H,T,D], k/v [B,K,S,D], mask bool broadcastable to [B,H,T,S] -> [B,H,T,D]."""
    h = q.shape[1]
    return F.scaled_dot_product_attention(q, expand_kv_heads(k, h), expand_kv_heads(v, h), attn_mask=mask)


class NoCache:
    """Full-sequence causal attention over this call's tokens only (training, one-shot scoring).

    Positions are assumed to be 0..T-1, i.e. the call holds the whole sequence. `sliding_window`:
    one window for every layer, or a list with each layer's (None: global).
    """

    def __init__(self, seq_len: int, device=None, sliding_window: int | None | list[int | None] = None):
        pos = torch.arange(seq_len, device=device)
        self.windows = sliding_window
        self.masks = layer_masks(pos, pos, per_layer(sliding_window, 1))

    def attend(self, layer_index, q, k, v):
        window = self.windows[layer_index] if isinstance(self.windows, list | tuple) else self.windows
        return masked_attention(q, k, v, self.masks[window])


class StaticKVCache(nn.Module):
    """A fixed-length cache per layer, [1,K,S,D], written in place at the call's positions.

    Buffers (not parameters, not inputs) so that torch.export turns them into mutable buffers:
    ExecuTorch keeps them alive across calls of one loaded method. Batch size is 1.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, max_seq_len: int, head_dim: int,
                 sliding_window: int | None | list[int | None] = None, dtype=torch.float32):
        super().__init__()
        self.num_layers = num_layers
        self.max_seq_len = max_seq_len
        self.windows = per_layer(sliding_window, num_layers)  # each layer's window (None: global)
        shape = (1, num_kv_heads, max_seq_len, head_dim)
        for i in range(num_layers):
            self.register_buffer(f"k_{i}", torch.zeros(shape, dtype=dtype), persistent=False)
            self.register_buffer(f"v_{i}", torch.zeros(shape, dtype=dtype), persistent=False)

    def reset(self) -> None:
        for i in range(self.num_layers):
            getattr(self, f"k_{i}").zero_()
            getattr(self, f"v_{i}").zero_()

    def bind(self, positions: torch.Tensor) -> _BoundStaticCache:
        """positions [T] int64: the absolute positions of this call's tokens."""
        keys = torch.arange(self.max_seq_len, device=positions.device)
        return _BoundStaticCache(self, positions, layer_masks(positions, keys, self.windows))


class _BoundStaticCache:
    """One call's view of a StaticKVCache: where to write, and what may be read."""

    def __init__(self, cache: StaticKVCache, positions: torch.Tensor, masks: dict[int | None, torch.Tensor]):
        self.cache, self.positions, self.masks = cache, positions, masks

    def attend(self, layer_index, q, k, v):
        k_all = getattr(self.cache, f"k_{layer_index}")
        v_all = getattr(self.cache, f"v_{layer_index}")
        # index_copy_ along the sequence axis: exported as an in-place buffer mutation.
        k_all.index_copy_(2, self.positions, k.to(k_all.dtype))
        v_all.index_copy_(2, self.positions, v.to(v_all.dtype))
        return masked_attention(q, k_all.to(q.dtype), v_all.to(q.dtype), self.masks[self.cache.windows[layer_index]])
