"""Bad input, one case per input: exit code 2, one line that names the file and the problem,
no traceback, nothing written, and an earlier good output left byte-identical."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

GOOD_ARGS = ["--target", "android", "--formats", "executorch", "--quant", "none", "--max-seq-len", "32",
             "--no-bundle"]


def slm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=600)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, family_checkpoint):
    """A good checkpoint and an earlier good output made from it."""
    out = tmp_path_factory.mktemp("dist")
    good = family_checkpoint("llama", "llama3-rope-tied-gqa2")
    result = slm(*GOOD_ARGS, "--model", str(good), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return good, out, _tree(out)


def _config(d: Path) -> dict:
    return json.loads((d / "config.json").read_text())


def _write_config(d: Path, **changes) -> None:
    (d / "config.json").write_text(json.dumps({**_config(d), **changes}))


def _tensors(d: Path, edit) -> None:
    tensors = load_file(d / "model.safetensors")
    edit(tensors)
    save_file(tensors, d / "model.safetensors")


def _shard(d: Path, shard_name: str) -> None:
    tensors = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    names = sorted(tensors)
    save_file({k: tensors[k] for k in names[:3]}, d / "part-1.safetensors")
    weight_map = {k: "part-1.safetensors" for k in names[:3]} | {k: shard_name for k in names[3:]}
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _rewrite(path: Path, data: bytes) -> None:
    path.write_bytes(data)


CASES = {
    "config missing": (lambda d: (d / "config.json").unlink(), "config.json", "not found"),
    "config empty": (lambda d: _rewrite(d / "config.json", b""), "config.json", "is empty"),
    "config not JSON": (lambda d: _rewrite(d / "config.json", b"{model_type: llama"), "config.json", "not valid JSON"),
    "config not an object": (lambda d: _rewrite(d / "config.json", b"[1, 2]"), "config.json", "expected a JSON object"),
    "unknown model_type": (lambda d: _write_config(d, model_type="mamba"), "config.json", "model_type 'mamba' is not supported"),
    "zero hidden size": (lambda d: _write_config(d, hidden_size=0), "config.json", "hidden_size must be a positive integer"),
    "negative layers": (lambda d: _write_config(d, num_hidden_layers=-2), "config.json", "num_hidden_layers must be a positive"),
    "heads do not divide hidden": (lambda d: _write_config(d, num_attention_heads=5, head_dim=None), "config.json",
                                   "not divisible by num_attention_heads"),
    "kv heads do not divide heads": (lambda d: _write_config(d, num_key_value_heads=3), "config.json",
                                     "not a multiple of num_key_value_heads"),
    "context zero": (lambda d: _write_config(d, max_position_embeddings=0), "config.json",
                     "max_position_embeddings must be a positive integer"),
    "context absurd": (lambda d: _write_config(d, max_position_embeddings=10**12), "config.json",
                       "max_position_embeddings 1000000000000 is implausibly large"),
    "eps not a number": (lambda d: _write_config(d, rms_norm_eps="small"), "config.json", "rms_norm_eps must be"),
    "safetensors truncated": (lambda d: _rewrite(d / "model.safetensors", (d / "model.safetensors").read_bytes()[:5000]),
                              "model.safetensors", "safetensors"),
    "safetensors header corrupt": (lambda d: _rewrite(d / "model.safetensors",
                                                      b"\xff" * 8 + (d / "model.safetensors").read_bytes()[8:]),
                                   "model.safetensors", "not a readable safetensors file"),
    "tensor of wrong shape": (lambda d: _tensors(d, lambda t: t.update({"model.norm.weight": torch.ones(7)})),
                              "model.safetensors", "model.norm.weight' has shape [7]"),
    "tensor of wrong dtype": (lambda d: _tensors(d, lambda t: t.update({"model.norm.weight": torch.ones(64, dtype=torch.int32)})),
                              "model.safetensors", "dtype I32"),
    "missing tensor": (lambda d: _tensors(d, lambda t: t.pop("model.layers.0.mlp.up_proj.weight")), "ckpt",
                       "missing tensors model.layers.0.mlp.up_proj.weight"),
    "extra tensor": (lambda d: _tensors(d, lambda t: t.update({"model.extra.weight": torch.ones(3)})), "ckpt",
                     "not used by the llama model: model.extra.weight"),
    "index names a missing shard": (lambda d: _shard(d, "part-2.safetensors"), "model.safetensors.index.json",
                                    "shard 'part-2.safetensors'"),
    "shard name escapes the folder": (lambda d: _shard(d, "../../etc/passwd"), "ckpt", "outside the checkpoint directory"),
    "pickle-only weights": (lambda d: ((d / "model.safetensors").unlink(), _rewrite(d / "pytorch_model.bin", b"x")),
                            "ckpt", "pickle"),
    "tokenizer missing": (lambda d: (d / "tokenizer.json").unlink(), "tokenizer.json", "not found"),
    "tokenizer not JSON": (lambda d: _rewrite(d / "tokenizer.json", b"<html>"), "tokenizer.json", "not valid JSON"),
    "tokenizer larger than the vocabulary": (lambda d: _write_config(d, vocab_size=300), "tokenizer.json",
                                             "the tokenizer has 320 tokens but the model's vocab_size is 300"),
    "bos out of range": (lambda d: _rewrite(d / "generation_config.json", b'{"bos_token_id": 5000, "eos_token_id": 0}'),
                         "ckpt", "bos_token_id 5000 is outside the vocabulary"),
    "eos out of range": (lambda d: _rewrite(d / "generation_config.json", b'{"bos_token_id": 1, "eos_token_id": [0, -1]}'),
                         "ckpt", "eos_token_id -1 is outside the vocabulary"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_checkpoint(case, earlier, tmp_path):
    good, out, before = earlier
    edit, names, problem = CASES[case]
    bad = tmp_path / "ckpt"
    shutil.copytree(good, bad)
    edit(bad)
    result = slm(*GOOD_ARGS, "--model", str(bad), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and names in last and problem in last, last
    assert _tree(out) == before


def test_missing_model_directory(earlier, tmp_path):
    _, out, before = earlier
    result = slm(*GOOD_ARGS, "--model", str(tmp_path / "nowhere"), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{tmp_path / 'nowhere'}: model directory does not exist" in result.stderr
    assert _tree(out) == before


@pytest.mark.parametrize("args,problem", [
    (["--target", "tablet"], "unknown target 'tablet' (choose from: android, ios; or a path to a target TOML file)"),
    (["--target", "android", "--formats", "tflite"], "unknown format tflite"),
    (["--target", "ios", "--formats", "onnx"], "target 'ios' does not emit onnx"),
    (["--target", "android", "--quant", "int3"], "quantization recipe 'int3' is not defined"),
])
def test_bad_usage(args, problem, earlier):
    good, out, before = earlier
    result = slm(*args, "--model", str(good), "--out", str(out), "--no-bundle")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert problem in result.stderr
    assert _tree(out) == before


def test_kv_cache_too_large_for_a_phone(earlier, tmp_path):
    good, out, before = earlier
    big = tmp_path / "ckpt"
    shutil.copytree(good, big)
    _write_config(big, max_position_embeddings=16_000_000)
    result = slm(*GOOD_ARGS[:-3], "--max-seq-len", "16000000", "--no-bundle", "--model", str(big), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{big}: a KV cache of 16000000 tokens needs" in result.stderr
    assert _tree(out) == before


def test_output_directory_is_a_file(earlier, tmp_path):
    good, _, _ = earlier
    blocker = tmp_path / "dist"
    blocker.write_text("not a folder")
    result = slm(*GOOD_ARGS, "--model", str(good), "--out", str(blocker))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{blocker}: cannot write the output there" in result.stderr
    assert blocker.read_text() == "not a folder"


def test_output_directory_is_read_only(earlier, tmp_path):
    """Read-only for real: a read-only bind mount as root (who ignores permission bits, as CI
    runs), else the permission bits."""
    good, _, _ = earlier
    locked = tmp_path / "locked"
    locked.mkdir()
    mounted = os.geteuid() == 0
    if mounted:
        subprocess.run(["mount", "--bind", str(locked), str(locked)], check=True)
        subprocess.run(["mount", "-o", "remount,ro,bind", str(locked)], check=True)
    else:
        locked.chmod(0o500)
    try:
        with pytest.raises(OSError):
            (locked / "probe").write_text("x")
        result = slm(*GOOD_ARGS, "--model", str(good), "--out", str(locked))
    finally:
        if mounted:
            subprocess.run(["umount", str(locked)], check=True)
        locked.chmod(0o700)
    assert result.returncode == 2 and f"{locked}: cannot write the output there" in result.stderr, result.stderr
    assert list(locked.iterdir()) == []


def test_checkpoint_too_big_for_the_target_is_refused_early(earlier, tmp_path):
    """A config whose parameter count is above the target's limit (a 70B-shaped llama config with
    the small test weights), through the CLI: refused from config.json alone. Had it read the
    weights, their shapes (far smaller than the config's) would have failed differently."""
    from exporter.checkpoint import load_checkpoint
    from exporter.recipes import load_target

    good, _, _ = earlier
    target = load_target("android")
    assert target.max_parameters and load_checkpoint(good).spec.num_parameters < target.max_parameters
    huge = _config(good) | {"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                            "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128}
    big = tmp_path / "ckpt"
    shutil.copytree(good, big)
    (big / "config.json").write_text(json.dumps(huge))
    out = tmp_path / "out"
    result = slm(*GOOD_ARGS, "--model", str(big), "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "parameters is above the android target's limit of 4,000,000,000" in result.stderr
    assert "shape" not in result.stderr and not out.exists()


def test_a_model_the_machine_cannot_export_is_refused_from_its_config(earlier, tmp_path):
    """A 3B-shaped llama config (below the phone's 4B limit) with the small test weights: its
    export would need more memory than this machine (or CI's 24 GiB) has; refused through the CLI
    with the figure and the limit before any weight is read."""
    from exporter.pipeline import check_machine_memory, machine_memory_bytes

    good, _, _ = earlier
    config = _config(good) | {"hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
                              "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128,
                              "vocab_size": 128256}
    big = tmp_path / "ckpt"
    shutil.copytree(good, big)
    (big / "config.json").write_text(json.dumps(config))
    from exporter.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(big)
    needed = 4 * checkpoint.spec.num_parameters * 2.5
    if machine_memory_bytes() >= needed:
        pytest.skip("this machine has the memory to export a 3B model")
    result = slm(*GOOD_ARGS, "--model", str(big), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "GiB of memory to export to executorch, and this machine has" in result.stderr
    check_machine_memory(load_checkpoint(good), {"executorch", "onnx", "coreml"})  # the small model passes
