"""Graph-level steps of the ONNX Runtime path: the GroupQueryAttention custom op that carries
attention into ONNX, weight transposes folded for the quantizers, onnxruntime's quantizers, and
the tied embedding shared with the int4 head.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..models.cache import expand_kv_heads

# --- attention as com.microsoft.GroupQueryAttention -------------------------------------------
# The op writes the present KV in place when GenAI shares past and present buffers
# (past_present_share_buffer: true): measured 1.36x faster decode than a Concat cache and a
# faster export. RoPE stays in our graph (do_rotary=0) so every family's own tables are used.


@torch.library.custom_op("slm_export::group_query_attention", mutates_args=())
def group_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past_k: torch.Tensor,
                          past_v: torch.Tensor, attention_mask: torch.Tensor, num_heads: int, kv_num_heads: int,
                          scale: float, window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [B,T,H*D], k/v [B,T,K*D], past [B,K,P,D], attention_mask [B,P+T] -> (out [B,T,H*D],
    present k/v [B,K,P+T,D]). Eager semantics of the ONNX op: keys left-aligned per row (GenAI
    right-pads), a query in slot s sees slots <= s that the mask marks real, and always itself
    (so a padded row is never fully masked and cannot produce NaN). window <= 0: no window."""
    b, t, _ = q.shape
    d = past_k.shape[-1]
    qh = q.view(b, t, num_heads, d).transpose(1, 2)
    present_k = torch.cat([past_k, k.view(b, t, kv_num_heads, d).transpose(1, 2)], 2)
    present_v = torch.cat([past_v, v.view(b, t, kv_num_heads, d).transpose(1, 2)], 2)
    s = present_k.shape[2]
    key_slot = torch.arange(s)
    query_slot = torch.arange(t) + (s - t)
    allowed = (key_slot[None, :] <= query_slot[:, None])[None] & (attention_mask[:, None, :] > 0)
    if window > 0:
        allowed = allowed & (key_slot[None, None, :] > query_slot[None, :, None] - window)
    allowed = allowed | (key_slot[None, None, :] == query_slot[None, :, None])
    out = torch.nn.functional.scaled_dot_product_attention(
        qh, expand_kv_heads(present_k, num_heads), expand_kv_heads(present_v, num_heads),
        attn_mask=allowed[:, None], scale=scale)
    return out.transpose(1, 2).reshape(b, t, num_heads * d), present_k, present_v


@group_query_attention.register_fake
def _(q, k, v, past_k, past_v, attention_mask, num_heads, kv_num_heads, scale, window):
    b, t, _ = q.shape
    kv, p, d = past_k.shape[1], past_k.shape[2], past_k.shape[3]
    return q.new_empty(b, t, num_heads * d), past_k.new_empty(b, kv, p + t, d), past_v.new_empty(b, kv, p + t, d)


def _register_gqa_schema() -> None:
    """The dynamo exporter builds nodes from onnx.defs schemas, and ORT's contrib ops are not in
    onnx: register the subset of GroupQueryAttention we emit (inputs 0-6, outputs 0-2)."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has("GroupQueryAttention", "com.microsoft"):
        return
    param, option = OpSchema.FormalParameter, OpSchema.FormalParameterOption
    attr, kind = OpSchema.Attribute, OpSchema.AttrType
    onnx.defs.register_schema(OpSchema(
        "GroupQueryAttention", "com.microsoft", 1,
        inputs=[param("query", "T"), param("key", "T", param_option=option.Optional),
                param("value", "T", param_option=option.Optional),
                param("past_key", "T", param_option=option.Optional),
                param("past_value", "T", param_option=option.Optional),
                param("seqlens_k", "M"), param("total_sequence_length", "M")],
        outputs=[param("output", "T"), param("present_key", "T", param_option=option.Optional),
                 param("present_value", "T", param_option=option.Optional)],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], ""),
                          ("M", ["tensor(int32)"], "")],
        attributes=[attr("num_heads", kind.INT), attr("kv_num_heads", kind.INT),
                    attr("scale", kind.FLOAT, required=False), attr("do_rotary", kind.INT, required=False),
                    attr("rotary_interleaved", kind.INT, required=False),
                    attr("local_window_size", kind.INT, required=False),
                    attr("softcap", kind.FLOAT, required=False)]))


def translation_table() -> dict:
    """custom_translation_table for torch.onnx.export: our op -> com.microsoft.GroupQueryAttention."""
    import onnxscript
    from onnxscript import opset18 as op

    _register_gqa_schema()
    msft = onnxscript.values.Opset("com.microsoft", 1)

    def onnx_group_query_attention(q, k, v, past_k, past_v, attention_mask, num_heads: int, kv_num_heads: int,
                                   scale: float, window: int):
        # seqlens_k: per-row real length - 1 (int32 [B]); total_sequence_length: mask width (int32 scalar)
        seqlens_k = op.Cast(op.Sub(op.ReduceSum(attention_mask, op.Constant(value_ints=[1]), keepdims=0),
                                   op.Constant(value_int=1)), to=onnxscript.INT32.dtype)
        total = op.Cast(op.Gather(op.Shape(attention_mask), op.Constant(value_int=1), axis=0),
                        to=onnxscript.INT32.dtype)
        return msft.GroupQueryAttention(q, k, v, past_k, past_v, seqlens_k, total, num_heads=num_heads,
                                        kv_num_heads=kv_num_heads, scale=scale, do_rotary=0,
                                        local_window_size=window if window > 0 else -1, _outputs=3)

    return {torch.ops.slm_export.group_query_attention.default: onnx_group_query_attention}


class GroupQueryAttentionCache:
    """Cache convention for ONNX Runtime GenAI: past k/v are graph inputs, presents outputs."""

    def __init__(self, past_keys, past_values, attention_mask, sliding_window: int | None):
        self.past_keys, self.past_values, self.mask = past_keys, past_values, attention_mask
        # HF's window admits keys j > p - window; GQA's local_window_size is the same count
        # (checked against the reference on a mistral case with a window shorter than the prompt).
        self.window = sliding_window or 0
        self.present_keys: list[torch.Tensor | None] = [None] * len(past_keys)
        self.present_values: list[torch.Tensor | None] = [None] * len(past_keys)

    def attend(self, layer_index, q, k, v):
        b, h, t, d = q.shape
        kv = k.shape[1]
        out, pk, pv = torch.ops.slm_export.group_query_attention(
            q.transpose(1, 2).reshape(b, t, h * d), k.transpose(1, 2).reshape(b, t, kv * d),
            v.transpose(1, 2).reshape(b, t, kv * d), self.past_keys[layer_index], self.past_values[layer_index],
            self.mask, h, kv, 1.0 / math.sqrt(d), self.window)
        self.present_keys[layer_index], self.present_values[layer_index] = pk, pv
        return out.view(b, t, h, d).transpose(1, 2)


# --- weights: fold, quantize, share -------------------------------------------------------------


def strip_metadata(model) -> None:
    """The dynamo exporter stores a stack trace per node (~25% of the file); apps need none."""
    for node in model.graph.node:
        del node.metadata_props[:]


def fold_weight_transposes(model) -> None:
    """MatMul(x, Transpose(W)) -> MatMul(x, W^T) so the quantizers see a constant B. The export
    leaves a tied head as Transpose(embedding) because the weight is shared with the Gather."""
    from onnx import numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in list(graph.node):
        users = consumers.get(node.output[0], []) if node.output else []
        if node.op_type != "Transpose" or node.input[0] not in initializers or not users \
                or any(u.op_type != "MatMul" for u in users):
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        weight = numpy_helper.to_array(initializers[node.input[0]])
        name = node.input[0] + "_T"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(np.transpose(weight, perm)), name))
        for user in users:
            user.input[:] = [name if i == node.output[0] else i for i in user.input]
        graph.node.remove(node)


def quantize_nbits(model, bits: int, block_size: int, accuracy_level: int):
    """onnxruntime's MatMulNBits quantizer: weight-only, symmetric, per block."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, is_symmetric=True,
                                     accuracy_level=accuracy_level, op_types_to_quantize=("MatMul",))
    quantizer.process()
    return quantizer.model.model


def quantize_int8_dynamic(model, work_dir: Path):
    """onnxruntime's dynamic int8 quantization (per-channel weights, int8 activations at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = work_dir / "fp32.onnx", work_dir / "int8.onnx"
    onnx.save_model(model, str(src))
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"])
    quantized = onnx.load(str(dst))
    src.unlink()
    dst.unlink()
    return quantized


def share_embedding_with_int4_head(model, block_size: int) -> bool:
    """For a tied model only: gather the embedding rows from the int4 head (GatherBlockQuantized,
    the GenAI model builder's shared-embedding layout) and drop the fp32 table. Returns whether
    the graph had the expected shape to share."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    head = producer.get("logits")
    if head is None or head.op_type != "MatMulNBits" or len(head.input) != 3:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    gather = next((n for n in graph.node if n.op_type == "Gather" and n.input[1] == "input_ids"
                   and n.input[0] in initializers), None)
    if gather is None or attrs.get("bits") != 4:
        return False
    embedding = numpy_helper.to_array(initializers[gather.input[0]])
    vocab, hidden = attrs["N"], attrs["K"]
    if embedding.shape != (vocab, hidden):
        return False
    packed, scales = head.input[1], head.input[2]
    flat = int(np.prod(initializers[packed].dims[1:]))
    shape = packed + "_rows_shape"
    graph.initializer.append(numpy_helper.from_array(np.array([vocab, flat], dtype=np.int64), shape))
    out = gather.output[0]
    gathered = out if flat * 2 == hidden else out + "_padded"
    nodes = [helper.make_node("Reshape", [packed, shape], [packed + "_rows"], name="embed_tokens/Reshape"),
             helper.make_node("GatherBlockQuantized", [packed + "_rows", "input_ids", scales], [gathered],
                              name="embed_tokens/GatherBlockQuantized", domain="com.microsoft", bits=4,
                              block_size=block_size, gather_axis=0, quantize_axis=1)]
    if gathered != out:  # hidden is not a multiple of the block: drop the padding columns
        for suffix, value in (("_s0", [0]), ("_s1", [hidden]), ("_axis", [-1])):
            graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=np.int64), packed + suffix))
        nodes.append(helper.make_node("Slice", [gathered, packed + "_s0", packed + "_s1", packed + "_axis"], [out],
                                      name="embed_tokens/Slice"))
    index = list(graph.node).index(gather)
    graph.node.remove(gather)
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)
    if not any(gather.input[0] in n.input for n in graph.node):
        graph.initializer.remove(initializers[gather.input[0]])
    return True
