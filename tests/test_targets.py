"""Target recipes: portable quantization names, per-format --quant, target files a user writes
(with includes), and the checks that name the key or the format and the choices."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from exporter.cli import main
from exporter.pipeline import ExportRequest, plan_target, select_targets
from exporter.recipes import RecipeError, load_target, parse_quant
from exporter.student import STUDENT_DIR

USER_TARGET = """
name = "tablet"
description = "a target of my own"
max_seq_len = 96
include = ["formats/executorch.toml"]

[formats.onnx]
default_recipe = "int8"
portable = { fp32 = "none" }

[formats.onnx.recipes.none]
parity = { top1_min = 1.0, top5_overlap_min = 0.98, kl_mean_max = 1e-5, cosine_min = 0.99999, greedy_prefix_min = 1.0 }

[formats.onnx.recipes.int8]
parity = { top1_min = 0.9, top5_overlap_min = 0.9, kl_mean_max = 0.01, cosine_min = 0.99, greedy_prefix_min = 0.0 }
"""


def _request(quant=None, formats=None, targets=("android",)):
    return ExportRequest(STUDENT_DIR, Path("unused"), targets, quant=quant, formats=formats)


def _recipes(plans) -> dict[str, list[str]]:
    return {fmt: [r.name for r in recipes] for fmt, (recipes, _) in plans.items()}


def test_portable_names_map_to_each_formats_own_recipe():
    android, ios = load_target("android"), load_target("ios")
    assert _recipes(plan_target(android, _request("int4"))) == {"executorch": ["8da4w-e8"], "onnx": ["int4"]}
    assert _recipes(plan_target(android, _request("int8"))) == {"executorch": ["8da8w-e8"], "onnx": ["int8"]}
    assert _recipes(plan_target(android, _request("fp32"))) == {"executorch": ["none"], "onnx": ["none"]}
    assert _recipes(plan_target(ios, _request("int4"))) == {"executorch": ["8da4w-e8"], "coreml": ["int4"]}
    assert _recipes(plan_target(ios, _request("fp16", ("coreml",)))) == {"coreml": ["none"]}
    # a format's own names keep working
    assert _recipes(plan_target(android, _request("executorch=8da8w,onnx=int8"))) == {
        "executorch": ["8da8w"], "onnx": ["int8"]}
    assert _recipes(plan_target(android, _request("int4,onnx=int8w"))) == {"executorch": ["8da4w-e8"], "onnx": ["int8w"]}
    # auto: the candidates and their gate
    (candidates, gate), = plan_target(android, _request(None, ("onnx",))).values()
    assert [r.name for r in candidates] == ["int4", "int8w-mlp4", "int8w"] and gate.text_top1_min == 0.85


@pytest.mark.parametrize(("quant", "message"), [
    ("fp16", "quantization recipe 'fp16' is not defined for executorch (choose from: auto, none, 8da4w"),
    ("int3", "'int3' is not defined for executorch"),
    ("executorch=int4w", "'int4w' is not defined for executorch"),
    ("tflite=int4", "unknown format 'tflite' (known: executorch, onnx, coreml)"),
    ("int4,int8", "two names for every format"),
    ("onnx=int4,onnx=int8", "onnx is given twice"),
    ("onnx=", "onnx is given no recipe"),
    ("coreml=int8", "no selected target (android) emits coreml"),
])
def test_unknown_quant_names_fail_before_any_work_naming_format_and_choices(quant, message):
    with pytest.raises(RecipeError if "target" not in message else Exception) as refused:
        select_targets([load_target("android")], _request(quant))
    assert message in str(refused.value)


def test_target_all_keeps_each_targets_share_of_formats():
    both = [load_target("android"), load_target("ios")]
    assert [t.name for t in select_targets(both, _request(None, ("onnx",), ("android", "ios")))] == ["android"]
    assert [t.name for t in select_targets(both, _request(None, ("coreml",), ("android", "ios")))] == ["ios"]
    assert [t.name for t in select_targets(both, _request("int4,coreml=int8", None, ("android", "ios")))] == [
        "android", "ios"]
    with pytest.raises(Exception, match="does not emit coreml"):
        select_targets([both[0]], _request(None, ("coreml",)))


def test_the_executorch_table_lives_once_and_both_targets_read_it():
    android, ios = load_target("android"), load_target("ios")
    assert android.formats["executorch"] == ios.formats["executorch"]
    root = Path(__file__).resolve().parents[1] / "targets"
    for name in ("android", "ios"):
        assert "[formats.executorch" not in (root / f"{name}.toml").read_text()
    assert list(android.formats) == ["executorch", "onnx"] and list(ios.formats) == ["executorch", "coreml"]


def test_a_user_target_file_with_an_include(tmp_path):
    path = tmp_path / "tablet.toml"
    path.write_text(USER_TARGET)
    target = load_target(str(path))
    assert target.name == "tablet" and target.max_seq_len == 96
    assert list(target.formats) == ["executorch", "onnx"]
    assert target.formats["executorch"] == load_target("android").formats["executorch"]
    assert _recipes(plan_target(target, _request("int8"))) == {"executorch": ["8da8w-e8"], "onnx": ["int8"]}


@pytest.mark.parametrize(("edit", "message"), [
    (("max_seq_len = 96", "max_seq_len = 96\ncolour = 'blue'"), "tablet.toml: unknown key 'colour'"),
    (("max_seq_len = 96", "max_seq_len = -1"), "max_seq_len must be a non-negative integer"),
    (("default_recipe = \"int8\"", "default_recipe = \"int8\"\ndefault = 1"), "[formats.onnx]: unknown key 'default'"),
    (("[formats.onnx.recipes.int8]", "[formats.onnx.recipes.int5]"), "[formats.onnx.recipes.int5]: onnx has no "
                                                                        "quantization scheme 'int5'"),
    (("kl_mean_max = 0.01", "kl_mean_max = 'low'"), "parity kl_mean_max must be a number"),
    (("cosine_min = 0.99,", "cosine_floor = 0.99,"), "unknown parity keys ['cosine_floor']"),
    (("portable = { fp32 = \"none\" }", "portable = { int4 = \"int4\" }"), "portable: {'int4': 'int4'} names no recipe"),
    (("portable = { fp32 = \"none\" }", "portable = { tiny = \"none\" }"), "portable: unknown key 'tiny'"),
    (("formats/executorch.toml", "formats/tflite.toml"), "include 'formats/tflite.toml' not found"),
    (("[formats.onnx]", "[formats.tflite]"), "[formats]: unknown key 'tflite' (known: coreml, executorch, onnx)"),
    (("name = \"tablet\"", "name = \"tablet"), "tablet.toml: "),
])
def test_target_file_errors_name_the_key(tmp_path, edit, message):
    path = tmp_path / "tablet.toml"
    path.write_text(USER_TARGET.replace(*edit, 1))
    with pytest.raises(RecipeError) as refused:
        load_target(str(path))
    assert message in str(refused.value)


def test_the_old_threshold_name_is_read_with_a_deprecation_message(tmp_path, caplog):
    path = tmp_path / "tablet.toml"
    path.write_text(USER_TARGET.replace("kl_mean_max = 0.01", "kl_max = 0.01"))
    logger = logging.getLogger("exporter.recipes")  # the CLI's logging setup may stop propagation
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="exporter.recipes"):
            target = load_target(str(path))
    finally:
        logger.removeHandler(caplog.handler)
    assert target.formats["onnx"].recipes["int8"].thresholds.kl_mean_max == 0.01
    assert "kl_max is deprecated" in caplog.text and "kl_mean_max" in caplog.text


def test_parse_quant():
    assert parse_quant(None).for_format("onnx") is None
    choice = parse_quant("int4, coreml=int8")
    assert (choice.for_format("onnx"), choice.for_format("coreml")) == ("int4", "int8")


def test_targets_command_lists_the_builtins_and_checks_a_file(tmp_path):
    listed = CliRunner().invoke(main, ["targets", "--json"])
    assert listed.exit_code == 0, listed.output
    info = json.loads(listed.output)
    assert set(info) == {"android", "ios"}
    assert info["android"]["formats"]["executorch"]["portable"]["int4"] == "8da4w-e8"
    path = tmp_path / "tablet.toml"
    path.write_text(USER_TARGET.replace("max_seq_len = 96", "max_seq_len = 96\ncolour = 1"))
    checked = CliRunner().invoke(main, ["targets", str(path)])
    assert checked.exit_code == 2 and "unknown key 'colour'" in checked.output


def test_export_with_a_user_target_file_and_a_portable_name(tmp_path):
    path = tmp_path / "tablet.toml"
    path.write_text(USER_TARGET)
    result = CliRunner().invoke(main, ["--target", str(path), "--formats", "onnx", "--quant", "fp32",
                                       "--out", str(tmp_path / "out"), "--no-bundle", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "tablet" / "manifest.json").read_text())
    assert manifest["target"] == "tablet" and manifest["model"]["max_seq_len"] == 96
    assert [(a["format"], a["quantization"]) for a in manifest["artifacts"]] == [("onnx", "none")]
    bundle = tmp_path / "out" / "tablet"
    refused = CliRunner().invoke(main, ["verify", str(bundle)])
    assert refused.exit_code == 2 and "pass the target file it was exported with: --target FILE" in refused.output
    checked = CliRunner().invoke(main, ["verify", str(bundle), "--target", str(path)])
    assert checked.exit_code == 0, checked.output


@pytest.mark.slow
def test_export_with_a_recipe_per_format(tmp_path):
    """--quant executorch=8da8w,onnx=int8w on the built-in target: each format its own recipe. (ONNX
    int8, with dynamic int8 activations, gave the student top-1 0.945 against its 0.95 gate on this
    project's machine on 2026-12-02, at this session's start commit too; the test is about the choice
    of a recipe per format, not that recipe's quality.)"""
    result = CliRunner().invoke(main, ["--target", "android", "--quant", "executorch=8da8w,onnx=int8w",
                                       "--out", str(tmp_path), "--no-bundle", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "android" / "manifest.json").read_text())
    assert [(a["format"], a["quantization"]) for a in manifest["artifacts"]] == [("executorch", "8da8w"),
                                                                                 ("onnx", "int8w")]
    assert all(a["parity"]["passed"] for a in manifest["artifacts"])
