"""ExecuTorch: our exporter vs ExecuTorch's own `export_llama`, on one Hugging Face llama checkpoint.

Not run by CI. For a checkpoint directory and a recipe (`none` = fp32, `8da4w` = int8 dynamic
activations + int4 weights, group 32) it:

1. exports ours (exporter.runtimes.executorch.emit) in a subprocess: wall clock + peak RSS;
2. writes the same weights in Meta layout (consolidated.00.pth + params.json, `use_hf_rope`) and runs
   `python -m executorch.examples.models.llama.export_llama -kv --use_sdpa_with_kv_cache -X
   [--xnnpack-extended-ops] [-qmode 8da4w -G 32]` in a subprocess: wall clock + peak RSS;
3. compares .pte sizes;
4. runs both through TextLLMRunner (exporter.runtimes.executorch.runner_generate) in this one
   process, alternating ours/peer, best of N: prefill and decode tokens/s on the same prompt
   (~64 tokens), 128 new tokens, greedy; and whether the first 16 printed bytes agree;
5. prints a Markdown table (metric, ours, peer, ours/peer) and writes JSON (--json).

    python benchmarks/executorch_peer.py CKPT --recipe 8da4w --json out.json
    python benchmarks/executorch_peer.py --make-smollm2-shape /tmp/smollm2_shape

The machine may be shared: runtime numbers are paired (measured alternately in one process), so
the ratio is more trustworthy than either absolute figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SMOLLM2_135M_SHAPE = {
    "model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True,
    "max_position_embeddings": 2048, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
    "bos_token_id": 1, "eos_token_id": 2,
}

PROMPT_SEED = ("The small language model runs on the phone without a network connection. It reads the "
               "prompt, fills its key and value cache, and then writes one token at a time. ")


# --------------------------------------------------------------------------------------------
# checkpoints


def make_smollm2_shape(directory: Path) -> None:
    from exporter.checkpoint import load_checkpoint
    from tests.helpers import save_random_checkpoint

    directory.mkdir(parents=True, exist_ok=True)
    save_random_checkpoint(directory, SMOLLM2_135M_SHAPE)
    pad_tokenizer(directory, SMOLLM2_135M_SHAPE["vocab_size"])
    ckpt = load_checkpoint(directory)
    print(f"{directory}: {ckpt.spec.num_layers} layers, hidden {ckpt.spec.hidden_size if hasattr(ckpt.spec, 'hidden_size') else '?'}, "
          f"vocab {ckpt.spec.vocab_size}, tokenizer {ckpt.tokenizer.vocab_size}")


def pad_tokenizer(directory: Path, vocab_size: int) -> None:
    """A BPE trained on a tiny text stops far below a 49152 vocabulary; a random model then emits
    ids the tokenizer cannot decode, and the C++ runner fails. Pad with plain added tokens so
    every id the model can emit decodes (the padding does not change how the prompt encodes)."""
    from tokenizers import Tokenizer

    path = directory / "tokenizer.json"
    tok = Tokenizer.from_file(str(path))
    have = tok.get_vocab_size()
    if have >= vocab_size:
        return
    data = json.loads(path.read_text())
    data.setdefault("added_tokens", [])
    for i in range(have, vocab_size):
        data["added_tokens"].append({"id": i, "content": f"<f{i}>", "single_word": False, "lstrip": False,
                                     "rstrip": False, "normalized": False, "special": False})
    path.write_text(json.dumps(data))
    assert Tokenizer.from_file(str(path)).get_vocab_size() == vocab_size
    print(f"padded tokenizer {have} -> {vocab_size} tokens", file=sys.stderr)


def hf_to_meta(ckpt_dir: Path, out_dir: Path, max_seq_len: int) -> tuple[Path, Path]:
    """consolidated.00.pth + params.json for export_llama (HF q/k layout kept: use_hf_rope)."""
    import torch
    from safetensors.torch import load_file

    config = json.loads((ckpt_dir / "config.json").read_text())
    assert config.get("model_type") == "llama", f"only llama is converted, not {config.get('model_type')}"
    hf: dict[str, torch.Tensor] = {}
    for f in sorted(ckpt_dir.glob("*.safetensors")):
        hf.update(load_file(str(f)))
    n_layers = config["num_hidden_layers"]
    sd = {
        "tok_embeddings.weight": hf["model.embed_tokens.weight"],
        "norm.weight": hf["model.norm.weight"],
        "output.weight": hf.get("lm_head.weight", hf["model.embed_tokens.weight"]).clone(),
    }
    names = {"self_attn.q_proj": "attention.wq", "self_attn.k_proj": "attention.wk",
             "self_attn.v_proj": "attention.wv", "self_attn.o_proj": "attention.wo",
             "mlp.gate_proj": "feed_forward.w1", "mlp.down_proj": "feed_forward.w2",
             "mlp.up_proj": "feed_forward.w3", "input_layernorm": "attention_norm",
             "post_attention_layernorm": "ffn_norm"}
    for i in range(n_layers):
        for hf_name, meta_name in names.items():
            sd[f"layers.{i}.{meta_name}.weight"] = hf[f"model.layers.{i}.{hf_name}.weight"]
    sd = {k: v.to(torch.float32).contiguous() for k, v in sd.items()}
    heads = config["num_attention_heads"]
    params = {
        "dim": config["hidden_size"], "n_layers": n_layers, "n_heads": heads,
        "n_kv_heads": config.get("num_key_value_heads", heads), "vocab_size": config["vocab_size"],
        "hidden_dim": config["intermediate_size"], "norm_eps": config.get("rms_norm_eps", 1e-5),
        "rope_theta": float(config.get("rope_theta", 10000.0)), "use_hf_rope": True,
    }
    head_dim = config.get("head_dim")
    if head_dim and head_dim != config["hidden_size"] // heads:
        params["head_dim"] = head_dim
    if config.get("rope_scaling"):
        raise SystemExit(f"{ckpt_dir}: rope_scaling is not converted")
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(sd, out_dir / "consolidated.00.pth")
    (out_dir / "params.json").write_text(json.dumps(params, indent=1))
    return out_dir / "consolidated.00.pth", out_dir / "params.json"


# --------------------------------------------------------------------------------------------
# exports, each in its own subprocess (wall clock + that child's peak RSS via wait4)


def timed_subprocess(cmd: list[str], log_path: Path, cwd: Path | None = None) -> dict:
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise SystemExit(f"command failed (rc {proc.returncode}): {' '.join(cmd)}\n--- {log_path} tail ---\n{tail}")
    # ru_maxrss is in KiB on Linux
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "command": cmd}


def recipe_of(name: str, group: int):
    from exporter.recipes import QuantRecipe, Thresholds

    params = {"scheme": name} if name == "none" else {"scheme": name, "group_size": group}
    return QuantRecipe(name, params, Thresholds())


def child_export_ours(ckpt_dir: Path, recipe: str, group: int, max_seq_len: int, out_dir: Path) -> None:
    """Runs in the subprocess: load -> build -> emit, as the pipeline does (no verification)."""
    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.runtimes import executorch as et

    ckpt = load_checkpoint(ckpt_dir)
    decoder = build_model(ckpt, max_seq_len)
    meta = et.artifact_metadata(ckpt, max_seq_len)
    et.emit(decoder, recipe_of(recipe, group), max_seq_len, meta, out_dir)


def export_ours(args, ckpt_dir: Path, max_seq_len: int, work: Path) -> tuple[Path, dict]:
    out = work / "ours"
    pte = out / "model.pte"
    if args.reuse and pte.is_file():
        return pte, json.loads((work / "ours_export.json").read_text())
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child-export-ours", str(ckpt_dir),
           "--recipe", args.recipe, "--group-size", str(args.group_size), "--max-seq-len", str(max_seq_len),
           "--work", str(out)]
    info = timed_subprocess(cmd, work / "ours_export.log", cwd=ROOT)
    (work / "ours_export.json").write_text(json.dumps(info))
    return pte, info


def peer_command(args, ckpt, max_seq_len: int, pth: Path, params: Path, pte: Path) -> list[str]:
    metadata = {"get_eos_ids": list(ckpt.eos_token_ids)}
    if ckpt.bos_token_id is not None:
        metadata["get_bos_id"] = ckpt.bos_token_id
    cmd = [sys.executable, "-m", "executorch.examples.models.llama.export_llama", "--model", "llama3",
           "-c", str(pth), "-p", str(params), "-kv", "-X", "-d", "fp32",
           "--max_seq_length", str(max_seq_len), "--max_context_length", str(max_seq_len),
           "--metadata", json.dumps(metadata), "--output_name", str(pte)]
    if not args.peer_no_sdpa:
        cmd.append("--use_sdpa_with_kv_cache")
    if not args.peer_no_extended_ops:
        cmd.append("--xnnpack-extended-ops")
    if args.recipe == "8da4w":
        cmd += ["-qmode", "8da4w", "-G", str(args.group_size)]
    elif args.recipe != "none":
        raise SystemExit(f"recipe {args.recipe!r}: only none and 8da4w are compared")
    return cmd


def export_peer(args, ckpt, ckpt_dir: Path, max_seq_len: int, work: Path) -> tuple[Path, dict]:
    out = work / "peer"
    pte = out / "model.pte"
    if args.reuse and pte.is_file():
        return pte, json.loads((work / "peer_export.json").read_text())
    start = time.perf_counter()
    # export_llama's model.py treats a checkpoint path containing "8da4w" or "int8" as
    # pre-quantized and rewrites its linears; keep the Meta checkpoint on a neutral path.
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    meta_dir = Path(tempfile.mkdtemp(prefix="et_peer_meta_"))
    assert "8da4w" not in str(meta_dir) and "int8" not in str(meta_dir), meta_dir
    pth, params = hf_to_meta(ckpt_dir, meta_dir, max_seq_len)
    convert_s = time.perf_counter() - start
    cmd = peer_command(args, ckpt, max_seq_len, pth, params, pte)
    info = timed_subprocess(cmd, work / "peer_export.log", cwd=out)
    info["convert_to_meta_s"] = round(convert_s, 2)
    import shutil

    shutil.rmtree(meta_dir, ignore_errors=True)
    (work / "peer_export.json").write_text(json.dumps(info))
    return pte, info


# --------------------------------------------------------------------------------------------
# runtime


def make_prompt(tokenizer_json: Path, target_tokens: int) -> tuple[str, int]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    words = (PROMPT_SEED * 8).split(" ")
    best = ""
    for n in range(1, len(words) + 1):
        text = " ".join(words[:n])
        if len(tok.encode(text, add_special_tokens=False).ids) > target_tokens:
            break
        best = text
    return best, len(tok.encode(best, add_special_tokens=False).ids)


def rates(stats: dict) -> dict:
    """Prefill and decode tokens/s from the runner's timestamps (as its PyTorchObserver line)."""
    prompt = stats["prompt_tokens"]
    generated = stats["generated_tokens"]
    prefill_ms = stats["prompt_eval_end_ms"] - stats["inference_start_ms"]
    decode_ms = stats["inference_end_ms"] - stats["prompt_eval_end_ms"]
    return {"prompt_tokens": prompt, "generated_tokens": generated,
            "prefill_ms": prefill_ms, "decode_ms": decode_ms,
            "prefill_tok_s": prompt / prefill_ms * 1000 if prefill_ms > 0 else float("inf"),
            "decode_tok_s": generated / decode_ms * 1000 if decode_ms > 0 else float("inf"),
            "load_ms": stats.get("model_load_end_ms", 0) - stats.get("model_load_start_ms", 0)}


def run_both(ours: Path, peer: Path, tokenizer_json: Path, prompt: str, new_tokens: int, repeats: int) -> dict:
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  llama::update_cache / custom_sdpa kernels

    from exporter.runtimes.executorch import runner_generate

    runs: dict[str, list[dict]] = {"ours": [], "peer": []}
    text: dict[str, bytes] = {}
    for i in range(repeats):
        order = ("ours", "peer") if i % 2 == 0 else ("peer", "ours")
        for who in order:
            printed, stats = runner_generate(ours if who == "ours" else peer, tokenizer_json, prompt, new_tokens)
            r = rates(stats)
            runs[who].append(r)
            text.setdefault(who, printed)
            print(f"  run {i + 1} {who}: prefill {r['prompt_tokens']} tok {r['prefill_tok_s']:.1f} tok/s, "
                  f"decode {r['generated_tokens']} tok {r['decode_tok_s']:.1f} tok/s", file=sys.stderr)
    best = {who: {"prefill_tok_s": max(r["prefill_tok_s"] for r in rs),
                  "decode_tok_s": max(r["decode_tok_s"] for r in rs),
                  "prompt_tokens": rs[0]["prompt_tokens"], "generated_tokens": rs[0]["generated_tokens"]}
            for who, rs in runs.items()}
    return {"best": best, "runs": runs,
            "first16": {who: t[:16].decode("latin-1") for who, t in text.items()},
            "first16_equal": text["ours"][:16] == text["peer"][:16],
            "printed_equal": text["ours"] == text["peer"]}


# --------------------------------------------------------------------------------------------


def table(result: dict) -> str:
    o, p = result["ours"], result["peer"]
    rows = [
        ("export wall (s)", o["export"]["wall_s"], p["export"]["wall_s"]),
        ("export CPU time, user+sys (s)", o["export"]["cpu_s"], p["export"]["cpu_s"]),
        ("export peak RSS (MB)", o["export"]["peak_rss_mb"], p["export"]["peak_rss_mb"]),
        (".pte size (MB)", o["pte_mb"], p["pte_mb"]),
        (f"prefill tok/s ({o['runtime']['prompt_tokens']}-token prompt, best of {result['repeats']})",
         o["runtime"]["prefill_tok_s"], p["runtime"]["prefill_tok_s"]),
        (f"decode tok/s ({result['new_tokens']} new, best of {result['repeats']})",
         o["runtime"]["decode_tok_s"], p["runtime"]["decode_tok_s"]),
    ]
    lines = ["| metric | ours | peer (export_llama) | ours/peer |", "|---|---:|---:|---:|"]
    for name, a, b in rows:
        lines.append(f"| {name} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    lines.append(f"| generated tokens | {o['runtime']['generated_tokens']} | {p['runtime']['generated_tokens']} | |")
    lines.append(f"| first 16 printed bytes equal | {result['first16_equal']} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", type=Path, help="Hugging Face llama checkpoint directory")
    ap.add_argument("--recipe", default="8da4w", choices=["none", "8da4w"])
    ap.add_argument("--group-size", type=int, default=32)
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, help="working directory (default: /tmp/et_peer/<name>_<recipe>)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--reuse", action="store_true", help="reuse .pte files already in --work")
    ap.add_argument("--peer-no-sdpa", action="store_true", help="peer without --use_sdpa_with_kv_cache")
    ap.add_argument("--peer-no-extended-ops", action="store_true", help="peer without --xnnpack-extended-ops")
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
        child_export_ours(args.checkpoint, args.recipe, args.group_size, args.max_seq_len, args.work)
        return 0

    from exporter.checkpoint import load_checkpoint

    ckpt_dir = args.checkpoint.resolve()
    ckpt = load_checkpoint(ckpt_dir)
    max_seq_len = min(args.max_seq_len, ckpt.spec.max_position_embeddings)
    work = (args.work or Path("/tmp/et_peer") / f"{ckpt_dir.name}_{args.recipe}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"checkpoint {ckpt_dir} ({ckpt.spec.num_layers} layers, vocab {ckpt.spec.vocab_size}); "
          f"recipe {args.recipe}; max_seq_len {max_seq_len}; work {work}", file=sys.stderr)

    ours_pte, ours_export = export_ours(args, ckpt_dir, max_seq_len, work)
    print(f"ours: {ours_export['wall_s']} s, {ours_export['peak_rss_mb']} MB", file=sys.stderr)
    peer_pte, peer_export = export_peer(args, ckpt, ckpt_dir, max_seq_len, work)
    print(f"peer: {peer_export['wall_s']} s, {peer_export['peak_rss_mb']} MB", file=sys.stderr)

    tokenizer_json = ckpt.tokenizer.tokenizer_json
    prompt, n_prompt = make_prompt(tokenizer_json, args.prompt_tokens)
    runtime = run_both(ours_pte, peer_pte, tokenizer_json, prompt, args.new_tokens, args.repeats)

    result = {
        "checkpoint": str(ckpt_dir), "recipe": args.recipe, "group_size": args.group_size,
        "max_seq_len": max_seq_len, "prompt": prompt, "prompt_tokens_no_special": n_prompt,
        "new_tokens": args.new_tokens, "repeats": args.repeats, "cpu_count": os.cpu_count(),
        "first16_equal": runtime["first16_equal"], "printed_equal": runtime["printed_equal"],
        "first16": runtime["first16"],
        "ours": {"export": ours_export, "pte_mb": ours_pte.stat().st_size / 2**20,
                 "runtime": runtime["best"]["ours"], "runs": runtime["runs"]["ours"]},
        "peer": {"export": peer_export, "pte_mb": peer_pte.stat().st_size / 2**20,
                 "runtime": runtime["best"]["peer"], "runs": runtime["runs"]["peer"]},
    }
    md = table(result)
    result["markdown"] = md
    print(md)
    print("peer command: " + " ".join(peer_export["command"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
