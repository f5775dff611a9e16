"""Two runs on the same input give byte-identical artifacts and manifests (docs/TRUST.md).
model.ort is made reproducible by converting it in a child process without address
randomisation (exporter/runtimes/ort_convert.py). The Core ML program is reproducible when the
process's hash seed is fixed, which the command does (exporter/entry.py)."""

from __future__ import annotations

import pytest


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_two_command_runs_give_byte_identical_bundles_for_every_target(family_checkpoint, tmp_path):
    """Through the command (a process per run, each with its own hash seed unless the command
    fixes it), `--target all`: every file of every target, the Core ML program, model.ort and
    the manifests included. Each run computes the fp32 reference once and exports ExecuTorch once:
    the second target (same cache length, same ExecuTorch recipe) reuses the first's reference
    and copies its verified model.pte."""
    import os
    import subprocess
    import sys

    model = family_checkpoint("llama", "llama3-rope-tied-gqa2")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    trees = []
    for run in ("first", "second"):
        done = subprocess.run([sys.executable, "-m", "exporter", "--target", "all", "--quant", "none", "--max-seq-len", "48", "--no-bundle", "--model", str(model),
                               "--out", str(tmp_path / run)], capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stderr.splitlines()
        assert lines.count("reference (fp32 PyTorch) ...") == 1, done.stderr[-2000:]
        assert lines.count("lower to XNNPACK ...") == 1, done.stderr[-2000:]
        assert "executorch: executorch/model.pte from android/ (same recipe, not exported again) ..." in lines
        trees.append(_tree(tmp_path / run))
    assert {"android/onnx/model.ort", "ios/coreml/model.mlpackage/Data/com.apple.CoreML/model.mlmodel",
            "android/manifest.json", "ios/manifest.json"} <= trees[0].keys()
    assert trees[0]["ios/executorch/model.pte"] == trees[0]["android/executorch/model.pte"]
    assert trees[0].keys() == trees[1].keys()
    assert sorted(k for k in trees[0] if trees[0][k] != trees[1][k]) == []
