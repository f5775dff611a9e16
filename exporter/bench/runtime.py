"""Stage 3 of the benchmark: prefill and decode speed through the real runtimes, in this process.

- ExecuTorch: `runtimes.executorch.runner_generate`, i.e. the C++ TextLLMRunner that Android's
  LlmModule and iOS's TextRunner wrap, greedy. Speeds come from the runner's own stats
  (millisecond timestamps): prefill = prompt_tokens / (prompt_eval_end - inference_start),
  decode = generated_tokens / (inference_end - prompt_eval_end); the runner counts N-1 generated
  tokens for N new ones (the first comes out of prefill). It stops at an eos token; the count
  it reports is the one used. Where one call is too short for a millisecond clock (the student
  prefills 64 tokens in about 1 ms), one measurement pools several calls (`runner_calls`).
- onnxruntime-genai: og.Generator, greedy, min_length = max_length so eos never stops a run.
  prefill = append_tokens(prompt) + the first generate_next_token (time to first token); decode
  = the remaining N-1 generate_next_token calls.

Threads. ExecuTorch: `_unsafe_reset_threadpool(n)` sizes the pthreadpool shared by XNNPACK and
the optimized/custom kernels, and `torch.set_num_threads(n)` sizes the OpenMP/MKL pool that the
custom SDPA kernel's GEMMs use on Linux. Both are needed: with the pthreadpool at 1 and OpenMP
left at all cores, export_llama's custom_sdpa prefill on the 135M shape took 5-13 s instead of
~0.1 s on the 2-core development machine. onnxruntime-genai: `session_options.intra_op_num_threads`
in a temporary copy of the folder (genai_config.json edited, every other file symlinked); the
exported folders are never modified. CPU time / wall time of each run (this process, all
threads) shows whether the threads worked.

All artifacts are measured in one process: a warm-up run each per thread setting, then N rounds,
each running every artifact once, the order reversed on odd rounds; best of N per metric.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROMPT_SEED = ("The small language model runs on the phone without a network connection. It reads the "
               "prompt, fills its key and value cache, and then writes one token at a time. ")


@dataclass(frozen=True)
class Prompt:
    """The same prompt for both runtimes: `text` for the ExecuTorch runner, `ids` for
    onnxruntime-genai. The runner encodes with num_bos=1, which in pytorch_tokenizers 1.5 applies
    tokenizer.json's post-processor (see tokenizer_parity.py): the same ids as `tokenizers` with
    add_special_tokens=True, which `ids` are. The runner's own count is recorded and checked."""

    text: str
    ids: list[int]


def make_prompt(tokenizer_json: Path, tokens: int) -> Prompt:
    """The longest prefix of a fixed English text that encodes to at most `tokens` ids, not
    ending in whitespace; exactly `tokens` long whenever some prefix is."""
    from ..tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_json)
    text = PROMPT_SEED * (tokens // 8 + 2)

    def ids_of(n: int) -> list[int]:
        return tokenizer.encode(text[:n], add_special_tokens=True).ids

    while len(ids_of(len(text))) < tokens and len(text) < 1 << 20:
        text *= 2
    lo, hi = 1, len(text)  # binary search for the longest prefix within the budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if len(ids_of(mid)) <= tokens else (lo, mid - 1)
    n = lo
    while n > 1 and text[n - 1].isspace():
        n -= 1
    return Prompt(text[:n], ids_of(n))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def stderr_to(path: Path):
    """Sends file descriptor 2 to `path` (the C++ runner logs every load and run there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def set_executorch_threads(threads: int) -> dict[str, int]:
    """Sizes both pools; returns the sizes they report back."""
    import torch
    from executorch.extension.pybindings.portable_lib import (
        _threadpool_get_thread_count,
        _unsafe_reset_threadpool,
    )

    _unsafe_reset_threadpool(threads)
    torch.set_num_threads(threads)
    return {"pthreadpool": int(_threadpool_get_thread_count()), "openmp": torch.get_num_threads()}


def run_executorch(pte: Path, tokenizer_json: Path, prompt: Prompt, new_tokens: int, log_path: Path,
                   calls: int = 1) -> dict[str, Any]:
    """`calls` consecutive runner_generate calls pooled into one measurement: tokens summed over
    milliseconds summed. The runner's stats count whole milliseconds; a difference of two such
    timestamps is off by less than 1 ms either way, and summing many calls averages that out
    (a 64-token prefill of the student takes about 1 ms)."""
    from ..runtimes.executorch import runner_generate

    totals = {"prompt_tokens": 0, "decode_tokens": 0, "prefill_ms": 0, "decode_ms": 0}
    c0, t0 = cpu_seconds(), time.perf_counter()
    with stderr_to(log_path):
        for _ in range(calls):
            printed, stats = runner_generate(pte, tokenizer_json, prompt.text, new_tokens)
            totals["prompt_tokens"] += stats["prompt_tokens"]
            totals["decode_tokens"] += stats["generated_tokens"]
            totals["prefill_ms"] += stats["prompt_eval_end_ms"] - stats["inference_start_ms"]
            totals["decode_ms"] += stats["inference_end_ms"] - stats["prompt_eval_end_ms"]
    wall = time.perf_counter() - t0
    return {"calls": calls, "prompt_tokens": stats["prompt_tokens"], "decode_tokens": stats["generated_tokens"],
            "prefill_ms": totals["prefill_ms"] / calls, "decode_ms": totals["decode_ms"] / calls,
            # a pooled 0 ms phase (possible with one call) counts as 0.5 ms
            "prefill_tok_s": totals["prompt_tokens"] / max(totals["prefill_ms"], 0.5) * 1000,
            "decode_tok_s": totals["decode_tokens"] / max(totals["decode_ms"], 0.5) * 1000,
            "cpu_per_wall": (cpu_seconds() - c0) / wall, "output": printed.decode("utf-8", "replace")}


# Pool runner calls until a measurement spans at least this much (capped at MAX_CALLS calls).
POOLED_PREFILL_MS, POOLED_DECODE_MS, MAX_CALLS = 50, 200, 100


def runner_calls(calibration: dict[str, Any]) -> int:
    """Runner calls per ExecuTorch measurement, from a measurement's per-call milliseconds."""
    needed = max(POOLED_PREFILL_MS / max(calibration["prefill_ms"], 0.5),
                 POOLED_DECODE_MS / max(calibration["decode_ms"], 0.5))
    return max(1, min(MAX_CALLS, math.ceil(needed)))


def og_folder(folder: Path, threads: int, parent: Path) -> Path:
    """A temporary view of an onnxruntime-genai folder with intra_op_num_threads = `threads`."""
    view = Path(tempfile.mkdtemp(prefix=f"{folder.name}_t{threads}_", dir=parent))
    for path in folder.iterdir():
        if path.name != "genai_config.json":
            (view / path.name).symlink_to(path.resolve())
    config = json.loads((folder / "genai_config.json").read_text())
    config["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads
    (view / "genai_config.json").write_text(json.dumps(config, indent=2))
    return view


def run_og(model, prompt: Prompt, new_tokens: int) -> dict[str, Any]:
    import numpy as np
    import onnxruntime_genai as og

    total = len(prompt.ids) + new_tokens
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=total, min_length=total, batch_size=1)
    generator = og.Generator(model, params)
    c0, t0 = cpu_seconds(), time.perf_counter()
    generator.append_tokens(np.asarray([prompt.ids], dtype=np.int32))
    generator.generate_next_token()
    t1 = time.perf_counter()
    steps = 0
    while not generator.is_done():
        generator.generate_next_token()
        steps += 1
    t2 = time.perf_counter()
    tokens = [int(t) for t in generator.get_sequence(0)][len(prompt.ids):]
    return {"prompt_tokens": len(prompt.ids), "decode_tokens": steps,
            "prefill_ms": (t1 - t0) * 1000, "decode_ms": (t2 - t1) * 1000,
            "prefill_tok_s": len(prompt.ids) / (t1 - t0), "decode_tok_s": steps / (t2 - t1),
            "cpu_per_wall": (cpu_seconds() - c0) / (t2 - t0), "output": tokens}


@dataclass(frozen=True)
class Subject:
    """One artifact to time: `format` is executorch or onnx, `who` ours or peer."""

    format: str
    who: str
    path: Path


def measure(subjects: list[Subject], tokenizer_json: Path, prompt: Prompt, new_tokens: int, repeats: int,
            threads: int, scratch: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every subject at one thread setting: warm-up, then `repeats` alternating rounds.
    Returns per (format, who): the best prefill and decode tok/s, and every run."""
    import onnxruntime_genai as og

    runner_log = scratch / "executorch-runner.log"
    pools, executorch_pools = {"intra_op_num_threads": threads}, {}
    if any(s.format == "executorch" for s in subjects):
        from ..runtimes.executorch import load_kernels  # the peer's llama:: ops and quantized kernels

        with stderr_to(runner_log):
            load_kernels()
            executorch_pools = set_executorch_threads(threads)
    models = {s: og.Model(str(og_folder(s.path, threads, scratch))) for s in subjects if s.format == "onnx"}

    calls = {s: 1 for s in subjects}

    def once(subject: Subject, tokens: int) -> dict[str, Any]:
        if subject.format == "executorch":
            return run_executorch(subject.path, tokenizer_json, prompt, tokens, runner_log, calls[subject])
        return run_og(models[subject], prompt, tokens)

    for subject in subjects:  # warm-up, not counted
        once(subject, new_tokens)
    for subject in subjects:  # how many runner calls one ExecuTorch measurement pools, from 3 warm calls
        if subject.format == "executorch":
            calls[subject] = runner_calls(run_executorch(subject.path, tokenizer_json, prompt, new_tokens,
                                                         runner_log, calls=3))
    runs: dict[Subject, list[dict[str, Any]]] = {s: [] for s in subjects}
    for round_ in range(repeats):
        for subject in subjects if round_ % 2 == 0 else subjects[::-1]:
            run = once(subject, new_tokens)
            runs[subject].append(run)
            log.info("  %d thread%s, round %d, %s %s: prefill %.0f tok/s, decode %.1f tok/s, cpu/wall %.2f",
                     threads, "" if threads == 1 else "s", round_ + 1, subject.format, subject.who,
                     run["prefill_tok_s"], run["decode_tok_s"], run["cpu_per_wall"])
    models.clear()  # release the sessions before the next thread setting
    results = {}
    for subject, done in runs.items():
        best_decode = max(done, key=lambda r: r["decode_tok_s"])
        results[(subject.format, subject.who)] = {
            "prefill_tok_s": max(r["prefill_tok_s"] for r in done),
            "decode_tok_s": best_decode["decode_tok_s"],
            "cpu_per_wall": best_decode["cpu_per_wall"],
            "prompt_tokens": done[0]["prompt_tokens"], "decode_tokens": done[0]["decode_tokens"],
            "output": done[0]["output"],
            "threads": executorch_pools if subject.format == "executorch" else pools,
            "runs": [{k: v for k, v in r.items() if k != "output"} for r in done],
        }
    return results


def first_difference(a, b) -> int | None:
    """Index of the first differing element (token or character); None when equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
