"""SIGKILL at any stage leaves no partial output or app bundle, and the next run works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from exporter import manifest as manifest_io

ARGS = ["--target", "android", "--formats", "executorch", "--quant", "none", "--max-seq-len", "48"]


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(model, out, app, kill_at: str | None = None):
    command = [sys.executable, "-m", "exporter", *ARGS, "--model", str(model), "--out", str(out), "--app-dir", str(app)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    if kill_at is None:
        assert proc.wait(timeout=600) == 0
        return True
    deadline = time.time() + 600
    for line in proc.stderr:
        if line.startswith(kill_at):
            os.kill(proc.pid, signal.SIGKILL)
            break
        assert time.time() < deadline
    proc.wait(timeout=60)
    return proc.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["reference", "torch.export", "lower to XNNPACK", "verify", "bundle"])
def test_sigkill_at_a_stage_leaves_the_previous_outputs(kill_at, family_checkpoint, tmp_path):
    model = family_checkpoint("qwen2", "gqa4-untied")
    out, app = tmp_path / "dist", tmp_path / "app"
    app.mkdir()
    _run(model, out, app)  # a good earlier output and app bundle
    assets = app / "app/src/main/assets/slm"
    before_out, before_app = _tree(out / "android"), _tree(assets)

    completed = _run(model, out, app, kill_at)
    # Never a partial bundle: each destination is either the earlier one, byte for byte, or a
    # complete new one that verifies (a kill can land after the last rename).
    for folder, before in ((out / "android", before_out), (assets, before_app)):
        after = _tree(folder)
        if after != before:
            assert manifest_io.check_files(folder, manifest_io.read(folder)) == [], (kill_at, completed)

    # The next run works and removes what the killed one left behind.
    _run(model, out, app)
    for parent in (out, assets.parent):
        assert not [p.name for p in parent.iterdir() if p.name.startswith(".")], parent
    assert manifest_io.check_files(assets, manifest_io.read(assets)) == []
