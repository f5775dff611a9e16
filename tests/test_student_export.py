"""The built-in student through the whole ExecuTorch path: the default command, the runner."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import as_runner_prints, byte_level_piece

from exporter import manifest as manifest_io
from exporter.checkpoint import build_model, load_checkpoint
from exporter.recipes import QuantRecipe, Thresholds, load_target
from exporter.reference import ReferenceLM
from exporter.runtimes import executorch as et
from exporter.student import STUDENT_DIR
from exporter.tokenizer import load_tokenizer

PROMPT = "The function returns"


def test_default_android_export_ships_the_smallest_candidates_within_their_thresholds(tmp_path):
    # The main job exactly as the README runs it, with the default model and --quant auto: the
    # student keeps its predictions at 4 bits, so each format's first candidate ships.
    app = tmp_path / "app"
    app.mkdir()
    result = subprocess.run([sys.executable, "-m", "exporter", "--target", "android", "--out", str(tmp_path),
                             "--app-dir", str(app)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = manifest_io.read(tmp_path / "android")
    target = load_target("android")
    assert {(a["format"], a["quantization"]) for a in manifest["artifacts"]} == {("executorch", "8da4w-e8"),
                                                                                ("onnx", "int4")}
    fp32_bytes = (STUDENT_DIR / "model.safetensors").stat().st_size
    for artifact in manifest["artifacts"]:
        assert artifact["parity"]["passed"]
        assert [t["quantization"] for t in artifact["search"]["tried"]] == [artifact["quantization"]]
        gate = target.formats[artifact["format"]].auto.thresholds
        assert artifact["parity"]["text_top1"] >= gate.text_top1_min
        assert artifact["parity"]["ppl_change"] <= gate.ppl_change_max
        # and the recipe's own thresholds, set from the student's figures, hold too
        thresholds = target.formats[artifact["format"]].recipes[artifact["quantization"]].thresholds
        assert artifact["parity"]["top1"] >= thresholds.top1_min
        assert artifact["parity"]["kl_mean"] <= thresholds.kl_mean_max
    pte = next(a for a in manifest["artifacts"] if a["format"] == "executorch")
    assert pte["bytes"] < fp32_bytes  # quantized is smaller than the fp32 weights alone
    ort = tmp_path / "android" / "onnx" / "model.ort"
    assert ort.stat().st_size < fp32_bytes / 3  # int4 with the embedding shared with the head
    assert manifest["model"]["family"] == "llama" and manifest["model"]["eos_token_ids"] == [0]
    # Progress on stderr for the long stages.
    assert "lower to XNNPACK done" in result.stderr and "verify executorch/model.pte done" in result.stderr
    assert "convert to ORT format done" in result.stderr and "verify onnx done" in result.stderr
    assert manifest_io.check_files(app / "app/src/main/assets/slm", manifest) == []


def test_llm_runner_reproduces_the_students_greedy_tokens(tmp_path):
    checkpoint = load_checkpoint(STUDENT_DIR)
    max_seq_len = 128
    decoder = build_model(checkpoint, max_seq_len)
    pte = et.emit(decoder, QuantRecipe("none", {}, Thresholds()), max_seq_len,
                  et.artifact_metadata(checkpoint, max_seq_len), tmp_path)
    tokenizer = load_tokenizer(checkpoint.tokenizer.tokenizer_json)
    prompt_ids = tokenizer.encode(PROMPT).ids
    expected, _ = ReferenceLM(build_model(checkpoint, max_seq_len), max_seq_len).greedy(
        prompt_ids, 32, checkpoint.eos_token_ids)
    printed, stats = et.runner_generate(pte, checkpoint.tokenizer.tokenizer_json, PROMPT, 32)
    assert printed == as_runner_prints([byte_level_piece(tokenizer, i) for i in expected])
    text = printed.decode()
    assert len(text.split()) >= 8  # the student writes words
    assert stats["prompt_tokens"] == len(prompt_ids)


def test_ios_bundle_runs_and_streams_the_students_text(tmp_path):
    result = subprocess.run([sys.executable, "-m", "exporter", "--target", "ios", "--quant", "none",
                             "--max-seq-len", "96", "--out", str(tmp_path), "--no-bundle"], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = subprocess.run([sys.executable, "-m", "exporter", "run", str(tmp_path / "ios"), "--prompt", PROMPT,
                          "--max-new-tokens", "16", "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    tokenizer = load_tokenizer(STUDENT_DIR / "tokenizer.json")
    assert out["text"] == tokenizer.decode(out["generated_ids"])
    assert len(out["generated_ids"]) == 16 or out["stopped_at_eos"]
