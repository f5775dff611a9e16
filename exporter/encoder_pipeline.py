"""The export pipeline for encoders (BERT and its students), the same stages as for decoders:

1. load      checkpoint dir -> Checkpoint (its task, labels and pooling)       (checkpoint.load_checkpoint)
2. reference fp32 Encoder + its outputs on the fixed encoder texts            (encoder_verify)
3. emit      per format, the runtime's encoder emitter (runtimes.encoder_runtime(fmt).emit_encoder)
4. verify    each artifact through its real runtime against the reference     (encoder_verify)
5. publish   manifest (task, inputs, outputs, pooling, golden self-test), tokenizer, parity report;
             the staging folder renamed into OUT/<target> only if every artifact passed
6. bundle    into the target's app, as for decoders

There is no --quant auto search for encoders: the default recipe is full precision (fp16 on Core
ML), `--quant int8` picks a format's 8-bit recipe; each is held to its own thresholds.
"""

from __future__ import annotations

import copy
import html
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import bundle_into_app
from .checkpoint import Checkpoint, build_model
from .encoder_verify import (
    EncoderParity,
    EncoderReference,
    best_span,
    encoder_tokenizer_vectors,
    make_cases,
    make_reference,
    verify_encoder_artifact,
)
from .errors import InputError, ParityError
from .manifest import EXTRAS_DIR, artifact_digest
from .manifest import write as write_manifest
from .models.encoder import input_names
from .pipeline import (
    ExportRequest,
    TargetResult,
    copy_tokenizer,
    keep_rejected_report,
    make_staging,
    manifest_head,
    manifest_tail,
    plan_target,
    publish,
    set_aside_extras,
    write_json,
)
from .progress import stage
from .recipes import QuantRecipe, TargetRecipe
from .runtimes import encoder_runtime

log = logging.getLogger(__name__)

# Golden self-test cases written into the manifest per artifact (the first texts of the set).
SELF_TEST_CASES = 3


class EncoderTargetResult(TargetResult):
    """An encoder bundle's results (EncoderParity each), said the encoder's way."""

    def artifact_line(self, r) -> str:
        return f"{r.artifact} ({r.quantization}, {self.sizes[r.artifact] / 1e6:.1f} MB, {figures_line(r.figures)})"


def figures_line(figures: dict[str, Any]) -> str:
    named = (("cosine_min", "cosine min {:.5f}"), ("neighbour_agreement", "nearest neighbour {:.3f}"),
             ("label_agreement", "labels {:.3f}"), ("span_match", "spans {:.3f}"), ("max_abs", "max abs {:.2g}"))
    return ", ".join(fmt.format(figures[key]) for key, fmt in named if key in figures) + \
        f" over {figures['texts']} texts"


def input_limit(checkpoint: Checkpoint, target: TargetRecipe, requested: int | None) -> int:
    """The longest input the artifacts take: --max-seq-len, else the target's encoder limit, never
    more than the model was trained on."""
    spec = checkpoint.spec
    trained = spec.max_input_tokens or spec.max_position_embeddings
    wanted = requested or target.encoder_max_seq_len
    if requested and requested > trained:
        raise InputError(f"--max-seq-len {requested} is longer than {checkpoint.name} takes ({trained} tokens)")
    return min(wanted, trained)


def emit_and_verify(module, encoder, recipe: QuantRecipe, max_seq_len: int, meta: dict[str, Any],
                    reference: EncoderReference, staging: Path) -> tuple[Path, list, EncoderParity, float, Any]:
    """Emit into staging/<format>, set its extras aside, verify; returns the open session too (the
    golden cases run through it)."""
    fmt = module.FORMAT
    start = time.monotonic()
    with stage(f"emit {fmt} encoder ({recipe.name})"):
        path = module.emit_encoder(copy.deepcopy(encoder), recipe, max_seq_len, meta, staging / fmt)
        extras = set_aside_extras(module, staging / fmt, staging)
    rel = path.relative_to(staging).as_posix()
    session = module.open_encoder_session(path)
    with stage(f"verify {rel}"):
        parity = verify_encoder_artifact(session, reference, recipe.thresholds,
                                         artifact=rel, fmt=fmt, quantization=recipe.name,
                                         pad_id=encoder.spec.pad_token_id, num_inputs=len(input_names(encoder.spec)))
    log.info("%s (%s): %s, %s", rel, recipe.name, "passed" if parity.passed else "FAILED", figures_line(parity.figures))
    return path, extras, parity, time.monotonic() - start, session


def self_test(reference: EncoderReference, outputs_of_first: list[list]) -> dict[str, Any]:
    """Golden vectors for the app: the first texts' ids and what this artifact returned on the host
    (and, for question answering, the answer span those outputs give)."""
    cases = []
    for case, outs in zip(reference.cases[:SELF_TEST_CASES], outputs_of_first, strict=False):
        entry = {"name": case.name, "input_ids": case.ids, "token_type_ids": case.type_ids,
                 "expected": [list(map(float, o.ravel())) for o in outs]}
        if case.passage is not None:
            entry["span"] = list(best_span(outs[0][0], outs[1][0], case.passage))
        cases.append(entry)
    return {"rule": "run each case alone (no padding); embeddings: cosine to expected >= the artifact's parity "
                    "cosine_min; labels: the same argmax; question answering: the same span (start, end token)",
            "cases": cases}


def write_report(results: list[EncoderParity], path: Path, title: str) -> None:
    """parity.html for people: one row per artifact with its figures and thresholds."""
    rows = "".join(
        f"<tr><td>{html.escape(r.artifact)}</td><td>{html.escape(r.quantization)}</td>"
        f"<td>{'passed' if r.passed else 'FAILED: ' + html.escape('; '.join(r.failures))}</td>"
        f"<td>{html.escape(figures_line(r.figures))}</td></tr>" for r in results)
    path.write_text(f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><h1>{html.escape(title)}"
                    f"</h1><table border='1' cellpadding='4'><tr><th>artifact</th><th>recipe</th><th>result</th>"
                    f"<th>figures</th></tr>{rows}</table>\n", encoding="utf-8")


def plan_encoder(checkpoint: Checkpoint, target: TargetRecipe, request: ExportRequest) -> dict[str, tuple[list, Any]]:
    plans = plan_target(target, request, strict=len(request.targets) <= 1, encoder=True)
    if any(gate is not None for _, gate in plans.values()):
        raise InputError("--quant auto is not available for encoders (name a recipe, e.g. --quant int8)")
    return plans


def build_encoder_bundle(checkpoint: Checkpoint, target: TargetRecipe, request: ExportRequest,
                         plans: dict[str, tuple[list, Any]], folder: Path, keep_extras: bool = True,
                         rejected_in: Path | None = None) -> EncoderTargetResult:
    """Stages 2-5 and the manifest, into `folder` (nothing is published). `keep_extras`: keep the
    files no app loads under folder/extras/ (a companion of a decoder bundle drops them);
    `rejected_in`: the output folder, where the report of a failed run goes (<target>.rejected/)."""
    spec = checkpoint.spec
    max_seq_len = input_limit(checkpoint, target, request.max_seq_len)
    log.info("target %s (encoder %s, %s): %s; inputs up to %d tokens", target.name, checkpoint.name, spec.task,
             ", ".join(f"{f} ({recipes[0].name})" for f, (recipes, _) in plans.items()), max_seq_len)
    with stage("reference (fp32 PyTorch encoder)"):
        encoder = build_model(checkpoint)
        reference = make_reference(encoder, make_cases(checkpoint.tokenizer.tokenizer_json, spec.task, max_seq_len))
    result = EncoderTargetResult(target.name, folder)
    artifacts, extras = [], []
    for fmt, (recipes, _) in plans.items():
        module = encoder_runtime(fmt)
        recipe = recipes[0]
        meta = module.encoder_metadata(checkpoint, max_seq_len)
        path, fmt_extras, parity, seconds, session = emit_and_verify(module, encoder, recipe, max_seq_len, meta,
                                                                     reference, folder)
        extras += fmt_extras
        rel = path.relative_to(folder).as_posix()
        size, digest = artifact_digest(path)
        result.results.append(parity)
        result.sizes[rel] = size
        first = [session.run([np.asarray([values], dtype=np.int64) for values in
                              (case.ids, [1] * len(case.ids), case.type_ids)][:len(input_names(spec))])
                 for case in reference.cases[:SELF_TEST_CASES]]
        artifacts.append({"format": fmt, "path": rel, "quantization": recipe.name, "bytes": size, "sha256": digest,
                          "parity": parity.summary(), "seconds": round(seconds, 1),
                          "self_test": self_test(reference, first)})
    if not keep_extras:
        shutil.rmtree(folder / EXTRAS_DIR, ignore_errors=True)
        extras = []
    write_json(folder / "parity.json", [r.to_json() for r in result.results])
    write_report(result.results, folder / "parity.html", f"slm-export parity: {checkpoint.name} -> {target.name}")
    failed = [r for r in result.results if not r.passed]
    if failed:
        where = ""
        if rejected_in is not None:
            where = f"; report: {keep_rejected_report(folder, rejected_in, target.name) / 'parity.html'}"
        first_failure = failed[0]
        raise ParityError(f"parity failed for {first_failure.artifact} ({first_failure.quantization}): "
                          f"{first_failure.failures[0]}; nothing shipped for {target.name}{where}")
    write_json(folder / "reference.json", {"max_seq_len": max_seq_len, **reference.to_json()})
    tokenizer_entry = copy_tokenizer(checkpoint, folder)
    tokenizer_entry["self_test"] = encoder_tokenizer_vectors(checkpoint.tokenizer.tokenizer_json, max_seq_len)
    encoder_entry = {"task": spec.task, "inputs": list(input_names(spec)), "outputs": list(spec.outputs),
                     "labels": list(spec.labels), "pad_token_id": spec.pad_token_id,
                     **({"pooling": spec.pooling.to_json()} if spec.task == "feature-extraction" else {})}
    write_manifest(folder, {**manifest_head(checkpoint, target, max_seq_len), "encoder": encoder_entry,
                            "tokenizer": tokenizer_entry, "artifacts": artifacts, **manifest_tail(folder, extras)})
    return result


def export_encoder_target(checkpoint: Checkpoint, target: TargetRecipe, request: ExportRequest) -> EncoderTargetResult:
    plans = plan_encoder(checkpoint, target, request)
    staging = make_staging(request.out_dir, target.name)
    try:
        result = build_encoder_bundle(checkpoint, target, request, plans, staging, rejected_in=request.out_dir)
        result.bundle = request.out_dir / target.name
        publish(staging, None, request.out_dir, target.name)  # build_encoder_bundle wrote the manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if request.bundle:
        # The demo apps open an encoder bundle on its own screen (Search, Classify or Ask).
        with stage(f"bundle {target.name}"):
            result.app = bundle_into_app(result.bundle, target, request.app_dir)
    return result


def verify_encoder_bundle(bundle: Path, manifest: dict[str, Any], target: TargetRecipe, model_dir: Path | None,
                          problems: list[str]) -> list[EncoderParity]:
    """`slm-export verify` of an encoder bundle (digests and schema already checked): each artifact
    against the checkpoint when given, else the reference recorded at export time, held to its
    recipe's thresholds in the target; the tokenizer against the vectors in the manifest."""
    from .checkpoint import load_checkpoint
    from .encoder_verify import encoder_tokenizer_vectors

    encoder = manifest["encoder"]
    max_seq_len = manifest["model"]["max_seq_len"]
    if model_dir is not None:
        checkpoint = load_checkpoint(model_dir)
        if checkpoint.digest() != manifest["model"]["source_sha256"]:
            problems.append(f"{model_dir}: checkpoint digest differs from the manifest's source_sha256")
        with stage("reference (fp32 PyTorch encoder)"):
            reference = make_reference(build_model(checkpoint), make_cases(checkpoint.tokenizer.tokenizer_json,
                                                                           encoder["task"], max_seq_len))
    else:
        reference = EncoderReference.from_json(json.loads((bundle / manifest["parity"]["reference"]).read_text(
            encoding="utf-8")))
    tokenizer_json = bundle / manifest["tokenizer"]["path"]
    if tokenizer_json.is_file():
        texts = [v["text"] for v in manifest["tokenizer"].get("self_test", [])]
        for want, got in zip(manifest["tokenizer"].get("self_test", []),
                             encoder_tokenizer_vectors(tokenizer_json, max_seq_len, texts), strict=True):
            if want["ids"] != got["ids"]:
                problems.append(f"tokenizer: {want['text']!r} gives {got['ids'][:8]}..., the manifest says "
                                f"{want['ids'][:8]}...")
                break
    results = []
    formats = target.encoder_formats
    for artifact in manifest["artifacts"]:
        path = bundle / artifact["path"]
        if not path.exists():
            continue  # already reported by check_files
        if artifact["format"] not in formats:
            problems.append(f"{artifact['path']}: target {target.name} has no {artifact['format']} encoder recipe")
            continue
        thresholds = formats[artifact["format"]].recipe(artifact["quantization"]).thresholds
        module = encoder_runtime(artifact["format"])
        with stage(f"verify {artifact['path']}"):
            results.append(verify_encoder_artifact(module.open_encoder_session(path), reference, thresholds,
                                                   artifact=artifact["path"], fmt=artifact["format"],
                                                   quantization=artifact["quantization"],
                                                   pad_id=encoder["pad_token_id"], num_inputs=len(encoder["inputs"])))
    return results
