"""`slm-export sensitivity`: the recipe applied to one part of the model at a time."""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner

from exporter.checkpoint import build_model, load_checkpoint
from exporter.cli import main
from exporter.recipes import load_target
from exporter.runtimes import executorch
from exporter.sensitivity import layer_sensitivity, parts
from exporter.student import STUDENT_DIR

MAX_SEQ_LEN = 128


@pytest.fixture(scope="module")
def student():
    checkpoint = load_checkpoint(STUDENT_DIR)
    recipe = load_target("android").formats["executorch"].recipe("8da4w-e8")
    return checkpoint, build_model(checkpoint, MAX_SEQ_LEN), recipe


def _quantized_modules(decoder, recipe, part) -> set[str]:
    model = copy.deepcopy(decoder)
    executorch.quantize(model, recipe, part.holds)
    return {name for name, m in model.named_modules()
            if getattr(m, "weight", None) is not None and type(m.weight).__name__ != "Parameter"}


def test_each_part_quantizes_exactly_its_own_modules(student):
    _, decoder, recipe = student
    by_name = {p.name: p for p in parts(decoder)}
    everything = _quantized_modules(decoder, recipe, by_name["whole recipe"])
    assert "embed_tokens" in everything and "lm_head" in everything and len(everything) == 2 + 7 * len(decoder.layers)
    assert _quantized_modules(decoder, recipe, by_name["embed_tokens"]) == {"embed_tokens"}
    assert _quantized_modules(decoder, recipe, by_name["lm_head"]) == {"lm_head"}
    assert _quantized_modules(decoder, recipe, by_name["layers.1"]) == {n for n in everything if n.startswith("layers.1.")}
    assert _quantized_modules(decoder, recipe, by_name["down_proj"]) == {
        f"layers.{i}.mlp.down_proj" for i in range(len(decoder.layers))}


def test_figures_are_exact_for_nothing_quantized_and_rank_the_parts(student):
    checkpoint, decoder, recipe = student
    nothing = executorch.estimate_session(copy.deepcopy(decoder), recipe, MAX_SEQ_LEN, only=lambda fqn: False)
    from exporter.reference import ReferenceLM
    from exporter.tokenizer import load_tokenizer
    from exporter.verify import make_text_reference, measure_text, tokenize_quality_text

    passages = tokenize_quality_text(load_tokenizer(checkpoint.tokenizer.tokenizer_json), MAX_SEQ_LEN)[:2]
    refs = make_text_reference(ReferenceLM(decoder, MAX_SEQ_LEN), passages)
    assert measure_text(nothing, refs)["text_top1"] == 1.0

    result = layer_sensitivity(checkpoint, executorch, recipe, MAX_SEQ_LEN, max_text_tokens=300)
    assert result["text_tokens"] == 300
    rows = {r["part"]: r for r in result["parts"]}
    assert set(rows) == {p.name for p in parts(decoder)}
    whole = rows["whole recipe"]
    assert whole["top1_loss"] > 0.02  # the student's 4-bit recipe loses ~0.1 of its top-1 choices
    assert all(0 <= r["top1_loss"] <= 1 and abs(r["top1_loss"] + r["text_top1"] - 1) < 1e-9 for r in rows.values())
    # one block alone costs less than all of them together
    assert max(r["top1_loss"] for r in rows.values() if r["kind"] == "block") < whole["top1_loss"]


def test_cli_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "s.json"
    result = CliRunner().invoke(main, ["sensitivity", "--text-tokens", "100", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "whole recipe" in result.output and "decoder blocks, most costly first (of 4)" in result.output
    assert json.loads(out.read_text())["recipe"] == "8da4w-e8"


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "onnx"], "no eager estimate"),
    (["--target", "ios", "--format", "onnx"], "does not emit onnx"),
    (["--quant", "int3"], "'int3' is not defined"),
])
def test_cli_refuses_bad_input_in_one_line(args, message):
    result = CliRunner().invoke(main, ["sensitivity", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
