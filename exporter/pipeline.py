"""The export pipeline, as a recipe. Each stage is a function from one artifact to the next:

1. load      checkpoint dir -> Checkpoint                       (checkpoint.load_checkpoint)
2. reference Checkpoint -> fp32 Decoder + reference greedy ids/logits per prompt (reference, verify)
3. quantize  Decoder -> quantized copy, with the runtime's own tool   (runtimes/<format>.emit)
4. emit      -> artifact file(s) in a staging directory               (runtimes/<format>.emit)
5. verify    artifact through its real runtime vs the reference      (verify.verify_artifact)
6. publish   manifest (with golden self-test vectors), tokenizer, parity report; staging renamed
             into OUT/<target> only if every artifact passed, so an earlier good output survives.
7. bundle    OUT/<target> copied atomically into the target's app, or side-load steps printed
             when it is above the app's size limit                  (bundle.bundle_into_app)
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import dataclass, field
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import staging_dir, swap_into_place
from .bundle import BundleResult, bundle_into_app
from .checkpoint import Checkpoint, build_model, load_checkpoint, sha256_file
from .describe import context_length
from .errors import InputError, ParityError
from .manifest import EXTRAS_DIR, SCHEMA_VERSION, artifact_digest, file_entry, list_files
from .manifest import write as write_manifest
from .progress import stage
from .recipes import TargetRecipe, load_target
from .reference import ReferenceLM
from .runtimes import runtime
from .verify import (
    ParityResult,
    PromptReference,
    make_reference,
    new_tokens,
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
    bundle: bool = True
    app_dir: Path | None = None  # an app project root; default: the target's demo app in this checkout


@dataclass
class TargetResult:
    target: str
    bundle: Path
    results: list[ParityResult] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    app: BundleResult | None = None

    def summary(self) -> str:
        parts = [f"{r.artifact} ({r.quantization}, {self.sizes[r.artifact] / 1e6:.1f} MB, "
                 f"top1 {r.metrics['top1']:.3f}, KL {r.metrics['kl_mean']:.2g})" for r in self.results]
        lines = [f"{self.target}: verified {', '.join(parts)} -> {self.bundle}"]
        if self.app and self.app.destination:
            lines.append(f"{self.target}: bundled into {self.app.destination}")
        elif self.app and self.app.sideload_steps:
            lines.append(f"{self.target}: {self.app.bytes / 1e6:.0f} MB is too large for the app's assets; "
                         "side-load it:\n  " + "\n  ".join(self.app.sideload_steps))
        return "\n".join(lines)


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
    """The bundle's tokenizer files and their manifest entry."""
    copy_tokenizer_files(checkpoint, staging)
    # Apps encode with the tokenizer's own post-processor (ExecuTorch runner: num_bos=1).
    return {"path": "tokenizer.json", "sha256": sha256_file(staging / "tokenizer.json"), "add_special_tokens": True,
            "config_path": "tokenizer_config.json", "config_sha256": sha256_file(staging / "tokenizer_config.json")}


# A generated token is a golden vector for the phone only while it won its step by this many
# logits on the host: x86 and ARM kernels differ in the last bits, and a closer call may flip.
SELF_TEST_MARGIN = 1.0
SELF_TEST_TOKENS = 16
SELF_TEST_MAX_PROMPT = 64


def golden_vectors(parity: ParityResult, references: list[PromptReference]) -> dict[str, Any]:
    """The self-test the apps run after loading a new bundle: prompt ids, the ids this artifact
    generated greedily on the host runtime, and how many leading ids the phone must reproduce."""
    cases = []
    for result, ref in zip(parity.prompts, references, strict=True):
        must_match = min(result.stable_prefix(SELF_TEST_MARGIN), SELF_TEST_TOKENS)
        if len(ref.prompt_ids) <= SELF_TEST_MAX_PROMPT and must_match > 0:
            cases.append({"name": ref.name, "prompt_ids": ref.prompt_ids,
                          "expected_ids": result.greedy_ids[:SELF_TEST_TOKENS], "must_match": must_match})
    return {"rule": f"greedy decoding; the first must_match ids must equal expected_ids (each won its step by "
                    f">= {SELF_TEST_MARGIN} logits on the host)", "cases": cases}


def check_tokenizer_parity(tokenizer_json: Path, ids_folder: Path, bundle: Path, artifacts: list[dict[str, Any]],
                           manifest: dict[str, Any]) -> list[str]:
    """The device tokenizers (ExecuTorch's C++ tokenizers, onnxruntime-genai's) against
    `tokenizers` on the corpus, and bos/eos agreement across the checkpoint's files
    (`ids_folder`), the manifest and every artifact's metadata. Problems, or []."""
    from .tokenizer_parity import check_special_ids, check_tokenizers, read_artifact_metadata

    with stage("tokenizer parity"):
        onnx = next((bundle / a["path"] for a in artifacts if a["format"] == "onnx"), None)
        problems = check_tokenizers(tokenizer_json, onnx, device_tokenizer_json=bundle / "tokenizer.json"
                                    if (bundle / "tokenizer.json").is_file() else None)
        metadata = {a["path"]: read_artifact_metadata(bundle / a["path"]) for a in artifacts}
        return problems + check_special_ids(ids_folder, manifest, metadata)


def set_aside_extras(module, artifact: Path, staging: Path) -> list[dict[str, Any]]:
    """Move the files of an artifact that no phone loads (the runtime's EXTRA_FILES: ONNX's
    model.onnx beside the model.ort GenAI loads) to extras/<format>/ before verification, so the
    artifact that is verified and bundled is exactly what the app loads. Their manifest entries."""
    entries = []
    for name, purpose in module.EXTRA_FILES.items():
        if (artifact / name).is_file():
            moved = staging / EXTRAS_DIR / module.FORMAT / name
            moved.parent.mkdir(parents=True, exist_ok=True)
            (artifact / name).rename(moved)
            entries.append({**file_entry(staging, moved), "purpose": purpose})
    return entries


def build_reference(checkpoint: Checkpoint, max_seq_len: int):
    """Stage 2: the fp32 decoder and its greedy continuation + logits for every prompt."""
    from .tokenizer import load_tokenizer

    with stage("reference (fp32 PyTorch)"):
        decoder = build_model(checkpoint, max_seq_len)
        cases = tokenize_prompts(load_tokenizer(checkpoint.tokenizer.tokenizer_json), max_seq_len)
        references = make_reference(ReferenceLM(decoder, max_seq_len), cases, new_tokens(max_seq_len),
                                    checkpoint.eos_token_ids)
    return decoder, references


# A phone cannot hold a larger KV cache; asking for one is a mistake, not a slow export.
MAX_KV_CACHE_BYTES = 2 << 30


def cache_length(checkpoint: Checkpoint, requested: int) -> int:
    """The KV-cache length for this export: the request, capped by the model's positions, and
    refused when the fp32 cache would not fit a phone."""
    max_seq_len = context_length(checkpoint, requested)
    if max_seq_len < requested:
        log.warning("--max-seq-len %d is above the model's %d positions; using %d", requested,
                    checkpoint.spec.max_position_embeddings, max_seq_len)
    spec = checkpoint.spec
    kv_bytes = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * max_seq_len * 4
    if kv_bytes > MAX_KV_CACHE_BYTES:
        raise InputError(f"{checkpoint.path}: a KV cache of {max_seq_len} tokens needs {kv_bytes / 2**30:.1f} GiB "
                         f"(limit {MAX_KV_CACHE_BYTES / 2**30:.0f} GiB); pass a smaller --max-seq-len")
    return max_seq_len


def export_target(checkpoint: Checkpoint, target: TargetRecipe, request: ExportRequest) -> TargetResult:
    max_seq_len = cache_length(checkpoint, request.max_seq_len or target.max_seq_len)
    formats = plan_formats(target, request.formats)
    recipes = {fmt: target.formats[fmt].recipe(request.quant) for fmt in formats}
    modules = {fmt: runtime(fmt) for fmt in formats}
    log.info("target %s: %s; cache %d tokens", target.name,
             ", ".join(f"{f} ({r.name})" for f, r in recipes.items()), max_seq_len)

    decoder, references = build_reference(checkpoint, max_seq_len)

    try:
        staging = staging_dir(request.out_dir, target.name)
        staging.mkdir()
    except OSError as e:
        raise InputError(f"{request.out_dir}: cannot write the output there ({e.strerror})") from None
    try:
        result = TargetResult(target.name, request.out_dir / target.name)
        artifacts, extras = [], []
        for fmt, recipe in recipes.items():
            module = modules[fmt]
            meta = module.artifact_metadata(checkpoint, max_seq_len)
            with stage(f"emit {fmt} ({recipe.name})"):
                path = module.emit(copy.deepcopy(decoder), recipe, max_seq_len, meta, staging / fmt)
                if module.TOKENIZER_IN_ARTIFACT:
                    copy_tokenizer_files(checkpoint, path)
                extras += set_aside_extras(module, path, staging)
            rel = path.relative_to(staging).as_posix()
            with stage(f"verify {rel}"):
                parity = verify_artifact(module.open_session(path), references, recipe.thresholds,
                                         artifact=rel, fmt=fmt, quantization=recipe.name)
            size, digest = artifact_digest(path)
            result.results.append(parity)
            result.sizes[rel] = size
            artifacts.append({"format": fmt, "path": rel, "quantization": recipe.name, "bytes": size,
                              "sha256": digest, "parity": parity.summary(),
                              "self_test": golden_vectors(parity, references)})
            log.info("%s: %s, top1 %.4f, KL %.3g, greedy %s", rel, "passed" if parity.passed else "FAILED",
                     parity.metrics["top1"], parity.metrics["kl_mean"],
                     "; ".join(f"{p.name} {p.greedy_status}" for p in parity.prompts))

        tokenizer_problems = check_tokenizer_parity(checkpoint.tokenizer.tokenizer_json, checkpoint.path, staging,
                                                    artifacts, {"model": {"bos_token_id": checkpoint.bos_token_id,
                                                                          "eos_token_ids": checkpoint.eos_token_ids}})
        if tokenizer_problems:
            raise ParityError(f"tokenizer parity failed: {tokenizer_problems[0]}; nothing shipped for {target.name}")

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
        from .tokenizer_parity import expected_ids

        tokenizer_entry["self_test"] = expected_ids(checkpoint.tokenizer.tokenizer_json)
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
            **({"extras": extras} if extras else {}),
        }
        write_manifest(staging, manifest)
        swap_into_place(staging, result.bundle)
        shutil.rmtree(request.out_dir / f"{target.name}.rejected", ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if request.bundle:
        with stage(f"bundle {target.name}"):
            result.app = bundle_into_app(result.bundle, target, request.app_dir)
    return result


def check_size_policy(checkpoint: Checkpoint, target: TargetRecipe) -> None:
    parameters = checkpoint.spec.num_parameters
    if target.max_parameters and parameters > target.max_parameters:
        raise InputError(f"{checkpoint.path}: {parameters:,} parameters is above the {target.name} target's limit of "
                         f"{target.max_parameters:,} (targets/{target.name}.toml max_parameters): a phone cannot "
                         "hold it")


def export(request: ExportRequest) -> list[TargetResult]:
    with stage(f"load {request.model_dir}"):
        checkpoint = load_checkpoint(request.model_dir)
    targets = [load_target(name) for name in request.targets]
    for target in targets:  # before any export work
        check_size_policy(checkpoint, target)
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
    if not any(p.startswith("tokenizer") for p in problems):  # a changed tokenizer is already a failure
        problems += check_tokenizer_parity(bundle / manifest["tokenizer"]["path"], bundle, bundle,
                                           [a for a in manifest["artifacts"] if (bundle / a["path"]).exists()],
                                           manifest)
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
