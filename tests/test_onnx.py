"""ONNX Runtime GenAI artifacts through the real onnxruntime-genai engine and onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import FAMILY_CASES, case_config
from helpers import save_random_checkpoint

from exporter.checkpoint import build_model, load_checkpoint
from exporter.pipeline import copy_tokenizer_files
from exporter.recipes import QuantRecipe, Thresholds
from exporter.reference import ReferenceLM
from exporter.runtimes import onnx_genai

MAX_SEQ_LEN = 96
NEW_TOKENS = 32


def _export(checkpoint, out_dir, recipe="none", params=None):
    decoder = build_model(checkpoint, MAX_SEQ_LEN)
    folder = onnx_genai.emit(decoder, QuantRecipe(recipe, params or {}, Thresholds()), MAX_SEQ_LEN,
                             onnx_genai.artifact_metadata(checkpoint, MAX_SEQ_LEN), out_dir)
    copy_tokenizer_files(checkpoint, folder)
    return folder


def _genai_greedy(folder, prompts, new_tokens, pad):
    """onnxruntime-genai's own greedy search over a right-padded batch; new tokens per row."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    width = max(len(p) for p in prompts)
    params.set_search_options(do_sample=False, max_length=width + new_tokens, min_length=width + new_tokens,
                              batch_size=len(prompts))
    generator = og.Generator(model, params)
    batch = np.full((len(prompts), width), pad, dtype=np.int32)
    for row, prompt in enumerate(prompts):
        batch[row, : len(prompt)] = prompt
    generator.append_tokens(batch)
    while not generator.is_done():
        generator.generate_next_token()
    return [list(generator.get_sequence(row))[width:] for row in range(len(prompts))]


def _assert_genai_matches_reference(checkpoint, folder):
    ref = ReferenceLM(build_model(checkpoint, MAX_SEQ_LEN), MAX_SEQ_LEN)
    pad = onnx_genai.read_metadata(folder)["model"]["pad_token_id"]
    # The longer prompt passes the mistral case's sliding window (24); no prompt holds the pad id.
    long_prompt = [t for t in range(3, 40) if t != pad]
    prompts = [long_prompt, [9, 4, 11, 7, 5]]
    expected = []
    for prompt in prompts:
        ids, logits = ref.greedy(prompt, NEW_TOKENS)  # no eos stop: GenAI runs to min_length too
        top2 = logits.topk(2).values
        assert bool(((top2[:, 0] - top2[:, 1]) > 1e-4).all()), "reference tie: choose other prompts"
        expected.append(ids)
    assert _genai_greedy(folder, prompts[:1], NEW_TOKENS, pad) == expected[:1]
    assert _genai_greedy(folder, prompts, NEW_TOKENS, pad) == expected


def _graph(folder):
    return onnx.load(str(folder / "model.onnx")).graph


def _attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# Every family's first case, and the cases that scale q.k by other than 1/sqrt(head_dim).
@pytest.mark.parametrize(("family", "case"), [(family, cases[0][0]) for family, cases in sorted(FAMILY_CASES.items())]
                         + [("gemma3_text", "global-first-scalar-16-gqa2")])
def test_export_wrapper_in_eager_torch_computes_the_reference_logits(family, case, family_checkpoint):
    # What the export traces (fused modules, the custom ops' eager semantics: packed q|k|v, RoPE
    # inside attention from the mask's positions, fp32 RMSNorm) equals the shared decoder: a prompt,
    # then one token on top of the returned presents.
    import torch

    from exporter.runtimes.onnx_ops import fused_modules

    checkpoint = load_checkpoint(family_checkpoint(family, case))
    spec = checkpoint.spec
    ids = list(range(5, 40))  # past the cases' sliding windows (16 and 24)
    expected = ReferenceLM(build_model(checkpoint, MAX_SEQ_LEN), MAX_SEQ_LEN).full_logits(ids)
    decoder = build_model(checkpoint, MAX_SEQ_LEN)
    empty = [torch.zeros(1, spec.num_kv_heads, 0, spec.head_dim) for _ in range(2 * spec.num_layers)]
    with torch.no_grad(), fused_modules(decoder):
        wrapper = onnx_genai.GenAIDecoder(decoder)
        prompt = torch.tensor([ids[:-1]])
        out = wrapper(prompt, torch.ones_like(prompt), torch.arange(len(ids) - 1)[None], *empty)
        step = wrapper(torch.tensor([ids[-1:]]), torch.ones(1, len(ids), dtype=torch.long),
                       torch.tensor([[len(ids) - 1]]), *out[1:])
    torch.testing.assert_close(out[0][0], expected[:-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(step[0][0, -1], expected[-1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILY_CASES))
def test_genai_reproduces_reference_greedy_tokens_batch_1_and_2(family, family_checkpoint, tmp_path):
    checkpoint = load_checkpoint(family_checkpoint(family, FAMILY_CASES[family][0][0]))
    _assert_genai_matches_reference(checkpoint, _export(checkpoint, tmp_path / "onnx"))


# The export traces blocks 0 and 1 and copies block 1 for the others (onnx_graph.repeat_block):
# the family cases have 2 blocks, so these have more.
_SIX_GEMMA_LAYERS = {"layer_types": ["sliding_attention"] * 2 + ["full_attention"] + ["sliding_attention"] * 2
                     + ["full_attention"]}


@pytest.mark.parametrize(("family", "case", "layers", "more"), [("llama", "llama3-rope-tied-gqa2", 4, {}),
                                                                ("qwen2", "gqa4-untied", 3, {}),
                                                                ("mistral", "head-dim-32-window-24", 3, {}),
                                                                ("gpt2", "tied", 3, {}),
                                                                ("gemma3_text", "sliding-global-two-bases", 6,
                                                                 _SIX_GEMMA_LAYERS)])
def test_blocks_beyond_the_traced_two_are_exported(family, case, layers, more, tmp_path):
    config = {**case_config(family, case), **more}
    config["n_layer" if family == "gpt2" else "num_hidden_layers"] = layers
    checkpoint = load_checkpoint(save_random_checkpoint(tmp_path / "ckpt", config))
    decoder = build_model(checkpoint, MAX_SEQ_LEN)
    folder = onnx_genai.emit(decoder, QuantRecipe("none", {}, Thresholds()), MAX_SEQ_LEN,
                             onnx_genai.artifact_metadata(checkpoint, MAX_SEQ_LEN), tmp_path / "onnx")
    copy_tokenizer_files(checkpoint, folder)
    graph = _graph(folder)
    assert sum(n.op_type == "GroupQueryAttention" for n in graph.node) == layers
    inputs, outputs = onnx_genai.io_names(layers)
    assert [i.name for i in graph.input if i.name.startswith("past")] == [i for i in inputs if i.startswith("past")]
    assert [o.name for o in graph.output] == outputs
    # The decoder given to emit keeps its structure (fused modules swapped back, all blocks), and
    # its weights are freed: the graph holds them (models.release_weights).
    assert len(decoder.layers) == layers and type(decoder.layers[-1].attn).__name__ == "Attention"
    assert all(p.numel() == 0 for p in decoder.parameters())
    _assert_genai_matches_reference(checkpoint, folder)


# gemma3_text: two RoPE bases with RoPE in the graph, so every block is traced, none copied.
@pytest.mark.parametrize(("family", "case", "more"), [
    ("llama", "llama3-rope-tied-gqa2", {"num_attention_heads": 8, "num_key_value_heads": 4}),
    ("gemma3_text", "sliding-global-two-bases", {"head_dim": 8, **_SIX_GEMMA_LAYERS, "num_hidden_layers": 6})])
def test_rope_stays_in_the_graph_when_gqa_cannot_rotate(family, case, more, tmp_path):
    # onnxruntime's GroupQueryAttention rotates only head sizes that are multiples of 16.
    config = {**case_config(family, case), **more}
    checkpoint = load_checkpoint(save_random_checkpoint(tmp_path / "ckpt", config))
    assert checkpoint.spec.head_dim == 8
    folder = _export(checkpoint, tmp_path / "onnx")
    graph = _graph(folder)
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert attention and all(_attrs(n)["do_rotary"] == 0 for n in attention)
    assert "position_ids" in {i.name for i in graph.input}
    _assert_genai_matches_reference(checkpoint, folder)
    # Logits too (a layer rotated with the other kind's RoPE base can keep random greedy ids).
    import onnxruntime as ort

    spec, ids = checkpoint.spec, list(range(3, 40))
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    empty = np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), np.float32)
    feeds = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
             "position_ids": np.arange(len(ids), dtype=np.int64)[None],
             **{i.name: empty for i in session.get_inputs() if i.name.startswith("past_key_values")}}
    logits = session.run(["logits"], feeds)[0][0]
    expected = ReferenceLM(build_model(checkpoint, MAX_SEQ_LEN), MAX_SEQ_LEN).full_logits(ids).numpy()
    assert np.abs(logits - expected).max() < 1e-3


def test_genai_continues_a_sequence_with_a_multi_token_append(family_checkpoint, tmp_path):
    # GroupQueryAttention's own RoPE takes positions from the cache length: a prompt appended to
    # a sequence that already has a cache (a chat turn) must be rotated from where it stands.
    import onnxruntime_genai as og

    checkpoint = load_checkpoint(family_checkpoint("llama", "mha-untied-linear-rope"))
    folder = _export(checkpoint, tmp_path / "onnx")
    first, second = [5, 9, 14, 3, 22], [31, 7, 12]
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=40, batch_size=1)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray([first], dtype=np.int32))
    generator.append_tokens(np.asarray([second], dtype=np.int32))
    for _ in range(NEW_TOKENS // 4):
        generator.generate_next_token()
    expected, _ = ReferenceLM(build_model(checkpoint, MAX_SEQ_LEN), MAX_SEQ_LEN).greedy(first + second, NEW_TOKENS // 4)
    assert [int(t) for t in generator.get_sequence(0)][len(first) + len(second):] == expected


@pytest.mark.parametrize(("recipe", "operator"), [("int4", "MatMulNBits"), ("int8w", "MatMulNBits"),
                                                  ("int8", "MatMulInteger")])
def test_ort_format_gives_the_same_logits_as_onnx(recipe, operator, family_checkpoint, tmp_path):
    import onnxruntime as ort

    checkpoint = load_checkpoint(family_checkpoint("llama", "llama3-rope-tied-gqa2"))
    params = {"int4": {"block_size": 32, "accuracy_level": 4}, "int8w": {"block_size": 32, "accuracy_level": 4}}
    folder = _export(checkpoint, tmp_path / "onnx", recipe, params.get(recipe, {}))
    if recipe == "int8w":  # 8-bit weights, and the tied embedding gathered from the 8-bit head
        nodes = {n.op_type: n for n in _graph(folder).node}
        assert {a.name: a.i for a in nodes["MatMulNBits"].attribute}["bits"] == 8
        assert {a.name: a.i for a in nodes["GatherBlockQuantized"].attribute}["bits"] == 8
    spec = checkpoint.spec
    rng = np.random.default_rng(3)
    feeds = {"input_ids": rng.integers(0, spec.vocab_size, (2, 7), dtype=np.int64),
             "attention_mask": np.array([[1] * 7, [1] * 4 + [0] * 3], dtype=np.int64)}
    for i in range(spec.num_layers):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((2, spec.num_kv_heads, 0, spec.head_dim), np.float32)
    # No position_ids: GroupQueryAttention applies RoPE with positions from the mask.
    onnx_out, ort_out = (ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"]).run(None, feeds)
                         for name in ("model.onnx", "model.ort"))
    for a, b in zip(onnx_out, ort_out, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    operators = (folder / "required_operators.config").read_text()
    assert "com.microsoft" in operators and "GroupQueryAttention" in operators and operator in operators


def _initializers(folder):
    """{name: (dims, bytes)} of model.onnx's and of model.ort's initializers (the latter read with
    onnxruntime's own flatbuffers schema)."""
    import onnxruntime.tools.ort_format_model  # noqa: F401  puts ort_flatbuffers_py on sys.path
    from onnx import numpy_helper
    from ort_flatbuffers_py import fbs

    graph = _graph(folder)
    in_onnx = {i.name: (tuple(i.dims), numpy_helper.to_array(i).nbytes) for i in graph.initializer}
    buffer = (folder / "model.ort").read_bytes()
    ort_graph = fbs.InferenceSession.InferenceSession.GetRootAsInferenceSession(buffer, 0).Model().Graph()
    in_ort = {}
    for k in range(ort_graph.InitializersLength()):
        tensor = ort_graph.Initializers(k)
        in_ort[tensor.Name().decode()] = (tuple(tensor.Dims(j) for j in range(tensor.DimsLength())),
                                          tensor.RawDataLength())
    return in_onnx, in_ort


@pytest.mark.parametrize("recipe", ["none", "int4"])
def test_tied_embedding_is_stored_once_in_onnx_and_ort(recipe, family_checkpoint, tmp_path):
    checkpoint = load_checkpoint(family_checkpoint("llama", "llama3-rope-tied-gqa2"))
    spec = checkpoint.spec
    table = {(spec.vocab_size, spec.hidden_size), (spec.hidden_size, spec.vocab_size)}
    folder = _export(checkpoint, tmp_path / recipe, recipe, {"block_size": 32} if recipe == "int4" else {})
    in_onnx, in_ort = _initializers(folder)
    # fp32: one table, read by the Gather and (transposed, FusedMatMul) by the head. int4: no fp32
    # table at all, GatherBlockQuantized reads the int4 head.
    assert sum(dims in table for dims, _ in in_onnx.values()) == (1 if recipe == "none" else 0)
    # The ORT conversion must not fold a second copy of the shared table (it used to: the
    # Transpose for fp32, the Reshape of the int4 head for GatherBlockQuantized).
    assert sum(size for _, size in in_ort.values()) <= sum(size for _, size in in_onnx.values()) + 1024
    assert sum(dims in table for dims, _ in in_ort.values()) == (1 if recipe == "none" else 0)


def test_exported_graph_uses_onnxruntimes_fused_operators(family_checkpoint, tmp_path):
    checkpoint = load_checkpoint(family_checkpoint("llama", "llama3-rope-tied-gqa2"))
    layers = checkpoint.spec.num_layers
    graph = _graph(_export(checkpoint, tmp_path / "int4", "int4", {"block_size": 32, "accuracy_level": 4}))
    ops = [n.op_type for n in graph.node]
    # RMSNorm: the first as SimplifiedLayerNormalization, every other one fused with the residual
    # Add before it; q/k/v as one MatMulNBits per block; RoPE inside GroupQueryAttention.
    assert ops.count("SimplifiedLayerNormalization") == 1
    assert ops.count("SkipSimplifiedLayerNormalization") == 2 * layers
    assert ops.count("MatMulNBits") == 5 * layers + 1  # qkv, o, gate, up, down; the head
    assert "Add" not in ops
    assert not {"Pow", "ReduceMean", "Sqrt", "Reciprocal", "Neg", "Concat", "GatherND", "Slice", "Transpose"} & set(ops)
    attention = [n for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert len(attention) == layers
    for node in attention:
        assert _attrs(node)["do_rotary"] == 1 and node.input[1] == node.input[2] == ""  # packed q|k|v
        assert node.input[7] and node.input[8]  # cos/sin caches
    assert "position_ids" not in {i.name for i in graph.input}
    # One seqlens_k / total_sequence_length computation for all blocks.
    assert len({n.input[5] for n in attention}) == 1 and ops.count("ReduceSum") == 1


def test_genai_config_is_accepted_and_shares_the_kv_buffer(family_checkpoint, tmp_path):
    checkpoint = load_checkpoint(family_checkpoint("qwen2", "gqa4-untied"))
    meta = onnx_genai.read_metadata(_export(checkpoint, tmp_path / "onnx"))
    assert meta["search"]["past_present_share_buffer"] is True
    assert meta["model"]["decoder"]["filename"] == "model.ort"
    assert meta["max_seq_len"] == MAX_SEQ_LEN and meta["eos_ids"] == checkpoint.eos_token_ids


def _node_and_initializer_table(model):
    from onnx import helper

    nodes = [(n.op_type, n.domain, n.name, tuple(n.input), tuple(n.output),
              tuple(sorted((a.name, helper.get_attribute_value(a)) for a in n.attribute))) for n in model.graph.node]
    initializers = {i.name: (tuple(i.dims), i.data_type, onnx.numpy_helper.to_array(i).tobytes())
                    for i in model.graph.initializer}
    return nodes, initializers


@pytest.mark.parametrize(("bits", "block", "level"), [(4, 32, 4), (8, 32, 0), (4, 128, 4)])
def test_in_place_nbits_quantizer_writes_what_onnxruntimes_quantizer_writes(bits, block, level, family_checkpoint):
    """onnx_graph.quantize_nbits replaces each weight in place (never the whole fp32 graph beside
    the quantized one); its graph must be onnxruntime's MatMulNBitsQuantizer's, byte for byte
    (block 128 > K: padded blocks), with excluded nodes left as they are."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    from exporter.runtimes import onnx_graph

    checkpoint = load_checkpoint(family_checkpoint("llama", "llama3-rope-tied-gqa2"))
    model = onnx_genai._export(build_model(checkpoint, MAX_SEQ_LEN))
    onnx_graph.fold_weight_transposes(model)
    exclude = sorted(onnx_graph.weight_matmuls(model))[:3]
    theirs = onnx.ModelProto()
    theirs.CopyFrom(model)
    quantizer = MatMulNBitsQuantizer(theirs, bits=bits, block_size=block, is_symmetric=True, accuracy_level=level,
                                     nodes_to_exclude=exclude, op_types_to_quantize=("MatMul",))
    quantizer.process()
    theirs = quantizer.model.model
    ours = onnx_graph.quantize_nbits(model, bits, block, level, exclude=exclude)
    our_nodes, our_initializers = _node_and_initializer_table(ours)
    their_nodes, their_initializers = _node_and_initializer_table(theirs)
    assert sum(n[0] == "MatMulNBits" for n in our_nodes) > 0 and sum(n[0] == "MatMul" for n in our_nodes) >= 3
    assert our_nodes == their_nodes
    assert our_initializers == their_initializers
    assert {(o.domain, o.version) for o in ours.opset_import} == {(o.domain, o.version) for o in theirs.opset_import}


@pytest.mark.parametrize("bits", [4, 8])
def test_nbits_quantizer_reads_a_tied_head_through_its_transpose(bits, family_checkpoint):
    """With the tied table's Transpose kept (fold_weight_transposes(shared="keep"), the int4 and
    int8w path), quantize_nbits writes the graph it writes from fold's fp32 copy of W^T, without
    ever holding that copy in the graph."""
    from exporter.runtimes import onnx_graph

    checkpoint = load_checkpoint(family_checkpoint("llama", "llama3-rope-tied-gqa2"))
    model = onnx_genai._export(build_model(checkpoint, MAX_SEQ_LEN))
    copied = onnx.ModelProto()
    copied.CopyFrom(model)
    onnx_graph.fold_weight_transposes(copied, shared="copy")
    onnx_graph.fold_weight_transposes(model, shared="keep")
    kept = {i.name for i in model.graph.initializer}
    assert {i.name for i in copied.graph.initializer} - kept == {"decoder.lm_head.weight_T"}
    assert sum(n.op_type == "Transpose" for n in model.graph.node) == 1
    assert set(onnx_graph.weight_matmuls(model).values()) == set(onnx_graph.weight_matmuls(copied).values())
    ours = onnx_graph.quantize_nbits(model, bits, 32, 4)
    reference = onnx_graph.quantize_nbits(copied, bits, 32, 4)
    assert not any(n.op_type == "Transpose" for n in ours.graph.node)
    assert _node_and_initializer_table(ours) == _node_and_initializer_table(reference)
