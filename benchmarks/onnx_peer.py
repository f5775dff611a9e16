"""ONNX Runtime GenAI: our exporter vs the GenAI model builder, on one Hugging Face llama checkpoint.

Not run by CI. For a checkpoint directory, a precision (fp32 / int4 / int8) and max_seq_len it:

1. exports ours (exporter.runtimes.onnx_genai.emit + pipeline.copy_tokenizer_files, recipe
   none / int4 {block_size 32, accuracy_level 4} / int8) and the builder's
   (`python -m onnxruntime_genai.models.builder -i CKPT -o OUT -p fp32|int4|int8 -e cpu -c CACHE`,
   HF_HUB_OFFLINE=1), each in its own subprocess: wall clock, user+sys CPU, peak RSS (os.wait4);
   for int4 also ours with accuracy_level 0;
2. artifact bytes: ours model.ort (what ships) and model.onnx (+ .data) separately, the builder's
   model.onnx + model.onnx.data;
3. decode and prefill tokens/s through onnxruntime-genai (og.Model / og.Generator, greedy, batch 1,
   64-token prompt, 128 new tokens), all models alternating in one process, best of N, once with
   session_options.intra_op_num_threads = 1 and once with default threads. The thread setting is
   written into a temporary folder (genai_config.json edited, the other files symlinked); the
   exported folders are never modified;
4. agreement: first index at which the greedy tokens differ (ours vs builder), and teacher-forced
   top-1 agreement with the fp32 PyTorch reference (exporter.reference.ReferenceLM) over 128 steps:
   the reference's own greedy continuation is fed one token at a time and each model's argmax is
   compared with the reference's next token;
5. prints a Markdown table (metric, ours, builder, ours/builder) and writes JSON (--json).

    python benchmarks/onnx_peer.py CKPT --precision int4 --json out.json
    python benchmarks/onnx_peer.py --make-smollm2-shape /tmp/smollm2_shape   # as executorch_peer.py

Timings: prefill = append_tokens(prompt) + the first generate_next_token (time to first token);
decode = the remaining new-1 generate_next_token calls, each one forward of one token + greedy
selection, so decode tok/s = (new-1) / that time. min_length = max_length, so eos never stops a run.
The machine may be shared: runtime numbers are paired (measured alternately in one process), so
the ratio is more trustworthy than either absolute figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from executorch_peer import PROMPT_SEED, make_smollm2_shape, timed_subprocess  # noqa: E402

OURS_RECIPE = {"fp32": "none", "int4": "int4", "int8": "int8"}


# --------------------------------------------------------------------------------------------
# exports, each in its own subprocess


def recipe_params(precision: str, accuracy_level: int) -> dict:
    if precision == "int4":
        return {"block_size": 32, "accuracy_level": accuracy_level}
    return {}


def child_export_ours(ckpt_dir: Path, precision: str, accuracy_level: int, max_seq_len: int, out_dir: Path) -> None:
    """Runs in the subprocess: load -> build -> emit -> tokenizer files, as the pipeline does
    (no verification)."""
    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.pipeline import copy_tokenizer_files
    from exporter.recipes import QuantRecipe, Thresholds
    from exporter.runtimes import onnx_genai

    ckpt = load_checkpoint(ckpt_dir)
    decoder = build_model(ckpt, max_seq_len)
    recipe = QuantRecipe(OURS_RECIPE[precision], recipe_params(precision, accuracy_level), Thresholds())
    folder = onnx_genai.emit(decoder, recipe, max_seq_len, onnx_genai.artifact_metadata(ckpt, max_seq_len), out_dir)
    copy_tokenizer_files(ckpt, folder)


def export_ours(args, ckpt_dir: Path, max_seq_len: int, work: Path, accuracy_level: int, tag: str) -> tuple[Path, dict]:
    out = work / tag
    record = work / f"{tag}_export.json"
    if args.reuse and (out / "genai_config.json").is_file() and record.is_file():
        return out, json.loads(record.read_text())
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child-export-ours", str(ckpt_dir),
           "--precision", args.precision, "--accuracy-level", str(accuracy_level),
           "--max-seq-len", str(max_seq_len), "--work", str(out)]
    info = timed_subprocess(cmd, work / f"{tag}_export.log", cwd=ROOT)
    record.write_text(json.dumps(info))
    return out, info


def export_builder(args, ckpt_dir: Path, work: Path) -> tuple[Path, dict]:
    out = work / "builder"
    record = work / "builder_export.json"
    if args.reuse and (out / "genai_config.json").is_file() and record.is_file():
        return out, json.loads(record.read_text())
    shutil.rmtree(out, ignore_errors=True)
    cache = Path(tempfile.mkdtemp(prefix="og_builder_cache_"))
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(ckpt_dir), "-o", str(out),
           "-p", args.precision, "-e", "cpu", "-c", str(cache)]
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        info = timed_subprocess(cmd, work / "builder_export.log", cwd=work)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    info["env"] = "HF_HUB_OFFLINE=1"
    record.write_text(json.dumps(info))
    return out, info


def folder_bytes(folder: Path) -> dict:
    def size(name: str) -> int:
        p = folder / name
        return p.stat().st_size if p.is_file() else 0

    onnx_total = size("model.onnx") + size("model.onnx.data")
    return {"model_ort": size("model.ort"), "model_onnx": onnx_total,
            "files": {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}}


# --------------------------------------------------------------------------------------------
# runtime through onnxruntime-genai


def threaded_copy(folder: Path, threads: int | None, parent: Path) -> Path:
    """A temporary folder: every file symlinked except genai_config.json, which is copied with
    decoder.session_options.intra_op_num_threads set (threads=None: unchanged)."""
    dest = Path(tempfile.mkdtemp(prefix=f"{folder.name}_t{threads or 'default'}_", dir=parent))
    for p in folder.iterdir():
        if p.name != "genai_config.json":
            (dest / p.name).symlink_to(p.resolve())
    config = json.loads((folder / "genai_config.json").read_text())
    if threads is not None:
        config["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads
    (dest / "genai_config.json").write_text(json.dumps(config, indent=2))
    return dest


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def og_generate(model, prompt_ids: list[int], new_tokens: int) -> dict:
    import numpy as np
    import onnxruntime_genai as og

    total = len(prompt_ids) + new_tokens
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=total, min_length=total, batch_size=1)
    gen = og.Generator(model, params)
    c0 = cpu_seconds()
    t0 = time.perf_counter()
    gen.append_tokens(np.asarray([prompt_ids], dtype=np.int32))
    gen.generate_next_token()
    t1 = time.perf_counter()
    n = 1
    while not gen.is_done():
        gen.generate_next_token()
        n += 1
    t2 = time.perf_counter()
    c2 = cpu_seconds()
    seq = [int(t) for t in gen.get_sequence(0)]
    new = seq[len(prompt_ids):]
    assert len(new) == n == new_tokens, (len(new), n, new_tokens)
    return {"prefill_ms": (t1 - t0) * 1000, "decode_ms": (t2 - t1) * 1000,
            "prefill_tok_s": len(prompt_ids) / (t1 - t0), "decode_tok_s": (n - 1) / (t2 - t1),
            "cpu_per_wall": (c2 - c0) / (t2 - t0), "tokens": new}


def run_all(folders: dict[str, Path], prompt_ids: list[int], new_tokens: int, repeats: int,
            threads: int | None, tmp: Path) -> dict:
    import onnxruntime_genai as og

    names = list(folders)
    models = {who: og.Model(str(threaded_copy(folders[who], threads, tmp))) for who in names}
    for who in names:  # warm-up (allocations, first-run kernel selection), not counted
        og_generate(models[who], prompt_ids, 8)
    runs: dict[str, list[dict]] = {who: [] for who in names}
    for i in range(repeats):
        order = names if i % 2 == 0 else names[::-1]
        for who in order:
            r = og_generate(models[who], prompt_ids, new_tokens)
            runs[who].append(r)
            print(f"  threads {threads or 'default'} run {i + 1} {who}: prefill {r['prefill_tok_s']:.0f} tok/s, "
                  f"decode {r['decode_tok_s']:.1f} tok/s, cpu/wall {r['cpu_per_wall']:.2f}", file=sys.stderr)
    del models
    best = {who: {"prefill_tok_s": max(r["prefill_tok_s"] for r in rs),
                  "decode_tok_s": max(r["decode_tok_s"] for r in rs),
                  "cpu_per_wall": rs[0]["cpu_per_wall"]} for who, rs in runs.items()}
    tokens = {who: rs[0]["tokens"] for who, rs in runs.items()}
    for who, rs in runs.items():
        for r in rs:
            assert r["tokens"] == tokens[who], f"{who}: greedy output changed between runs"
            del r["tokens"]
    return {"best": best, "runs": runs, "tokens": tokens}


def first_divergence(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def reference_continuation(ckpt_dir: Path, max_seq_len: int, prompt_ids: list[int], steps: int) -> list[int]:
    """The fp32 PyTorch reference's greedy continuation (no eos stop)."""
    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.reference import ReferenceLM

    ckpt = load_checkpoint(ckpt_dir)
    ref = ReferenceLM(build_model(ckpt, max_seq_len), max_seq_len)
    ids, _ = ref.greedy(prompt_ids, steps)
    return [int(i) for i in ids]


def reference_logits(ckpt_dir: Path, max_seq_len: int, prompt_ids: list[int], ref_ids: list[int]):
    """fp32 PyTorch logits [len(ref_ids), V] at the positions that predict each reference token."""
    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.reference import ReferenceLM

    ckpt = load_checkpoint(ckpt_dir)
    ref = ReferenceLM(build_model(ckpt, max_seq_len), max_seq_len)
    full = ref.full_logits(prompt_ids + ref_ids[:-1])
    return full[len(prompt_ids) - 1:].double().numpy()


def teacher_forced_top1(folder: Path, prompt_ids: list[int], ref_ids: list[int], ref_logits=None) -> dict:
    """Feed prompt, then the reference's tokens one at a time; compare each argmax with the
    reference's next token. Returns agreement over len(ref_ids) steps; with ref_logits also the
    mean cosine similarity of the logits and mean KL(reference || model) of the softmax (more
    telling than top-1 on random-weight models, whose next-token distributions are nearly flat)."""
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    total = len(prompt_ids) + len(ref_ids) + 1
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=total, batch_size=1)
    gen = og.Generator(model, params)
    gen.append_tokens(np.asarray([prompt_ids], dtype=np.int32))
    hits, cos, kl = [], [], []
    for i, tok in enumerate(ref_ids):
        logits = np.asarray(gen.get_logits(), dtype=np.float32).reshape(-1)
        hits.append(int(logits.argmax()) == tok)
        if ref_logits is not None:
            a, b = ref_logits[i], logits.astype(np.float64)
            cos.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
            la, lb = a - np.logaddexp.reduce(a), b - np.logaddexp.reduce(b)
            kl.append(float((np.exp(la) * (la - lb)).sum()))
        gen.append_tokens(np.asarray([[tok]], dtype=np.int32))
    first_miss = next((i for i, h in enumerate(hits) if not h), None)
    out = {"top1": sum(hits) / len(hits), "steps": len(hits), "first_miss": first_miss}
    if ref_logits is not None:
        out.update(mean_cosine=sum(cos) / len(cos), mean_kl=sum(kl) / len(kl))
    return out


def make_prompt_ids(tokenizer_json: Path, n: int) -> list[int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    ids = tok.encode(PROMPT_SEED * 8, add_special_tokens=True).ids
    if len(ids) < n:
        raise SystemExit(f"prompt text encodes to only {len(ids)} tokens")
    return ids[:n]


# --------------------------------------------------------------------------------------------


def table(result: dict) -> str:
    o, b = result["ours"], result["builder"]
    acc0 = result.get("ours_acc0")
    mb = 1e6
    rows = [
        ("export wall (s)", o["export"]["wall_s"], b["export"]["wall_s"], 1),
        ("export CPU time, user+sys (s)", o["export"]["cpu_s"], b["export"]["cpu_s"], 1),
        ("export peak RSS (MB)", o["export"]["peak_rss_mb"], b["export"]["peak_rss_mb"], 0),
        ("artifact MB: ours model.ort / builder model.onnx+.data", o["bytes"]["model_ort"] / mb,
         b["bytes"]["model_onnx"] / mb, 2),
        ("artifact MB: model.onnx(+.data) both", o["bytes"]["model_onnx"] / mb, b["bytes"]["model_onnx"] / mb, 2),
    ]
    for label, key in (("1 thread", "t1"), ("default threads", "tdefault")):
        rt = result["runtime"][key]["best"]
        rows.append((f"prefill tok/s, {label} ({result['prompt_tokens']}-token prompt, best of {result['repeats']})",
                     rt["ours"]["prefill_tok_s"], rt["builder"]["prefill_tok_s"], 0))
        rows.append((f"decode tok/s, {label} ({result['new_tokens']} new, best of {result['repeats']})",
                     rt["ours"]["decode_tok_s"], rt["builder"]["decode_tok_s"], 1))
    lines = ["| metric | ours | builder | ours/builder |", "|---|---:|---:|---:|"]
    for name, x, y, nd in rows:
        lines.append(f"| {name} | {x:.{nd}f} | {y:.{nd}f} | {x / y:.2f} |")
    ag = result["agreement"]
    div = ag["first_divergence_ours_vs_builder"]
    lines.append(f"| greedy tokens ours vs builder: first divergence | "
                 f"{'none (all ' + str(result['new_tokens']) + ' equal)' if div is None else div} | | |")
    tf = ag["teacher_forced_top1_vs_fp32_torch"]
    lines.append(f"| teacher-forced top-1 vs fp32 PyTorch ({tf['ours']['steps']} steps) | "
                 f"{tf['ours']['top1']:.3f} | {tf['builder']['top1']:.3f} | |")
    if "mean_kl" in tf["ours"]:
        lines.append(f"| teacher-forced mean KL(fp32 PyTorch ‖ model) | {tf['ours']['mean_kl']:.2e} | "
                     f"{tf['builder']['mean_kl']:.2e} | {tf['ours']['mean_kl'] / max(tf['builder']['mean_kl'], 1e-300):.2f} |")
        lines.append(f"| teacher-forced mean logits cosine vs fp32 PyTorch | {tf['ours']['mean_cosine']:.6f} | "
                     f"{tf['builder']['mean_cosine']:.6f} | |")
    if acc0:
        lines.append("")
        lines.append("| ours int4: accuracy_level | 0 | 4 (shipped) | acc0/acc4 |")
        lines.append("|---|---:|---:|---:|")
        for label, key in (("1 thread", "t1"), ("default threads", "tdefault")):
            rt = result["runtime"][key]["best"]
            for m, nd in (("prefill_tok_s", 0), ("decode_tok_s", 1)):
                x, y = rt["ours_acc0"][m], rt["ours"][m]
                lines.append(f"| {m.replace('_tok_s', '')} tok/s, {label} | {x:.{nd}f} | {y:.{nd}f} | {x / y:.2f} |")
        lines.append(f"| teacher-forced top-1 vs fp32 PyTorch | {tf['ours_acc0']['top1']:.3f} | "
                     f"{tf['ours']['top1']:.3f} | |")
        if "mean_kl" in tf["ours"]:
            lines.append(f"| teacher-forced mean KL vs fp32 PyTorch | {tf['ours_acc0']['mean_kl']:.2e} | "
                         f"{tf['ours']['mean_kl']:.2e} | {tf['ours_acc0']['mean_kl'] / max(tf['ours']['mean_kl'], 1e-300):.2f} |")
            lines.append(f"| teacher-forced mean logits cosine | {tf['ours_acc0']['mean_cosine']:.6f} | "
                         f"{tf['ours']['mean_cosine']:.6f} | |")
        d0 = ag["first_divergence_ours_acc0_vs_builder"]
        lines.append(f"| greedy vs builder: first divergence | {'none' if d0 is None else d0} | "
                     f"{'none' if div is None else div} | |")
        lines.append(f"| model.ort MB | {acc0['bytes']['model_ort'] / mb:.2f} | {o['bytes']['model_ort'] / mb:.2f} | |")
        lines.append(f"| export wall / CPU (s) | {acc0['export']['wall_s']:.1f} / {acc0['export']['cpu_s']:.1f} | "
                     f"{o['export']['wall_s']:.1f} / {o['export']['cpu_s']:.1f} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", type=Path, help="Hugging Face llama checkpoint directory")
    ap.add_argument("--precision", default="int4", choices=["fp32", "int4", "int8"])
    ap.add_argument("--accuracy-level", type=int, default=4, help="ours int4 MatMulNBits accuracy_level")
    ap.add_argument("--no-acc0", action="store_true", help="int4: skip the extra accuracy_level 0 export")
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, help="working directory (default: /tmp/onnx_peer/<name>_<precision>)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--reuse", action="store_true", help="reuse exports already in --work")
    ap.add_argument("--report", type=Path, metavar="JSON", help="reprint the table of a saved --json result")
    ap.add_argument("--make-smollm2-shape", type=Path, metavar="DIR",
                    help="create a random SmolLM2-135M-shaped llama checkpoint in DIR and exit")
    ap.add_argument("--_child-export-ours", dest="child_ours", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.make_smollm2_shape:
        make_smollm2_shape(args.make_smollm2_shape)
        return 0
    if args.report:
        print(table(json.loads(args.report.read_text())))
        return 0
    if args.checkpoint is None:
        ap.error("a checkpoint directory is required")
    if args.child_ours:
        child_export_ours(args.checkpoint, args.precision, args.accuracy_level, args.max_seq_len, args.work)
        return 0

    from exporter.checkpoint import load_checkpoint

    ckpt_dir = args.checkpoint.resolve()
    ckpt = load_checkpoint(ckpt_dir)
    max_seq_len = min(args.max_seq_len, ckpt.spec.max_position_embeddings)
    work = (args.work or Path("/tmp/onnx_peer") / f"{ckpt_dir.name}_{args.precision}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"checkpoint {ckpt_dir} ({ckpt.spec.num_layers} layers, vocab {ckpt.spec.vocab_size}); "
          f"precision {args.precision}; max_seq_len {max_seq_len}; work {work}", file=sys.stderr)

    folders, exports = {}, {}
    folders["ours"], exports["ours"] = export_ours(args, ckpt_dir, max_seq_len, work, args.accuracy_level, "ours")
    print(f"ours: {exports['ours']}", file=sys.stderr)
    folders["builder"], exports["builder"] = export_builder(args, ckpt_dir, work)
    print(f"builder: {exports['builder']}", file=sys.stderr)
    if args.precision == "int4" and not args.no_acc0 and args.accuracy_level != 0:
        folders["ours_acc0"], exports["ours_acc0"] = export_ours(args, ckpt_dir, max_seq_len, work, 0, "ours_acc0")
        print(f"ours_acc0: {exports['ours_acc0']}", file=sys.stderr)

    prompt_ids = make_prompt_ids(ckpt.tokenizer.tokenizer_json, args.prompt_tokens)
    tmp = Path(tempfile.mkdtemp(prefix="onnx_peer_run_"))
    try:
        runtime = {"t1": run_all(folders, prompt_ids, args.new_tokens, args.repeats, 1, tmp),
                   "tdefault": run_all(folders, prompt_ids, args.new_tokens, args.repeats, None, tmp)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    tokens = runtime["tdefault"]["tokens"]
    ref_ids = reference_continuation(ckpt_dir, max_seq_len, prompt_ids, args.new_tokens)
    ref_logits = reference_logits(ckpt_dir, max_seq_len, prompt_ids, ref_ids)
    agreement = {
        "first_divergence_ours_vs_builder": first_divergence(tokens["ours"], tokens["builder"]),
        "first_divergence_ours_vs_fp32_torch": first_divergence(tokens["ours"], ref_ids),
        "first_divergence_builder_vs_fp32_torch": first_divergence(tokens["builder"], ref_ids),
        "threads_change_tokens": {who: runtime["t1"]["tokens"][who] != tokens[who] for who in folders},
        "teacher_forced_top1_vs_fp32_torch": {who: teacher_forced_top1(folders[who], prompt_ids, ref_ids, ref_logits)
                                              for who in folders},
    }
    if "ours_acc0" in folders:
        agreement["first_divergence_ours_acc0_vs_builder"] = first_divergence(tokens["ours_acc0"], tokens["builder"])
        agreement["first_divergence_ours_acc0_vs_ours"] = first_divergence(tokens["ours_acc0"], tokens["ours"])

    result = {
        "checkpoint": str(ckpt_dir), "precision": args.precision, "ours_recipe": OURS_RECIPE[args.precision],
        "ours_params": recipe_params(args.precision, args.accuracy_level),
        "max_seq_len": max_seq_len, "prompt_ids": prompt_ids, "prompt_tokens": len(prompt_ids),
        "new_tokens": args.new_tokens, "repeats": args.repeats, "cpu_count": os.cpu_count(),
        "load_avg_at_end": os.getloadavg(),
        "versions": versions(), "agreement": agreement, "reference_tokens": ref_ids,
        "generated_tokens": tokens,
        "runtime": {k: {"best": v["best"], "runs": v["runs"]} for k, v in runtime.items()},
    }
    for who in folders:
        result[who] = {"export": exports[who], "bytes": folder_bytes(folders[who]), "folder": str(folders[who])}
    md = table(result)
    result["markdown"] = md
    print(md)
    print("builder command: HF_HUB_OFFLINE=1 " + " ".join(exports["builder"]["command"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


def versions() -> dict:
    import onnxruntime
    import onnxruntime_genai
    import torch

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxruntime_genai": onnxruntime_genai.__version__}


if __name__ == "__main__":
    sys.exit(main())
