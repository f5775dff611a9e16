"""Checkpoints and bundles from strangers (issue #21; docs/TRUST.md): a bundle is read only inside
its folder; checkpoints export however people have them laid out, with one source digest for one
content."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import manifest as manifest_io
from exporter.checkpoint import load_checkpoint

EXPORT = ["--target", "android", "--formats", "onnx", "--quant", "none", "--max-seq-len", "48", "--no-bundle"]


def slm(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def model(family_checkpoint):
    return family_checkpoint("llama", "llama3-rope-tied-gqa2")


@pytest.fixture(scope="module")
def bundle(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    done = slm(*EXPORT, "--model", str(model), "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "android"


def _copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    return copy


# --- 1. a bundle is self-contained -------------------------------------------------------------

def _fifo_outside(tmp_path: Path) -> Path:
    """A named pipe: reading it blocks until a writer comes, so a command that read it would hang
    (and the test would time out) instead of refusing."""
    fifo = tmp_path / "outside" / "pipe"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    return fifo


@pytest.mark.parametrize("command", ["verify", "run"])
def test_a_link_out_of_the_bundle_is_refused_before_any_file_is_read(bundle, tmp_path, command):
    copy = _copy(bundle, tmp_path)
    (copy / "tokenizer.json").unlink()
    (copy / "tokenizer.json").symlink_to(_fifo_outside(tmp_path))
    args = [command, str(copy)] + (["--prompt", "hi"] if command == "run" else [])
    done = slm(*args, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "not a self-contained bundle: tokenizer.json is a symbolic link to" in done.stderr
    assert "outside the bundle" in done.stderr and "Traceback" not in done.stderr


def test_special_files_and_dangling_links_are_refused_by_name(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    os.mkfifo(copy / "onnx" / "queue")
    done = slm("verify", str(copy), timeout=120)
    assert done.returncode == 2 and "onnx/queue is a named pipe, not a regular file" in done.stderr
    (copy / "onnx" / "queue").unlink()
    (copy / "notes.txt").symlink_to(copy / "nowhere.txt")
    assert manifest_io.containment_problems(copy) == ["notes.txt is a symbolic link to "
                                                      f"{copy / 'nowhere.txt'}, which does not exist"]


def test_links_that_stay_inside_the_bundle_are_allowed(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    (copy / "parity-report.html").symlink_to("parity.html")  # relative, inside
    assert manifest_io.containment_problems(copy) == []
    # ... but it is not a manifest file, so verify names it as unlisted (and still reads nothing outside)
    done = slm("verify", str(copy), timeout=300)
    assert done.returncode == 1 and "parity-report.html: not listed in the manifest" in done.stdout + done.stderr


def test_a_manifest_path_leaving_the_bundle_is_refused_by_name(bundle, tmp_path):
    copy = _copy(bundle, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["tokenizer"]["path"] = "../../etc/passwd"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    done = slm("verify", str(copy), timeout=120)
    assert done.returncode == 2 and "manifest.json: tokenizer/path: '../../etc/passwd'" in done.stderr


def test_the_bundling_step_copies_nothing_from_a_bundle_with_a_link_out(bundle, tmp_path):
    from exporter.bundle import bundle_into_app
    from exporter.errors import InputError
    from exporter.recipes import load_target

    copy = _copy(bundle, tmp_path)
    (copy / "onnx" / "secret.bin").symlink_to(_fifo_outside(tmp_path))
    app = tmp_path / "app"
    app.mkdir()
    with pytest.raises(InputError, match="onnx/secret.bin is a symbolic link"):
        bundle_into_app(copy, load_target("android"), app)
    assert list(app.rglob("*")) == []


# --- 2. checkpoints as people have them ---------------------------------------------------------

def _hf_cache_snapshot(model: Path, cache: Path) -> Path:
    """The Hugging Face hub cache layout: blobs/<sha256> and snapshots/<revision>/NAME -> link."""
    repo = cache / "models--someone--tiny-llama"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / ("0123abcd" * 5)
    snapshot.mkdir(parents=True)
    for f in sorted(model.iterdir()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, repo / "blobs" / digest)
        (snapshot / f.name).symlink_to(Path("..", "..", "blobs", digest))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(snapshot.name)
    return snapshot


def _sharded(model: Path, folder: Path) -> Path:
    """The same tensors split over two shards with model.safetensors.index.json."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    tensors = {}
    for f in model.glob("*.safetensors"):
        tensors.update(load_file(str(f)))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, members in shards.items():
        save_file({n: tensors[n] for n in reversed(members)}, str(folder / shard))
        weight_map |= dict.fromkeys(members, shard)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


def _with_stray_files(model: Path, folder: Path) -> Path:
    shutil.copytree(model, folder)
    (folder / "README.md").write_text("# a model card\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    (folder / "training_args.bin").write_bytes(b"\x80\x04not loaded")
    (folder / "original").mkdir()
    (folder / "original" / "params.json").write_text("{}")
    return folder


def test_one_content_has_one_source_digest_however_it_is_laid_out(model, tmp_path):
    plain = load_checkpoint(model).digest()
    layouts = {
        "hf cache snapshot": _hf_cache_snapshot(model, tmp_path / "hub"),
        "sharded": _sharded(model, tmp_path / "sharded"),
        "stray files": _with_stray_files(model, tmp_path / "stray"),
    }
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != tmp_path.stat().st_dev:
        other = Path(shutil.copytree(model, shm / f"slm-test-{os.getpid()}"))
        layouts["another filesystem"] = other
    try:
        for name, folder in layouts.items():
            assert load_checkpoint(folder).digest() == plain, name
        assert load_checkpoint(layouts["hf cache snapshot"]).name == "tiny-llama"
        # A different content has another digest: one changed byte of one tensor.
        changed = _with_stray_files(model, tmp_path / "changed")
        weights = next(changed.glob("*.safetensors"))
        data = bytearray(weights.read_bytes())
        data[-1] ^= 1
        weights.write_bytes(bytes(data))
        assert load_checkpoint(changed).digest() != plain
    finally:
        if "another filesystem" in layouts:
            shutil.rmtree(layouts["another filesystem"], ignore_errors=True)


def _read_only(folder: Path) -> tuple[Path, bool]:
    """`folder` made read-only for real: a read-only bind mount as root (who ignores permission
    bits), else the permission bits. Returns (path, mounted)."""
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True).returncode == 0
        if mounted:
            if subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True).returncode == 0:
                return folder, True
            subprocess.run(["umount", str(folder)], capture_output=True)
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    return folder, False


def test_a_read_only_hf_cache_snapshot_exports_with_the_plain_digest(model, tmp_path):
    snapshot = _hf_cache_snapshot(model, tmp_path / "hub")
    repo = snapshot.parent.parent
    _, mounted = _read_only(repo)
    try:
        if os.geteuid() != 0 or mounted:
            with pytest.raises(OSError):
                (snapshot / "probe").write_text("x")
        out = tmp_path / "dist"
        done = slm(*EXPORT, "--model", str(snapshot), "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        if mounted:
            subprocess.run(["umount", str(repo)], check=True)
    manifest = manifest_io.read(out / "android")
    assert manifest["model"]["source_sha256"] == load_checkpoint(model).digest()
    assert manifest["model"]["name"] == "tiny-llama"


# --- 4. a full disk ------------------------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="mounting the small filesystem needs root (CI runs as root)")
def test_a_full_disk_fails_in_one_line_and_keeps_the_earlier_bundle(model, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(small)], check=True)
    try:
        out = small / "dist"
        first = slm(*EXPORT, "--model", str(model), "--out", str(out))
        assert first.returncode == 0, first.stderr[-2000:]
        before = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        bundle_bytes = sum(len(b) for b in before.values())
        # Leave less room than a second bundle needs.
        free = shutil.disk_usage(small).free
        with open(small / "filler", "wb") as filler:
            filler.write(b"\0" * max(0, free - bundle_bytes // 3))
        second = slm(*EXPORT, "--model", str(model), "--out", str(out))
        assert second.returncode == 1, second.stderr[-2000:]
        last = second.stderr.strip().splitlines()[-1]
        assert "no space left on the device" in last and "MB free" in last and str(small) in last, last
        assert "Traceback" not in second.stderr
        after = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
        assert after == before  # the earlier bundle, byte for byte, and nothing half-written beside it
        assert sorted(p.name for p in out.iterdir()) == ["android"]
    finally:
        subprocess.run(["umount", str(small)], check=True)


# --- 5. two exports into one folder ----------------------------------------------------------------

def test_a_second_export_into_the_same_output_says_who_holds_it(model, tmp_path):
    out = tmp_path / "dist"
    first = subprocess.Popen([sys.executable, "-m", "exporter", *EXPORT, "--model", str(model), "--out", str(out)],
                             stderr=subprocess.PIPE, text=True)
    for line in first.stderr:  # the first one holds the lock once its target's work starts
        if line.startswith("target android"):
            break
    second = slm(*EXPORT, "--model", str(model), "--out", str(out), timeout=300)
    rest = first.stderr.read()
    assert first.wait(timeout=600) == 0, rest[-2000:]
    assert second.returncode == 1, second.stderr[-2000:]
    assert f"another slm-export (pid {first.pid}) is writing it now" in second.stderr
    # The winner's bundle is whole, and no lock or staging folder is left.
    assert manifest_io.check_files(out / "android", manifest_io.read(out / "android")) == []
    assert sorted(p.name for p in out.iterdir()) == ["android"]
    # Afterwards the folder is free again.
    assert slm(*EXPORT, "--model", str(model), "--out", str(out)).returncode == 0
