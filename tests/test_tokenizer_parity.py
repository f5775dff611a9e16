"""Tokenizer parity: `tokenizers` (reference) vs ExecuTorch's C++ tokenizer and onnxruntime-genai's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from exporter.checkpoint import load_checkpoint
from exporter.student import STUDENT_DIR
from exporter.tokenizer_parity import (
    EXECUTORCH,
    GENAI,
    check_special_ids,
    check_tokenizers,
    executorch_decode,
    executorch_ids,
    expected_ids,
    genai_decode,
    genai_ids,
    load_corpus,
    read_artifact_metadata,
    reference_decode,
    reference_ids,
    write_genai_tokenizer_folder,
)

STUDENT_TOKENIZER = STUDENT_DIR / "tokenizer.json"
DECOMPOSED = "cafe\u0301 and e\u0301 and n\u0303 and A\u030a"  # the corpus' combining-marks text


def _with_normalizer(source_dir: Path, dest: Path, normalizer) -> Path:
    """A copy of source_dir's tokenizer files whose tokenizer.json has `normalizer` added."""
    from tokenizers import Tokenizer

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source_dir / "tokenizer_config.json", dest / "tokenizer_config.json")
    tok = Tokenizer.from_file(str(source_dir / "tokenizer.json"))
    tok.normalizer = normalizer
    tok.save(str(dest / "tokenizer.json"))
    return dest / "tokenizer.json"


@pytest.fixture(scope="module")
def test_checkpoint(family_checkpoint):
    return family_checkpoint("llama", "llama3-rope-tied-gqa2")


@pytest.fixture(scope="module")
def exported_onnx(test_checkpoint, tmp_path_factory):
    """A real ONNX GenAI artifact folder (genai_config.json as the exporter writes it, tokenizer
    files copied as the pipeline copies them), exported once for this module."""
    from exporter.checkpoint import build_model
    from exporter.pipeline import copy_tokenizer_files
    from exporter.recipes import QuantRecipe, Thresholds
    from exporter.runtimes import onnx_genai

    checkpoint = load_checkpoint(test_checkpoint)
    decoder = build_model(checkpoint, 64)
    folder = onnx_genai.emit(decoder, QuantRecipe("none", {}, Thresholds()), 64,
                             onnx_genai.artifact_metadata(checkpoint, 64), tmp_path_factory.mktemp("onnx"))
    copy_tokenizer_files(checkpoint, folder)
    return folder


def test_corpus_covers_the_cases_and_expands_special_tokens():
    items = load_corpus(STUDENT_TOKENIZER)
    assert 20 <= len(items) <= 40
    texts = dict(items)
    assert texts["special bos/eos"] == "<|im_start|>Hello there<|endoftext|>"
    assert "<|endoftext|>" in texts["every special token"] and "<|im_start|>" in texts["every special token"]
    assert not any("{bos}" in t or "{eos}" in t or "{special}" in t for t in texts.values())
    joined = "".join(texts.values())
    for needle in ("  ", "\t", "\n", "\u200d", "\U0001f3fd", "東京", "\u0301", "\u05e9", "\u0645", "def "):
        assert needle in joined, needle


def test_student_parity_across_all_three():
    assert check_tokenizers(STUDENT_TOKENIZER) == []


def test_implementations_agree_id_for_id_on_student(tmp_path):
    """The pieces check_tokenizers composes, directly: same ids, same decoded bytes."""
    texts = [t for _, t in load_corpus(STUDENT_TOKENIZER)]
    ref = reference_ids(STUDENT_TOKENIZER, texts)
    folder = write_genai_tokenizer_folder(STUDENT_TOKENIZER, tmp_path / "genai")
    assert executorch_ids(STUDENT_TOKENIZER, texts) == ref
    assert genai_ids(folder, texts) == ref
    decoded = reference_decode(STUDENT_TOKENIZER, ref)
    assert executorch_decode(STUDENT_TOKENIZER, ref) == [t.encode() for t in decoded]
    assert genai_decode(folder, ref, stream=True) == decoded
    # Byte-level BPE without a normalizer round-trips every corpus text.
    assert decoded == texts


def test_test_checkpoint_parity_with_exported_onnx_folder(test_checkpoint, exported_onnx):
    assert check_tokenizers(test_checkpoint / "tokenizer.json", onnx_folder=exported_onnx) == []


def test_planted_normalizer_in_device_tokenizer_is_caught(tmp_path):
    """A bundle whose tokenizer.json gained an NFC normalizer: the devices get the altered file,
    the reference keeps the checkpoint's."""
    from tokenizers import normalizers

    altered = _with_normalizer(STUDENT_DIR, tmp_path / "bundle", normalizers.NFC())
    genai_folder = write_genai_tokenizer_folder(altered, tmp_path / "onnx")
    failures = check_tokenizers(STUDENT_TOKENIZER, onnx_folder=genai_folder, device_tokenizer_json=altered)
    assert failures
    named = [f for f in failures if f.startswith(EXECUTORCH) and repr(DECOMPOSED) in f]
    assert named, failures
    assert "combining marks (decomposed)" in named[0] and "first difference at token" in named[0]
    # Texts NFC leaves alone are not reported.
    assert not any("'The quick brown fox" in f for f in failures)


def test_checkpoint_normalizer_that_genai_ignores_is_caught(tmp_path):
    """A checkpoint tokenizer with a Lowercase normalizer: onnxruntime-genai does not apply it
    (ids differ on mixed-case text) and ExecuTorch's C++ tokenizer refuses to load it."""
    from tokenizers import normalizers

    lowered = _with_normalizer(STUDENT_DIR, tmp_path / "ckpt", normalizers.Lowercase())
    failures = check_tokenizers(lowered)
    assert any(f.startswith(GENAI) and "'The quick brown fox jumps over the lazy dog.'" in f for f in failures), failures
    assert any(f.startswith(f"{EXECUTORCH}: cannot load") and "Lowercase" in f for f in failures), failures
    # Lowercase leaves lowercase-only text as is: not reported.
    assert not any("'two  spaces" in f for f in failures)


def test_explicit_texts_and_expected_ids():
    texts = ["Hello World", "e\u0301 🙂"]
    assert check_tokenizers(STUDENT_TOKENIZER, texts=texts) == []
    record = expected_ids(STUDENT_TOKENIZER, texts)
    assert [r["text"] for r in record] == texts
    assert [r["ids"] for r in record] == reference_ids(STUDENT_TOKENIZER, texts, add_special_tokens=True)
    assert all(set(r) == {"text", "ids"} for r in record)
    assert len(expected_ids(STUDENT_TOKENIZER)) == len(load_corpus(STUDENT_TOKENIZER))


def _student_manifest() -> dict:
    checkpoint = load_checkpoint(STUDENT_DIR)
    return {"model": {"bos_token_id": checkpoint.bos_token_id, "eos_token_ids": list(checkpoint.eos_token_ids)}}


def _student_artifact_metadata() -> dict[str, dict]:
    """What each runtime writes into its artifact for the student (its own keys)."""
    from exporter.runtimes import coreml, executorch, onnx_genai

    checkpoint = load_checkpoint(STUDENT_DIR)
    return {"model.pte": executorch.artifact_metadata(checkpoint, 128),
            "onnx": onnx_genai.artifact_metadata(checkpoint, 128),
            "model.mlpackage": coreml.artifact_metadata(checkpoint, 128)}


def _as_read(written: dict[str, dict]) -> dict[str, dict]:
    """The metadata as each runtime's read_metadata reports it: its own keys read by its own
    special_ids (no file round trip; the exported-artifact tests do that)."""
    from exporter.runtimes import runtime

    formats = {"model.pte": "executorch", "onnx": "onnx", "model.mlpackage": "coreml"}
    out = {}
    for name, meta in written.items():
        bos, eos = runtime(formats[name]).special_ids(meta)
        out[name] = {**meta, "format": formats[name], "bos_id": bos, "eos_ids": eos}
    return out


def test_special_ids_agree_for_student():
    assert check_special_ids(STUDENT_DIR, _student_manifest(), _as_read(_student_artifact_metadata())) == []


def test_special_ids_for_test_checkpoint_and_its_onnx_artifact(test_checkpoint, exported_onnx, tmp_path):
    checkpoint = load_checkpoint(test_checkpoint)
    manifest = {"model": {"bos_token_id": checkpoint.bos_token_id, "eos_token_ids": checkpoint.eos_token_ids}}
    problems = check_special_ids(test_checkpoint, manifest, {"onnx": read_artifact_metadata(exported_onnx)})
    assert problems == []
    # generation_config.json says eos 2 while tokenizer_config.json names <|endoftext|> (0): generation
    # stops at both, so a manifest and artifact that stop only at 0 are reported
    altered = tmp_path / "ckpt"
    shutil.copytree(test_checkpoint, altered)
    (altered / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    problems = check_special_ids(altered, manifest, {"onnx": read_artifact_metadata(exported_onnx)})
    assert "eos: generation_config.json says [2], not among the manifest's stop ids [0]" in problems
    assert load_checkpoint(altered).eos_token_ids == [2, 0]  # what the exporter ships for it
    assert check_special_ids(altered, None, {"onnx": read_artifact_metadata(exported_onnx)}) == [
        "eos: artifact onnx (onnx metadata) says [0], the stop ids of generation_config.json, config.json, "
        "tokenizer_config.json are [2, 0]"]


def test_planted_special_id_mismatches_are_caught(tmp_path):
    manifest = _student_manifest()
    manifest["model"]["eos_token_ids"] = [1]
    problems = check_special_ids(STUDENT_DIR, manifest)
    assert problems == [f"eos: {source} says [0], not among the manifest's stop ids [1]"
                        for source in ("generation_config.json", "config.json", "tokenizer_config.json")]

    meta = _student_artifact_metadata()
    meta["model.pte"]["get_bos_id"] = 0
    meta["model.mlpackage"]["slm_export.eos_token_ids"] = "[0, 1]"
    problems = check_special_ids(STUDENT_DIR, _student_manifest(), _as_read(meta))
    assert any(p.startswith("bos: artifact model.pte (executorch metadata) says 0") for p in problems), problems
    assert any(p.startswith("eos: artifact model.mlpackage (coreml metadata) says [0, 1]") for p in problems), problems
    assert len(problems) == 2

    # tokenizer_config.json naming another eos than generation_config.json: both are stop ids
    folder = tmp_path / "ckpt"
    shutil.copytree(STUDENT_DIR, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["eos_token"] = "<|im_start|>"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert check_special_ids(folder, {"model": {"bos_token_id": 1, "eos_token_ids": [0]}}) == [
        "eos: tokenizer_config.json says [1], not among the manifest's stop ids [0]"]
    assert check_special_ids(folder, {"model": {"bos_token_id": 1, "eos_token_ids": [0, 1]}}) == []


def test_eos_list_with_member_single_eos_is_agreement(tmp_path):
    """generation_config.json may list several eos ids; tokenizer_config.json's eos is one of them."""
    folder = tmp_path / "ckpt"
    shutil.copytree(STUDENT_DIR, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": [0, 1]}))
    manifest = {"model": {"bos_token_id": 1, "eos_token_ids": [1, 0]}}
    assert check_special_ids(folder, manifest, {"onnx": {"format": "onnx", "bos_id": 1, "eos_ids": [0, 1]}}) == []
    assert check_special_ids(folder, {"model": {"bos_token_id": 1, "eos_token_ids": [0]}}) == [
        "eos: generation_config.json says [0, 1], not among the manifest's stop ids [0]"]


def _with_bos_template(tmp_path: Path, add_bos_token: bool, post_processor: bool) -> Path:
    from tokenizers import Tokenizer, processors

    folder = tmp_path / f"bos-{add_bos_token}-{post_processor}"
    folder.mkdir()
    config = json.loads((STUDENT_DIR / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "add_bos_token": add_bos_token}))
    tok = Tokenizer.from_file(str(STUDENT_TOKENIZER))
    if post_processor:
        tok.post_processor = processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)])
    tok.save(str(folder / "tokenizer.json"))
    return folder / "tokenizer.json"


def test_bos_post_processor_parity(tmp_path):
    """A tokenizer.json whose post-processor adds bos: the runner's bos=1 and GenAI's
    add_special_tokens=true both apply it, as `tokenizers` does with add_special_tokens=True."""
    tokenizer_json = _with_bos_template(tmp_path, add_bos_token=False, post_processor=True)
    assert executorch_ids(tokenizer_json, ["hi"], bos=1) == [[1, *reference_ids(tokenizer_json, ["hi"])[0]]]
    assert check_tokenizers(tokenizer_json) == []


def test_add_bos_token_without_post_processor_differs_in_genai(tmp_path):
    """GenAI adds bos for tokenizer_config.json's add_bos_token even when tokenizer.json has no
    post-processor; `tokenizers` (and the C++ tokenizer) add nothing: reported per string."""
    failures = check_tokenizers(_with_bos_template(tmp_path, add_bos_token=True, post_processor=False))
    assert failures and all(f.startswith(GENAI) and "encode (add_special_tokens=true) differs" in f for f in failures)
    assert any("'The quick brown fox" in f and "vs [1, " in f for f in failures)
