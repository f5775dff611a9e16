"""The built-in student: its recipe runs end to end, and the shipped checkpoint is a real model."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from exporter.checkpoint import build_model, load_checkpoint
from exporter.student import STUDENT_DIR, corpus
from exporter.student.train import PROMPT, encode_stream, eval_windows, greedy, perplexity
from exporter.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
SIZE_LIMIT = 10 * 1024 * 1024


def _alphabetic_fraction(text: str) -> tuple[int, float]:
    """(number of words, fraction of them that are letters only once edge punctuation is stripped)."""
    words = [w.strip(".,;:!?()[]{}'\"`") for w in text.split()]
    words = [w for w in words if w]
    if not words:
        return 0, 0.0
    return len(words), sum(bool(re.fullmatch(r"[A-Za-z]+(?:[-'][A-Za-z]+)*", w)) for w in words) / len(words)


def _tensor_names(path: Path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


@pytest.mark.slow
def test_recipe_runs_end_to_end(tmp_path):
    out = tmp_path / "student"
    proc = subprocess.run(
        [sys.executable, "-m", "exporter.student.train", "--out", str(out), "--steps-scale", "0.008",
         "--max-docs", "40", "--eval-windows", "4", "--threads", "1", "--seed", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "tok/s" in proc.stdout and "eta" in proc.stdout  # progress lines

    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "recipe.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert (config["bos_token_id"], config["eos_token_id"], config["torch_dtype"]) == (1, 0, "float32")
    assert json.loads((out / "generation_config.json").read_text()) == {"bos_token_id": 1, "eos_token_id": 0}
    names = _tensor_names(out / "model.safetensors")
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names

    checkpoint = load_checkpoint(out)
    model = build_model(checkpoint)  # raises on any unmapped or missing tensor
    assert checkpoint.spec.tie_word_embeddings and model.lm_head.weight is model.embed_tokens.weight
    assert (checkpoint.bos_token_id, checkpoint.eos_token_ids) == (1, [0])

    recipe = json.loads((out / "recipe.json").read_text())
    for phase in ("teacher", "student"):
        stats = recipe[phase]
        assert stats["steps"] >= 6
        assert stats["loss_last"] < stats["loss_first"], (phase, stats["loss_curve"])
        assert math.isfinite(stats["held_out_ppl"]) and 1 < stats["held_out_ppl"] < 2 * recipe["uniform_ppl"]
    assert recipe["student"]["ce_last"] < recipe["student"]["ce_first"]
    assert recipe["seed"] == 0 and recipe["python"] and recipe["wall_time_s"]["total_s"] > 0

    # The saved weights are the trained ones: reloaded, the student continues the prompt as it did
    # in the recipe, and scores the same held-out perplexity.
    tok = load_tokenizer(out / "tokenizer.json")
    assert greedy(model, tok) == recipe["student"]["greedy"]
    _, held = corpus.train_and_held_out(40)
    windows = eval_windows(encode_stream(tok, held), recipe["corpus"]["eval_window_tokens"], 4)
    assert perplexity(model, windows) == pytest.approx(recipe["student"]["held_out_ppl"], rel=1e-4)


@pytest.fixture(scope="module")
def shipped():
    checkpoint = load_checkpoint(STUDENT_DIR)
    return checkpoint, build_model(checkpoint), load_tokenizer(STUDENT_DIR / "tokenizer.json")


def test_shipped_student_files_and_size(shipped):
    checkpoint, model, _ = shipped
    total = sum(p.stat().st_size for p in STUDENT_DIR.iterdir() if p.is_file())
    assert total <= SIZE_LIMIT, f"student assets are {total / 1e6:.1f} MB"
    assert checkpoint.spec.vocab_size == 4096 and checkpoint.spec.hidden_size == 128
    assert checkpoint.spec.num_layers == 4 and checkpoint.spec.tie_word_embeddings
    assert "lm_head.weight" not in _tensor_names(STUDENT_DIR / "model.safetensors")
    assert sum(p.numel() for p in model.parameters()) == checkpoint.spec.num_parameters
    recipe = json.loads((STUDENT_DIR / "recipe.json").read_text())
    assert recipe["steps_scale"] == 1.0 and recipe["corpus"]["max_docs"] is None
    for phase in ("teacher", "student"):
        assert recipe[phase]["held_out_ppl"] < 0.05 * recipe["uniform_ppl"], phase


def test_shipped_student_held_out_perplexity(shipped):
    _, model, tok = shipped
    _, held = corpus.train_and_held_out()
    windows = eval_windows(encode_stream(tok, held), 128, limit=24)
    ppl = perplexity(model, windows)
    uniform = float(model.spec.vocab_size)
    assert ppl < 0.05 * uniform, f"held-out perplexity {ppl:.1f} vs uniform {uniform:.0f}"


def test_shipped_student_continues_in_words(shipped):
    _, model, tok = shipped
    text = greedy(model, tok, PROMPT, new_tokens=24)
    assert text.startswith(PROMPT)
    count, alphabetic = _alphabetic_fraction(text[len(PROMPT):])
    assert count >= 5 and alphabetic >= 0.7, text
    assert len(set(text[len(PROMPT):].lower().split())) >= 3, text  # not one token repeated
    assert greedy(model, tok, PROMPT, new_tokens=24) == text  # deterministic


@pytest.mark.slow
def test_encoder_recipe_runs_end_to_end(tmp_path):
    """The encoder student's recipe on a few documents and steps: a sentence-transformers folder
    (BERT, pooling, Dense, Normalize) that sentence-transformers itself loads and embeds as we do,
    with its recipe and figures against the teacher."""
    import torch
    from sentence_transformers import SentenceTransformer

    from exporter.bench.real_models import default_cache, make_real_checkpoint

    teacher = make_real_checkpoint("all-minilm-l6-v2", default_cache())
    out = tmp_path / "encoder"
    proc = subprocess.run(
        [sys.executable, "-m", "exporter.student.train_encoder", "--out", str(out), "--steps-scale", "0.01",
         "--max-docs", "60", "--teacher", str(teacher), "--seed", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "teacher targets" in proc.stderr and "student saved" in proc.stderr
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["train"]["steps"] == 90 and recipe["seed"] == 0 and recipe["layer_map"] == [1, 2, 3, 5]
    curve = recipe["loss_curve"]
    assert curve[0]["step"] == 0 and curve[-1]["step"] == 89 and curve[-1]["loss"] < curve[0]["loss"]
    figures = recipe["figures"]
    assert 0 < figures["neighbour_agreement_with_teacher"] <= 1 and -1 <= figures["mean_cosine_to_teacher"] <= 1

    checkpoint = load_checkpoint(out)
    spec = checkpoint.spec
    assert spec.task == "feature-extraction" and spec.pooling.projection.out_features == 384
    assert spec.vocab_size == recipe["vocab_size"] <= 6144
    texts = ["The function returns a list.", "Open the file in binary mode and read it."]
    expected = SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_tensor=True)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    encodings = tokenizer.encode_batch(texts)
    assert tokenizer.token_to_id("[PAD]") == 0 and all(e.ids[0] == tokenizer.token_to_id("[CLS]") for e in encodings)
    model = build_model(checkpoint)
    with torch.no_grad():
        got = torch.cat([model(torch.tensor([e.ids]), torch.ones(1, len(e.ids), dtype=torch.long))[0]
                         for e in encodings])
    assert torch.allclose(got, expected, atol=1e-5)


def test_shipped_encoder_student_is_a_sentence_transformers_model():
    """The built-in encoder student: a few MB, made by its recipe within 30 minutes, loaded by
    sentence-transformers as we load it (pooling, Dense into the teacher's 384 dimensions,
    normalisation), and the default encoder bundled beside the decoder student."""
    import torch
    from sentence_transformers import SentenceTransformer

    from exporter.cli import _companions
    from exporter.student import ENCODER_STUDENT_DIR

    weights = [ENCODER_STUDENT_DIR / "model.safetensors", ENCODER_STUDENT_DIR / "2_Dense" / "model.safetensors"]
    assert sum(p.stat().st_size for p in weights) < SIZE_LIMIT
    recipe = json.loads((ENCODER_STUDENT_DIR / "recipe.json").read_text())
    assert recipe["teacher"]["name"] == "all-minilm-l6-v2" and recipe["seconds"]["total"] < 30 * 60
    figures = recipe["figures"]
    assert figures["parameters"] * 10 < figures["teacher_parameters"]
    assert figures["mean_cosine_to_teacher"] > 0.5 and figures["neighbour_agreement_with_teacher"] > 0.3
    assert recipe["loss_curve"][-1]["loss"] < recipe["loss_curve"][0]["loss"] / 4

    checkpoint = load_checkpoint(ENCODER_STUDENT_DIR)
    assert checkpoint.spec.task == "feature-extraction" and checkpoint.spec.pooling.projection.out_features == 384
    texts = ["Return the number of items in a container.", "How many elements does the list hold?"]
    expected = SentenceTransformer(str(ENCODER_STUDENT_DIR), device="cpu").encode(texts, convert_to_tensor=True)
    from exporter.encoder_verify import tokenizer_for

    encodings = tokenizer_for(checkpoint.tokenizer.tokenizer_json, 256).encode_batch(texts)
    model = build_model(checkpoint)
    with torch.no_grad():
        got = torch.cat([model(torch.tensor([e.ids]), torch.ones(1, len(e.ids), dtype=torch.long))[0]
                         for e in encodings])
    assert torch.allclose(got, expected, atol=1e-5)
    assert _companions(None, None) == (ENCODER_STUDENT_DIR,) and _companions(Path("x"), None) == ()
    assert _companions(None, "none") == ()
