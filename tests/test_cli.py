"""The command line: help on every command, inspect, and the exit-code contract."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CASE_IDS
from helpers import edit_json

COMMANDS = [[], ["inspect"], ["verify"], ["run"]]


def slm(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "main")
def test_help_is_complete(command):
    result = slm(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    # every option documented: each --flag line carries text after it
    options = [line for line in result.stdout.splitlines() if line.strip().startswith("--")]
    assert options and all(len(line.split(None, 1)) == 2 or "--help" in line for line in options)


def test_main_help_lists_every_command_and_target():
    out = slm("--help").stdout
    for word in ("inspect", "verify", "run", "android", "ios", "all", "--max-seq-len", "--quant", "--formats"):
        assert word in out


def test_inspect_the_built_in_student():
    result = slm("inspect", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["family"] == "llama" and info["tied_embeddings"] is True
    assert info["vocab_size"] >= info["tokenizer"]["vocab"]
    assert set(info["targets"]) == {"android", "ios"}
    assert all(t["artifacts"] for t in info["targets"].values())


@pytest.mark.parametrize(("family", "case"), CASE_IDS, ids=[f"{f}-{c}" for f, c in CASE_IDS])
def test_inspect_every_family(family, case, family_checkpoint):
    result = slm("inspect", "--model", str(family_checkpoint(family, case)))
    assert result.returncode == 0, result.stderr
    assert f"family       {family}" in result.stdout
    assert "--target android" in result.stdout and "attention    " in result.stdout
    if case in LAYER_TYPES_SHOWN:
        assert f"attention    {LAYER_TYPES_SHOWN[case]}\n" in result.stdout


# What inspect says of the families that mix global and windowed layers (the config's layer order).
LAYER_TYPES_SHOWN = {
    "sliding-global-two-bases": "layer types local (window 24) x2, global",
    "global-first-scalar-16-gqa2": "layer types global, local (window 16) x2",
    "global-local-window-24": "layer types global, local (window 24), global, local (window 24)",
}


@pytest.mark.parametrize("args", [
    ["--target", "windows"],
    ["--target", "android", "--formats", "tflite"],
    ["--target", "android", "--max-seq-len", "2"],
    ["--target", "android", "--bogus"],
    [],
])
def test_bad_usage_exits_2_without_traceback(args):
    result = slm(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_bad_checkpoint_is_one_line_exit_2(tmp_path, family_checkpoint):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(family_checkpoint("gpt2", "tied"), broken)
    edit_json(broken / "config.json", n_head=5)
    result = slm("--target", "android", "--model", str(broken), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "config.json" in lines[-1] and "n_head" in lines[-1]
    assert not (tmp_path / "out" / "android").exists()


def test_unknown_recipe_is_exit_2(tmp_path, family_checkpoint):
    result = slm("--target", "android", "--model", str(family_checkpoint("gpt2", "tied")), "--quant", "int3",
                 "--out", str(tmp_path))
    assert result.returncode == 2
    assert "quantization recipe 'int3' is not defined for executorch" in result.stderr
