"""ONNX Runtime GenAI artifacts through the real onnxruntime-genai engine and onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import FAMILY_CASES

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


@pytest.mark.parametrize("family", sorted(FAMILY_CASES))
def test_genai_reproduces_reference_greedy_tokens_batch_1_and_2(family, family_checkpoint, tmp_path):
    checkpoint = load_checkpoint(family_checkpoint(family, FAMILY_CASES[family][0][0]))
    folder = _export(checkpoint, tmp_path / "onnx")
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


def test_ort_format_gives_the_same_logits_as_onnx(family_checkpoint, tmp_path):
    import onnxruntime as ort

    checkpoint = load_checkpoint(family_checkpoint("llama", "llama3-rope-tied-gqa2"))
    folder = _export(checkpoint, tmp_path / "onnx", "int4", {"block_size": 32, "accuracy_level": 4})
    spec = checkpoint.spec
    rng = np.random.default_rng(3)
    feeds = {"input_ids": rng.integers(0, spec.vocab_size, (2, 7), dtype=np.int64),
             "attention_mask": np.array([[1] * 7, [1] * 4 + [0] * 3], dtype=np.int64),
             "position_ids": np.array([list(range(7)), [0, 1, 2, 3, 0, 0, 0]], dtype=np.int64)}
    for i in range(spec.num_layers):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((2, spec.num_kv_heads, 0, spec.head_dim), np.float32)
    onnx_out, ort_out = (ort.InferenceSession(str(folder / name), providers=["CPUExecutionProvider"]).run(None, feeds)
                         for name in ("model.onnx", "model.ort"))
    for a, b in zip(onnx_out, ort_out, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    operators = (folder / "required_operators.config").read_text()
    assert "com.microsoft" in operators and "GroupQueryAttention" in operators and "MatMulNBits" in operators


def _initializer_shapes(folder):
    model = onnx.load(str(folder / "model.onnx"))
    return [tuple(i.dims) for i in model.graph.initializer], model


def test_tied_embedding_is_stored_once(family_checkpoint, tmp_path):
    checkpoint = load_checkpoint(family_checkpoint("llama", "llama3-rope-tied-gqa2"))
    spec = checkpoint.spec
    table = (spec.vocab_size, spec.hidden_size)
    shapes, _ = _initializer_shapes(_export(checkpoint, tmp_path / "fp32"))
    assert sum(s in (table, table[::-1]) for s in shapes) == 1
    shapes, model = _initializer_shapes(_export(checkpoint, tmp_path / "int4", "int4", {"block_size": 32}))
    assert not any(s in (table, table[::-1]) for s in shapes)  # no fp32 copy left
    ops = {n.op_type for n in model.graph.node}
    assert {"GatherBlockQuantized", "MatMulNBits", "GroupQueryAttention"} <= ops


def test_genai_config_is_accepted_and_shares_the_kv_buffer(family_checkpoint, tmp_path):
    checkpoint = load_checkpoint(family_checkpoint("qwen2", "gqa4-untied"))
    meta = onnx_genai.read_metadata(_export(checkpoint, tmp_path / "onnx"))
    assert meta["search"]["past_present_share_buffer"] is True
    assert meta["model"]["decoder"]["filename"] == "model.ort"
    assert meta["max_seq_len"] == MAX_SEQ_LEN and meta["eos_ids"] == checkpoint.eos_token_ids
