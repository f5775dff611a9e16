"""A non-editable install finds its data: target recipes, prompts, schema, the student."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_install_carries_targets_schema_prompts_and_student(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("slm_export-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)
    probe = ("import exporter, exporter.recipes as r, exporter.verify as v, exporter.manifest as m\n"
             "from exporter.student import STUDENT_DIR\n"
             "assert 'site-packages' in exporter.__file__, exporter.__file__\n"
             "assert r.target_names() == ['android', 'ios']\n"
             "assert r.load_target('android').formats\n"
             "assert v.load_prompts()['prompts'] and m.schema()['title']\n"
             "assert (STUDENT_DIR / 'model.safetensors').is_file()\n")
    subprocess.run([str(venv / "bin" / "python"), "-c", probe], check=True, cwd=tmp_path, timeout=120)
    result = subprocess.run([str(venv / "bin" / "slm-export"), "inspect"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "family       llama" in result.stdout
