"""The bundle stage: atomic placement into an app, size policy, and nothing lost on failure."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from exporter import bundle as bundle_stage
from exporter import pipeline
from exporter.errors import ParityError
from exporter.pipeline import ExportRequest, export
from exporter.recipes import load_target

TARGET = "android"


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_export(tmp_path_factory, family_checkpoint):
    """An exported and bundled gpt2 checkpoint (fp32, executorch only, to stay quick)."""
    root = tmp_path_factory.mktemp("bundle")
    app = root / "app"
    app.mkdir()
    model = family_checkpoint("gpt2", "tied")
    request = ExportRequest(model, root / "dist", (TARGET,), quant="none", formats=("executorch",),
                            max_seq_len=64, app_dir=app)
    (result,) = export(request)
    assert result.app.destination == app / load_target(TARGET).app_assets
    return request, result


def test_failed_parity_leaves_output_and_app_bundle_byte_identical(first_export, monkeypatch):
    request, result = first_export
    before_out, before_app = _tree(result.bundle), _tree(result.app.destination)
    strict = load_target(TARGET)
    impossible = dataclasses.replace(strict.formats["executorch"].recipes["none"].thresholds, top1_min=1.5)
    recipes = {**strict.formats["executorch"].recipes,
               "none": dataclasses.replace(strict.formats["executorch"].recipes["none"], thresholds=impossible)}
    formats = {**strict.formats, "executorch": dataclasses.replace(strict.formats["executorch"], recipes=recipes)}
    monkeypatch.setattr(pipeline, "load_target", lambda name: dataclasses.replace(strict, formats=formats))
    with pytest.raises(ParityError, match=r"parity failed for executorch/model.pte \(none\): top1"):
        export(request)
    assert _tree(result.bundle) == before_out
    assert _tree(result.app.destination) == before_app
    assert (request.out_dir / f"{TARGET}.rejected" / "parity.html").is_file()
    assert not [p for p in request.out_dir.iterdir() if p.name.startswith(".")]


def test_copy_interrupted_midway_leaves_the_app_bundle_byte_identical(first_export, monkeypatch, tmp_path):
    _, result = first_export
    before = _tree(result.app.destination)
    copied = []

    def failing_copy(src, dst, *args, **kwargs):
        if len(copied) == 2:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C in the middle of the copy
        copied.append(src)
        return shutil.copy2(src, dst)

    monkeypatch.setattr(shutil, "copy2", failing_copy)
    with pytest.raises(KeyboardInterrupt):
        bundle_stage.install(result.bundle, result.app.destination)
    assert _tree(result.app.destination) == before
    assert not [p for p in result.app.destination.parent.iterdir() if p.name.startswith(".")]


def test_large_bundle_is_not_put_into_the_app_and_side_load_steps_are_given(first_export, tmp_path):
    _, result = first_export
    target = dataclasses.replace(load_target(TARGET), max_app_bytes=1000)
    app = tmp_path / "other-app"
    app.mkdir()
    outcome = bundle_stage.bundle_into_app(result.bundle, target, app)
    assert outcome.destination is None and not any(app.iterdir())
    assert outcome.sideload_steps and all(str(result.bundle.resolve()) in s or "mkdir" in s
                                          for s in outcome.sideload_steps)
    assert any(s.startswith("adb push") for s in outcome.sideload_steps)


def test_missing_app_dir_is_a_clear_error(first_export, tmp_path):
    from exporter.errors import InputError

    _, result = first_export
    with pytest.raises(InputError, match="app directory does not exist"):
        bundle_stage.bundle_into_app(result.bundle, load_target(TARGET), tmp_path / "nope")
