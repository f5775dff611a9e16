"""The export pipeline, as a recipe. Each stage is a function from one artifact to the next:

1. load      checkpoint dir -> Checkpoint                       (checkpoint.load_checkpoint)
2. reference Checkpoint -> fp32 Decoder + reference greedy ids/logits per prompt (reference, verify)
3. quantize  Decoder -> quantized copy, with the runtime's own tool   (runtimes/<format>.emit)
4. emit      -> artifact file(s) in a staging directory               (runtimes/<format>.emit)
5. verify    artifact through its real runtime vs the reference      (verify.verify_artifact)
6. publish   manifest, tokenizer, parity report; staging renamed into OUT/<target> only if every
             artifact passed, so an earlier good output survives a failed run.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from . import __version__
from .checkpoint import Checkpoint, build_model, load_checkpoint, sha256_file
from .describe import context_length
from .errors import InputError, ParityError
from .manifest import SCHEMA_VERSION, artifact_digest, list_files
from .manifest import write as write_manifest
from .progress import stage
from .recipes import TargetRecipe, load_target
from .reference import ReferenceLM
from .runtimes import runtime
from .verify import (
    ParityResult,
    PromptReference,
    load_prompts,
    make_reference,
    tokenize_prompts,
    verify_artifact,
)

log = logging.getLogger(__name__)

TOOLS = ("torch", "executorch", "torchao", "onnx", "onnxscript", "onnxruntime", "onnxruntime-genai",
         "tokenizers", "safetensors")


@dataclass(frozen=True)
class ExportRequest:
    model_dir: Path
    out_dir: Path
    targets: tuple[str, ...]
    quant: str | None = None
    formats: tuple[str, ...] | None = None
    max_seq_len: int | None = None


@dataclass
class TargetResult:
    target: str
    bundle: Path
    results: list[ParityResult] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{r.artifact} ({r.quantization}, {self.sizes[r.artifact] / 1e6:.1f} MB, "
                 f"top1 {r.metrics['top1']:.3f}, KL {r.metrics['kl_mean']:.2g})" for r in self.results]
        return f"{self.target}: verified {', '.join(parts)} -> {self.bundle}"


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            pass
    return versions


def plan_formats(target: TargetRecipe, requested: tuple[str, ...] | None) -> list[str]:
    if requested is None:
        return list(target.formats)
    missing = [f for f in requested if f not in target.formats]
    if missing:
        raise InputError(f"target {target.name!r} does not emit {', '.join(missing)} "
                         f"(its formats: {', '.join(target.formats)})")
    return list(requested)


def _staging_dir(out_dir: Path, target: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(f".staging-{target}-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
    staging = out_dir / f".staging-{target}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(staging: Path, destination: Path) -> None:
    """Swap `staging` into `destination` with renames on one filesystem; the old output is
    removed only after the new one is in place."""
    old = destination.with_name(f".old-{destination.name}-{os.getpid()}")
    if destination.exists():
        os.rename(destination, old)
    os.rename(staging, destination)
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def copy_tokenizer_files(checkpoint: Checkpoint, folder: Path) -> None:
    """tokenizer.json and tokenizer_config.json (an empty object when the checkpoint has none)."""
    shutil.copyfile(checkpoint.tokenizer.tokenizer_json, folder / "tokenizer.json")
    if checkpoint.tokenizer.tokenizer_config:
        shutil.copyfile(checkpoint.tokenizer.tokenizer_config, folder / "tokenizer_config.json")
    else:
        (folder / "tokenizer_config.json").write_text("{}\n")


def _copy_tokenizer(checkpoint: Checkpoint, staging: Path) -> dict[str, Any]:
    shutil.copyfile(checkpoint.tokenizer.tokenizer_json, staging / "tokenizer.json")
    # Apps encode with the tokenizer's own post-processor (ExecuTorch runner: num_bos=1).
    entry = {"path": "tokenizer.json", "sha256": sha256_file(staging / "tokenizer.json"),
             "add_special_tokens": True}
    if checkpoint.tokenizer.tokenizer_config:
        shutil.copyfile(checkpoint.tokenizer.tokenizer_config, staging / "tokenizer_config.json")
        entry.update(config_path="tokenizer_config.json",
                     config_sha256=sha256_file(staging / "tokenizer_config.json"))
    return entry


def build_reference(checkpoint: Checkpoint, max_seq_len: int):
    """Stage 2: the fp32 decoder and its greedy continuation + logits for every prompt."""
    from .tokenizer import load_tokenizer

    with stage("reference (fp32 PyTorch)"):
        decoder = build_model(checkpoint, max_seq_len)
        cases = tokenize_prompts(load_tokenizer(checkpoint.tokenizer.tokenizer_json), max_seq_len)
        references = make_reference(ReferenceLM(decoder, max_seq_len), cases, load_prompts()["max_new_tokens"],
                                    checkpoint.eos_token_ids)
    return decoder, references


def export_target(checkpoint: Checkpoint, target: TargetRecipe, request: ExportRequest) -> TargetResult:
    max_seq_len = context_length(checkpoint, request.max_seq_len or target.max_seq_len)
    formats = plan_formats(target, request.formats)
    recipes = {fmt: target.formats[fmt].recipe(request.quant) for fmt in formats}
    modules = {fmt: runtime(fmt) for fmt in formats}
    log.info("target %s: %s; cache %d tokens", target.name,
             ", ".join(f"{f} ({r.name})" for f, r in recipes.items()), max_seq_len)

    decoder, references = build_reference(checkpoint, max_seq_len)

    staging = _staging_dir(request.out_dir, target.name)
    try:
        result = TargetResult(target.name, request.out_dir / target.name)
        artifacts = []
        for fmt, recipe in recipes.items():
            module = modules[fmt]
            meta = module.artifact_metadata(checkpoint, max_seq_len)
            with stage(f"emit {fmt} ({recipe.name})"):
                path = module.emit(copy.deepcopy(decoder), recipe, max_seq_len, meta, staging / fmt)
                if module.TOKENIZER_IN_ARTIFACT:
                    copy_tokenizer_files(checkpoint, path)
            rel = path.relative_to(staging).as_posix()
            with stage(f"verify {rel}"):
                parity = verify_artifact(module.open_session(path), references, recipe.thresholds,
                                         artifact=rel, fmt=fmt, quantization=recipe.name)
            size, digest = artifact_digest(path)
            result.results.append(parity)
            result.sizes[rel] = size
            artifacts.append({"format": fmt, "path": rel, "quantization": recipe.name, "bytes": size,
                              "sha256": digest, "parity": parity.summary()})
            log.info("%s: %s, top1 %.4f, KL %.3g, greedy %s", rel, "passed" if parity.passed else "FAILED",
                     parity.metrics["top1"], parity.metrics["kl_mean"],
                     "; ".join(f"{p.name} {p.greedy_status}" for p in parity.prompts))

        from .report import write_html

        _write_json(staging / "parity.json", [r.to_json() for r in result.results])
        write_html(result.results, staging / "parity.html", f"slm-export parity: {checkpoint.name} -> {target.name}")
        failed = [r for r in result.results if not r.passed]
        if failed:
            rejected = request.out_dir / f"{target.name}.rejected"
            shutil.rmtree(rejected, ignore_errors=True)
            rejected.mkdir()
            for name in ("parity.json", "parity.html"):
                shutil.copyfile(staging / name, rejected / name)
            first = failed[0]
            raise ParityError(f"parity failed for {first.artifact} ({first.quantization}): {first.failures[0]}; "
                              f"nothing shipped for {target.name}; report: {rejected / 'parity.html'}")

        _write_json(staging / "reference.json", {"tie_epsilon": 1e-4, "max_seq_len": max_seq_len,
                                                 "prompts": [r.to_json() for r in references]})
        tokenizer_entry = _copy_tokenizer(checkpoint, staging)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "generator": {"name": "slm-export", "version": __version__, "tools": tool_versions()},
            "target": target.name,
            "model": {"name": checkpoint.name, "family": checkpoint.model_type,
                      "parameters": checkpoint.spec.num_parameters, "vocab_size": checkpoint.spec.vocab_size,
                      "max_seq_len": max_seq_len, "bos_token_id": checkpoint.bos_token_id,
                      "eos_token_ids": checkpoint.eos_token_ids, "source_sha256": checkpoint.digest()},
            "tokenizer": tokenizer_entry,
            "artifacts": artifacts,
            "parity": {"results": "parity.json", "report": "parity.html", "reference": "reference.json"},
            "files": list_files(staging),
        }
        write_manifest(staging, manifest)
        publish(staging, result.bundle)
        shutil.rmtree(request.out_dir / f"{target.name}.rejected", ignore_errors=True)
        return result
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export(request: ExportRequest) -> list[TargetResult]:
    with stage(f"load {request.model_dir}"):
        checkpoint = load_checkpoint(request.model_dir)
    targets = [load_target(name) for name in request.targets]
    return [export_target(checkpoint, target, request) for target in targets]


def load_references(bundle: Path, manifest: dict[str, Any]) -> list[PromptReference]:
    raw = json.loads((bundle / manifest["parity"]["reference"]).read_text(encoding="utf-8"))
    return [PromptReference.from_json(p) for p in raw["prompts"]]


@dataclass
class BundleCheck:
    bundle: Path
    problems: list[str]
    results: list[ParityResult]

    @property
    def passed(self) -> bool:
        return not self.problems and all(r.passed for r in self.results)


def verify_bundle(bundle: Path, model_dir: Path | None = None) -> BundleCheck:
    """`slm-export verify`: digests, schema, then parity of every artifact, against the checkpoint
    when given, else against the reference recorded at export time."""
    from . import manifest as manifest_io

    if not bundle.is_dir():
        raise InputError(f"{bundle}: not a bundle directory")
    manifest = manifest_io.read(bundle)
    problems = manifest_io.check_files(bundle, manifest)
    max_seq_len = manifest["model"]["max_seq_len"]
    if model_dir is not None:
        checkpoint = load_checkpoint(model_dir)
        if checkpoint.digest() != manifest["model"]["source_sha256"]:
            problems.append(f"{model_dir}: checkpoint digest differs from the manifest's source_sha256")
        references = build_reference(checkpoint, max_seq_len)[1]
    else:
        references = load_references(bundle, manifest)
    target = load_target(manifest["target"])
    results = []
    for artifact in manifest["artifacts"]:
        path = bundle / artifact["path"]
        if not path.exists():
            continue  # already reported by check_files
        if artifact["format"] not in target.formats:
            problems.append(f"{artifact['path']}: target {target.name} has no {artifact['format']} recipe")
            continue
        thresholds = target.formats[artifact["format"]].recipe(artifact["quantization"]).thresholds
        module = runtime(artifact["format"])
        with stage(f"verify {artifact['path']}"):
            results.append(verify_artifact(module.open_session(path), references, thresholds,
                                           artifact=artifact["path"], fmt=artifact["format"],
                                           quantization=artifact["quantization"]))
    return BundleCheck(bundle, problems, results)
