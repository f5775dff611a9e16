"""ExecuTorch artifacts through the real runtime and the real LLM runner (TextLLMRunner)."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILY_CASES
from helpers import as_runner_prints, byte_level_piece

from exporter.checkpoint import build_model, load_checkpoint
from exporter.recipes import QuantRecipe, Thresholds
from exporter.reference import ReferenceLM
from exporter.runtimes import executorch as et
from exporter.tokenizer import load_tokenizer

MAX_SEQ_LEN = 96
PROMPT = "def add(a, b):\n    return"
FP32 = QuantRecipe("none", {}, Thresholds())


def _export(checkpoint, out_dir, recipe=FP32, decoder=None):
    decoder = decoder or build_model(checkpoint, MAX_SEQ_LEN)
    return et.emit(decoder, recipe, MAX_SEQ_LEN, et.artifact_metadata(checkpoint, MAX_SEQ_LEN), out_dir)


def _reference_greedy(checkpoint, prompt_ids, n):
    ref = ReferenceLM(build_model(checkpoint, MAX_SEQ_LEN), MAX_SEQ_LEN)
    return ref.greedy(prompt_ids, n, checkpoint.eos_token_ids)


# The default suite runs the LLM runner on the families whose ExecuTorch paths differ (LLM kernels,
# learned positions, the sliding-window mask path); the others' math is covered there by the
# reference, ONNX and Core ML tests, and their runner runs in the `slow` pass (20-50 s each).
RUNNER_DEFAULT_FAMILIES = {"llama", "qwen2", "mistral", "gpt2"}


@pytest.mark.parametrize("family", [f if f in RUNNER_DEFAULT_FAMILIES else pytest.param(f, marks=pytest.mark.slow)
                                    for f in sorted(FAMILY_CASES)])
def test_llm_runner_reproduces_reference_greedy_tokens(family, family_checkpoint, tmp_path):
    case = FAMILY_CASES[family][0][0]
    checkpoint = load_checkpoint(family_checkpoint(family, case))
    pte = _export(checkpoint, tmp_path)

    tokenizer = load_tokenizer(checkpoint.tokenizer.tokenizer_json)
    prompt_ids = tokenizer.encode(PROMPT).ids
    expected_ids, logits = _reference_greedy(checkpoint, prompt_ids, 32)
    gaps = (logits.topk(2).values[:, 0] - logits.topk(2).values[:, 1])
    assert bool((gaps > 1e-4).all()), "reference has a tie; pick another seed for this case"

    # 1. The runtime itself (XNNPACK delegate) gives the same ids and logits, token by token (the
    # logits too: a wrong attention scale can leave random-weight greedy ids unchanged).
    session = et.open_session(pte)
    steps = [session.forward(prompt_ids)]
    while len(steps) < len(expected_ids):
        steps.append(session.forward([int(steps[-1].argmax())]))
    assert [int(step.argmax()) for step in steps] == expected_ids
    assert (torch.stack([step.reshape(-1) for step in steps]) - logits).abs().max() < 1e-3

    # 2. The C++ LLM runner, given only the .pte and tokenizer.json, prints the same tokens.
    printed, stats = et.runner_generate(pte, checkpoint.tokenizer.tokenizer_json, PROMPT, 32)
    assert printed == as_runner_prints([byte_level_piece(tokenizer, i) for i in expected_ids])
    assert stats["prompt_tokens"] == len(prompt_ids)


def test_pte_carries_the_runner_metadata(family_checkpoint, tmp_path):
    checkpoint = load_checkpoint(family_checkpoint("qwen2", "gqa4-untied"))
    meta = et.read_metadata(_export(checkpoint, tmp_path))
    assert meta["get_max_seq_len"] == MAX_SEQ_LEN and meta["enable_dynamic_shape"] is True
    assert meta["use_kv_cache"] is True
    assert meta["get_eos_ids"] == checkpoint.eos_token_ids


def test_lowering_leaves_no_graph_in_executorchs_globals(family_checkpoint, tmp_path):
    """The partitioners' `why` loggers and is_same_node's cache kept the last lowered program,
    weights included, alive for the rest of the run (3 GB per emit at 1B); emit drops them."""
    import sys

    from executorch.exir.backend.utils import WhyNoPartition, is_same_node

    _export(load_checkpoint(family_checkpoint("qwen2", "gqa4-untied")), tmp_path)
    loggers = [v for name, m in list(sys.modules.items()) if name.startswith("executorch.") and m is not None
               for v in vars(m).values() if isinstance(v, WhyNoPartition)]
    assert loggers, "the XNNPACK partitioners' loggers were not found: the rule this test guards has moved"
    assert [w for w in loggers if w.node is not None] == []
    assert is_same_node.cache_info().currsize == 0


# llama runs on ExecuTorch's LLM kernels (update_cache + custom_sdpa); mistral's window (24) is
# narrower than the cache, so it keeps the masked path. Both must carry state the same way.
@pytest.mark.parametrize("family, case, kernels", [("llama", FAMILY_CASES["llama"][0][0], True),
                                                  ("mistral", "head-dim-32-window-24", False)])
def test_cache_persists_across_calls_and_prefill_equals_stepwise(family, case, kernels, family_checkpoint,
                                                                 tmp_path):
    checkpoint = load_checkpoint(family_checkpoint(family, case))
    pte = _export(checkpoint, tmp_path)
    assert ({"llama::custom_sdpa", "llama::update_cache"} <= et.operators(pte)) == kernels
    assert et.read_metadata(pte)["use_sdpa_with_kv_cache"] is kernels
    session = et.open_session(pte)
    ids = list(range(3, 40))  # longer than the sliding window
    ref = ReferenceLM(build_model(checkpoint, MAX_SEQ_LEN), MAX_SEQ_LEN)
    expected = ref.forward(ids)[-1]
    assert (session.forward(ids) - expected).abs().max() < 1e-4
    session.reset()
    for token in ids[:-1]:
        session.forward([token])
    assert (session.forward(ids[-1:]) - expected).abs().max() < 1e-4
