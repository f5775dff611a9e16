"""SIGKILL at any stage leaves no partial output or app bundle, and the next run works."""

from __future__ import annotations

import os
import shutil
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
    """Runs the export; with `kill_at`, SIGKILLs it as soon as it logs the start of that stage and
    checks that the kill landed inside the stage: the process died of the signal, and the stage
    never logged its end (nor did any later stage start)."""
    command = [sys.executable, "-m", "exporter", *ARGS, "--model", str(model), "--out", str(out), "--app-dir", str(app)]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    if kill_at is None:
        assert proc.wait(timeout=600) == 0
        return
    deadline = time.time() + 600
    started = None
    for line in proc.stderr:
        if line.startswith(kill_at) and line.rstrip().endswith("..."):
            os.kill(proc.pid, signal.SIGKILL)
            started = line.rstrip()
            break
        assert time.time() < deadline
    assert started is not None, f"the export never started a stage named {kill_at!r}"
    after = proc.stderr.read().splitlines()  # what it wrote before the signal landed
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, (kill_at, proc.returncode)
    stage_name = started.removesuffix("...").strip()
    assert not any(line.startswith(f"{stage_name} done in") for line in after), (kill_at, after)
    assert not any(line.rstrip().endswith("...") for line in after), (kill_at, after)


@pytest.fixture(scope="module")
def earlier(family_checkpoint, tmp_path_factory):
    """A good earlier output and app bundle, made once; each case works on its own copy."""
    model = family_checkpoint("qwen2", "gqa4-untied")
    made = tmp_path_factory.mktemp("earlier")
    (made / "app").mkdir()
    _run(model, made / "dist", made / "app")
    return model, made


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", ["reference", "torch.export", "lower to XNNPACK", "verify", "bundle"])
def test_sigkill_at_a_stage_leaves_the_previous_outputs(kill_at, earlier, tmp_path):
    model, made = earlier
    out, app = tmp_path / "dist", tmp_path / "app"
    shutil.copytree(made / "dist", out)
    shutil.copytree(made / "app", app)
    assets = app / "app/src/main/assets/slm"
    before_out, before_app = _tree(out / "android"), _tree(assets)

    _run(model, out, app, kill_at)
    # Never a partial bundle: each destination is either the earlier one, byte for byte, or a
    # complete new one that verifies (the bundle stage's kill can land between its rename and its
    # "done" line).
    for folder, before in ((out / "android", before_out), (assets, before_app)):
        if _tree(folder) != before:
            assert kill_at == "bundle", (kill_at, folder)  # the output is published before the bundle stage
            assert manifest_io.check_files(folder, manifest_io.read(folder)) == [], kill_at

    # The next run works and removes what the killed one left behind.
    _run(model, out, app)
    for parent in (out, assets.parent):
        assert not [p.name for p in parent.iterdir() if p.name.startswith(".")], parent
    assert manifest_io.check_files(assets, manifest_io.read(assets)) == []
