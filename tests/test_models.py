"""Family parity: our decoder against transformers' own implementation of each family."""

from __future__ import annotations

import pytest
import torch
from conftest import CASE_IDS, FAMILY_CASES

from exporter.checkpoint import build_model, load_checkpoint
from exporter.models import MODELS
from exporter.reference import ReferenceLM

TOLERANCE = 1e-4


def test_every_family_has_a_case():
    assert set(FAMILY_CASES) == set(MODELS)
    assert all(cases and cases[0][1] == MODELS[name].tiny_config for name, cases in FAMILY_CASES.items())


def _hf_model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.mark.parametrize(("family", "case"), CASE_IDS, ids=[f"{f}-{c}" for f, c in CASE_IDS])
def test_logits_match_transformers(family, case, family_checkpoint):
    path = family_checkpoint(family, case)
    checkpoint = load_checkpoint(path)
    assert checkpoint.model_type == family
    ref = ReferenceLM(build_model(checkpoint), max_seq_len=96)
    hf = _hf_model(path)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, checkpoint.spec.vocab_size, (1, 48), generator=g)
    with torch.no_grad():
        expected = hf(ids).logits[0]

    full = ref.full_logits(ids[0].tolist())
    assert (full - expected).abs().max().item() < TOLERANCE

    # Prefill 20 tokens, then one token at a time through the static cache.
    ref.reset()
    stepped = torch.cat([ref.forward(ids[0, :20].tolist())] + [ref.forward([t]) for t in ids[0, 20:].tolist()])
    assert (stepped - expected).abs().max().item() < TOLERANCE


@pytest.mark.parametrize(("family", "case"), CASE_IDS, ids=[f"{f}-{c}" for f, c in CASE_IDS])
def test_greedy_tokens_match_transformers(family, case, family_checkpoint):
    path = family_checkpoint(family, case)
    checkpoint = load_checkpoint(path)
    ref = ReferenceLM(build_model(checkpoint), max_seq_len=96)
    hf = _hf_model(path)
    prompt = [5, 17, 42, 99, 7, 3]
    ours, _ = ref.greedy(prompt, 32)
    sequence = list(prompt)
    with torch.no_grad():
        for _ in range(32):
            sequence.append(int(hf(torch.tensor([sequence])).logits[0, -1].argmax()))
    assert ours == sequence[len(prompt):]


def test_tied_embeddings_are_one_tensor(family_checkpoint):
    model = build_model(load_checkpoint(family_checkpoint("llama", "llama3-rope-tied-gqa2")))
    assert model.lm_head.weight.data_ptr() == model.embed_tokens.weight.data_ptr()
    names = [n for n, _ in model.named_parameters()]
    assert "lm_head.weight" not in names
