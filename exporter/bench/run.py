"""The benchmark as a recipe: check the request, export, count bytes, time, bound, report.

Every input is checked before the first export (a bad request is an InputError, exit 2 in the
CLI): the target and its formats, each recipe and its peer mapping, the checkpoint, the cache
length, prompt plus new tokens within the cache, the thread counts.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..progress import stage

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from ..recipes import QuantRecipe, TargetRecipe
    from .exports import PeerTool

log = logging.getLogger(__name__)

RUNTIME_FORMATS = ("executorch", "onnx")  # formats with a peer and a runtime here


@dataclass(frozen=True)
class BenchRequest:
    model_dir: Path
    target: str
    formats: tuple[str, ...] | None = None  # None: every format of the target
    quant: str | None = None  # None: each format's default recipe in the target file
    max_seq_len: int | None = None  # None: the target's
    prompt_tokens: int = 64
    new_tokens: int = 128
    repeats: int = 3
    threads: tuple[int, ...] = (1, os.cpu_count() or 1)
    work_dir: Path | None = None  # None: a temporary folder, removed at the end
    reuse_peer: bool = False  # keep peer exports in work_dir whose tool, flags and weights match
    bandwidth_bytes: int = 512 << 20
    peer_default: bool = False  # compare with each peer's own 4-bit default instead of the equivalent of ours
    quality: bool = True  # teacher-forced quality on the held-out text (meaningless on random weights)
    runtime: bool = True  # prefill and decode speed through the runtimes


@dataclass(frozen=True)
class _Plan:
    """The request resolved against its target: one recipe (and peer, None for Core ML) per format."""

    checkpoint: Checkpoint
    target: TargetRecipe
    max_seq_len: int
    recipes: dict[str, QuantRecipe]
    peers: dict[str, PeerTool | None]


def _plan(request: BenchRequest) -> _Plan:
    from ..checkpoint import load_checkpoint, require_decoder
    from ..pipeline import cache_length, plan_formats
    from ..recipes import load_target, parse_quant
    from .checkpoints import check_meta_convertible
    from .exports import peer_default_tool, peer_tool

    if request.repeats < 1 or request.prompt_tokens < 2 or request.new_tokens < 2:
        raise InputError("--repeats must be >= 1, --prompt-tokens and --new-tokens >= 2")
    if not request.threads or min(request.threads) < 1:
        raise InputError("--threads must list positive thread counts")
    if request.reuse_peer and request.work_dir is None:
        raise InputError("--reuse-peer needs --work DIR (where the earlier peer exports are)")
    target = load_target(request.target)
    formats = plan_formats(target, request.formats)
    choice = parse_quant(request.quant)
    recipes = {fmt: target.formats[fmt].recipe(choice.for_format(fmt)) for fmt in formats}
    peers = {fmt: peer_default_tool(fmt) if request.peer_default else peer_tool(fmt, recipe)
             for fmt, recipe in recipes.items()}
    checkpoint = load_checkpoint(request.model_dir)
    require_decoder(checkpoint, "bench (ours against export_llama and the model builder)")
    if "executorch" in formats:
        check_meta_convertible(checkpoint)
    max_seq_len = cache_length(checkpoint, request.max_seq_len or target.max_seq_len)
    if request.prompt_tokens + request.new_tokens > max_seq_len:
        raise InputError(f"--prompt-tokens {request.prompt_tokens} + --new-tokens {request.new_tokens} exceed the "
                         f"cache of {max_seq_len} tokens")
    return _Plan(checkpoint, target, max_seq_len, recipes, peers)


def _files_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _onnx_model_file(folder: Path) -> Path:
    import json

    return folder / json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]["filename"]


def _artifact_side(fmt: str, artifact: Path, export: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """Bytes of one artifact: what the runtime loads, the whole folder (ONNX), and the weights a
    decoded token reads."""
    from .bandwidth import onnx_weight_bytes, pte_weight_bytes

    side: dict[str, Any] = {"artifact": str(artifact), "export": export}
    if fmt == "onnx":
        model = _onnx_model_file(artifact)
        # External data (the builder's model.onnx.data) is loaded with the model.
        side["artifact_bytes"] = sum(p.stat().st_size for p in artifact.iterdir()
                                     if p.name == model.name or (p.name.startswith(model.name) and p.suffix == ".data"))
        # The folder as an app receives it: our emit also writes EXTRA_FILES (model.onnx, ...),
        # which the pipeline moves out of the bundle; the builder's model.onnx is its loaded model.
        from ..runtimes import onnx_genai

        side["folder_bytes"] = sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file() and (
            p.name not in onnx_genai.EXTRA_FILES or p.name.startswith(model.name)))
        # The initializers of model.onnx: ours ships model.ort too, the same graph after ORT's
        # constant folding, whose extra copies (a folded view of the tied head) are only gathered.
        side["weights"] = onnx_weight_bytes(artifact / "model.onnx", vocab_size)
    else:
        side["artifact_bytes"] = _files_bytes(artifact)
        if fmt == "executorch":
            side["weights"] = pte_weight_bytes(artifact, vocab_size)
    if "weights" in side:
        side["weight_bytes_per_token"] = side["weights"]["weight_bytes_per_token"]
    return side


def _checkpoint_info(checkpoint) -> dict[str, Any]:
    spec = checkpoint.spec
    return {"path": str(checkpoint.path), "name": checkpoint.name, "family": checkpoint.model_type,
            "parameters": spec.num_parameters, "layers": spec.num_layers, "hidden_size": spec.hidden_size,
            "heads": spec.num_heads, "kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim,
            "intermediate_size": spec.intermediate_size, "vocab_size": spec.vocab_size,
            "tied_embeddings": spec.tie_word_embeddings}


def _export_all(plan: _Plan, request: BenchRequest, work: Path) -> dict[str, dict[str, Any]]:
    from .exports import export_ours, export_peer_executorch, export_peer_onnx

    checkpoint, vocab = plan.checkpoint, plan.checkpoint.spec.vocab_size
    digest = checkpoint.digest() if any(plan.peers.values()) else ""
    entries: dict[str, dict[str, Any]] = {}
    for fmt, recipe in plan.recipes.items():
        tool = plan.peers[fmt]
        entry: dict[str, Any] = {"recipe": {"name": recipe.name, "params": dict(recipe.params)},
                                 "peer_tool": None, "notes": []}
        with stage(f"export ours: {fmt} ({recipe.name})"):
            artifact, record = export_ours(checkpoint.path, plan.target.name, fmt, recipe.name, plan.max_seq_len,
                                           work / fmt / "ours")
        entry["ours"] = _artifact_side(fmt, artifact, record, vocab)
        if tool is not None:
            entry["peer_tool"] = {"name": tool.name, "flags": list(tool.flags), "note": tool.note}
            with stage(f"export peer: {fmt} ({tool.name} {' '.join(tool.flags)})"):
                if fmt == "executorch":
                    artifact, record = export_peer_executorch(checkpoint, tool, plan.max_seq_len,
                                                              work / fmt / "peer", request.reuse_peer, digest)
                else:
                    artifact, record = export_peer_onnx(checkpoint, tool, work / fmt / "peer", request.reuse_peer,
                                                        digest)
            entry["peer"] = _artifact_side(fmt, artifact, record, vocab)
            entry["notes"] += _export_notes(fmt, tool, record)
        else:
            entry["notes"].append(f"{fmt} has no peer export tool and no runtime on this machine: export and bytes "
                                  "only")
        entries[fmt] = entry
    return entries


def _export_notes(fmt: str, tool, record: dict[str, Any]) -> list[str]:
    notes = []
    if fmt == "executorch":
        notes.append(f"The peer needs the weights in Meta layout first (consolidated.00.pth + params.json): "
                     f"{record['convert_to_meta']['wall_s']:.1f} s wall, not included in its export row.")
    if record.get("reused"):
        notes.append("The peer export was reused from an earlier run (--reuse-peer): its export figures are "
                     "from that run.")
    if tool.note:
        notes.append(tool.note + ".")
    notes.append("Peer command: `" + " ".join(record["command"]) + "`" +
                 (f" with {', '.join(f'{k}={v}' for k, v in record['env'].items())}" if record.get("env") else ""))
    return notes


def _runtime_notes(fmt: str, entry: dict[str, Any], threads: list[int], prompt_tokens: int,
                   new_tokens: int) -> list[str]:
    notes = []
    for n in (t for t in threads if t > 1):
        busy = {who: entry[who]["runtime"][str(n)]["cpu_per_wall"] for who in ("ours", "peer")}
        if max(busy.values()) > 1.25 * min(busy.values()):
            notes.append(f"With {n} threads the best runs had unequal CPU (CPU/wall ours {busy['ours']:.2f}, peer "
                         f"{busy['peer']:.2f}): the cores were not equally free, so the {n}-thread ratios are not "
                         "reliable on this machine.")
    for who in ("ours", "peer"):
        for n in threads:
            figures = entry[who]["runtime"][str(n)]
            if figures["prompt_tokens"] != prompt_tokens:
                notes.append(f"{who}, {n} thread(s): the runtime counted {figures['prompt_tokens']} prompt tokens, "
                             f"not {prompt_tokens}")
            if figures["decode_tokens"] < new_tokens - 1:
                notes.append(f"{who}, {n} thread(s): generation stopped at an eos token after "
                             f"{figures['decode_tokens']} decode steps; decode speed is over those")
    if fmt == "executorch":
        calls = "; ".join(f"{n} thread(s): " + ", ".join(f"{who} {entry[who]['runtime'][str(n)]['runs'][0]['calls']}"
                                                        for who in ("ours", "peer")) for n in threads)
        notes.append("Prefill and decode times come from the runner's stats, in whole milliseconds; each measurement "
                     f"pools consecutive runner calls until it spans >= 50 ms of prefill and 200 ms of decode "
                     f"(calls per measurement, by thread setting: {calls}).")
    return notes


def _measure_quality(checkpoint, max_seq_len: int, formats: dict[str, dict[str, Any]]) -> None:
    """Teacher-forced top-1 and perplexity change on the held-out text (docs/PARITY.md) for every
    artifact with a runtime here, ours and the peer's, through the same sessions verify uses."""
    from ..checkpoint import build_model
    from ..reference import ReferenceLM
    from ..runtimes import runtime
    from ..tokenizer import load_tokenizer
    from ..verify import make_text_reference, measure_text, tokenize_quality_text

    sides = [(fmt, entry[who]) for fmt, entry in formats.items() if fmt in RUNTIME_FORMATS
             for who in ("ours", "peer") if entry.get(who)]
    if not sides:
        return
    with stage("reference on the held-out text"):
        passages = tokenize_quality_text(load_tokenizer(checkpoint.tokenizer.tokenizer_json), max_seq_len)
        refs = make_text_reference(ReferenceLM(build_model(checkpoint, max_seq_len), max_seq_len), passages)
    for fmt, side in sides:
        with stage(f"held-out text: {side['artifact']}"):
            measured = measure_text(runtime(fmt).open_session(Path(side["artifact"])), refs)
        side["quality"] = {k: measured[k] for k in ("text_top1", "ppl_change", "text_tokens", "ppl", "ppl_reference")}


def run_bench(request: BenchRequest) -> dict[str, Any]:
    """Runs the benchmark; returns the result (see report.py for its rows and rendering)."""
    from ..pipeline import tool_versions
    from .bandwidth import decode_bound, kv_read_bytes, mean_decode_context, measure_bandwidth
    from .runtime import Subject, first_difference, make_prompt, measure

    plan = _plan(request)
    checkpoint = plan.checkpoint
    threads = sorted(set(request.threads))
    load_start = os.getloadavg()
    work = request.work_dir or Path(tempfile.mkdtemp(prefix="slm_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    log.info("bench %s, target %s: %s; cache %d; work %s", checkpoint.name, plan.target.name,
             ", ".join(f"{f} ({r.name})" for f, r in plan.recipes.items()), plan.max_seq_len, work)
    try:
        formats = _export_all(plan, request, work)
        if request.quality:
            _measure_quality(checkpoint, plan.max_seq_len, formats)
        prompt = make_prompt(checkpoint.tokenizer.tokenizer_json, request.prompt_tokens)
        context = mean_decode_context(len(prompt.ids), request.new_tokens)
        kv_bytes = kv_read_bytes(checkpoint.spec, context)
        subjects = [Subject(fmt, who, Path(entry[who]["artifact"])) for fmt, entry in formats.items()
                    if request.runtime and fmt in RUNTIME_FORMATS for who in ("ours", "peer") if entry.get(who)]
        bandwidth = {}
        for n in threads if subjects else ():
            with stage(f"memory bandwidth, {n} thread(s)"):
                bandwidth[str(n)] = measure_bandwidth(n, request.bandwidth_bytes)
        scratch = work / "runtime"
        scratch.mkdir(exist_ok=True)
        for n in threads if subjects else ():
            with stage(f"runtime, {n} thread(s): {len(subjects)} artifacts x {request.repeats} rounds"):
                measured = measure(subjects, checkpoint.tokenizer.tokenizer_json, prompt, request.new_tokens,
                                   request.repeats, n, scratch)
            for (fmt, who), figures in measured.items():
                side = formats[fmt][who]
                side.setdefault("runtime", {})[str(n)] = figures
                bound = decode_bound(bandwidth[str(n)]["bytes_per_s"], side["weight_bytes_per_token"] + kv_bytes)
                side.setdefault("decode_bound", {})[str(n)] = {"bound_tok_s": bound,
                                                              "fraction": figures["decode_tok_s"] / bound}
        first = str(threads[0])
        for fmt, entry in formats.items():
            if "runtime" in entry["ours"] and entry.get("peer"):
                ours_out, peer_out = entry["ours"]["runtime"][first]["output"], entry["peer"]["runtime"][first]["output"]
                entry["greedy_first_difference"] = first_difference(ours_out, peer_out)
                entry["greedy_unit"] = "token" if fmt == "onnx" else "character of the printed text"
                entry["notes"] += _runtime_notes(fmt, entry, threads, len(prompt.ids), request.new_tokens)
    finally:
        if request.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "schema": "slm-export-bench/1",
        "checkpoint": _checkpoint_info(checkpoint),
        "target": plan.target.name, "max_seq_len": plan.max_seq_len,
        "prompt": {"text": prompt.text, "ids": prompt.ids, "tokens": len(prompt.ids)},
        "new_tokens": request.new_tokens, "repeats": request.repeats, "threads": threads,
        "mean_decode_context": context, "kv_read_bytes_per_token": kv_bytes,
        "machine": {"cpus": os.cpu_count(), "load_average_start": list(load_start),
                    "load_average_end": list(os.getloadavg()), "versions": tool_versions(),
                    "bandwidth": bandwidth},
        "work_dir": str(request.work_dir) if request.work_dir else None,
        "formats": formats,
    }
