"""Graph-level steps of the ONNX Runtime path, on the exported ModelProto: the traced block
repeated for the others, clean-up and the residual-add + norm fusion, the tied head's transpose,
onnxruntime's quantizers, and the tied embedding shared with the int4 head. (What the export
traces is in onnx_ops.py.)
"""

from __future__ import annotations

import ast
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# --- repeat a traced block ------------------------------------------------------------------------
# torch.export and the exporter's decompositions cost ~10 ms per traced op with the 2 x num_layers
# dynamic past inputs: 12.3 s of the 29.5 s export of SmolLM2-135M (30 blocks). Every block of the
# decoder is the same code with its own weights and cache, so the export traces blocks 0 and 1 only
# and block 1's nodes are cloned for blocks 2.. here, with their weights, past inputs and presents.

_LAYER_SCOPE = re.compile(r"^decoder\.layers\.(\d+)$")


def _block_of(node) -> int | None:
    """The decoder block a node was traced in, from the exporter's name-scope metadata."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            for scope in ast.literal_eval(prop.value):
                match = _LAYER_SCOPE.match(scope)
                if match:
                    return int(match.group(1))
    return None


def repeat_block(model, num_layers: int, block_weights: Callable[[int], dict[str, np.ndarray]],
                 windows: list[int | None] | None = None,
                 shared_input: Callable[[int, str], str] | None = None) -> None:
    """model: the export of blocks 0 and 1 (names decoder.layers.{0,1}.*, past_key_values.{0,1}.*,
    present.{0,1}.*). Adds blocks 2..num_layers-1 as copies of block 1's nodes, with
    `block_weights(i)[name]` for every per-block initializer (names decoder.layers.{i}.*). The
    residual stream that enters block 1 (from block 0) and leaves it (for the final norm) is
    chained through the copies; with `windows` (each layer's sliding window, None: global), each
    copy's GroupQueryAttention gets its layer's local_window_size; `shared_input(i, name)` may
    give copy i another graph-wide input than block 1 reads (its layer kind's RoPE tables). Raises
    ExportError when the graph
    does not have that shape."""
    from onnx import NodeProto, numpy_helper

    from ..errors import ExportError

    graph = model.graph
    nodes = list(graph.node)
    blocks = [_block_of(n) for n in nodes]
    first = [n for n, b in zip(nodes, blocks, strict=True) if b == 0]
    template = [n for n, b in zip(nodes, blocks, strict=True) if b == 1]

    def signature(node):
        return node.domain, node.op_type, len(node.input), len(node.output), sorted(a.name for a in node.attribute)

    if not template:
        raise ExportError("cannot repeat decoder block 1: no node carries the exporter's name scope "
                          "metadata (pkg.torch.onnx.name_scopes)")
    # The exporter emits a Constant once and reuses it: block 1 may read block 0's constants.
    if [signature(n) for n in first if n.op_type != "Constant"] \
            != [signature(n) for n in template if n.op_type != "Constant"]:
        raise ExportError("cannot repeat decoder block 1: blocks 0 and 1 exported to different graphs")
    made_by = {o: b for n, b in zip(nodes, blocks, strict=True) if n.op_type != "Constant" for o in n.output if o}
    inside = {o for n in template for o in n.output if o}
    stream_in = {i for n in template for i in n.input if made_by.get(i) == 0}
    stream_out = {i for n, b in zip(nodes, blocks, strict=True) if b != 1 for i in n.input if i in inside}
    if len(stream_in) != 1 or len(stream_out) != 1:
        raise ExportError(f"cannot repeat decoder block 1: it reads {sorted(stream_in)} from block 0 and "
                          f"{sorted(stream_out)} leave it (one residual stream expected)")
    (stream_in,), (stream_out,) = stream_in, stream_out
    initializers = {i.name: i for i in graph.initializer}
    per_block = re.compile(r"(\.layers\.|^past_key_values\.|^present\.)1\.")

    def for_block(name: str, index: int) -> str:
        return per_block.sub(lambda m: f"{m.group(1)}{index}.", name, count=1)

    clones, previous = [], stream_out
    for index in range(2, num_layers):
        renamed = {stream_in: previous}
        for node in template:
            clone = NodeProto()
            clone.CopyFrom(node)
            clone.name = f"layers.{index}/{node.name}"
            inputs = []
            for name in node.input:
                if name in renamed:
                    inputs.append(renamed[name])
                elif per_block.search(name):  # block 1's weights and past_key_values.1.*
                    inputs.append(for_block(name, index))
                else:
                    # shared: attention_mask, cos/sin tables, constants
                    inputs.append(shared_input(index, name) if shared_input else name)
            clone.input[:] = inputs
            if node.op_type == "GroupQueryAttention" and windows is not None:  # each layer's own window
                for attribute in clone.attribute:
                    if attribute.name == "local_window_size":
                        attribute.i = windows[index] or -1
            for name in node.output:
                if name:
                    renamed[name] = for_block(name, index) if name.startswith("present.1.") \
                        else f"layers.{index}/{name}"
            clone.output[:] = [renamed.get(o, o) for o in node.output]
            clones.append(clone)
        previous = renamed[stream_out]
    names = sorted({i for n in template for i in n.input if i in initializers and per_block.search(i)})
    for index in range(2, num_layers):
        weights = block_weights(index)
        for name in names:
            target, source = for_block(name, index), initializers[name]
            array = np.ascontiguousarray(weights[target])
            if array.shape != tuple(source.dims):
                raise ExportError(f"cannot repeat decoder block 1: {target} is {array.shape}, not {tuple(source.dims)}")
            graph.initializer.append(numpy_helper.from_array(array, target))
    last = max(nodes.index(n) for n in template)
    for node in nodes[last + 1:]:
        node.input[:] = [previous if i == stream_out else i for i in node.input]
    del graph.node[:]
    graph.node.extend(nodes[: last + 1] + clones + nodes[last + 1:])
    _repeat_io(graph.input, "past_key_values", num_layers, for_block)
    _repeat_io(graph.output, "present", num_layers, for_block)


def _repeat_io(values, prefix: str, num_layers: int, for_block) -> None:
    """Graph inputs/outputs: {prefix}.{i}.key/value for every block, keys then values (GenAI's and
    io_names' order), copied from block 1's."""
    from onnx import ValueInfoProto

    by_name = {v.name: v for v in values}
    other = [v for v in values if not v.name.startswith(prefix + ".")]
    made = []
    for kind in ("key", "value"):
        for index in range(num_layers):
            name = f"{prefix}.{index}.{kind}"
            if name not in by_name:
                value = ValueInfoProto()
                value.CopyFrom(by_name[f"{prefix}.1.{kind}"])
                value.name = for_block(value.name, index)
                by_name[name] = value
            made.append(by_name[name])
    del values[:]
    values.extend(other + made)


# --- clean-up and fusions -------------------------------------------------------------------------


def strip_metadata(model) -> None:
    """The dynamo exporter stores a stack trace per node (~25% of the file); apps need none."""
    for node in model.graph.node:
        del node.metadata_props[:]


def merge_duplicate_nodes(model) -> int:
    """Common subexpression elimination: a node with the same op, attributes and inputs as an
    earlier one is dropped and its outputs read from the earlier one (each GroupQueryAttention
    computes the same seqlens_k/total_sequence_length from attention_mask). Returns the count."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    seen: dict[tuple, object] = {}
    renamed: dict[str, str] = {}
    kept = []
    for node in graph.node:
        node.input[:] = [renamed.get(i, i) for i in node.input]
        attributes = []
        for attribute in node.attribute:
            copy = type(attribute)()
            copy.CopyFrom(attribute)
            copy.t.name = ""  # a Constant's tensor carries its output's name
            attributes.append(copy.SerializeToString())
        key = (node.domain, node.op_type, tuple(node.input), tuple(attributes), len(node.output))
        if key in seen and not any(o in outputs for o in node.output):
            renamed.update(zip(node.output, seen[key].output, strict=True))
            continue
        seen[key] = node
        kept.append(node)
    dropped = len(graph.node) - len(kept)
    del graph.node[:]
    graph.node.extend(kept)
    return dropped


def drop_unused_inputs(model) -> list[str]:
    """Remove graph inputs no node reads (position_ids when GroupQueryAttention does the RoPE and
    the family has no learned positions), so GenAI does not build and feed them every step."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    dropped = [i for i in model.graph.input if i.name not in used]
    for value in dropped:
        model.graph.input.remove(value)
    return [v.name for v in dropped]


def fuse_skip_norms(model) -> int:
    """Residual Add + RMSNorm/LayerNorm -> com.microsoft.SkipSimplifiedLayerNormalization /
    SkipLayerNormalization, whose fourth output is the sum (the residual stream the next block
    reads): the layout of the GenAI model builder's graphs. onnxruntime does not fuse these itself
    (checked with ORT_ENABLE_ALL). Only Adds of two activations are fused (the decoder's residual
    adds, both [B,T,E]). Returns the number of fused pairs."""
    from onnx import helper

    graph = model.graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    graph_outputs = {o.name for o in graph.output}
    fused = 0
    for norm in list(graph.node):
        if norm.op_type not in ("SimplifiedLayerNormalization", "LayerNormalization") or norm.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in norm.attribute}
        add = producer.get(norm.input[0])
        if attrs.get("axis", -1) != -1 or len(norm.output) != 1 or add is None or add.op_type != "Add" \
                or any(i in constants for i in add.input):
            continue
        rest = [u for u in consumers[add.output[0]] if u is not norm]
        total = add.output[0] if rest or add.output[0] in graph_outputs else ""
        simplified = norm.op_type == "SimplifiedLayerNormalization"
        inputs = [*add.input, norm.input[1]] + ([] if simplified else [norm.input[2]] if len(norm.input) > 2 else [])
        skip = helper.make_node("SkipSimplifiedLayerNormalization" if simplified else "SkipLayerNormalization",
                                inputs, [norm.output[0], "", "", total] if total else [norm.output[0]],
                                name=norm.name + "/Skip", domain="com.microsoft",
                                epsilon=float(attrs.get("epsilon", 1e-5)))
        graph.node.insert(list(graph.node).index(add), skip)
        graph.node.remove(add)
        graph.node.remove(norm)
        fused += 1
    return fused


# --- weights: the tied head's transpose, quantize, share ------------------------------------------


def _consumers(graph) -> dict[str, list]:
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    return users


def _array_view(tensor) -> np.ndarray:
    """The initializer's values, without a copy when they are stored as raw bytes."""
    from onnx import helper, numpy_helper

    if tensor.raw_data and not tensor.external_data:
        dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
        return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(tuple(tensor.dims))
    return numpy_helper.to_array(tensor)


def fold_weight_transposes(model, shared: str = "copy") -> None:
    """MatMul(x, Transpose(W)) -> MatMul(x, W^T) for an initializer W: the quantizers need a
    constant B. The export stores every weight transposed already (onnx_ops.TransposedLinear)
    except a tied head's, which is the embedding table the Gather also reads. For a shared table
    this adds a transposed copy (shared="copy": the int4 path then drops the fp32 table, see
    share_embedding_with_nbits_head), or leaves the table as it is behind
    com.microsoft.FusedMatMul(transB=1) (shared="fused", for fp32: onnxruntime would otherwise
    fold the Transpose into a second copy of the table in model.ort), or leaves the Transpose
    (shared="keep": quantize_nbits reads through it, so the fp32 copy is never made: 1 GB of
    protobuf bytes, and twice that while writing them, for Llama 3.2 1B's table)."""
    from onnx import helper

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    consumers = _consumers(graph)
    for node in list(graph.node):
        users = consumers.get(node.output[0], []) if node.output else []
        if node.op_type != "Transpose" or node.input[0] not in initializers or not users \
                or any(u.op_type != "MatMul" for u in users):
            continue
        source = initializers[node.input[0]]
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        exclusive = len(consumers[source.name]) == 1
        if not exclusive and shared == "keep":
            continue
        if not exclusive and shared == "fused" and perm in (None, [1, 0]):
            for user in users:
                fused = helper.make_node("FusedMatMul", [user.input[0], source.name], list(user.output),
                                         name=user.name + "/FusedMatMul", domain="com.microsoft", transB=1, alpha=1.0)
                graph.node.insert(list(graph.node).index(user), fused)
                graph.node.remove(user)
            graph.node.remove(node)
            continue
        name = source.name if exclusive else source.name + "_T"
        target = source if exclusive else graph.initializer.add()
        weight = _array_view(source)  # before `target` is written: it may be `source`
        transposed = np.transpose(weight, perm)
        # Written field by field, from one C-order copy of the transposed view: to_array /
        # from_array / append cost 1.4 s on SmolLM2-135M's 113 MB table, this 0.2 s.
        target.name, target.data_type = name, source.data_type
        target.raw_data = transposed.tobytes()
        target.dims[:] = transposed.shape
        for field in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data"):
            target.ClearField(field)
        for user in users:
            user.input[:] = [name if i == node.output[0] else i for i in user.input]
        graph.node.remove(node)


def quantize_nbits(model, bits: int, block_size: int, accuracy_level: int, exclude: Sequence[str] = ()):
    """MatMul(x, W) -> com.microsoft.MatMulNBits(x, W_Q<bits>, W_scales) for every MatMul with a
    constant 2-D weight (but the node names in `exclude`): weight-only, symmetric, per block of
    `block_size` rows. The bytes, names and attributes are those of onnxruntime's
    MatMulNBitsQuantizer (its DefaultWeightOnlyQuantizer calls the same C++ kernels,
    quantize_matmul_4bits/8bits; tests/test_onnx.py compares the two graphs), but the work is done
    in place, one weight at a time: an fp32 initializer is overwritten by its packed bytes as soon
    as it is quantized. onnxruntime's quantizer keeps every fp32 initializer until the end, so its
    peak held the fp32 graph beside the quantized one (6.0 GB on the 0.5B shape, 3.0x its fp32
    weights, benchmarks/onnx_memory.py). A MatMul that reads W^T through a Transpose of a
    table other nodes read as it is (a tied head, left by fold_weight_transposes(shared="keep"))
    gets its own packed copy, named and valued as fold's fp32 copy W_T would have been, and the
    Transpose goes. Returns the model."""
    from onnx import TensorProto, helper
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    kernel = {4: quantize_matmul_4bits, 8: quantize_matmul_8bits}[bits]
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    users = _consumers(graph)
    transposed = _transposed_initializers(graph, initializers)
    skip = set(exclude)
    read_through = []
    for index, node in enumerate(list(graph.node)):
        if node.op_type != "MatMul" or len(node.input) != 2:
            continue
        through = transposed.get(node.input[1])
        source = initializers[through.input[0]] if through is not None else initializers.get(node.input[1])
        if source is None or node.name in skip or len(source.dims) != 2 or source.data_type != TensorProto.FLOAT:
            continue
        if through is None:
            rows, cols = source.dims
            weight = _array_view(source)
            name = source.name
        else:  # W^T of a table other nodes read as it is (a tied head): its own quantized copy
            cols, rows = source.dims
            weight = np.ascontiguousarray(_array_view(source).T)
            name = source.name + "_T"  # fold_weight_transposes' name for the copy
            read_through.append(through)
        blocks = (rows + block_size - 1) // block_size
        if blocks * block_size != rows:
            weight = np.pad(weight, ((0, blocks * block_size - rows), (0, 0)))
        per_byte = 8 // bits
        packed = np.zeros((cols, blocks, (block_size + per_byte - 1) // per_byte), dtype=np.uint8)
        scales = np.zeros((cols, blocks), dtype=np.float32)
        zero_points = np.zeros((cols, (blocks + per_byte - 1) // per_byte), dtype=np.uint8)  # unused: symmetric
        kernel(packed, np.ascontiguousarray(weight), scales, zero_points, block_size, cols, rows, True)
        del weight
        # The fp32 bytes go now when this MatMul is their only reader; a shared weight stays for
        # its other readers and the packed bytes are a new initializer.
        target = source if through is None and len(users.get(name, [])) == 1 else graph.initializer.add()
        target.name, target.data_type = f"{name}_Q{bits}", TensorProto.UINT8
        target.raw_data = packed.tobytes()
        target.dims[:] = packed.shape
        del packed
        scale = graph.initializer.add()
        scale.name, scale.data_type, scale.raw_data = f"{name}_scales", TensorProto.FLOAT, scales.tobytes()
        scale.dims[:] = scales.shape
        attributes = {"K": rows, "N": cols, "bits": bits, "block_size": block_size}
        if accuracy_level:  # onnxruntime's quantizer leaves a zero level out (few providers know it)
            attributes["accuracy_level"] = accuracy_level
        graph.node[index].CopyFrom(helper.make_node(
            "MatMulNBits", [node.input[0], target.name, scale.name], list(node.output),
            name=node.name + f"_Q{bits}" if node.name else "", domain="com.microsoft", **attributes))
    for node in read_through:
        if not any(node.output[0] in n.input for n in graph.node):
            graph.node.remove(node)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def _transposed_initializers(graph, initializers) -> dict:
    """Output name -> the Transpose node for every 2-D transpose of an initializer that only
    MatMuls read (fold_weight_transposes(shared="keep") leaves those of shared tables)."""
    consumers = _consumers(graph)
    found = {}
    for node in graph.node:
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if node.op_type == "Transpose" and node.input[0] in initializers and perm in (None, [1, 0]) \
                and consumers.get(node.output[0]) and all(u.op_type == "MatMul" for u in consumers[node.output[0]]):
            found[node.output[0]] = node
    return found


def weight_matmuls(model) -> dict[str, str]:
    """MatMul node name -> its constant weight's initializer name (decoder.layers.<i>.mlp.up_proj...)."""
    initializers = {i.name: i for i in model.graph.initializer}
    transposed = {out: node.input[0] + "_T" for out, node in _transposed_initializers(model.graph, initializers).items()}
    return {n.name: transposed.get(n.input[1], n.input[1]) for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and (n.input[1] in initializers or n.input[1] in transposed)}


def mlp_matmuls(model, layers: Iterable[int]) -> list[str]:
    """The MLP MatMuls (gate, up, down) of the given blocks, by their weights' names."""
    wanted = {f"layers.{i}.mlp." for i in layers}
    return [node for node, weight in weight_matmuls(model).items()
            if any(prefix in weight for prefix in wanted)]


def quantize_int8_dynamic(model, work_dir: Path):
    """onnxruntime's dynamic int8 quantization (per-channel weights, int8 activations at run time)
    of the MatMuls with a constant weight (an encoder's attention scores and weighted values are
    products of two activations: they stay fp32)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = work_dir / "fp32.onnx", work_dir / "int8.onnx"
    weights = list(weight_matmuls(model))
    onnx.save_model(model, str(src))
    # DefaultTensorType: onnx's shape inference cannot type the outputs of onnxruntime's
    # contrib ops (GroupQueryAttention, SkipSimplifiedLayerNormalization); every activation here
    # is fp32.
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                     op_types_to_quantize=["MatMul"], nodes_to_quantize=weights,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    quantized = onnx.load(str(dst))
    src.unlink()
    dst.unlink()
    return quantized


def share_embedding_with_nbits_head(model, block_size: int, bits: int = 4) -> bool:
    """For a tied model only: gather the embedding rows from the 4- or 8-bit head (GatherBlockQuantized,
    the GenAI model builder's shared-embedding layout) and drop the fp32 table. Returns whether
    the graph had the expected shape to share.

    GatherBlockQuantized wants the table 2-D [V, blocks * block_size/2] with scales [V, blocks];
    MatMulNBits insists on [V, blocks, block_size/2] for the same bytes (and refuses 3-D scales,
    which a 3-D GatherBlockQuantized would need). So a Reshape to [0, -1] (keep V, flatten the
    rest) sits between them, and its shape is computed at run time, Min(Shape(attention_mask),
    [0, -1]) (the Shape is the one GroupQueryAttention's inputs already use): with a constant
    shape, onnxruntime's constant folding in the model.ort conversion stores the reshaped table
    as a second initializer (+14.2 MB on SmolLM2-135M: model.ort 99.4 MB vs model.onnx 84.6 MB).
    At run time a Reshape aliases its input, so nothing is copied (measured on a 49152-row table:
    4.3 us per gather with the folded constant shape, 5.0 us with Shape + Min + Reshape)."""
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
    if gather is None or attrs.get("bits") != bits:
        return False
    vocab, hidden = attrs["N"], attrs["K"]
    if tuple(initializers[gather.input[0]].dims) != (vocab, hidden):
        return False
    packed, scales = head.input[1], head.input[2]
    flat = int(np.prod(initializers[packed].dims[1:]))
    keep_flatten = packed + "_keep_flatten"
    graph.initializer.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), keep_flatten))
    out = gather.output[0]
    gathered = out if flat * (8 // bits) == hidden else out + "_padded"
    # Shape(attention_mask) >= [1, 1], so the Min is [0, -1]; merge_duplicate_nodes then shares
    # the Shape with GroupQueryAttention's.
    nodes = [helper.make_node("Shape", ["attention_mask"], [packed + "_mask_shape"], name="embed_tokens/Shape"),
             helper.make_node("Min", [packed + "_mask_shape", keep_flatten], [packed + "_shape"],
                              name="embed_tokens/Min"),
             helper.make_node("Reshape", [packed, packed + "_shape"], [packed + "_rows"], name="embed_tokens/Reshape"),
             helper.make_node("GatherBlockQuantized", [packed + "_rows", "input_ids", scales], [gathered],
                              name="embed_tokens/GatherBlockQuantized", domain="com.microsoft", bits=bits,
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
    merge_duplicate_nodes(model)
    return True


def convert_to_ort(onnx_path: Path, ort_path: Path, feeds: dict[str, np.ndarray]) -> float:
    """model.onnx -> model.ort + required_operators.config beside it, the way onnxruntime's
    converter does it (`python -m onnxruntime.tools.convert_onnx_models_to_ort --optimization_style
    Fixed`), in a child process that makes the bytes reproducible (exporter/runtimes/ort_convert.py).
    Returns the max abs difference over every output between the optimized model.onnx and
    model.ort loaded back, on `feeds` (those the graph reads: the exporter drops an input no node
    reads, such as position_ids)."""
    import io
    import subprocess

    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    from ..errors import ExportError
    from . import ort_convert

    if ort_path.parent != onnx_path.parent:
        raise ValueError("model.ort is written beside model.onnx")
    packed = io.BytesIO()
    np.savez(packed, **feeds)
    done = subprocess.run(ort_convert.command(onnx_path.name, ort_path.name), cwd=onnx_path.parent,
                          env=ort_convert.environment(), input=packed.getvalue(), capture_output=True, check=False)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines() or [f"exit status {done.returncode}"]
        raise ExportError(f"ORT format conversion failed: {lines[-1]}")
    before = np.load(io.BytesIO(done.stdout))
    if not bool(before["layout_fixed"]):
        log.warning("model.ort is not byte-reproducible on this machine: address randomisation could not be "
                    "turned off for its conversion (docs/TRUST.md)")
    try:
        session = ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        after = session.run(None, {k: v for k, v in feeds.items() if k in wanted})
    except Exception as error:  # onnxruntime's Fail/InvalidGraph/... derive from Exception only
        raise ExportError(f"model.ort does not load: {error}") from error
    del session
    outputs = sorted((k for k in before.files if k.startswith("output_")), key=lambda k: int(k.split("_")[1]))
    difference = max(float(np.abs(before[k].astype(np.float32) - np.asarray(b, dtype=np.float32)).max())
                     for k, b in zip(outputs, after, strict=True))
    config = ort_path.parent / "required_operators.config"
    create_config_from_models([ort_path], config, enable_type_reduction=False)
    # The config names the (staging) path of the model in a comment: drop it so the file is
    # reproducible.
    config.write_text("".join(line for line in config.read_text().splitlines(keepends=True)
                              if not line.startswith("# - ")))
    return difference
