"""Two runs on the same input give byte-identical artifacts and manifests (docs/TRUST.md).
model.ort is made reproducible by converting it in a child process without address
randomisation (exporter/runtimes/ort_convert.py). The Core ML program is reproducible when the
process's hash seed is fixed, which the command does (exporter/entry.py): in-process, under
pytest's own seed, its weights are byte-identical and the two programs compute the same logits."""

from __future__ import annotations

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
def test_two_exports_are_byte_identical(family_checkpoint, tmp_path, caplog):
    import logging

    model = family_checkpoint("llama", "llama3-rope-tied-gqa2")
    trees = []
    # caplog's handler on the exporter's logger itself, not through the root: the command's
    # logging setup turns propagation off (and through both, each record would count twice).
    logger = logging.getLogger("exporter")
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(caplog.handler)
    try:
        for run in ("first", "second"):
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="exporter"):
                export(ExportRequest(model, tmp_path / run, ("android", "ios"), quant="none", max_seq_len=48,
                                     bundle=False))
            # One fp32 reference per run: the second target (same cache length) reuses the first's.
            assert caplog.messages.count("reference (fp32 PyTorch) ...") == 1, caplog.messages
            trees.append(_tree(tmp_path / run))
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate
    first, second = trees
    assert first.keys() == second.keys()

    # Android (ExecuTorch + ONNX): every byte, model.ort and so the manifest included.
    android = {k for k in first if k.startswith("android/")}
    assert "android/onnx/model.ort" in android
    assert sorted(k for k in android if first[k] != second[k]) == []

    # iOS: the .pte, the Core ML weights and package manifest are byte-identical; the two Core ML
    # programs (coremltools does not rebuild the same one) compute the same logits.
    package = "ios/coreml/model.mlpackage"
    for name in ("ios/executorch/model.pte", f"{package}/Manifest.json",
                 f"{package}/Data/com.apple.CoreML/weights/weight.bin"):
        assert first[name] == second[name], name
    np.testing.assert_allclose(_logits(tmp_path / "first" / package), _logits(tmp_path / "second" / package),
                               rtol=0, atol=1e-5)


@pytest.mark.slow
def test_two_command_runs_give_byte_identical_bundles_for_every_target(family_checkpoint, tmp_path):
    """Through the command (a process per run, each with its own hash seed unless the command
    fixes it), `--target all`: every file of every target, the Core ML program, model.ort and
    the manifests included."""
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
        trees.append(_tree(tmp_path / run))
    assert {"android/onnx/model.ort", "ios/coreml/model.mlpackage/Data/com.apple.CoreML/model.mlmodel",
            "android/manifest.json", "ios/manifest.json"} <= trees[0].keys()
    assert trees[0].keys() == trees[1].keys()
    assert sorted(k for k in trees[0] if trees[0][k] != trees[1][k]) == []
