"""The quality a quantized artifact keeps: the held-out text metrics (teacher-forced top-1 and
perplexity change) and `--quant auto`'s search over a format's candidates."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from exporter.checkpoint import build_model, load_checkpoint
from exporter.errors import ParityError
from exporter.pipeline import ExportRequest, export_target
from exporter.recipes import AUTO, AutoSearch, Thresholds, load_target
from exporter.reference import ReferenceLM
from exporter.student import STUDENT_DIR
from exporter.tokenizer import load_tokenizer
from exporter.verify import (
    TextReference,
    load_quality_text,
    make_text_reference,
    measure_text,
    tokenize_quality_text,
)

MAX_SEQ_LEN = 128


class EagerSession:
    """An eager decoder behind the Session interface; `all_positions` adds forward_all."""

    def __init__(self, decoder, all_positions: bool):
        self.lm = ReferenceLM(decoder, MAX_SEQ_LEN)
        if all_positions:
            self.forward_all = self.lm.forward

    def reset(self):
        self.lm.reset()

    def forward(self, ids):
        return self.lm.forward(ids)[-1]


@pytest.fixture(scope="module")
def student_text():
    checkpoint = load_checkpoint(STUDENT_DIR)
    passages = tokenize_quality_text(load_tokenizer(checkpoint.tokenizer.tokenizer_json), MAX_SEQ_LEN)
    refs = make_text_reference(ReferenceLM(build_model(checkpoint, MAX_SEQ_LEN), MAX_SEQ_LEN), passages)
    return checkpoint, refs


def test_quality_text_covers_four_domains_and_a_thousand_tokens(student_text):
    _, refs = student_text
    domains = {p["domain"] for p in load_quality_text()}
    assert {"prose", "dialogue", "code"} <= domains and len(domains) >= 4  # and non-English ones
    checkpoint = load_checkpoint(STUDENT_DIR)
    full = tokenize_quality_text(load_tokenizer(checkpoint.tokenizer.tokenizer_json), 512)
    assert sum(len(ids) - 1 for _, ids in full) >= 1000  # on the targets' 512-token cache


@pytest.mark.parametrize("all_positions", [True, False], ids=["forward_all", "token-by-token"])
def test_text_metrics_are_exact_for_the_reference_and_fall_for_a_perturbed_model(student_text, all_positions):
    checkpoint, refs = student_text
    same = measure_text(EagerSession(build_model(checkpoint, MAX_SEQ_LEN), all_positions), refs)
    assert same["text_top1"] == 1.0
    assert abs(same["ppl_change"]) < 1e-4
    assert same["text_tokens"] == sum(len(r.ids) - 1 for r in refs)
    assert set(same["domains"]) == {r.domain for r in refs}

    perturbed = build_model(checkpoint, MAX_SEQ_LEN)
    with torch.no_grad():
        for layer in perturbed.layers:
            layer.mlp.down_proj.weight.mul_(1.3)
    worse = measure_text(EagerSession(perturbed, all_positions), refs)
    assert worse["text_top1"] < 0.99
    assert worse["ppl_change"] > 0.001


def test_text_reference_survives_the_bundle_json(student_text):
    _, refs = student_text
    again = [TextReference.from_json(json.loads(json.dumps(r.to_json()))) for r in refs]
    assert [r.ids for r in again] == [r.ids for r in refs]
    assert [r.top2 for r in again] == [r.top2 for r in refs]
    assert max(abs(a - b) for r, s in zip(refs, again, strict=True) for a, b in zip(r.nll, s.nll, strict=True)) < 1e-5


def _onnx_only(gate: Thresholds, candidates: tuple[str, ...]):
    android = load_target("android")
    onnx = dataclasses.replace(android.formats["onnx"], default_recipe=AUTO, auto=AutoSearch(candidates, gate))
    return dataclasses.replace(android, formats={"onnx": onnx})


def test_auto_ships_the_first_candidate_that_keeps_the_gate(tmp_path):
    """int4 keeps ~0.88 of the student's top-1 choices: under a 0.99 gate the search moves on to
    fp32, records both and ships fp32."""
    checkpoint = load_checkpoint(STUDENT_DIR)
    target = _onnx_only(Thresholds(text_top1_min=0.99, top1_min=0, top5_overlap_min=0, kl_mean_max=10, cosine_min=-1,
                                   greedy_prefix_min=0), ("int4", "none"))
    result = export_target(checkpoint, target, ExportRequest(STUDENT_DIR, tmp_path, ("android",),
                                                             max_seq_len=MAX_SEQ_LEN, bundle=False))
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    assert artifact["quantization"] == "none"
    tried = artifact["search"]["tried"]
    assert [t["quantization"] for t in tried] == ["int4", "none"]
    assert [t["passed"] for t in tried] == [False, True]
    assert tried[0]["bytes"] < tried[1]["bytes"]
    assert tried[0]["text_top1"] < 0.99 <= tried[1]["text_top1"]
    # parity.html plots both configurations: bytes against text top-1, the refused one red
    plot = (result.bundle / "parity.html").read_text().split("bytes against quality")[1].split("</svg>")[0]
    dots = plot.split("<circle")[1:]
    assert len(dots) == 2
    assert 'fill="#c0392b"><title>int4: ' in plot and 'fill="#1e8449"><title>none: ' in plot
    assert f"{tried[1]['bytes'] / 1e6:.1f} MB, text top-1 {tried[1]['text_top1']:.3f}" in plot


def test_auto_refusal_lists_every_candidate_and_what_passes(tmp_path):
    checkpoint = load_checkpoint(STUDENT_DIR)
    target = _onnx_only(Thresholds(text_top1_min=0.999, ppl_change_max=0.0001, top1_min=0, top5_overlap_min=0,
                                   kl_mean_max=10, cosine_min=-1, greedy_prefix_min=0), ("int4", "int8w"))
    (tmp_path / "android").mkdir()
    (tmp_path / "android" / "earlier-good-output").write_text("kept")
    with pytest.raises(ParityError) as refused:
        export_target(checkpoint, target, ExportRequest(STUDENT_DIR, tmp_path, ("android",),
                                                        max_seq_len=MAX_SEQ_LEN, bundle=False))
    message = str(refused.value)
    assert "tried: int4 " in message and "; int8w " in message
    assert message.count(" MB: top1 ") == 2 and message.count(", text top1 ") == 2
    assert "--quant onnx=fp32" in message
    assert (tmp_path / "android" / "earlier-good-output").read_text() == "kept"
    assert (tmp_path / "android.rejected" / "parity.html").is_file()


# slow: 60 s of XNNPACK lowering; the default suite keeps under 15 minutes on 2 cores.
@pytest.mark.slow
def test_eager_estimate_agrees_with_the_xnnpack_artifact(student_text, tmp_path):
    """--quant auto skips an ExecuTorch candidate on its eager torchao estimate only when it is
    ESTIMATE_MARGIN_TOP1 below the gate: the estimate must be that close to what XNNPACK runs."""
    from exporter.pipeline import ESTIMATE_MARGIN_TOP1
    from exporter.runtimes import executorch as et

    checkpoint, refs = student_text
    recipe = load_target("android").formats["executorch"].recipes["8da4w-e8"]
    estimate = measure_text(et.estimate_session(build_model(checkpoint, MAX_SEQ_LEN), recipe, MAX_SEQ_LEN), refs)
    path = et.emit(build_model(checkpoint, MAX_SEQ_LEN), recipe, MAX_SEQ_LEN,
                   et.artifact_metadata(checkpoint, MAX_SEQ_LEN), tmp_path / "executorch")
    real = measure_text(et.open_session(path), refs)
    assert real["text_top1"] < 1.0  # the quantization does change predictions
    assert abs(estimate["text_top1"] - real["text_top1"]) <= ESTIMATE_MARGIN_TOP1 / 2
    assert abs(estimate["ppl_change"] - real["ppl_change"]) <= 0.01


def test_accept_quality_loss_ships_the_last_candidate_with_its_loss_and_verify_reproduces_it(tmp_path):
    from exporter.pipeline import verify_bundle

    checkpoint = load_checkpoint(STUDENT_DIR)
    target = _onnx_only(Thresholds(text_top1_min=0.999, top1_min=0, top5_overlap_min=0, kl_mean_max=10, cosine_min=-1,
                                   greedy_prefix_min=0), ("int4", "int8w"))
    result = export_target(checkpoint, target, ExportRequest(STUDENT_DIR, tmp_path, ("android",),
                                                             max_seq_len=MAX_SEQ_LEN, bundle=False,
                                                             accept_quality_loss=True))
    assert "shipped with --accept-quality-loss" in result.summary()
    manifest = json.loads((result.bundle / "manifest.json").read_text())  # written only if the schema accepts it
    (artifact,) = manifest["artifacts"]
    assert artifact["quantization"] == "int8w" and not artifact["parity"]["passed"]
    assert artifact["quality_loss"]["failures"][0].startswith("text_top1 ")
    check = verify_bundle(result.bundle)
    assert check.passed, (check.problems, [r.failures for r in check.results])


@pytest.mark.parametrize("recipe", ["8da4w", "8da4w-e8"], ids=["replaces", "adds"])
def test_measured_figures_are_written_into_the_target_file_without_touching_the_rest(recipe):
    import tomllib
    from pathlib import Path

    from exporter.bench.measure_targets import defining_file, measured_table, replace_measured

    targets = Path(__file__).resolve().parents[1] / "targets"
    path = defining_file(targets, "android", "executorch", recipe)
    assert path == targets / "formats" / "executorch.toml"  # shared by android and ios: written once
    assert defining_file(targets, "android", "onnx", "int4") == targets / "android.toml"
    before = tomllib.loads(path.read_text())
    table = measured_table({"top1": 0.91406, "kl_mean": 0.0073312, "text_top1": 0.9009, "ppl_change": 0.00404},
                           "2026-12-01")
    after = tomllib.loads(replace_measured(path.read_text(), "executorch", recipe, table))
    parity = after["formats"]["executorch"]["recipes"][recipe]["parity"]
    assert parity["measured"] == {"date": "2026-12-01", "top1": 0.9141, "kl_mean": 0.007331, "text_top1": 0.9009,
                                  "ppl_change": 0.00404}
    old = before["formats"]["executorch"]["recipes"][recipe]["parity"]
    assert {k: v for k, v in parity.items() if k != "measured"} == {k: v for k, v in old.items() if k != "measured"}
    del after["formats"]["executorch"]["recipes"][recipe], before["formats"]["executorch"]["recipes"][recipe]
    assert after == before
