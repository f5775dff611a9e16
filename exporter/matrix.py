"""Past one machine: many models x targets x recipes, one export per CI job.

`slm-export plan PLAN.toml` reads a small list of exports and prints the GitHub Actions matrix
(`{"include": [job, ...]}`) that the reusable workflow `.github/workflows/export-matrix.yml` fans
out to hosted runners; every job runs `slm-export` with the arguments of its entry and uploads its
bundle (or its rejected report) with a `job.json` naming it. `slm-export merge DIR...` reads those
uploads back and writes one table of every artifact's parity figures.

The plan file:

    [defaults]                 # optional; each key may be overridden per model
    targets = ["android", "ios"]
    quant = ["auto"]           # each entry a --quant value: "auto", "none", "onnx=int4,executorch=8da8w-e8"
    max_seq_len = 512          # optional
    formats = "executorch,onnx"  # optional, as --formats

    [[models]]
    path = "exporter/student/slm-student"   # as the job sees it: relative to the workspace
    name = "student"                        # optional: the job ids use it (default: the folder name)

Everything is checked here, before any runner starts: the targets exist, each recipe exists for
each format of its target, the formats are the target's, ids are unique, and the matrix stays
within GitHub's 256 jobs.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .recipes import _check_keys

MAX_JOBS = 256  # GitHub Actions: the most jobs one matrix may generate
PLAN_KEYS = {"defaults", "models"}
ENTRY_KEYS = {"targets", "quant", "max_seq_len", "formats"}
MODEL_KEYS = ENTRY_KEYS | {"path", "name"}
JOB_FILE = "job.json"


@dataclass(frozen=True)
class Job:
    id: str
    model: str
    name: str
    target: str
    quant: str
    formats: str = ""
    max_seq_len: int = 0

    def command(self) -> list[str]:
        """The export this job runs (the workflow passes the same arguments)."""
        args = ["slm-export", "--model", self.model, "--target", self.target, "--quant", self.quant,
                "--out", "dist", "--no-bundle"]
        if self.formats:
            args += ["--formats", self.formats]
        if self.max_seq_len:
            args += ["--max-seq-len", str(self.max_seq_len)]
        return args


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "x"


def _as_list(value: Any, key: str, where: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise InputError(f"{where}: {key} must be a non-empty string or list of strings")
    return [v.strip() for v in values]


def _check_recipes(model: str, target: str, quant: str, formats: str, encoder: bool, where: str) -> None:
    """The export's own plan check (pipeline.select_targets): the target exists, each named recipe
    exists for its format, each named format is the target's."""
    from .pipeline import ExportRequest, select_targets
    from .recipes import load_target

    request = ExportRequest(Path(model), Path("dist"), (target,), quant=quant,
                            formats=tuple(f.strip() for f in formats.split(",") if f.strip()) or None)
    try:
        select_targets([load_target(target)], request, encoder)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


def _load(model: str, where: str):
    """The checkpoint, read as the export will read it (config, tensor names, tokenizer)."""
    from .checkpoint import load_checkpoint

    try:
        return load_checkpoint(model)
    except InputError as e:
        raise InputError(f"{where}: {e} (paths are relative to where the plan runs; --no-check-models when the "
                         "jobs fetch the models themselves)") from None


def load_plan(path: Path, check_models: bool = True) -> list[Job]:
    """The jobs of a plan file, every entry checked (InputError names the entry and the key)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such plan file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a TOML file ({e})") from None
    _check_keys(raw, PLAN_KEYS, str(path))
    defaults = _check_keys(raw.get("defaults", {}), ENTRY_KEYS, f"{path} [defaults]")
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise InputError(f"{path}: no [[models]] entries")
    jobs: list[Job] = []
    seen: dict[str, str] = {}
    for index, entry in enumerate(models, start=1):
        where = f"{path} [[models]] #{index}"
        entry = {**defaults, **_check_keys(entry, MODEL_KEYS, where)}
        model = entry.get("path")
        if not isinstance(model, str) or not model.strip():
            raise InputError(f"{where}: path is required (the checkpoint folder as the job sees it)")
        name = entry.get("name") or Path(model).name
        formats = entry.get("formats", "")
        max_seq_len = entry.get("max_seq_len", 0)
        if not isinstance(formats, str):
            raise InputError(f"{where}: formats must be a string such as \"executorch,onnx\"")
        if not isinstance(max_seq_len, int) or isinstance(max_seq_len, bool) or max_seq_len < 0:
            raise InputError(f"{where}: max_seq_len must be a positive integer")
        encoder = check_models and _load(model, where).is_encoder
        for target in _as_list(entry.get("targets", ["android"]), "targets", where):
            for quant in _as_list(entry.get("quant", ["auto"]), "quant", where):
                _check_recipes(model, target, quant, formats, encoder, f"{where} (target {target})")
                job = Job(id=_slug(f"{name}-{target}-{quant}"), model=model, name=str(name), target=target,
                          quant=quant, formats=formats, max_seq_len=max_seq_len)
                if job.id in seen:
                    raise InputError(f"{where}: job {job.id} is planned twice ({seen[job.id]} and this entry); "
                                     "give one of the models another name")
                seen[job.id] = where
                jobs.append(job)
    if len(jobs) > MAX_JOBS:
        raise InputError(f"{path}: {len(jobs)} jobs; a GitHub Actions matrix takes at most {MAX_JOBS}: split the plan")
    return jobs


def matrix(jobs: list[Job]) -> dict[str, Any]:
    """The `strategy.matrix` the workflow reads with fromJSON."""
    return {"include": [asdict(job) for job in jobs]}


# --- merge -----------------------------------------------------------------------------------

FIGURES = ("top1", "text_top1", "ppl_change", "kl_mean", "cosine_min", "label_agreement", "span_match")


def _rows_of(folder: Path) -> list[dict[str, Any]]:
    job = json.loads((folder / JOB_FILE).read_text()) if (folder / JOB_FILE).is_file() else {"id": folder.name}
    base = {"job": job.get("id", folder.name), "model": job.get("name", ""), "target": job.get("target", "")}
    manifest_path, parity_path = folder / "manifest.json", folder / "parity.json"
    if not parity_path.is_file():
        return [{**base, "status": "no report (the job failed before parity)"}]
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    by_path = {a["path"]: a for a in manifest["artifacts"]} if manifest else {}
    rows = []
    for result in json.loads(parity_path.read_text()):
        artifact = by_path.get(result.get("artifact"), {})
        metrics = {**result.get("metrics", {}), **artifact.get("parity", {})}
        rows.append({**base, "format": result.get("format"), "quantization": result.get("quantization"),
                     "bytes": artifact.get("bytes"),
                     "status": "shipped" if manifest and result.get("passed") else
                     "passed (not shipped)" if result.get("passed") else "refused: " + "; ".join(result.get("failures", [])),
                     **{k: metrics[k] for k in FIGURES if isinstance(metrics.get(k), (int, float))}})
    return rows


def merge(folders: list[Path]) -> list[dict[str, Any]]:
    """One row per artifact of every job folder (a bundle, or a rejected report), in job order."""
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise InputError(f"not a folder: {', '.join(missing)}")
    rows = []
    for folder in sorted(folders):
        rows += _rows_of(folder)
    return rows


def merged_markdown(rows: list[dict[str, Any]]) -> str:
    figures = [k for k in FIGURES if any(k in r for r in rows)]
    head = ["job", "model", "target", "format", "quantization", "MB", "status", *figures]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" + "---|" + "---:|" * len(figures)]
    for r in rows:
        cells = [r.get("job", ""), r.get("model", ""), r.get("target", ""), r.get("format") or "",
                 r.get("quantization") or "", f"{r['bytes'] / 1e6:.1f}" if r.get("bytes") else "", r["status"]]
        cells += [f"{r[k]:.4g}" if k in r else "" for k in figures]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    shipped = sum(r["status"] == "shipped" for r in rows)
    return f"{shipped} of {len(rows)} artifacts shipped.\n\n" + "\n".join(lines) + "\n"
