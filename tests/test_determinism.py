"""Two runs on the same input give byte-identical artifacts and manifests, except two files
whose tools are not reproducible (docs/MANIFEST.md): onnx/model.ort (ONNX Runtime's serializer
lays the flatbuffer out differently run to run, its size by a few bytes too) and the Core ML
spec, model.mlmodel (coremltools' graph passes do not produce the same program twice). For those, extras/onnx/model.onnx and the Core ML
weights are byte-identical, and the two Core ML programs compute the same logits (their fp16
parity figures then differ in the last digits)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from exporter.pipeline import ExportRequest, export


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _logits(package) -> np.ndarray:
    from exporter.runtimes import coreml

    session = coreml.open_session(package, engine="interpreter", precision="fp32")
    return session.forward([5, 9, 2, 7, 11]).numpy()


@pytest.mark.slow
def test_two_exports_are_byte_identical(family_checkpoint, tmp_path):
    model = family_checkpoint("llama", "llama3-rope-tied-gqa2")
    trees = []
    for run in ("first", "second"):
        export(ExportRequest(model, tmp_path / run, ("android", "ios"), quant="none", max_seq_len=48, bundle=False))
        trees.append(_tree(tmp_path / run))
    first, second = trees
    assert first.keys() == second.keys()

    # Android (ExecuTorch + ONNX): every byte, except model.ort and the manifest's digest of it.
    android = {k for k in first if k.startswith("android/")}
    differing = {k for k in android if first[k] != second[k]}
    assert differing <= {"android/onnx/model.ort", "android/manifest.json"}
    assert first["android/extras/onnx/model.onnx"] == second["android/extras/onnx/model.onnx"]
    a, b = (json.loads(t["android/manifest.json"]) for t in trees)
    for m in (a, b):
        m["files"] = [f for f in m["files"] if f["path"] != "onnx/model.ort"]
        onnx = next(x for x in m["artifacts"] if x["format"] == "onnx")
        onnx.pop("sha256"), onnx.pop("bytes")  # model.ort's size, too, may differ by a few bytes
    assert a == b

    # iOS: the .pte, the Core ML weights and package manifest are byte-identical; the two Core ML
    # programs (coremltools does not rebuild the same one) compute the same logits.
    package = "ios/coreml/model.mlpackage"
    for name in ("ios/executorch/model.pte", f"{package}/Manifest.json",
                 f"{package}/Data/com.apple.CoreML/weights/weight.bin"):
        assert first[name] == second[name], name
    np.testing.assert_allclose(_logits(tmp_path / "first" / package), _logits(tmp_path / "second" / package),
                               rtol=0, atol=1e-5)


@pytest.mark.slow
def test_two_command_runs_give_byte_identical_core_ml_bundles(family_checkpoint, tmp_path):
    """Through the command (a process per run, each with its own hash seed unless the command
    fixes it): the Core ML program and the manifest are identical too (exporter/entry.py)."""
    import os
    import subprocess
    import sys

    model = family_checkpoint("llama", "llama3-rope-tied-gqa2")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"}
    trees = []
    for run in ("first", "second"):
        done = subprocess.run([sys.executable, "-m", "exporter", "--target", "ios", "--formats", "coreml",
                               "--quant", "none", "--max-seq-len", "48", "--no-bundle", "--model", str(model),
                               "--out", str(tmp_path / run)], capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        trees.append(_tree(tmp_path / run))
    assert trees[0] == trees[1]
