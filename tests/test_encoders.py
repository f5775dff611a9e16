"""Encoders (BERT, RoBERTa, DistilBERT): our math against transformers' on every task head, the
checkpoint's task and pooling, the manifest contract, and exports through the real runtimes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_random_encoder
from jsonschema import Draft202012Validator

from exporter import manifest as manifest_io
from exporter.checkpoint import CheckpointError, build_model, load_checkpoint
from exporter.cli import main
from exporter.encoder_verify import best_span, make_cases, make_reference, measure
from exporter.models import ENCODERS
from exporter.models.encoder import Pooling

ENCODER_CASES = [(family, name) for family, f in ENCODERS.items() for name, _ in f.test_cases()]
VOCAB = 400


def _config(family: str, case: str) -> dict:
    return dict(next(cfg for name, cfg in ENCODERS[family].test_cases() if name == case), vocab_size=VOCAB)


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory):
    made: dict[tuple, Path] = {}

    def make(family: str, case: str, pooling: dict | None = None) -> Path:
        key = (family, case, json.dumps(pooling, sort_keys=True))
        if key not in made:
            made[key] = save_random_encoder(tmp_path_factory.mktemp(f"{family}-{case}"), _config(family, case),
                                            pooling=pooling)
        return made[key]

    return make


def _hf(path: Path, case: str):
    import transformers
    from helpers import ENCODER_HEADS

    architecture = json.loads((path / "config.json").read_text())["architectures"][0]
    head = next(cls for suffix, cls in ENCODER_HEADS.items() if architecture.endswith(suffix))
    return getattr(transformers, head).from_pretrained(path, dtype=torch.float32).eval()


def _padded_batch(checkpoint, texts: list[str]):
    from exporter.encoder_verify import tokenizer_for

    encodings = tokenizer_for(checkpoint.tokenizer.tokenizer_json, 64).encode_batch(texts)
    length = max(len(e.ids) for e in encodings)
    pad = checkpoint.spec.pad_token_id
    ids = torch.tensor([e.ids + [pad] * (length - len(e.ids)) for e in encodings])
    mask = torch.tensor([[1] * len(e.ids) + [0] * (length - len(e.ids)) for e in encodings])
    return ids, mask


@pytest.mark.parametrize(("family", "case"), ENCODER_CASES, ids=[f"{f}-{c}" for f, c in ENCODER_CASES])
def test_outputs_match_transformers(family, case, encoder_checkpoint):
    """Every task head of every family, on a right-padded batch of different lengths."""
    path = encoder_checkpoint(family, case)
    checkpoint = load_checkpoint(path)
    assert checkpoint.spec.task == case
    ours, hf = build_model(checkpoint), _hf(path, case)
    ids, mask = _padded_batch(checkpoint, ["A short one.", "A somewhat longer sentence, with more words in it.",
                                           "Café 東京"])
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask)
        got = ours(ids, mask)
        real = mask.bool()
        if case == "feature-extraction":
            hidden = ours.hidden_states(ids, mask)
            assert (hidden[real] - expected.last_hidden_state[real]).abs().max() < 1e-4
            mean = (expected.last_hidden_state * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            assert (got[0] - mean).abs().max() < 1e-4
        elif case == "sequence-classification":
            assert (got[0] - expected.logits).abs().max() < 1e-4
        elif case == "token-classification":
            assert (got[0][real] - expected.logits[real]).abs().max() < 1e-4
        else:
            assert (got[0][real] - expected.start_logits[real]).abs().max() < 1e-4
            assert (got[1][real] - expected.end_logits[real]).abs().max() < 1e-4


@pytest.mark.parametrize(("mode", "dense"), [("mean", None), ("cls", None), ("max", None),
                                             ("mean", {"out_features": 48, "activation": "tanh"}),
                                             ("cls", {"out_features": 80, "activation": "identity"})])
def test_sentence_transformers_pooling(mode, dense, encoder_checkpoint):
    """Our pooled, projected (a Dense module), normalised embedding is sentence-transformers' own,
    for each pooling mode."""
    from sentence_transformers import SentenceTransformer

    path = encoder_checkpoint("bert", "feature-extraction", {"mode": mode, "normalize": True, "dense": dense})
    checkpoint = load_checkpoint(path)
    assert checkpoint.spec.pooling.mode == mode and checkpoint.spec.pooling.normalize
    assert (checkpoint.spec.pooling.projection is None) == (dense is None)
    if dense is None:
        assert checkpoint.spec.pooling == Pooling(mode, True, "sentence-transformers")
    assert checkpoint.spec.max_input_tokens == 96  # sentence_bert_config.json
    texts = ["A short one.", "A somewhat longer sentence, with more words in it.", "Naïve café in 東京!"]
    expected = SentenceTransformer(str(path), device="cpu").encode(texts, convert_to_tensor=True)
    ids, mask = _padded_batch(checkpoint, texts)
    with torch.no_grad():
        got = build_model(checkpoint)(ids, mask, torch.zeros_like(ids))[0]
    assert torch.allclose(got, expected, atol=1e-5)


def test_task_labels_and_refusals(tmp_path, encoder_checkpoint):
    checkpoint = load_checkpoint(encoder_checkpoint("bert", "token-classification"))
    assert checkpoint.spec.labels == ("O", "B-PER", "I-PER", "B-LOC")
    assert checkpoint.spec.outputs == ("logits",)
    source = encoder_checkpoint("distilbert", "question-answering")
    assert load_checkpoint(source).spec.outputs == ("start_logits", "end_logits")
    # A family we know but do not yet export is refused by name, with the reason.
    copy = tmp_path / "deberta"
    shutil.copytree(source, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "model_type": "deberta-v2"}))
    with pytest.raises(CheckpointError, match="deberta-v2.*disentangled relative attention"):
        load_checkpoint(copy)
    # A task head we do not export is named.
    (copy / "config.json").write_text(json.dumps({**config, "architectures": ["DistilBertForMultipleChoice"]}))
    with pytest.raises(CheckpointError, match="DistilBertForMultipleChoice"):
        load_checkpoint(copy)
    # Pooling that sentence-transformers would apply and we cannot is refused, not approximated.
    pooled = tmp_path / "pooled"
    shutil.copytree(encoder_checkpoint("bert", "feature-extraction", {"mode": "mean", "normalize": False}), pooled)
    pooling = json.loads((pooled / "1_Pooling" / "config.json").read_text())
    (pooled / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "pooling_mode_mean_sqrt_len_tokens": True}))
    with pytest.raises(CheckpointError, match="pooling_mode_mean_sqrt_len_tokens"):
        load_checkpoint(pooled)


def test_best_span_stays_in_the_passage():
    start = np.array([9.0, 0, 0, 1, 5, 0, 0])
    end = np.array([9.0, 0, 0, 0, 0, 4, 8])
    assert best_span(start, end, (3, 6)) == (4, 6)  # the question's high logits (position 0) are not a span
    # The best start (5) lies after the best end (3): that pair is no span.
    assert best_span(np.array([0.0, 0, 0, 0, 0, 5]), np.array([0.0, 0, 0, 6, 0, 0]), (2, 5)) == (2, 3)


def test_measure_names_each_task_figure(encoder_checkpoint):
    checkpoint = load_checkpoint(encoder_checkpoint("bert", "feature-extraction"))
    encoder = build_model(checkpoint)
    reference = make_reference(encoder, make_cases(checkpoint.tokenizer.tokenizer_json, "feature-extraction", 64))
    assert len(reference.cases) >= 50 and max(len(c.ids) for c in reference.cases) == 64  # the long text is cut
    same = measure(reference, reference.outputs)
    assert same["cosine_min"] > 0.99999 and same["neighbour_agreement"] == 1.0 and same["max_abs"] == 0.0
    shuffled = [[reference.outputs[(i + 1) % len(reference.outputs)][0]] for i in range(len(reference.outputs))]
    worse = measure(reference, shuffled)
    assert worse["cosine_min"] < 0.99 and worse["neighbour_agreement"] < 0.5


def _export(model: Path, out: Path, *args: str) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["--model", str(model), "--out", str(out), "--no-bundle", *args])
    assert result.exit_code == 0, result.output


def test_encoder_bundle_exports_verifies_and_runs(tmp_path, encoder_checkpoint):
    """A sentence-transformers checkpoint through ONNX Runtime: the manifest says the task, its
    inputs and pooling (and passes the schema the apps test against), verify re-runs parity,
    run prints the cosines, and a tampered reference fails verify."""
    from click.testing import CliRunner

    model = encoder_checkpoint("bert", "feature-extraction", {"mode": "mean", "normalize": True})
    _export(model, tmp_path, "--target", "android", "--formats", "onnx")
    bundle = tmp_path / "android"
    manifest = manifest_io.read(bundle)
    assert manifest["encoder"] == {"task": "feature-extraction", "inputs": ["input_ids", "attention_mask",
                                                                            "token_type_ids"],
                                   "outputs": ["embeddings"], "labels": [], "pad_token_id": 0,
                                   "pooling": {"mode": "mean", "normalize": True, "source": "sentence-transformers"}}
    assert manifest["model"]["max_seq_len"] == 96
    (artifact,) = manifest["artifacts"]
    assert artifact["path"] == "onnx/model.ort" and artifact["parity"]["cosine_min"] > 0.9999
    assert artifact["self_test"]["cases"] and all(len(c["expected"][0]) == 64 for c in artifact["self_test"]["cases"])
    tokenizer_vectors = {v["text"]: v["ids"] for v in manifest["tokenizer"]["self_test"]}
    assert max(len(ids) for ids in tokenizer_vectors.values()) == 96  # truncated to the input limit, never padded

    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(bundle)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["run", str(bundle), "--text", "The cat sleeps.", "--text", "A kitten naps.",
                                  "--json"])
    assert result.exit_code == 0, result.output
    ran = json.loads(result.output)
    assert ran["cosine"][0][0] == pytest.approx(1.0, abs=1e-5) and abs(ran["embeddings"][0]["norm"] - 1) < 1e-4
    result = runner.invoke(main, ["run", str(bundle), "--prompt", "hello"])
    assert result.exit_code != 0 and "pass --text, not --prompt" in result.output
    result = runner.invoke(main, ["run", str(bundle / "onnx" / "model.ort"), "--prompt", "hello"])
    assert result.exit_code == 2 and "an encoder artifact (feature-extraction)" in result.output

    # The decoder contract still holds for encoder bundles: a chat section would be refused.
    validator = Draft202012Validator(manifest_io.schema())
    assert not list(validator.iter_errors(manifest))
    assert list(validator.iter_errors({**manifest, "chat": {}}))

    reference = json.loads((bundle / "reference.json").read_text())
    reference["outputs"][0][0] = [-v for v in reference["outputs"][0][0]]
    (bundle / "reference.json").write_text(json.dumps(reference))
    result = runner.invoke(main, ["verify", str(bundle)])
    assert result.exit_code == 1 and "reference.json" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "distilbert"])
@pytest.mark.parametrize("case", ["sequence-classification", "token-classification", "question-answering"])
def test_task_heads_pass_fp32_parity_on_every_runtime(family, case, tmp_path, encoder_checkpoint):
    """The issue's bar: random-weight BERT and DistilBERT with each task head, fp32 through
    ExecuTorch, ONNX Runtime and Core ML (the MIL interpreter here)."""
    model = encoder_checkpoint(family, case)
    _export(model, tmp_path, "--target", "android", "--quant", "fp32")
    _export(model, tmp_path, "--target", "ios", "--formats", "coreml", "--quant", "fp32")
    for target in ("android", "ios"):
        for artifact in manifest_io.read(tmp_path / target)["artifacts"]:
            parity = artifact["parity"]
            assert parity["passed"] and parity["max_abs"] < 1e-3, (target, artifact["path"], parity)
            assert parity.get("label_agreement", parity.get("span_match")) == 1.0
            cases = artifact["self_test"]["cases"]
            if case == "question-answering":  # the golden case names the answer span, inside the passage
                assert all(c["token_type_ids"][c["span"][0]] == 1 and c["span"][0] <= c["span"][1] for c in cases)


def test_a_decoder_bundle_carries_an_encoder_companion(tmp_path, encoder_checkpoint):
    """The built-in decoder student with an encoder beside it (--encoder): one bundle, the encoder a
    complete bundle in search/, its files listed in the top manifest; verify checks both, run
    --task search ranks passages by the companion, and a changed companion file fails verify."""
    from click.testing import CliRunner

    from exporter.student import STUDENT_DIR

    encoder = encoder_checkpoint("bert", "feature-extraction", {"mode": "mean", "normalize": True})
    _export(STUDENT_DIR, tmp_path, "--target", "android", "--formats", "onnx", "--quant", "none", "--max-seq-len",
            "64", "--encoder", str(encoder))
    bundle = tmp_path / "android"
    manifest = manifest_io.read(bundle)
    (companion,) = manifest["companions"]
    assert (companion["role"], companion["path"], companion["task"]) == ("search", "search", "feature-extraction")
    sub = manifest_io.read(bundle / "search")
    assert sub["encoder"]["task"] == "feature-extraction" and [a["path"] for a in sub["artifacts"]] == ["onnx/model.ort"]
    listed = {f["path"] for f in manifest["files"]}
    assert {"search/manifest.json", "search/onnx/model.ort", "search/tokenizer.json"} <= listed
    assert not (bundle / "search" / "extras").exists()  # a companion keeps only what an app loads

    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "onnx (none" in result.output and "search/onnx/model.ort (none)" in result.output
    result = runner.invoke(main, ["run", str(bundle), "--task", "search", "--text", "How do I open a file?",
                                  "--text", "Open the file with open().", "--text", "The cat sleeps.", "--json"])
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.output)["ranked"]
    assert len(ranked) == 2 and ranked[0]["cosine"] >= ranked[1]["cosine"]
    result = runner.invoke(main, ["run", str(bundle), "--task", "answer", "--text", "q"])
    assert result.exit_code == 2 and "no encoder for --task answer" in result.output

    model = bundle / "search" / "onnx" / "model.ort"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 1
    model.write_bytes(bytes(data))
    result = runner.invoke(main, ["verify", str(bundle)])
    assert result.exit_code == 1 and "search/onnx/model.ort" in result.output


def _same_up_to_float_rounding(committed, computed, path="") -> list[str]:
    """Where two JSON values differ: numbers within float32 rounding (the embeddings' last digit
    differs between CPUs, AMD EPYC here vs the machine that wrote the fixtures), all else exact."""
    if isinstance(committed, dict) and isinstance(computed, dict):
        if committed.keys() != computed.keys():
            return [f"{path}: keys {sorted(committed)} != {sorted(computed)}"]
        return [d for k in committed for d in _same_up_to_float_rounding(committed[k], computed[k], f"{path}.{k}")]
    if isinstance(committed, list) and isinstance(computed, list):
        if len(committed) != len(computed):
            return [f"{path}: {len(committed)} items != {len(computed)}"]
        return [d for i, (a, b) in enumerate(zip(committed, computed, strict=True))
                for d in _same_up_to_float_rounding(a, b, f"{path}[{i}]")]
    if isinstance(committed, float) or isinstance(computed, float):
        ok = isinstance(committed, (int, float)) and isinstance(computed, (int, float)) \
            and abs(committed - computed) <= 1e-6 + 1e-5 * abs(computed)
        return [] if ok else [f"{path}: {committed!r} != {computed!r}"]
    return [] if committed == computed else [f"{path}: {committed!r} != {computed!r}"]


def test_the_apps_encoder_vectors_are_what_the_exporter_computes():
    from encoder_vectors import FIXTURE_DIRS, fixture_files

    for name, data in fixture_files().items():
        for folder in FIXTURE_DIRS:
            committed = (folder / name).read_bytes()
            stale = f"{folder / name} is stale: run python tests/encoder_vectors.py"
            if committed != data and name.endswith(".json"):
                differences = _same_up_to_float_rounding(json.loads(committed), json.loads(data))
                assert differences == [], f"{stale}: {differences[:3]}"
            else:
                assert committed == data, stale
