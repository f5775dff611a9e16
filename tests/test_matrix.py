"""The export matrix (issue #20): `slm-export plan` checks a plan file and prints the GitHub Actions
matrix; each job's command is a real export; `slm-export merge` reads the jobs' uploads back into
one table. The workflow that runs them (.github/workflows/export-matrix.yml) is linted by
.ci/lint-workflows."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from exporter.cli import main
from exporter.matrix import JOB_FILE, MAX_JOBS, load_plan, matrix
from exporter.student import ENCODER_STUDENT_DIR, STUDENT_DIR

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def test_a_plan_expands_models_targets_and_recipes(tmp_path):
    plan = _write(tmp_path, f"""
[defaults]
targets = ["android", "ios"]
quant = ["auto", "none"]

[[models]]
path = "{STUDENT_DIR}"
name = "student"

[[models]]
path = "{ENCODER_STUDENT_DIR}"
quant = "none"
max_seq_len = 128
""")
    jobs = load_plan(plan)
    assert [j.id for j in jobs] == ["student-android-auto", "student-android-none", "student-ios-auto",
                                    "student-ios-none", "slm-encoder-android-none", "slm-encoder-ios-none"]
    include = matrix(jobs)["include"]
    assert include[0] == {"id": "student-android-auto", "model": str(STUDENT_DIR), "name": "student",
                          "target": "android", "quant": "auto", "formats": "", "max_seq_len": 0}
    assert jobs[-1].command()[-2:] == ["--max-seq-len", "128"]
    result = CliRunner().invoke(main, ["plan", str(plan)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0]) == matrix(jobs)


@pytest.mark.parametrize("text, message", [
    ('[[models]]\npath = "{student}"\ntargets = ["watch"]', "watch"),
    ('[[models]]\npath = "{student}"\nquant = "onnx=int9"', "'int9' is not defined for onnx"),
    ('[[models]]\npath = "{student}"\nquant = "coreml=int4"', "coreml"),
    ('[[models]]\npath = "{encoder}"\nquant = "int4"', "'int4' is not defined for executorch"),
    ('[[models]]\npath = "{student}"\nformats = "tflite"', "tflite"),
    ('[[models]]\npath = "{student}"\nsurprise = 1', "unknown key 'surprise'"),
    ('[[models]]\npath = "{student}"\n[[models]]\npath = "{student}"', "planned twice"),
    ("[[models]]\npath = \"/nonexistent/model\"", "/nonexistent/model: model directory does not exist"),
    ('[defaults]\ntargets = ["android"]', "no [[models]] entries"),
    ('[[models]]\npath = "{student}"\nmax_seq_len = -4', "max_seq_len must be a positive integer"),
    ('not toml at all [', "not a TOML file"),
])
def test_a_bad_plan_is_refused_by_entry_and_key(tmp_path, text, message):
    plan = _write(tmp_path, text.format(student=STUDENT_DIR, encoder=ENCODER_STUDENT_DIR))
    result = CliRunner().invoke(main, ["plan", str(plan)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_plan_over_githubs_matrix_limit_is_refused(tmp_path):
    def plan(models: int) -> Path:
        return _write(tmp_path, '[defaults]\ntargets = ["android", "ios"]\n' +
                      "".join(f'[[models]]\npath = "m{i}"\n' for i in range(models)))

    assert len(load_plan(plan(MAX_JOBS // 2), check_models=False)) == MAX_JOBS
    result = CliRunner().invoke(main, ["plan", str(plan(MAX_JOBS // 2 + 1)), "--no-check-models"])
    assert result.exit_code == 2 and f"at most {MAX_JOBS}" in result.output


def test_merge_reads_shipped_and_refused_jobs_into_one_table(tmp_path, family_checkpoint):
    model = family_checkpoint("llama", "llama3-rope-tied-gqa2")
    plan = _write(tmp_path, f"""
[defaults]
targets = ["android"]
formats = "onnx"
max_seq_len = 64

[[models]]
path = "{model}"
name = "tiny"
quant = ["none", "int4"]
""")
    uploads = []
    for job in load_plan(plan):
        work = tmp_path / job.id
        work.mkdir()
        # what the workflow's job does: the planned command, then upload the bundle (or the
        # rejected report) with job.json beside it
        done = subprocess.run([sys.executable, "-m", "exporter", *job.command()[1:]], cwd=work,
                              capture_output=True, text=True, timeout=600)
        produced = work / "dist" / job.target
        if not produced.is_dir():
            produced = work / "dist" / f"{job.target}.rejected"
        assert produced.is_dir(), done.stderr[-2000:]
        upload = tmp_path / "uploads" / job.id
        shutil.copytree(produced, upload)
        (upload / JOB_FILE).write_text(json.dumps(matrix([job])["include"][0]))
        uploads.append((job, done.returncode, upload))
    (tmp_path / "uploads" / "lost-job").mkdir()  # a job that failed before writing any report
    result = CliRunner().invoke(main, ["merge", *(str(u) for *_, u in uploads), str(tmp_path / "uploads" / "lost-job"),
                                       "--json", str(tmp_path / "rows.json"), "--out", str(tmp_path / "table.md")])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "rows.json").read_text())
    by_job = {r["job"]: r for r in rows}
    none = by_job["tiny-android-none"]
    assert uploads[0][1] == 0 and none["status"] == "shipped" and none["format"] == "onnx"
    manifest = json.loads((uploads[0][2] / "manifest.json").read_text())
    assert none["bytes"] == manifest["artifacts"][0]["bytes"] and none["top1"] == manifest["artifacts"][0]["parity"]["top1"]
    int4 = by_job["tiny-android-int4"]
    assert (uploads[1][1] == 0) == (int4["status"] == "shipped")
    assert by_job["lost-job"]["status"].startswith("no report")
    assert (tmp_path / "table.md").read_text() == result.output
    assert "| tiny-android-none | tiny | android | onnx | none |" in result.output


def test_the_export_matrix_workflow_runs_the_planner_and_the_merge():
    workflow = (REPO / ".github/workflows/export-matrix.yml").read_text()
    assert "workflow_call:" in workflow
    assert "slm-export plan" in workflow and "slm-export merge" in workflow
    assert "fromJSON(needs.plan.outputs.matrix)" in workflow
