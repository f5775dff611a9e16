"""The export command end to end on a random checkpoint: output contract, verify, run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from exporter import manifest as manifest_io
from exporter.checkpoint import build_model, load_checkpoint
from exporter.reference import ReferenceLM
from exporter.tokenizer import load_tokenizer


def slm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, family_checkpoint):
    """One fp32 android export of a random qwen2 checkpoint, shared by the tests below."""
    out = tmp_path_factory.mktemp("dist")
    app = tmp_path_factory.mktemp("app")
    model = family_checkpoint("qwen2", "tied-gqa2")
    result = slm("--target", "android", "--model", str(model), "--out", str(out), "--quant", "none",
                 "--max-seq-len", "128", "--app-dir", str(app))
    assert result.returncode == 0, result.stderr
    return model, out / "android", result, app


def test_bundle_holds_exactly_the_manifest_files(exported):
    _, bundle, result, _ = exported
    manifest = manifest_io.read(bundle)  # validates against the schema
    assert manifest["target"] == "android" and manifest["model"]["max_seq_len"] == 128
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    extras = {f["path"] for f in manifest["extras"]}
    assert extras == {"extras/onnx/model.onnx", "extras/onnx/required_operators.config"}
    assert on_disk == {f["path"] for f in manifest["files"]} | extras | {"manifest.json"}
    assert manifest_io.check_files(bundle, manifest) == []
    paths = {a["format"]: a["path"] for a in manifest["artifacts"]}
    assert paths == {"executorch": "executorch/model.pte", "onnx": "onnx"}
    for artifact in manifest["artifacts"]:
        assert artifact["parity"]["passed"] and artifact["parity"]["top1"] == 1.0
        assert artifact["quantization"] == "none"
    assert "android: verified executorch/model.pte" in result.stdout and "onnx (none" in result.stdout
    # The GenAI folder holds what the phone loads, nothing else (model.onnx would double it).
    assert {p.name for p in (bundle / "onnx").iterdir()} == {"genai_config.json", "model.ort", "tokenizer.json",
                                                             "tokenizer_config.json"}
    parity = json.loads((bundle / "parity.json").read_text())
    assert [p["format"] for p in parity] == ["executorch", "onnx"]
    for result_of_format in parity:
        assert {p["name"] for p in result_of_format["prompts"]} == {"short", "code", "non-ascii", "long"}
        long_prompt = next(p for p in result_of_format["prompts"] if p["name"] == "long")
        assert long_prompt["prompt_tokens"] == 128 - 32  # reaches the context limit
    assert "<svg" in (bundle / "parity.html").read_text()
    assert not list(bundle.parent.glob(".staging-*"))


def test_verify_passes_with_recorded_reference_and_with_checkpoint(exported):
    model, bundle, _, _ = exported
    recorded = slm("verify", str(bundle))
    assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    assert recorded.stdout.count("reference recorded-top32") == 2  # executorch and onnx
    full = slm("verify", str(bundle), "--model", str(model))
    assert full.returncode == 0, full.stdout + full.stderr
    assert "reference checkpoint" in full.stdout


def test_verify_fails_on_any_changed_byte(exported, tmp_path):
    _, bundle, _, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    tokenizer = copy / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes().replace(b'"', b"'", 1))
    result = slm("verify", str(copy))
    assert result.returncode == 1
    assert "tokenizer.json: sha256 differs" in result.stderr


def test_verify_fails_parity_on_perturbed_weights(exported, tmp_path):
    """A self-consistent bundle (digests updated) whose weights were perturbed after export."""
    import torch

    from exporter.recipes import QuantRecipe, Thresholds
    from exporter.runtimes import executorch as et

    model, bundle, _, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    checkpoint = load_checkpoint(model)
    decoder = build_model(checkpoint, 128)
    with torch.no_grad():
        decoder.layers[0].mlp.down_proj.weight.mul_(1.5)
    et.emit(decoder, QuantRecipe("none", {}, Thresholds()), 128, et.artifact_metadata(checkpoint, 128),
            copy / "executorch")
    manifest = json.loads((copy / "manifest.json").read_text())
    size, digest = manifest_io.artifact_digest(copy / "executorch" / "model.pte")
    manifest["artifacts"][0].update(bytes=size, sha256=digest)
    manifest["files"] = manifest_io.list_files(copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = slm("verify", str(copy))
    assert result.returncode == 1
    assert "verify failed: executorch/model.pte:" in result.stderr
    assert "FAIL executorch/model.pte" in result.stdout


@pytest.mark.parametrize("fmt", ["executorch", "onnx"])
def test_run_generates_the_reference_tokens(exported, fmt):
    model, bundle, _, _ = exported
    result = slm("run", str(bundle), "--prompt", "def add(a, b):", "--max-new-tokens", "20", "--json",
                 "--format", fmt)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    checkpoint = load_checkpoint(model)
    ids = load_tokenizer(checkpoint.tokenizer.tokenizer_json).encode("def add(a, b):").ids
    assert out["prompt_ids"] == ids
    expected, _ = ReferenceLM(build_model(checkpoint, 128), 128).greedy(ids, 20, checkpoint.eos_token_ids)
    assert out["generated_ids"] == expected and out["format"] == fmt


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", "word " * 200], "the artifact's context is 128"),
    (["--prompt", "x", "--format", "coreml"], "has no coreml artifact"),
])
def test_run_refuses_bad_prompts(exported, args, message):
    _, bundle, _, _ = exported
    result = slm("run", str(bundle), *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def _tree(root):
    """{relative path: bytes} of every file: byte-identity of a whole folder."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_app_assets_hold_exactly_the_manifest_files(exported):
    _, bundle, result, app = exported
    assets = app / "app/src/main/assets/slm"
    assert f"android: bundled into {assets}" in result.stdout
    manifest = manifest_io.read(assets)
    assert manifest_io.check_files(assets, manifest) == []
    # The app gets the bundle without extras/ (model.onnx, required_operators.config): only what it loads.
    shipped = _tree(assets)
    assert shipped == {path: data for path, data in _tree(bundle).items() if not path.startswith("extras/")}
    assert set(shipped) == {f["path"] for f in manifest["files"]} | {"manifest.json"}
    onnx_graph = next(f for f in manifest["extras"] if f["path"] == "extras/onnx/model.onnx")
    assert sum(map(len, shipped.values())) + onnx_graph["bytes"] < sum(map(len, _tree(bundle).values()))
    assert not [p for p in assets.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    verify = slm("verify", str(assets))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_manifest_carries_golden_self_test_vectors_the_host_reproduces(exported):
    from exporter.runtimes import runtime

    _, bundle, _, _ = exported
    manifest = manifest_io.read(bundle)
    for artifact in manifest["artifacts"]:
        cases = artifact["self_test"]["cases"]
        assert cases and all(c["must_match"] >= 1 for c in cases)
        session = runtime(artifact["format"]).open_session(bundle / artifact["path"])
        for case in cases:
            session.reset()
            got = [int(session.forward(case["prompt_ids"]).argmax())]
            while len(got) < case["must_match"]:
                got.append(int(session.forward([got[-1]]).argmax()))
            assert got == case["expected_ids"][: case["must_match"]]
