"""Stage 1 of the benchmark: every export in its own subprocess, measured from outside.

Each export is one child process; `os.wait4` gives its wall time, user+sys CPU time and peak RSS
(that child only, not this process). Ours is `python -m exporter.bench.exports ours ...`, which
does what the pipeline does for one format (load, build, `runtimes.<format>.emit` with the target
recipe, the tokenizer files where the runtime wants them), without verification. The peers:

- ExecuTorch: `python -m executorch.examples.models.llama.export_llama` on the same weights in
  Meta layout (written by a child of its own, `... exports meta ...`, timed separately), with the
  flags of the ExecuTorch llama README: `-kv --use_sdpa_with_kv_cache -X --xnnpack-extended-ops
  -d fp32`, the cache length, and the recipe mapped to `-qmode`/`-G` (`executorch_peer_flags`).
- ONNX: `python -m onnxruntime_genai.models.builder -i CKPT -o OUT -e cpu` with HF_HUB_OFFLINE=1
  and the recipe mapped to `-p` and `--extra_options` (`builder_flags`).

A peer export can be kept between runs (`reuse`): its record stores the tool, flags, cache length
and the checkpoint's digest, and is reused only when all four match.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError, InputError
from ..recipes import QuantRecipe

RECORD = "export.json"


@dataclass(frozen=True)
class PeerTool:
    """The peer tool for one format and the flags that express our recipe in it."""

    format: str
    name: str
    flags: tuple[str, ...]
    note: str = ""


def _scheme(recipe: QuantRecipe) -> str:
    return recipe.params.get("scheme", recipe.name)


def executorch_peer_flags(recipe: QuantRecipe) -> list[str]:
    """export_llama's quantization flags for an ExecuTorch recipe of ours (targets/*.toml)."""
    params = recipe.params
    scheme = _scheme(recipe)
    group = int(params.get("group_size", 32))
    flags: list[str] = []
    bits = params.get("embedding_bits")
    if bits:  # ours: int4 per group of `group_size`, int8 per row (group 0 means per channel)
        flags += ["-E", f"{bits},{group if int(bits) == 4 else 0}"]
    if scheme == "8da4w":
        return flags + ["-qmode", "8da4w", "-G", str(group)]
    if scheme == "none":
        return flags
    raise InputError(f"executorch recipe {recipe.name!r} has no export_llama equivalent that lowers to XNNPACK "
                     "(compared: none, 8da4w); pass another --quant or --formats without executorch")


def builder_flags(recipe: QuantRecipe) -> list[str]:
    """The onnxruntime-genai model builder's flags for an ONNX recipe of ours."""
    params = recipe.params
    scheme = _scheme(recipe)
    if scheme == "none":
        return ["-p", "fp32"]
    if scheme == "int4":
        return ["-p", "int4", "--extra_options", f"block_size={int(params.get('block_size', 32))}",
                f"accuracy_level={int(params.get('accuracy_level', 4))}"]
    if scheme == "int8":
        return ["-p", "int8"]
    raise InputError(f"onnx recipe {recipe.name!r} has no model-builder equivalent (compared: none, int4, int8)")


# Each peer's own 4-bit default, as the issues measured them (bench --peer-default): what a user
# of the peer gets, whatever recipe ours uses.
PEER_DEFAULT_FLAGS = {
    "executorch": ("-qmode", "8da4w", "-G", "32"),
    "onnx": ("-p", "int4", "--extra_options", "block_size=32", "accuracy_level=4"),
}


def peer_default_tool(fmt: str) -> PeerTool | None:
    """The peer for `fmt` with its own 4-bit default flags (None: Core ML has none)."""
    if fmt not in PEER_DEFAULT_FLAGS:
        return None
    name = "export_llama" if fmt == "executorch" else "onnxruntime-genai model builder"
    return PeerTool(fmt, name, PEER_DEFAULT_FLAGS[fmt], "the peer's own 4-bit default, not the equivalent of ours")


def peer_tool(fmt: str, recipe: QuantRecipe) -> PeerTool | None:
    """The peer for `fmt` (None: Core ML has none); raises InputError for an unmappable recipe."""
    if fmt == "executorch":
        return PeerTool(fmt, "export_llama", tuple(executorch_peer_flags(recipe)))
    if fmt == "onnx":
        import importlib.util

        if importlib.util.find_spec("transformers") is None:  # the builder reads checkpoints with it
            raise InputError("the ONNX peer (onnxruntime-genai's model builder) needs transformers: "
                             "pip install -e '.[bench]'")
        note = ("different schemes: ours dynamic int8 (MatMulInteger), the builder's MatMulNBits 8-bit"
                if _scheme(recipe) == "int8" else "")
        return PeerTool(fmt, "onnxruntime-genai model builder", tuple(builder_flags(recipe)), note)
    return None


def timed_subprocess(command: list[str], log_path: Path, cwd: Path | None = None,
                     env: dict[str, str] | None = None) -> dict[str, Any]:
    """Runs `command` with output to `log_path`; returns wall, user+sys CPU and peak RSS of that
    child (os.wait4). A failure raises ExportError with the end of the log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise ExportError(f"{' '.join(command[:4])} ... failed (exit {code}): {tail[0]} (log: {log_path})")
    return {"wall_s": round(wall, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
            "command": command, **({"env": env} if env else {})}


def _child(*args: str) -> list[str]:
    return [sys.executable, "-m", "exporter.bench.exports", *args]


def export_ours(checkpoint_dir: Path, target: str, fmt: str, recipe: str, max_seq_len: int,
                out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Ours for one format in a child process; returns the artifact path and the record."""
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    command = _child("ours", "--model", str(checkpoint_dir), "--target", target, "--format", fmt,
                     "--quant", recipe, "--max-seq-len", str(max_seq_len), "--out", str(out_dir))
    record = timed_subprocess(command, out_dir.parent / f"ours-{fmt}.log")
    artifact = Path((out_dir / "artifact.txt").read_text().strip())
    return artifact, record


def _reusable(out_dir: Path, key: dict[str, Any], artifact: Path) -> dict[str, Any] | None:
    path = out_dir / RECORD
    if not (path.is_file() and artifact.exists()):
        return None
    saved = json.loads(path.read_text())
    return saved["record"] if saved.get("key") == key else None


def _save_record(out_dir: Path, key: dict[str, Any], record: dict[str, Any]) -> None:
    (out_dir / RECORD).write_text(json.dumps({"key": key, "record": record}, indent=1) + "\n")


def export_peer_executorch(checkpoint, tool: PeerTool, max_seq_len: int, out_dir: Path,
                           reuse: bool, digest: str) -> tuple[Path, dict[str, Any]]:
    """Meta conversion (child 1) then export_llama (child 2); the record is export_llama's, with
    the conversion's record under `convert_to_meta`."""
    pte = out_dir / "model.pte"
    key = {"tool": tool.name, "flags": list(tool.flags), "max_seq_len": max_seq_len, "checkpoint": digest}
    if reuse and (record := _reusable(out_dir, key, pte)):
        return pte, {**record, "reused": True}
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    # export_llama's model.py treats a checkpoint *path* containing "8da4w" or "int8" as
    # pre-quantized and swaps in torchao's group-256 modules, which then fail to export; the
    # Meta checkpoint goes to a neutral temporary path.
    meta_dir = Path(tempfile.mkdtemp(prefix="slm_bench_meta_"))
    try:
        convert = timed_subprocess(_child("meta", "--model", str(checkpoint.path), "--out", str(meta_dir)),
                                   out_dir.parent / "peer-executorch-meta.log")
        metadata = {"get_eos_ids": list(checkpoint.eos_token_ids)}
        if checkpoint.bos_token_id is not None:
            metadata["get_bos_id"] = checkpoint.bos_token_id
        command = [sys.executable, "-m", "executorch.examples.models.llama.export_llama", "--model", "llama3",
                   "-c", str(meta_dir / "consolidated.00.pth"), "-p", str(meta_dir / "params.json"),
                   "-kv", "--use_sdpa_with_kv_cache", "-X", "--xnnpack-extended-ops", "-d", "fp32",
                   "--max_seq_length", str(max_seq_len), "--max_context_length", str(max_seq_len),
                   "--metadata", json.dumps(metadata), "--output_name", str(pte), *tool.flags]
        record = timed_subprocess(command, out_dir.parent / "peer-executorch.log", cwd=out_dir)
    finally:
        shutil.rmtree(meta_dir, ignore_errors=True)
    record["convert_to_meta"] = convert
    _save_record(out_dir, key, record)
    return pte, record


def export_peer_onnx(checkpoint, tool: PeerTool, out_dir: Path, reuse: bool,
                     digest: str) -> tuple[Path, dict[str, Any]]:
    """The model builder into `out_dir` (an onnxruntime-genai folder, tokenizer included)."""
    key = {"tool": tool.name, "flags": list(tool.flags), "checkpoint": digest}
    if reuse and (record := _reusable(out_dir, key, out_dir / "genai_config.json")):
        return out_dir, {**record, "reused": True}
    shutil.rmtree(out_dir, ignore_errors=True)
    cache = Path(tempfile.mkdtemp(prefix="slm_bench_builder_cache_"))
    try:
        command = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(checkpoint.path),
                   "-o", str(out_dir), "-e", "cpu", "-c", str(cache), *tool.flags]
        record = timed_subprocess(command, out_dir.parent / "peer-onnx.log", cwd=out_dir.parent,
                                  env={"HF_HUB_OFFLINE": "1"})
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    _save_record(out_dir, key, record)
    return out_dir, record


def _export_ours_here(args: argparse.Namespace) -> None:
    """In the child: what the pipeline does for one format, without verification."""
    from ..checkpoint import build_model, load_checkpoint
    from ..pipeline import copy_tokenizer_files
    from ..progress import configure_logging
    from ..recipes import load_target
    from ..runtimes import runtime

    configure_logging(verbose=False)
    checkpoint = load_checkpoint(args.model)
    recipe = load_target(args.target).formats[args.format].recipe(args.quant)
    module = runtime(args.format)
    decoder = build_model(checkpoint, args.max_seq_len)
    path = module.emit(decoder, recipe, args.max_seq_len, module.artifact_metadata(checkpoint, args.max_seq_len),
                       args.out)
    if module.TOKENIZER_IN_ARTIFACT:
        copy_tokenizer_files(checkpoint, path)
    (args.out / "artifact.txt").write_text(str(path) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.bench.exports",
                                     description="Benchmark export children (run by slm-export bench).")
    sub = parser.add_subparsers(dest="what", required=True)
    ours = sub.add_parser("ours", help="export ours for one format")
    ours.add_argument("--model", type=Path, required=True)
    ours.add_argument("--target", required=True)
    ours.add_argument("--format", required=True)
    ours.add_argument("--quant", required=True)
    ours.add_argument("--max-seq-len", type=int, required=True)
    ours.add_argument("--out", type=Path, required=True)
    meta = sub.add_parser("meta", help="write an HF llama checkpoint in export_llama's Meta layout")
    meta.add_argument("--model", type=Path, required=True)
    meta.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.what == "ours":
        _export_ours_here(args)
    else:
        from .checkpoints import write_meta_checkpoint

        write_meta_checkpoint(args.model, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
