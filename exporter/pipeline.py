"""The export pipeline, as a recipe. Each stage is a function from one artifact to the next:

1. load      checkpoint dir -> Checkpoint                       (checkpoint.load_checkpoint)
2. reference Checkpoint -> reference greedy ids/logits per prompt (reference, verify); the fp32
             decoder that computed them is freed
3. quantize  a decoder built anew from the checkpoint for each emit (which may consume it), with
             the runtime's own tool                                   (runtimes/<format>.emit)
4. emit      -> artifact file(s) in a staging directory               (runtimes/<format>.emit)
5. verify    artifact through its real runtime vs the reference      (verify.verify_artifact)
6. publish   manifest (with golden self-test vectors), tokenizer, parity report; staging renamed
             into OUT/<target> only if every artifact passed, so an earlier good output survives.
7. bundle    OUT/<target> copied atomically into the target's app, or side-load steps printed
             when it is above the app's size limit                  (bundle.bundle_into_app)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import Any

from . import __version__
from .atomic import exclusive, space_checked, staging_dir, swap_into_place
from .bundle import BundleResult, bundle_into_app
from .checkpoint import Checkpoint, build_model, load_checkpoint, sha256_file
from .describe import context_length
from .errors import InputError, ParityError
from .manifest import EXTRAS_DIR, MANIFEST, SCHEMA_VERSION, artifact_digest, file_entry, list_files
from .manifest import write as write_manifest
from .progress import release_memory, stage
from .recipes import QuantRecipe, TargetRecipe, load_target, parse_quant
from .reference import ReferenceLM
from .runtimes import REGISTRY, registration, runtime
from .verify import (
    ParityResult,
    PromptReference,
    TextReference,
    make_reference,
    make_text_reference,
    measure_text,
    new_tokens,
    tokenize_prompts,
    tokenize_quality_text,
    verify_artifact,
)

log = logging.getLogger(__name__)

TOOLS = ("torch", *(tool for reg in REGISTRY.values() for tool in reg.tools), "tokenizers", "safetensors")


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
    accept_quality_loss: bool = False  # ship a quantized artifact that missed its gate, the loss recorded
    # Encoders bundled beside a decoder, each in its own sub-bundle (docs/MANIFEST.md, Companions):
    # the built-in encoder student when --model is not given.
    companions: tuple[Path, ...] = ()


# What an app screen does with a companion encoder, by its task (the sub-bundle's folder name).
COMPANION_ROLES = {"feature-extraction": "search", "sequence-classification": "classify",
                   "token-classification": "classify", "question-answering": "answer"}


@dataclass
class TargetResult:
    target: str
    bundle: Path
    results: list[ParityResult] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    app: BundleResult | None = None
    companions: dict[str, Any] = field(default_factory=dict)  # role -> EncoderTargetResult

    def artifact_line(self, r) -> str:
        return (f"{r.artifact} ({r.quantization}, {self.sizes[r.artifact] / 1e6:.1f} MB, {quality_line(r)}"
                + ("" if r.passed else "; below its gate, shipped with --accept-quality-loss") + ")")

    def artifacts_line(self) -> str:
        return ", ".join(self.artifact_line(r) for r in self.results)

    def summary(self) -> str:
        lines = [f"{self.target}: verified {self.artifacts_line()} -> {self.bundle}"]
        for role, companion in self.companions.items():
            lines.append(f"{self.target}: with {role}/ {companion.artifacts_line()}")
        if self.app and self.app.destination:
            lines.append(f"{self.target}: bundled into {self.app.destination}")
        elif self.app and self.app.sideload_steps:
            lines.append(f"{self.target}: {self.app.bytes / 1e6:.0f} MB is too large for the app's assets; "
                         "side-load it:\n  " + "\n  ".join(self.app.sideload_steps))
        return "\n".join(lines)


def quality_line(parity: ParityResult) -> str:
    """The figures a user reads first: prompt top-1 and KL, then the held-out text's top-1 and
    perplexity change."""
    m = parity.metrics
    line = f"top1 {m['top1']:.3f}, KL {m['kl_mean']:.2g}"
    if "text_top1" in m:
        line += f", text top1 {m['text_top1']:.3f}, ppl {m['ppl_change']:+.1%} over {m['text_tokens']} tokens"
    return line


def tool_versions() -> dict[str, str]:
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            pass
    return versions


def formats_of(target: TargetRecipe, encoder: bool) -> dict[str, Any]:
    """The target's format tables for this kind of model (decoders: [formats], encoders: [encoder.formats])."""
    return target.encoder_formats if encoder else target.formats


def plan_formats(target: TargetRecipe, requested: tuple[str, ...] | None, strict: bool = True,
                 encoder: bool = False) -> list[str]:
    """The target's formats, or the requested ones; `strict`: each requested one must be the
    target's (else only those it has, for --target all)."""
    formats = formats_of(target, encoder)
    if requested is None:
        return list(formats)
    missing = [f for f in requested if f not in formats]
    if missing and strict:
        raise InputError(f"target {target.name!r} does not emit {', '.join(missing)} "
                         f"{'for encoders ' if encoder else ''}(its formats: {', '.join(formats)})")
    return [f for f in requested if f in formats]


def plan_target(target: TargetRecipe, request: ExportRequest, strict: bool = True,
                encoder: bool = False) -> dict[str, tuple[list, Any]]:
    """Per format of this target's export, the recipes to try and the auto gate (None: a named
    recipe, held to its own thresholds). Raises for an unknown name before any export work."""
    choice = parse_quant(request.quant)
    formats = formats_of(target, encoder)
    return {fmt: formats[fmt].plan(choice.for_format(fmt))
            for fmt in plan_formats(target, request.formats, strict, encoder)}


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def copy_tokenizer_files(checkpoint: Checkpoint, folder: Path) -> None:
    """tokenizer.json and tokenizer_config.json (an empty object when the checkpoint has none)."""
    shutil.copyfile(checkpoint.tokenizer.tokenizer_json, folder / "tokenizer.json")
    if checkpoint.tokenizer.tokenizer_config:
        shutil.copyfile(checkpoint.tokenizer.tokenizer_config, folder / "tokenizer_config.json")
    else:
        (folder / "tokenizer_config.json").write_text("{}\n")


def copy_tokenizer(checkpoint: Checkpoint, staging: Path) -> dict[str, Any]:
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
    from .chat import check_manifest_chat
    from .tokenizer_parity import (
        check_chat_prompts,
        check_special_ids,
        check_tokenizers,
        read_artifact_metadata,
    )

    with stage("tokenizer parity"):
        genai = next((bundle / a["path"] for a in artifacts if registration(a["format"]).device_tokenizer == "genai"),
                     None)
        device_json = bundle / "tokenizer.json" if (bundle / "tokenizer.json").is_file() else None
        problems = check_tokenizers(tokenizer_json, genai, device_tokenizer_json=device_json)
        if manifest.get("chat"):
            problems += check_manifest_chat(manifest["chat"])
            problems += check_chat_prompts(tokenizer_json, manifest["chat"], genai, device_json)
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


@dataclass
class References:
    """What every artifact is compared with: the reference's greedy continuation + logits per
    prompt, and its top-2 and next-token likelihoods over the held-out text."""

    prompts: list[PromptReference]
    text: list[TextReference]

    def to_json(self, max_seq_len: int) -> dict[str, Any]:
        return {"tie_epsilon": 1e-4, "max_seq_len": max_seq_len, "prompts": [r.to_json() for r in self.prompts],
                "text": [t.to_json() for t in self.text]}


def build_reference(checkpoint: Checkpoint, max_seq_len: int) -> References:
    """Stage 2: the fp32 decoder's greedy continuation + logits for every prompt, and its figures
    on the held-out text. The decoder is not kept: each emit gets one of its own (fresh_decoder),
    so a format's export never has the reference's weights beside its own."""
    from .tokenizer import load_tokenizer

    with stage("reference (fp32 PyTorch)"):
        decoder = build_model(checkpoint, max_seq_len)
        tokenizer = load_tokenizer(checkpoint.tokenizer.tokenizer_json)
        reference_lm = ReferenceLM(decoder, max_seq_len)
        cases = tokenize_prompts(tokenizer, max_seq_len)
        if checkpoint.chat is not None:  # the golden self-test vectors then hold a chat-formatted case
            vector = next(v for v in checkpoint.chat.vectors if v["add_generation_prompt"] and "ids" in v)
            cases.append((f"chat: {vector['name']}", vector["ids"][:max_seq_len - new_tokens(max_seq_len)]))
        prompts = make_reference(reference_lm, cases, new_tokens(max_seq_len), checkpoint.eos_token_ids)
        text = make_text_reference(reference_lm, tokenize_quality_text(tokenizer, max_seq_len))
    return References(prompts, text)


def fresh_decoder(checkpoint: Checkpoint, max_seq_len: int):
    """The fp32 decoder for one emit, built from the checkpoint as the reference's was (tensor by
    tensor, without random initialisation). An emit may release its weights as it copies them
    into its own graph; a deep copy of a kept decoder would hold two models at the peak (12.2 GB
    for the 1B shape's ExecuTorch stage, RESULTS.md)."""
    with stage("load weights"):
        return build_model(checkpoint, max_seq_len)


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


@dataclass
class Candidate:
    """One recipe tried for a format: its artifact's bytes, its figures and whether it passed."""

    recipe: str
    bytes: int  # 0 when only estimated
    seconds: float
    parity: ParityResult | None  # None: skipped on its eager estimate, never exported
    estimate: dict[str, Any] | None = None

    @property
    def passed(self) -> bool:
        return self.parity is not None and self.parity.passed

    def to_json(self) -> dict[str, Any]:
        if self.parity is None:
            return {"quantization": self.recipe, "passed": False, "seconds": round(self.seconds, 1),
                    "estimated": {k: round(self.estimate[k], 6) for k in ("text_top1", "ppl_change")}}
        m = self.parity.metrics
        return {"quantization": self.recipe, "bytes": self.bytes, "seconds": round(self.seconds, 1),
                "passed": self.parity.passed,
                **{k: round(m[k], 6) for k in ("text_top1", "ppl_change", "top1", "kl_mean") if k in m},
                **({"failures": self.parity.failures} if self.parity.failures else {})}

    def line(self) -> str:
        if self.parity is None:
            return (f"{self.recipe} (eager estimate, not exported): text top1 {self.estimate['text_top1']:.3f}, "
                    f"ppl {self.estimate['ppl_change']:+.1%}")
        return f"{self.recipe} {self.bytes / 1e6:.1f} MB: {quality_line(self.parity)}"


def emit_and_verify(module, recipe: QuantRecipe, thresholds, max_seq_len: int, meta: dict[str, Any],
                    checkpoint: Checkpoint, references: References, staging: Path) -> tuple[Path, list, Candidate]:
    """Stages 3-5 for one recipe: emit into staging/<format>, set its extras aside, verify."""
    fmt = module.FORMAT
    start = time.monotonic()
    with stage(f"emit {fmt} ({recipe.name})"):
        path = module.emit(fresh_decoder(checkpoint, max_seq_len), recipe, max_seq_len, meta, staging / fmt)
        if module.TOKENIZER_IN_ARTIFACT:
            copy_tokenizer_files(checkpoint, path)
        extras = set_aside_extras(module, path, staging)
    release_memory()  # the emit's graphs, before the verifying session loads the artifact
    rel = path.relative_to(staging).as_posix()
    with stage(f"verify {rel}"):
        parity = verify_artifact(module.open_session(path), references.prompts, thresholds,
                                 artifact=rel, fmt=fmt, quantization=recipe.name, text=references.text)
    log.info("%s (%s): %s, %s, greedy %s", rel, recipe.name, "passed" if parity.passed else "FAILED",
             quality_line(parity), "; ".join(f"{p.name} {p.greedy_status}" for p in parity.prompts))
    return path, extras, Candidate(recipe.name, artifact_digest(path)[0], time.monotonic() - start, parity)


def search(module, candidates: list[QuantRecipe], gate, max_seq_len: int, meta: dict[str, Any],
           checkpoint: Checkpoint, references: References, staging: Path) -> tuple[Path, list, list[Candidate]]:
    """`--quant auto`: emit and verify each candidate, smallest first, against the format's gate;
    the first that passes stays in staging/<format>. Returns it (or the last tried, when none
    passed) and every candidate's figures."""
    tried: list[Candidate] = []
    path, extras = None, []
    for i, recipe in enumerate(candidates):
        if path is not None:  # the previous candidate failed: clear its files
            shutil.rmtree(staging / module.FORMAT, ignore_errors=True)
            shutil.rmtree(staging / EXTRAS_DIR / module.FORMAT, ignore_errors=True)
        last = i == len(candidates) - 1
        if not last and hasattr(module, "estimate_session"):
            with stage(f"auto {module.FORMAT}: estimate {recipe.name} (eager)"):
                start = time.monotonic()
                estimate = measure_text(module.estimate_session(fresh_decoder(checkpoint, max_seq_len), recipe,
                                                                max_seq_len), references.text)
            if far_below(estimate, gate):
                log.info("auto %s: %s skipped, its eager estimate is far from the gate: text top1 %.3f, ppl %+.1f%%",
                         module.FORMAT, recipe.name, estimate["text_top1"], 100 * estimate["ppl_change"])
                tried.append(Candidate(recipe.name, 0, time.monotonic() - start, None, estimate))
                continue
        with stage(f"auto {module.FORMAT}: candidate {i + 1}/{len(candidates)} ({recipe.name})"):
            path, extras, candidate = emit_and_verify(module, recipe, gate, max_seq_len, meta, checkpoint,
                                                      references, staging)
        tried.append(candidate)
        if candidate.parity.passed:
            break
    return path, extras, tried


# An eager estimate this far below the gate skips the export: torchao's eager integer arithmetic
# and XNNPACK's agree to ~0.002 top-1 (docs/PARITY.md: SmolLM2-135M, the student), so a candidate
# 0.05 short cannot pass.
ESTIMATE_MARGIN_TOP1 = 0.05


def far_below(estimate: dict[str, Any], gate) -> bool:
    if estimate["text_top1"] < gate.text_top1_min - ESTIMATE_MARGIN_TOP1:
        return True
    return gate.ppl_change_max is not None and estimate["ppl_change"] > 2 * gate.ppl_change_max + 0.01


EXACT_RECIPES = ("none", "fp32")  # a failure of these is a wrong export, never a quality trade-off


def accepts_loss(parity: ParityResult) -> bool:
    """Whether --accept-quality-loss may ship this failed artifact: a quantized one whose figures
    are numbers (a NaN or an exact recipe's miss is a broken artifact, not a loss)."""
    return (not parity.passed and parity.quantization not in EXACT_RECIPES
            and not any(math.isnan(v) for v in parity.metrics.values() if isinstance(v, float)))


LOSS_TOLERANCE = 0.005  # text top-1 and perplexity change: another host's kernels may move them a little


def loss_not_reproduced(parity: ParityResult, recorded: dict[str, Any]) -> list[str]:
    """For an artifact shipped with --accept-quality-loss: where its figures now differ from the
    ones recorded at export (the loss it was accepted with)."""
    if any(math.isnan(v) for v in parity.metrics.values() if isinstance(v, float)):
        return ["the artifact produced NaN logits"]
    return [f"{key} {parity.metrics[key]:.4f} differs from the accepted {recorded[key]:.4f} by more than "
            f"{LOSS_TOLERANCE}" for key in ("text_top1", "ppl_change")
            if key in recorded and key in parity.metrics and abs(parity.metrics[key] - recorded[key]) > LOSS_TOLERANCE]


def search_failure(fmt: str, tried: list[Candidate], checkpoint: Checkpoint, target: str, report: Path) -> str:
    """What an auto search that found nothing tells the user: the gate, every candidate with its
    bytes and figures, and what would pass."""
    gate = tried[-1].parity.thresholds
    wanted = f"text top1 >= {gate['text_top1_min']}" + (
        f" and perplexity <= +{gate['ppl_change_max'] * 100:g}%" if gate.get("ppl_change_max") is not None else "")
    fp32_mb = checkpoint.spec.num_parameters * 4 / 1e6
    return (f"no {fmt} quantization keeps this model's predictions ({wanted} on held-out text); tried: "
            + "; ".join(c.line() for c in tried)
            + f". Nothing shipped for {target}. What passes: --quant {fmt}=fp32 (full precision, as the reference "
              f"computes, ~{fp32_mb:.0f} MB); "
              f"or ship the last one tried with its loss recorded: --accept-quality-loss; report: {report}")


@dataclass
class Published:
    """A format's verified artifact in an earlier target's published bundle, and its figures."""

    bundle: Path
    path: str  # relative to the bundle
    extras: list[dict[str, Any]]
    tried: list[Candidate]


@dataclass
class SharedWork:
    """What one checkpoint's targets share within a run (`--target all`): the references, by
    cache length (4 min of fp32 PyTorch at 1B), and each verified artifact, by everything its
    bytes depend on. Android and iOS both ship ExecuTorch with one recipe table
    (targets/formats/executorch.toml), and an emit is reproducible byte for byte, so the second
    target copies the first's verified .pte instead of exporting it again (15 min at 1B)."""

    references: dict[int, References] = field(default_factory=dict)
    published: dict[str, Published] = field(default_factory=dict)


def artifact_key(fmt: str, plan: tuple, max_seq_len: int, meta: dict[str, Any]) -> str:
    """What a format's artifact depends on besides the checkpoint: its recipes, gate, cache
    length and the metadata written into it."""
    candidates, gate = plan
    return json.dumps([fmt, max_seq_len, [dataclasses.asdict(r) for r in candidates],
                       dataclasses.asdict(gate) if gate is not None else None, meta], sort_keys=True, default=str)


def reuse_published(earlier: Published, module, staging: Path) -> tuple[Path, list, list[Candidate]]:
    """Copy an earlier target's verified artifact (and its extras) into this target's staging."""
    with stage(f"{module.FORMAT}: {earlier.path} from {earlier.bundle.name}/ (same recipe, not exported again)"):
        source = earlier.bundle / earlier.path
        path = staging / earlier.path
        path.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, path)
        for extra in earlier.extras:
            (staging / extra["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(earlier.bundle / extra["path"], staging / extra["path"])
    return path, list(earlier.extras), earlier.tried


def export_target(checkpoint: Checkpoint, target: TargetRecipe, request: ExportRequest,
                  companions: list[tuple[Checkpoint, dict]] | None = None,
                  shared: SharedWork | None = None) -> TargetResult:
    """The decoder's export for one target; `companions`: encoders (with their format plans)
    exported and verified into sub-bundles of the same bundle, before it is published.
    `shared`: what earlier targets of this run computed for the same checkpoint."""
    max_seq_len = cache_length(checkpoint, request.max_seq_len or target.max_seq_len)
    plans = plan_target(target, request, strict=len(request.targets) <= 1)
    modules = {fmt: runtime(fmt) for fmt in plans}
    log.info("target %s: %s; cache %d tokens", target.name,
             ", ".join(f"{f} ({' -> '.join(r.name for r in recipes)})" for f, (recipes, _) in plans.items()),
             max_seq_len)

    shared = shared if shared is not None else SharedWork()
    metas = {fmt: modules[fmt].artifact_metadata(checkpoint, max_seq_len) for fmt in plans}
    keys = {fmt: artifact_key(fmt, plans[fmt], max_seq_len, metas[fmt]) for fmt in plans}
    if max_seq_len not in shared.references:
        shared.references[max_seq_len] = build_reference(checkpoint, max_seq_len)
        release_memory()
    references = shared.references[max_seq_len]

    staging = make_staging(request.out_dir, target.name)
    try:
        result = TargetResult(target.name, request.out_dir / target.name)
        artifacts, extras, searches, fresh = [], [], {}, {}
        for fmt, (candidates, gate) in plans.items():
            module = modules[fmt]
            meta = metas[fmt]
            if keys[fmt] in shared.published:
                path, fmt_extras, tried = reuse_published(shared.published[keys[fmt]], module, staging)
                if gate is not None:
                    searches[fmt] = tried
            elif gate is None:
                path, fmt_extras, chosen = emit_and_verify(module, candidates[0], candidates[0].thresholds,
                                                           max_seq_len, meta, checkpoint, references, staging)
                tried = [chosen]
            else:
                path, fmt_extras, tried = search(module, candidates, gate, max_seq_len, meta, checkpoint,
                                                 references, staging)
                searches[fmt] = tried
            extras += fmt_extras
            release_memory()  # before the next format builds its graph
            parity = tried[-1].parity
            rel = path.relative_to(staging).as_posix()
            fresh[fmt] = Published(request.out_dir / target.name, rel, fmt_extras, tried)
            size, digest = artifact_digest(path)
            result.results.append(parity)
            result.sizes[rel] = size
            artifacts.append({"format": fmt, "path": rel, "quantization": parity.quantization, "bytes": size,
                              "sha256": digest, "parity": parity.summary(),
                              "self_test": golden_vectors(parity, references.prompts),
                              **({"search": {"gate": parity.thresholds,
                                             "seconds": round(sum(c.seconds for c in tried), 1),
                                             "tried": [c.to_json() for c in tried]}} if gate is not None else {})})

        chat = {"chat": checkpoint.chat.to_manifest()} if checkpoint.chat else {}
        tokenizer_problems = check_tokenizer_parity(checkpoint.tokenizer.tokenizer_json, checkpoint.path, staging,
                                                    artifacts, {"model": {"bos_token_id": checkpoint.bos_token_id,
                                                                          "eos_token_ids": checkpoint.eos_token_ids},
                                                                **chat})
        if tokenizer_problems:
            raise ParityError(f"tokenizer parity failed: {tokenizer_problems[0]}; nothing shipped for {target.name}")

        from .report import tradeoff_points, write_html

        write_json(staging / "parity.json", [r.to_json() for r in result.results])
        tradeoffs = {a["format"]: (tradeoff_points(a["search"]["tried"], a["quantization"]),
                                   a["search"]["gate"].get("text_top1_min")) for a in artifacts if "search" in a}
        write_html(result.results, staging / "parity.html", f"slm-export parity: {checkpoint.name} -> {target.name}",
                   tradeoffs)
        if request.accept_quality_loss:
            for parity, artifact in zip(result.results, artifacts, strict=True):
                if accepts_loss(parity):
                    artifact["quality_loss"] = {"accepted_with": "--accept-quality-loss", "failures": parity.failures}
                    log.warning("%s (%s) missed its gate and ships anyway (--accept-quality-loss): %s",
                                parity.artifact, parity.quantization, "; ".join(parity.failures))
        failed = [r for r, a in zip(result.results, artifacts, strict=True) if not r.passed and "quality_loss" not in a]
        if failed:
            rejected = keep_rejected_report(staging, request.out_dir, target.name)
            first = failed[0]
            if first.format in searches:
                raise ParityError(search_failure(first.format, searches[first.format], checkpoint, target.name,
                                                 rejected / "parity.html"))
            raise ParityError(f"parity failed for {first.artifact} ({first.quantization}): {first.failures[0]}; "
                              f"nothing shipped for {target.name}; report: {rejected / 'parity.html'}")

        write_json(staging / "reference.json", references.to_json(max_seq_len))
        tokenizer_entry = copy_tokenizer(checkpoint, staging)
        from .tokenizer_parity import expected_ids

        tokenizer_entry["self_test"] = expected_ids(checkpoint.tokenizer.tokenizer_json)
        companion_entries = []
        for companion, companion_plans in companions or []:
            from .encoder_pipeline import build_encoder_bundle

            role = COMPANION_ROLES[companion.spec.task]
            if not companion_plans:
                log.info("target %s emits no encoder format%s: %s is not bundled", target.name,
                         " among --formats" if request.formats else "", companion.name)
                continue
            with stage(f"companion {role}/ ({companion.name})"):
                result.companions[role] = build_encoder_bundle(companion, target, request, companion_plans,
                                                               staging / role, keep_extras=False)
            companion_entries.append({"role": role, "path": role, "task": companion.spec.task,
                                      "manifest_sha256": sha256_file(staging / role / MANIFEST)})
        publish(staging, {**manifest_head(checkpoint, target, max_seq_len), "tokenizer": tokenizer_entry, **chat,
                          "artifacts": artifacts, **({"companions": companion_entries} if companion_entries else {}),
                          **manifest_tail(staging, extras)}, request.out_dir, target.name)
        shared.published.update((keys[fmt], published) for fmt, published in fresh.items())
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if request.bundle:
        with stage(f"bundle {target.name}"):
            result.app = bundle_into_app(result.bundle, target, request.app_dir)
    return result


def keep_rejected_report(staging: Path, out_dir: Path, target: str) -> Path:
    """OUT/<target>.rejected/ with the failed run's parity.json and parity.html (the staging
    folder itself is removed); returns the folder."""
    rejected = out_dir / f"{target}.rejected"
    shutil.rmtree(rejected, ignore_errors=True)
    rejected.mkdir()
    for name in ("parity.json", "parity.html"):
        shutil.copyfile(staging / name, rejected / name)
    return rejected


def manifest_head(checkpoint: Checkpoint, target: TargetRecipe, max_seq_len: int) -> dict[str, Any]:
    """The manifest's keys before the tokenizer: schema version, generator, target, model."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": {"name": "slm-export", "version": __version__, "tools": tool_versions()},
        "target": target.name,
        "model": {"name": checkpoint.name, "family": checkpoint.model_type,
                  "parameters": checkpoint.spec.num_parameters, "vocab_size": checkpoint.spec.vocab_size,
                  "max_seq_len": max_seq_len, "bos_token_id": checkpoint.bos_token_id,
                  "eos_token_ids": checkpoint.eos_token_ids, "source_sha256": checkpoint.digest()},
    }


def manifest_tail(staging: Path, extras: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's keys after the artifacts: the parity files, every file, the extras."""
    return {"parity": {"results": "parity.json", "report": "parity.html", "reference": "reference.json"},
            "files": list_files(staging), **({"extras": extras} if extras else {})}


def make_staging(out_dir: Path, target: str) -> Path:
    """The staging folder a target's bundle is built in, beside OUT/<target>."""
    try:
        staging = staging_dir(out_dir, target)
        staging.mkdir()
    except OSError as e:
        raise InputError(f"{out_dir}: cannot write the output there ({e.strerror})") from None
    return staging


def publish(staging: Path, manifest: dict[str, Any] | None, out_dir: Path, target: str) -> None:
    """Write the manifest (schema-checked; None: the staging folder has it already), swap the
    staging folder into OUT/<target>, and drop a report an earlier failed run left."""
    if manifest is not None:
        write_manifest(staging, manifest)
    swap_into_place(staging, out_dir / target)
    shutil.rmtree(out_dir / f"{target}.rejected", ignore_errors=True)


def check_size_policy(checkpoint: Checkpoint, target: TargetRecipe) -> None:
    parameters = checkpoint.spec.num_parameters
    if target.max_parameters and parameters > target.max_parameters:
        raise InputError(f"{checkpoint.path}: {parameters:,} parameters is above the {target.name} target's limit of "
                         f"{target.max_parameters:,} (targets/{target.name}.toml max_parameters): a phone cannot "
                         "hold it")


def machine_memory_bytes() -> int:
    """Physical memory (MemTotal), or 0 where it cannot be read."""
    try:
        with open("/proc/meminfo") as meminfo:
            return next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):
        return 0


def check_machine_memory(checkpoint: Checkpoint, formats: set[str]) -> None:
    """Refuse, from config.json alone, an export whose estimated peak is above this machine's memory."""
    total = machine_memory_bytes()
    if not total or not formats:
        return
    # Each format's measured peak as a multiple of the fp32 weights (Registration.memory_factor):
    # above the machine's memory the export would be killed by the kernel part way.
    weights = 4 * checkpoint.spec.num_parameters
    worst = max(formats, key=lambda f: registration(f).memory_factor)
    peak = weights * registration(worst).memory_factor
    if peak > total:
        raise InputError(f"{checkpoint.path}: {checkpoint.spec.num_parameters:,} parameters ({weights / 2**30:.1f} GiB "
                         f"in fp32) need about {peak / 2**30:.1f} GiB of memory to export to {worst}, and this machine "
                         f"has {total / 2**30:.1f} GiB; export on a larger machine (docs/TRUST.md)")


def export(request: ExportRequest) -> list[TargetResult]:
    with stage(f"load {request.model_dir}"):
        checkpoint = load_checkpoint(request.model_dir)
    encoder = checkpoint.is_encoder
    targets = select_targets([load_target(name) for name in request.targets], request, encoder)
    for target in targets:  # before any export work
        check_size_policy(checkpoint, target)
    formats = {t.name: plan_formats(t, request.formats, len(request.targets) <= 1, encoder) for t in targets}
    check_machine_memory(checkpoint, {f for fs in formats.values() for f in fs})
    # About the disk an export needs: each format writes its fp32 graph before quantizing it
    # (ONNX's model.onnx), so the model's fp32 weights once per format and target.
    needed = 4 * checkpoint.spec.num_parameters * sum(map(len, formats.values()))
    if encoder:
        from .encoder_pipeline import export_encoder_target

        if request.companions:
            raise InputError("--encoder bundles an encoder beside a decoder; --model is itself an encoder")

        def export_one(target: TargetRecipe) -> TargetResult:
            return export_encoder_target(checkpoint, target, request)
    else:
        companions = [load_checkpoint(path) for path in request.companions]
        for companion in companions:
            if not companion.is_encoder or companion.spec.task not in COMPANION_ROLES:
                raise InputError(f"{companion.path}: only an encoder can be bundled beside a decoder")
        if len({COMPANION_ROLES[c.spec.task] for c in companions}) < len(companions):
            raise InputError("two companion encoders serve the same role; bundle one per role")
        # Each target's encoder recipes, planned before any work: default recipes, the requested
        # formats where the target has them for encoders (a decoder's --quant names are not an encoder's).
        companion_request = dataclasses.replace(request, quant=None)
        shared = SharedWork()

        def export_one(target: TargetRecipe) -> TargetResult:
            return export_target(checkpoint, target, request,
                                 [(c, plan_target(target, companion_request, strict=False, encoder=True))
                                  for c in companions], shared)
    results = []
    for target in targets:
        with exclusive(request.out_dir, target.name), space_checked(request.out_dir, needed, "the bundle"):
            results.append(export_one(target))
    return results


def select_targets(targets: list[TargetRecipe], request: ExportRequest, encoder: bool = False) -> list[TargetRecipe]:
    """The targets with something to export, every plan checked first (an unknown recipe name
    fails before any work). With several targets, --formats and per-format --quant names keep
    each target's share and fail only for a format no selected target emits."""
    strict = len(targets) <= 1
    for target in targets:
        plan_target(target, request, strict, encoder)
    emitted = {fmt for t in targets for fmt in plan_formats(t, request.formats, strict, encoder)}
    named = set(request.formats or ()) | set(parse_quant(request.quant).per_format)
    if named - emitted or not emitted:
        names = ", ".join(t.name for t in targets)
        known = sorted({f for t in targets for f in formats_of(t, encoder)})
        raise InputError(f"no selected target ({names}) emits {', '.join(sorted(named - emitted)) or 'these formats'} "
                         f"{'for encoders ' if encoder else ''}(their formats: {', '.join(known) or 'none'})")
    return [t for t in targets if plan_formats(t, request.formats, strict, encoder)]


def load_references(bundle: Path, manifest: dict[str, Any]) -> References:
    raw = json.loads((bundle / manifest["parity"]["reference"]).read_text(encoding="utf-8"))
    return References([PromptReference.from_json(p) for p in raw["prompts"]],
                      [TextReference.from_json(t) for t in raw.get("text", [])])


@dataclass
class BundleCheck:
    bundle: Path
    problems: list[str]
    results: list[ParityResult]

    @property
    def passed(self) -> bool:
        return not self.problems and all(r.passed for r in self.results)


def verify_bundle(bundle: Path, model_dir: Path | None = None, target_file: str | None = None) -> BundleCheck:
    """`slm-export verify`: digests, schema, then parity of every artifact, against the checkpoint
    when given, else against the reference recorded at export time; thresholds from the bundle's
    target (built-in), or from `target_file` (the target file it was exported with)."""
    from . import manifest as manifest_io
    from .recipes import target_names

    if not bundle.is_dir():
        raise InputError(f"{bundle}: not a bundle directory")
    manifest = manifest_io.read(bundle)
    if target_file is None and manifest["target"] not in target_names():
        raise InputError(f"{bundle}: made for target {manifest['target']!r}, not a built-in one; pass the target "
                         "file it was exported with: --target FILE")
    target = load_target(target_file or manifest["target"])
    problems = manifest_io.check_files(bundle, manifest)
    if "encoder" in manifest:
        from .encoder_pipeline import verify_encoder_bundle

        return BundleCheck(bundle, problems, verify_encoder_bundle(bundle, manifest, target, model_dir, problems))
    max_seq_len = manifest["model"]["max_seq_len"]
    if model_dir is not None:
        checkpoint = load_checkpoint(model_dir)
        if checkpoint.digest() != manifest["model"]["source_sha256"]:
            problems.append(f"{model_dir}: checkpoint digest differs from the manifest's source_sha256")
        references = build_reference(checkpoint, max_seq_len)
    else:
        references = load_references(bundle, manifest)
    if not any(p.startswith("tokenizer") for p in problems):  # a changed tokenizer is already a failure
        problems += check_tokenizer_parity(bundle / manifest["tokenizer"]["path"], bundle, bundle,
                                           [a for a in manifest["artifacts"] if (bundle / a["path"]).exists()],
                                           manifest)
    results = []
    for artifact in manifest["artifacts"]:
        path = bundle / artifact["path"]
        if not path.exists():
            continue  # already reported by check_files
        if artifact["format"] not in target.formats:
            problems.append(f"{artifact['path']}: target {target.name} has no {artifact['format']} recipe")
            continue
        fmt_recipe = target.formats[artifact["format"]]
        if "search" in artifact and fmt_recipe.auto:  # chosen by --quant auto: held to the auto gate
            thresholds = fmt_recipe.auto.thresholds
        else:
            thresholds = fmt_recipe.recipe(artifact["quantization"]).thresholds
        module = runtime(artifact["format"])
        with stage(f"verify {artifact['path']}"):
            checked = verify_artifact(module.open_session(path), references.prompts, thresholds,
                                      artifact=artifact["path"], fmt=artifact["format"],
                                      quantization=artifact["quantization"], text=references.text)
        if "quality_loss" in artifact:  # shipped below its gate: it must still give the figures it shipped with
            checked.failures = loss_not_reproduced(checked, artifact["parity"])
        results.append(checked)
    for companion in manifest.get("companions", []):  # each a whole encoder bundle, against its own reference
        folder = bundle / companion["path"]
        if not (folder / MANIFEST).is_file():
            continue  # already reported by check_files
        if sha256_file(folder / MANIFEST) != companion["manifest_sha256"]:
            problems.append(f"{companion['path']}/{MANIFEST}: sha256 differs from the manifest's companions entry")
            continue
        check = verify_bundle(folder, target_file=target_file)
        problems += [f"{companion['path']}/{p}" for p in check.problems]
        for result in check.results:
            result.artifact = f"{companion['path']}/{result.artifact}"
            results.append(result)
    return BundleCheck(bundle, problems, results)
