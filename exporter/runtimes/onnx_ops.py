"""What the ONNX export traces: torch custom ops that become onnxruntime's fused operators, the
cache convention that feeds them, and the fused modules swapped into the decoder for the export.

- `slm_export::group_query_attention` -> com.microsoft.GroupQueryAttention: writes the KV cache in
  place when GenAI shares past and present buffers (measured 1.36x faster decode than a Concat
  cache); takes the packed q/k/v projection and, where the head size allows, applies RoPE itself
  from cos/sin tables (do_rotary=1), as the GenAI model builder's graphs do.
- `slm_export::rms_norm` -> SimplifiedLayerNormalization (onnxruntime's RMSNorm kernel). The
  decoder's hand-written RMSNorm exports as Pow/ReduceMean/Add/Sqrt/Reciprocal/Mul, which
  onnxruntime does not fuse (its fusion expects Div).

The shared decoder (exporter/models) is not changed: `fused_modules(decoder)` swaps its RMSNorm,
Attention and Linear modules for FusedRMSNorm, PackedAttention (one q|k|v projection) and
TransposedLinear (weights stored [in, out], as MatMul reads them) while the export runs, and puts
them back afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..models.cache import expand_kv_heads
from ..models.decoder import Attention, Decoder, DecoderSpec, RMSNorm, apply_rope

# --- attention as com.microsoft.GroupQueryAttention ----------------------------------------------


def rotary_in_attention(spec: DecoderSpec) -> bool:
    """Whether GroupQueryAttention applies RoPE itself (do_rotary=1, cos/sin caches [P, D/2]).
    onnxruntime's kernel requires a head size that is a multiple of 16 for that; otherwise (and
    for partial rotary) RoPE stays in the graph and GQA gets rotated q/k."""
    return spec.positions == "rope" and spec.head_dim % 16 == 0 and spec.rope_dim == spec.head_dim


def _rotary_positions(attention_mask: torch.Tensor, t: int) -> torch.Tensor:
    """The positions GroupQueryAttention gives this call's tokens [B, T]: 0..T-1 for a first prompt
    (GenAI right-pads, so real tokens start at 0), else real length - T + 0..T-1."""
    s = attention_mask.shape[1]
    steps = torch.arange(t, device=attention_mask.device)
    if t == s:
        return steps.expand(attention_mask.shape[0], t)
    return attention_mask.sum(1, keepdim=True) - t + steps


def _rotate(x: torch.Tensor, cos_cache: torch.Tensor, sin_cache: torch.Tensor, positions: torch.Tensor):
    """x [B,N,T,D]; caches [P, D/2] (non-interleaved, HF's rotate_half layout); positions [B,T]."""
    cos = torch.cat([cos_cache[positions]] * 2, -1)[:, None]  # [B,1,T,D]
    sin = torch.cat([sin_cache[positions]] * 2, -1)[:, None]
    return apply_rope(x, cos, sin)


@torch.library.custom_op("slm_export::group_query_attention", mutates_args=())
def group_query_attention(query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None,
                          past_k: torch.Tensor, past_v: torch.Tensor, attention_mask: torch.Tensor,
                          cos_cache: torch.Tensor | None, sin_cache: torch.Tensor | None, num_heads: int,
                          kv_num_heads: int, scale: float, window: int
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eager semantics of the ONNX op.

    query [B,T,H*D] with key/value [B,T,K*D], or query [B,T,(H+2K)*D] (packed q|k|v) with key and
    value None; past k/v [B,K,P,D]; attention_mask [B,P+T]; cos/sin caches [max_pos, D/2] or None
    (None: q/k arrive rotated). Returns (out [B,T,H*D], present k/v [B,K,P+T,D]). Keys are
    left-aligned per row (GenAI right-pads); a query in slot s sees slots <= s that the mask marks
    real, and always itself (so a padded row is never fully masked and cannot produce NaN).
    window <= 0: no sliding window."""
    b, t, _ = query.shape
    d = past_k.shape[-1]
    if key is None or value is None:
        query, key, value = query.split([num_heads * d, kv_num_heads * d, kv_num_heads * d], -1)
    q = query.reshape(b, t, num_heads, d).transpose(1, 2)
    k = key.reshape(b, t, kv_num_heads, d).transpose(1, 2)
    if cos_cache is not None and sin_cache is not None:
        positions = _rotary_positions(attention_mask, t)
        q, k = _rotate(q, cos_cache, sin_cache, positions), _rotate(k, cos_cache, sin_cache, positions)
    present_k = torch.cat([past_k, k], 2)
    present_v = torch.cat([past_v, value.reshape(b, t, kv_num_heads, d).transpose(1, 2)], 2)
    s = present_k.shape[2]
    key_slot = torch.arange(s)
    query_slot = torch.arange(t) + (s - t)
    allowed = (key_slot[None, :] <= query_slot[:, None])[None] & (attention_mask[:, None, :] > 0)
    if window > 0:
        allowed = allowed & (key_slot[None, None, :] > query_slot[None, :, None] - window)
    allowed = allowed | (key_slot[None, None, :] == query_slot[None, :, None])
    out = torch.nn.functional.scaled_dot_product_attention(
        q, expand_kv_heads(present_k, num_heads), expand_kv_heads(present_v, num_heads),
        attn_mask=allowed[:, None], scale=scale)
    return out.transpose(1, 2).reshape(b, t, num_heads * d), present_k, present_v


@group_query_attention.register_fake
def _(query, key, value, past_k, past_v, attention_mask, cos_cache, sin_cache, num_heads, kv_num_heads, scale,
      window):
    b, t, _ = query.shape
    kv, p, d = past_k.shape[1], past_k.shape[2], past_k.shape[3]
    return (query.new_empty(b, t, num_heads * d), past_k.new_empty(b, kv, p + t, d),
            past_v.new_empty(b, kv, p + t, d))


class GroupQueryAttentionCache:
    """Cache convention for ONNX Runtime GenAI: past k/v are graph inputs, presents outputs.

    cos/sin caches [max_pos, D/2] (or None) go to GroupQueryAttention, which then rotates q and k;
    `local_tables` (cos, sin), where given, serve the layers with a sliding window instead (Gemma 3's
    second RoPE base)."""

    def __init__(self, past_keys, past_values, attention_mask, sliding_window: int | None | list[int | None],
                 cos_cache: torch.Tensor | None = None, sin_cache: torch.Tensor | None = None,
                 local_tables: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.past_keys, self.past_values, self.mask = past_keys, past_values, attention_mask
        # HF's window admits keys j > p - window; GQA's local_window_size is the same count
        # (checked against the reference on a mistral case with a window shorter than the prompt).
        windows = sliding_window if isinstance(sliding_window, list | tuple) else [sliding_window] * len(past_keys)
        self.windows = [w or 0 for w in windows]  # per layer; 0: global
        self.cos_cache, self.sin_cache = cos_cache, sin_cache
        self.tables = [local_tables if w and local_tables is not None else (cos_cache, sin_cache) for w in self.windows]
        self.present_keys: list[torch.Tensor | None] = [None] * len(past_keys)
        self.present_values: list[torch.Tensor | None] = [None] * len(past_keys)

    def _call(self, layer_index, query, key, value, num_heads, kv_num_heads, rotary: bool):
        d = self.past_keys[layer_index].shape[-1]
        out, pk, pv = torch.ops.slm_export.group_query_attention(
            query, key, value, self.past_keys[layer_index], self.past_values[layer_index], self.mask,
            *(self.tables[layer_index] if rotary else (None, None)), num_heads, kv_num_heads,
            1.0 / math.sqrt(d), self.windows[layer_index])
        self.present_keys[layer_index], self.present_values[layer_index] = pk, pv
        return out

    def attend(self, layer_index, q, k, v):
        """The decoder's seam: q [B,H,T,D], k/v [B,K,T,D] (already rotated) -> [B,H,T,D]."""
        b, h, t, d = q.shape
        kv = k.shape[1]
        out = self._call(layer_index, q.transpose(1, 2).reshape(b, t, h * d), k.transpose(1, 2).reshape(b, t, kv * d),
                         v.transpose(1, 2).reshape(b, t, kv * d), h, kv, rotary=False)
        return out.view(b, t, h, d).transpose(1, 2)

    def attend_packed(self, layer_index, qkv, num_heads: int, kv_num_heads: int):
        """qkv [B,T,(H+2K)*D], not rotated: GQA rotates q and k when the cache has cos/sin tables.
        -> [B,T,H*D]."""
        return self._call(layer_index, qkv, None, None, num_heads, kv_num_heads, rotary=self.cos_cache is not None)


# --- RMSNorm as SimplifiedLayerNormalization ------------------------------------------------------


@torch.library.custom_op("slm_export::rms_norm", mutates_args=())
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The decoder's RMSNorm (statistics in fp32): weight * x / sqrt(mean(x^2) + eps)."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


@rms_norm.register_fake
def _(x, weight, eps):
    return torch.empty_like(x, dtype=torch.promote_types(x.dtype, weight.dtype))


# --- the fused modules ----------------------------------------------------------------------------


class FusedRMSNorm(nn.Module):
    def __init__(self, norm: RMSNorm, factor: float | None = None):
        super().__init__()
        self.eps = norm.eps
        self.weight = norm.weight if factor is None else nn.Parameter(norm.weight.detach() * factor, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.slm_export.rms_norm(x, self.weight, self.eps)


class PackedAttention(nn.Module):
    """The decoder's Attention with q/k/v as one projection [E] -> [(H+2K)*D] (one int4 matmul
    instead of three) feeding GroupQueryAttention in its packed form.

    forward(x [B,T,E], rope, cache) -> [B,T,E]. With `rotary`, RoPE happens inside GQA and the
    decoder's rope tables are not used; otherwise q/k are rotated here (rope given) or not at all
    (learned positions)."""

    def __init__(self, attn: Attention, rotary: bool):
        super().__init__()
        self.layer_index, self.rotary = attn.layer_index, rotary
        self.num_heads, self.num_kv_heads, self.head_dim = attn.num_heads, attn.num_kv_heads, attn.head_dim
        self.o_proj = TransposedLinear(attn.o_proj)
        # A scale on q.k other than 1/sqrt(head_dim) (GPT-Neo, Gemma 3) is folded into the weights
        # that make q last: the q norm's, or else the q rows of the projection.
        factor = attn.q_factor
        if hasattr(attn, "q_norm"):  # per-head q/k norms (Qwen3) run between the projection and GQA
            self.q_norm, self.k_norm = FusedRMSNorm(attn.q_norm, factor), FusedRMSNorm(attn.k_norm)
            factor = None
        self.qkv_proj = TransposedLinear(attn.q_proj, attn.k_proj, attn.v_proj, first_factor=factor)

    def forward(self, x: torch.Tensor, rope, cache) -> torch.Tensor:
        b, t, _ = x.shape
        h, kv, d = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv_proj(x)
        if hasattr(self, "q_norm"):
            q, k, v = qkv[..., : h * d], qkv[..., h * d: (h + kv) * d], qkv[..., (h + kv) * d:]
            q = self.q_norm(q.reshape(b, t, h, d)).reshape(b, t, h * d)
            k = self.k_norm(k.reshape(b, t, kv, d)).reshape(b, t, kv * d)
            qkv = torch.cat([q, k, v], dim=-1)
        if rope is None or self.rotary:
            return self.o_proj(cache.attend_packed(self.layer_index, qkv, h, kv))
        q, k, v = qkv[..., : h * d], qkv[..., h * d: (h + kv) * d], qkv[..., (h + kv) * d:]
        q = apply_rope(q.view(b, t, h, d).transpose(1, 2), *rope)
        k = apply_rope(k.view(b, t, kv, d).transpose(1, 2), *rope)
        out = cache.attend(self.layer_index, q, k, v.view(b, t, kv, d).transpose(1, 2))
        return self.o_proj(out.transpose(1, 2).reshape(b, t, h * d))


class TransposedLinear(nn.Module):
    """nn.Linear with its weight stored transposed, [in, out]: exports as MatMul(x, W) with W the
    initializer itself, the layout MatMul and the quantizers read. (nn.Linear exports as
    MatMul(x, Transpose(W)); folding those Transposes in the ONNX graph rewrote every weight in
    place, which protobuf's arena keeps twice: +500 MB peak on SmolLM2-135M.) Several Linears
    of the same input become one (outputs side by side): the packed q|k|v projection."""

    def __init__(self, *linears: nn.Linear, first_factor: float | None = None):
        """`first_factor`: multiplies the first Linear's outputs (its weight and bias)."""
        super().__init__()
        factors = [first_factor or 1.0] + [1.0] * (len(linears) - 1)
        with torch.no_grad():
            self.weight = nn.Parameter(torch.cat([lin.weight * f for lin, f in zip(linears, factors, strict=True)],
                                                 0).t().contiguous(), requires_grad=False)
            has_bias = linears[0].bias is not None
            self.bias = nn.Parameter(torch.cat([lin.bias * f for lin, f in zip(linears, factors, strict=True)], 0),
                                     requires_grad=False) if has_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight)
        return y if self.bias is None else y + self.bias


@contextmanager
def fused_modules(decoder: Decoder, blocks: range | None = None, outer: bool = True) -> Iterator[Decoder]:
    """Swap RMSNorm, Attention and Linear modules for FusedRMSNorm, PackedAttention and
    TransposedLinear while the `with` block runs: in `blocks` (default: all) and, with `outer`,
    in the decoder's own (final norm, head). The originals are put back afterwards (also on
    error). A tied head stays an nn.Linear: its weight is the embedding's."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    rotary = rotary_in_attention(decoder.spec)
    tied = decoder.lm_head.weight is decoder.embed_tokens.weight
    chosen = [decoder.layers[i] for i in (blocks if blocks is not None else range(len(decoder.layers)))]
    try:
        for parent in [*([decoder] if outer else []), *chosen, *(block.mlp for block in chosen)]:
            for name, child in list(parent.named_children()):
                if isinstance(child, RMSNorm):
                    replacement: nn.Module = FusedRMSNorm(child)
                elif isinstance(child, Attention):
                    replacement = PackedAttention(child, rotary)
                elif isinstance(child, nn.Linear) and not (tied and child is decoder.lm_head):
                    replacement = TransposedLinear(child)
                else:
                    continue
                swapped.append((parent, name, child))
                setattr(parent, name, replacement)
        yield decoder
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)


def fused_block_weights(decoder: Decoder, index: int) -> dict[str, torch.Tensor]:
    """Block `index`'s weights as the fused modules hold them (packed q|k|v, transposed), by
    their ONNX initializer names (decoder.layers.{index}.*). Made one block at a time, so the
    export never holds a second copy of every block."""
    with torch.no_grad(), fused_modules(decoder, range(index, index + 1), outer=False):
        block = decoder.layers[index]
        return {f"decoder.layers.{index}.{name}": t for name, t in block.state_dict(keep_vars=True).items()}


# --- translations into ONNX -----------------------------------------------------------------------


def _register_schemas() -> None:
    """The dynamo exporter builds nodes from onnx.defs schemas, and onnxruntime's contrib ops are
    not in onnx: register the parts we emit. GroupQueryAttention: inputs 0-8 (query ... sin_cache),
    outputs 0-2. SimplifiedLayerNormalization (onnxruntime registers it in the default domain):
    output 0 only."""
    import onnx
    from onnx.defs import OpSchema

    param, option = OpSchema.FormalParameter, OpSchema.FormalParameterOption
    attr, kind = OpSchema.Attribute, OpSchema.AttrType
    floats = ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"]
    if not onnx.defs.has("GroupQueryAttention", "com.microsoft"):
        onnx.defs.register_schema(OpSchema(
            "GroupQueryAttention", "com.microsoft", 1,
            inputs=[param("query", "T"), param("key", "T", param_option=option.Optional),
                    param("value", "T", param_option=option.Optional),
                    param("past_key", "T", param_option=option.Optional),
                    param("past_value", "T", param_option=option.Optional),
                    param("seqlens_k", "M"), param("total_sequence_length", "M"),
                    param("cos_cache", "T", param_option=option.Optional),
                    param("sin_cache", "T", param_option=option.Optional)],
            outputs=[param("output", "T"), param("present_key", "T", param_option=option.Optional),
                     param("present_value", "T", param_option=option.Optional)],
            type_constraints=[("T", floats, ""), ("M", ["tensor(int32)"], "")],
            attributes=[attr("num_heads", kind.INT), attr("kv_num_heads", kind.INT),
                        attr("scale", kind.FLOAT, required=False), attr("do_rotary", kind.INT, required=False),
                        attr("rotary_interleaved", kind.INT, required=False),
                        attr("local_window_size", kind.INT, required=False),
                        attr("softcap", kind.FLOAT, required=False)]))
    if not onnx.defs.has("SimplifiedLayerNormalization", ""):
        onnx.defs.register_schema(OpSchema(
            "SimplifiedLayerNormalization", "", 1,
            inputs=[param("X", "T"), param("scale", "V")],
            outputs=[param("Y", "V")],
            type_constraints=[("T", floats, ""), ("V", floats, "")],
            attributes=[attr("axis", kind.INT, required=False), attr("epsilon", kind.FLOAT, required=False),
                        attr("stash_type", kind.INT, required=False)]))


def translation_table() -> dict:
    """custom_translation_table for torch.onnx.export: our ops -> onnxruntime's fused operators."""
    import onnxscript
    from onnxscript import opset18 as op

    _register_schemas()
    msft = onnxscript.values.Opset("com.microsoft", 1)
    default = onnxscript.values.Opset("", 1)

    def onnx_group_query_attention(query, key, value, past_k, past_v, attention_mask, cos_cache, sin_cache,
                                   num_heads: int, kv_num_heads: int, scale: float, window: int):
        # seqlens_k: per-row real length - 1 (int32 [B]); total_sequence_length: mask width (int32
        # scalar). The builder's graphs compute the same two tensors.
        seqlens_k = op.Cast(op.Sub(op.ReduceSum(attention_mask, op.Constant(value_ints=[1]), keepdims=0),
                                   op.Constant(value_int=1)), to=onnxscript.INT32.dtype)
        total = op.Cast(op.Gather(op.Shape(attention_mask), op.Constant(value_int=1), axis=0),
                        to=onnxscript.INT32.dtype)
        return msft.GroupQueryAttention(query, key, value, past_k, past_v, seqlens_k, total, cos_cache, sin_cache,
                                        num_heads=num_heads, kv_num_heads=kv_num_heads, scale=scale,
                                        do_rotary=int(cos_cache is not None), rotary_interleaved=0,
                                        local_window_size=window if window > 0 else -1, _outputs=3)

    def onnx_rms_norm(x, weight, eps: float):
        # stash_type 1: statistics in fp32, as the decoder's RMSNorm.
        return default.SimplifiedLayerNormalization(x, weight, axis=-1, epsilon=eps, stash_type=1)

    return {torch.ops.slm_export.group_query_attention.default: onnx_group_query_attention,
            torch.ops.slm_export.rms_norm.default: onnx_rms_norm}
