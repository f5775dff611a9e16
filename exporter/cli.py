"""The `slm-export` command line. Parsing only: each command builds a config and calls library
code. Heavy imports (torch, runtimes) happen inside the commands so `--help` stays fast.

Exit codes: 0 success; 2 bad usage or bad input (one line, no traceback); 1 a failed export or
failed parity.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from .errors import ExportError, InputError
from .runtimes import format_names

FORMAT_NAMES = format_names()
log = logging.getLogger("exporter")


def _default_model() -> Path:
    from .student import STUDENT_DIR

    return STUDENT_DIR


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def guarded(fn):
    """Turns our typed errors into one line and the documented exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (InputError, ExportError) as e:
            _fail(str(e).splitlines()[0] if str(e) else type(e).__name__, e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; nothing was moved into place", 130)
        except MemoryError:
            _fail("out of memory (try a smaller --max-seq-len or a smaller model)", 1)
        except Exception as e:  # an internal error: one line by default, the traceback with -v
            if log.isEnabledFor(logging.DEBUG):
                raise
            _fail(f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                  "(run with -v for the traceback)", 1)

    return wrapper


def _parse_formats(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [n for n in names if n not in FORMAT_NAMES]
    if unknown or not names:
        raise click.BadParameter(f"unknown format {', '.join(unknown) or repr(value)} "
                                 f"(choose from: {', '.join(FORMAT_NAMES)})", param_hint="--formats")
    return names


def _target_choices() -> list[str]:
    from .recipes import target_names

    return [*target_names(), "all"]


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--target", metavar="NAME|FILE",
              help=f"Export for this target: a built-in one ({', '.join(_target_choices())}; 'all' does every "
                   "built-in target; `slm-export targets` lists them) or a target TOML file of your own.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Hugging Face checkpoint directory (config.json, *.safetensors, tokenizer.json). "
                   "Default: the built-in student.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("dist"), show_default=True,
              help="Output directory; each target is written to OUT/<target>/.")
@click.option("--quant", "quant", metavar="auto|NAME|FORMAT=NAME,...",
              help="Quantization: auto, a portable name (fp32, fp16, int8, int4: each format's own recipe of that "
                   "class), a format's own recipe name, or per format (int4,coreml=int8; executorch=8da8w,onnx=int4). "
                   "Default: auto, each format's candidates from the target file, smallest first, until one keeps "
                   "the model's predictions (docs/PARITY.md).")
@click.option("--formats", "formats", metavar="LIST",
              help=f"Comma-separated subset of the target's formats ({', '.join(FORMAT_NAMES)}).")
@click.option("--max-seq-len", type=click.IntRange(min=8), help="KV-cache length (default: the target's).")
@click.option("--app-dir", type=click.Path(path_type=Path),
              help="App project to bundle into (default: this checkout's demo app for the target).")
@click.option("--no-bundle", is_flag=True, help="Verify and write OUT/<target>/ only; leave the app alone.")
@click.option("--accept-quality-loss", is_flag=True,
              help="Ship a quantized artifact that missed its gate (auto: the last candidate tried), with its "
                   "figures written into the manifest and shown by the apps.")
@click.option("--encoder", "encoder", metavar="DIR|none",
              help="An encoder checkpoint bundled beside the decoder, in the bundle's search/, classify/ or answer/ "
                   "folder (its default recipes). Default: the built-in encoder student when --model is not given; "
                   "'none' bundles none.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging, peak memory per stage, tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.version_option(package_name="slm-export")
@click.pass_context
def main(ctx, target, model_dir, out_dir, quant, formats, max_seq_len, app_dir, no_bundle, accept_quality_loss,
         encoder, verbose, quiet):
    """Export a small language model for phones, verify it against PyTorch, and bundle it.

    \b
    Examples:
      slm-export --target android                 # the built-in student, Android formats
      slm-export --target ios --model ./SmolLM2-135M --quant none
      slm-export inspect --model ./SmolLM2-135M
    """
    from .progress import configure_logging

    configure_logging(verbose, quiet)
    if ctx.invoked_subcommand is not None:
        if target is not None:
            raise click.UsageError("--target is an option of the export itself, not of subcommands")
        return
    if target is None:
        raise click.UsageError("missing --target (or a command; see --help)")
    selected = _parse_formats(formats)
    if app_dir is not None and (target == "all" or no_bundle):
        raise click.UsageError("--app-dir needs one --target and no --no-bundle")
    _export(target, model_dir, out_dir, quant, selected, max_seq_len, app_dir, not no_bundle, accept_quality_loss,
            encoder)


def _companions(model_dir: Path | None, encoder: str | None) -> tuple[Path, ...]:
    """The encoders to bundle beside the model: --encoder's, else the built-in encoder student
    beside the built-in decoder student (none beside a model of the user's own)."""
    from .student import ENCODER_STUDENT_DIR

    if encoder is not None:
        return () if encoder == "none" else (Path(encoder),)
    return (ENCODER_STUDENT_DIR,) if model_dir is None and (ENCODER_STUDENT_DIR / "config.json").is_file() else ()


@guarded
def _export(target, model_dir, out_dir, quant, formats, max_seq_len, app_dir, bundle, accept_quality_loss,
            encoder=None):
    from .pipeline import ExportRequest, export
    from .recipes import load_target, target_names

    targets = target_names() if target == "all" else [target]
    for name in targets:  # a bad name or file: one line, before any work
        load_target(name)
    request = ExportRequest(model_dir=model_dir or _default_model(), out_dir=out_dir, targets=tuple(targets),
                            quant=quant, formats=formats, max_seq_len=max_seq_len, bundle=bundle, app_dir=app_dir,
                            accept_quality_loss=accept_quality_loss, companions=_companions(model_dir, encoder))
    for result in export(request):
        click.echo(result.summary())


@main.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@guarded
def targets(files, as_json):
    """List the built-in targets (or check target FILES): formats, default and portable recipes."""
    from .describe import describe_targets, render_targets

    info = describe_targets([str(f) for f in files] or None)
    click.echo(json.dumps(info, indent=2) if as_json else render_targets(info))


@main.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Checkpoint directory (default: the built-in student).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@guarded
def inspect(model_dir, as_json):
    """Show a checkpoint's family, size, vocabulary, context, tokenizer, and what each target emits."""
    from .checkpoint import load_checkpoint
    from .describe import describe, render

    info = describe(load_checkpoint(model_dir or _default_model()))
    click.echo(json.dumps(info, indent=2) if as_json else render(info))


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Re-run parity against this checkpoint (default: the reference recorded in the bundle).")
@click.option("--target", "target_file", metavar="FILE",
              help="The target file the bundle was exported with (needed for a target that is not built in).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as one JSON object.")
@guarded
def verify(bundle, model_dir, target_file, as_json):
    """Re-check an exported bundle: every sha256, the manifest schema, and parity of each artifact.

    Exits 1 if anything fails.
    """
    from .encoder_pipeline import figures_line
    from .pipeline import quality_line, verify_bundle

    check = verify_bundle(bundle, model_dir, target_file)
    if as_json:
        click.echo(json.dumps({"passed": check.passed, "problems": check.problems,
                               "artifacts": [r.to_json() | ({} if hasattr(r, "figures") else {"prompts": None})
                                             for r in check.results]}, indent=2))
    else:
        for problem in check.problems:
            click.echo(f"FAIL {problem}")
        for r in check.results:
            status = "ok  " if r.passed else "FAIL"
            if hasattr(r, "figures"):  # an encoder artifact
                click.echo(f"{status} {r.artifact} ({r.quantization}): {figures_line(r.figures)}"
                           + (f" -- {'; '.join(r.failures)}" if r.failures else ""))
                continue
            click.echo(f"{status} {r.artifact} ({r.quantization}, reference {r.reference}): {quality_line(r)}, "
                       f"greedy {r.metrics['greedy_prefix_min']:.2f}"
                       + (f" -- {'; '.join(r.failures)}" if r.failures else ""))
    if not check.passed:
        first = check.problems[0] if check.problems else next(
            f"{r.artifact}: {r.failures[0]}" for r in check.results if not r.passed)
        _fail(f"verify failed: {first}", 1)


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--prompt", help="Text to continue (encoded with the bundle's tokenizer); with --chat, the user's "
                               "message (without it, --chat is an interactive session).")
@click.option("--chat", "as_chat", is_flag=True,
              help="Apply the bundle's chat template (system prompt, turns, generation prompt) and stop at end of turn.")
@click.option("--system", "system_prompt", help="With --chat: the system prompt (default: the template's own).")
@click.option("--max-new-tokens", type=click.IntRange(min=1),
              help="Stop after this many new tokens (or at a stop token). Default: the checkpoint's "
                   "generation_config.json for --chat, else 64.")
@click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES),
              help="Which artifact of the bundle to run (default: the first in the manifest).")
@click.option("--temperature", type=click.FloatRange(min=0.0),
              help="0 is greedy; above 0 samples (with --seed). Default 0; with --chat, the checkpoint's "
                   "generation_config.json value (with its top_p and top_k) when it has one.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option("--tokenizer", "tokenizer_path", type=click.Path(path_type=Path),
              help="tokenizer.json for a bare artifact (default: the one beside it or in its parent).")
@click.option("--task", type=click.Choice(["search", "classify", "answer"]),
              help="Run the bundle's encoder for this task (its own, or the companion bundled beside a decoder); "
                   "search ranks --text PASSAGE ... (default: a built-in set) by cosine to the first --text.")
@click.option("--text", "texts", multiple=True,
              help="For an encoder bundle: a text to embed, classify or label (repeat for more); for question "
                   "answering, --text QUESTION --text PASSAGE.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (prompt_ids, generated_ids, text, stop_reason, timings) instead of streaming.")
@guarded
def run(path, prompt, as_chat, system_prompt, max_new_tokens, fmt, temperature, seed, tokenizer_path, task, texts,
        as_json):
    """Generate from a bundle (or one artifact) through the runtime the app uses, streaming text.

    PATH is a bundle directory (with manifest.json) or a single artifact: a model.pte (ExecuTorch,
    run by its runtime), an ONNX Runtime GenAI folder (onnxruntime-genai) or a model.mlpackage
    (Core ML on macOS; elsewhere slm-export's MIL interpreter, emulating fp16).

    With --chat and no --prompt: a conversation on the terminal (history kept; /reset starts over;
    Ctrl-C stops a reply, Ctrl-D or /quit ends the session).

    An encoder bundle (BERT, MiniLM, DistilBERT) takes --text instead: the embeddings' cosines, the
    labels with scores, or the answer span.
    """
    from .runner import Conversation, open_for_run

    path, encoder_manifest = _encoder_bundle(path, task)
    if encoder_manifest is not None or texts or task:
        _run_encoder(path, encoder_manifest, texts, fmt, prompt, task, as_json)
        return
    if prompt is None and not as_chat:
        raise InputError("--prompt is required (or --chat for a conversation)")
    if system_prompt is not None and not as_chat:
        raise InputError("--system needs --chat")
    if as_json and prompt is None:
        raise InputError("--json needs --prompt")
    target = open_for_run(path, fmt, tokenizer_path)
    defaults = {}
    if as_chat:
        if target.chat is None:
            raise InputError(f"{path}: no chat template (a base model); run it without --chat")
        defaults = target.chat.get("generation", {})
    sampling = {"temperature": temperature if temperature is not None else defaults.get("temperature", 0.0),
                "top_k": defaults.get("top_k") if temperature is None else None,
                "top_p": defaults.get("top_p") if temperature is None else None}
    max_new_tokens = max_new_tokens or defaults.get("max_new_tokens", 64)
    if not as_chat:
        _run_once(target, target.encode(prompt), max_new_tokens, seed, sampling, as_json)
        return
    conversation = Conversation(target.chat, target.tokenizer, target.max_seq_len, system_prompt)
    if prompt is not None:
        if not prompt:
            raise InputError("--prompt is empty")
        conversation.turns.append({"role": "user", "content": prompt})
        _run_once(target, conversation.prompt_ids(1)[0], max_new_tokens, seed, sampling, as_json)
        return
    _chat_loop(target, conversation, max_new_tokens, seed, sampling)


def _encoder_bundle(path: Path, task: str | None) -> tuple[Path, dict | None]:
    """(folder, manifest) of the encoder bundle `run` should use: the bundle itself when it holds an
    encoder, or with --task, the companion bundled for that role beside a decoder."""
    from . import manifest as manifest_io

    path = Path(path)
    if not (path / manifest_io.MANIFEST).is_file():
        return path, None
    manifest = manifest_io.read(path)
    if "encoder" in manifest or task is None:
        return path, manifest if "encoder" in manifest else None
    companion = next((c for c in manifest.get("companions", []) if c["role"] == task), None)
    if companion is None:
        roles = ", ".join(c["role"] for c in manifest.get("companions", [])) or "none"
        raise InputError(f"{path}: no encoder for --task {task} in this bundle (its companions: {roles})")
    return path / companion["path"], manifest_io.read(path / companion["path"])


def _run_encoder(path, manifest, texts, fmt, prompt, task, as_json):
    from .encoder_run import open_encoder_bundle, render, run_texts, search

    if manifest is None:
        raise InputError(f"{path}: --text and --task are for an encoder bundle (or a bundle with one beside its "
                         "decoder); this is not one (use --prompt)")
    if prompt is not None:
        raise InputError(f"{path} holds an encoder ({manifest['encoder']['task']}): pass --text, not --prompt")
    if not texts or not all(t.strip() for t in texts):
        raise InputError("--text is required and may not be empty (repeat it for more texts)")
    target = open_encoder_bundle(Path(path), manifest, fmt)
    result = search(target, texts[0], list(texts[1:])) if task == "search" else run_texts(target, list(texts))
    click.echo(json.dumps(result, ensure_ascii=False) if as_json else render(result))


def _run_once(target, prompt_ids, max_new_tokens, seed, sampling, as_json):
    from .generate import generate

    def stream(text: str) -> None:
        click.echo(text, nl=False)
        sys.stdout.flush()

    result = generate(target.session, target.tokenizer, prompt_ids, max_new_tokens, target.eos_ids,
                      seed=seed, on_text=None if as_json else stream, **sampling)
    if as_json:
        click.echo(json.dumps({"artifact": str(target.artifact), "format": target.format,
                               "prompt_ids": result.prompt_ids, "generated_ids": result.generated_ids,
                               "text": result.text, "stop_reason": result.stop_reason,
                               "stopped_at_eos": result.stopped_at_eos,
                               "prefill_seconds": round(result.prefill_seconds, 4),
                               "decode_tokens_per_second": round(result.decode_tokens_per_second, 2)},
                              ensure_ascii=False))
    else:
        click.echo()
        click.echo(f"[{len(result.generated_ids)} tokens, {result.decode_tokens_per_second:.1f} tok/s decode, "
                   f"{result.stop_reason}, {target.format} {target.artifact.name}]", err=True)


def _chat_loop(target, conversation, max_new_tokens, seed, sampling):
    from .generate import generate

    click.echo(f"chat with {target.artifact} ({target.format}); /reset starts over, Ctrl-C stops a reply, "
               "Ctrl-D or /quit ends", err=True)
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            click.echo(err=True)
            return
        if line.strip() in ("/quit", "/exit"):
            return
        if line.strip() == "/reset":
            conversation.turns.clear()
            click.echo("[history cleared]", err=True)
            continue
        if not line.strip():
            continue
        conversation.turns.append({"role": "user", "content": line})
        ids, dropped = conversation.prompt_ids(min(max_new_tokens, target.max_seq_len // 2))
        if dropped:
            click.echo(f"[dropped the {dropped} oldest messages to fit the {target.max_seq_len}-token context]",
                       err=True)
        click.echo("bot> ", nl=False)
        result = generate(target.session, target.tokenizer, ids, min(max_new_tokens, target.max_seq_len - len(ids)),
                          target.eos_ids, seed=seed, on_text=lambda t: (click.echo(t, nl=False), sys.stdout.flush()),
                          interruptible=True, **sampling)
        click.echo()
        if result.interrupted:
            click.echo("[stopped]", err=True)
        conversation.turns.append({"role": "assistant", "content": result.text})
        seed += 1


def _parse_threads(value: str) -> tuple[int, ...]:
    import os

    counts = []
    for item in (v.strip() for v in value.split(",")):
        if item == "all":
            counts.append(len(os.sched_getaffinity(0)))
        elif item.isdigit() and int(item) > 0:
            counts.append(int(item))
        else:
            raise click.BadParameter(f"{item!r} is not a thread count (a positive number or 'all')",
                                     param_hint="--threads")
    return tuple(dict.fromkeys(counts))


@main.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Checkpoint directory (default: the built-in student).")
@click.option("--target", "target", default="android", show_default=True, metavar="NAME|FILE",
              help="Benchmark this target's recipes (a built-in target or a target file), i.e. what --target ships.")
@click.option("--formats", "formats", metavar="LIST",
              help="Comma-separated subset of the target's formats (default: all of them).")
@click.option("--quant", "quant", metavar="RECIPE|none",
              help="Quantization recipe for every format (default: each format's recipe in the target file).")
@click.option("--max-seq-len", type=click.IntRange(min=8), help="KV-cache length (default: the target's).")
@click.option("--prompt-tokens", type=click.IntRange(min=2), default=64, show_default=True,
              help="Prompt length in tokens for the prefill figure.")
@click.option("--new-tokens", type=click.IntRange(min=2), default=128, show_default=True,
              help="Tokens generated per run; decode speed is over the last N-1.")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed rounds per thread setting (ours and peer alternating); the best is reported.")
@click.option("--threads", "threads", default="1,all", show_default=True, metavar="LIST",
              help="Thread counts to time, comma-separated; 'all' is every core this process may use.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("dist/bench"), show_default=True,
              help="Where bench_<model>_<target>.md and .json are written.")
@click.option("--work", "work_dir", type=click.Path(path_type=Path),
              help="Keep the exported artifacts and logs here (default: a temporary folder, removed).")
@click.option("--reuse-peer", is_flag=True,
              help="Reuse peer exports in --work made from the same weights with the same flags.")
@click.option("--peer-default", is_flag=True,
              help="Compare with each peer's own 4-bit default (export_llama -qmode 8da4w -G 32; the model builder's "
                   "-p int4, block 32, accuracy level 4) instead of the equivalent of our recipe.")
@click.option("--make-smollm2-shape", "smollm2_dir", type=click.Path(path_type=Path), metavar="DIR",
              help="Only write a random-weight SmolLM2-135M-shaped llama checkpoint to DIR, then exit.")
def bench(model_dir, target, formats, quant, max_seq_len, prompt_tokens, new_tokens, repeats, threads, out_dir,
          work_dir, reuse_peer, peer_default, smollm2_dir):
    """Ours vs each format's own tool on the same weights: export time and memory, artifact bytes,
    prefill and decode speed through the real runtimes, and decode against the memory-bandwidth
    bound. Writes a Markdown table and JSON with ours/peer ratios; prints the table.

    \b
    Peers: ExecuTorch's export_llama (.pte, run by the LLM runner) and the onnxruntime-genai model
    builder (run by onnxruntime-genai). Core ML (--target ios) has no peer: export and bytes only.
    """
    if smollm2_dir is not None:
        _make_smollm2_shape(smollm2_dir)
        return
    from .bench.run import BenchRequest

    request = BenchRequest(model_dir=model_dir or _default_model(), target=target, formats=_parse_formats(formats),
                           quant=quant, max_seq_len=max_seq_len, prompt_tokens=prompt_tokens, new_tokens=new_tokens,
                           repeats=repeats, threads=_parse_threads(threads), work_dir=work_dir, reuse_peer=reuse_peer,
                           peer_default=peer_default)
    _bench(request, out_dir)


@main.command()
@click.argument("plan_file", type=click.Path(path_type=Path))
@click.option("--no-check-models", is_flag=True, help="Do not require each model folder here (the jobs fetch them).")
@click.option("--commands", is_flag=True, help="Print each job's slm-export command instead of the matrix JSON.")
def plan(plan_file, no_check_models, commands):
    """Plan a CI matrix: one export per model x target x recipe of PLAN_FILE (TOML; see
    docs/CI.md), every target and recipe checked here. Prints the GitHub Actions matrix as JSON
    (what .github/workflows/export-matrix.yml reads)."""
    _plan(plan_file, not no_check_models, commands)


@guarded
def _plan(plan_file, check_models, commands):
    import shlex

    from .matrix import load_plan, matrix

    jobs = load_plan(plan_file, check_models=check_models)
    if commands:
        for job in jobs:
            click.echo(f"{job.id}: {shlex.join(job.command())}")
    else:
        click.echo(json.dumps(matrix(jobs), separators=(",", ":")))
    click.echo(f"{len(jobs)} jobs planned from {plan_file}", err=True)


@main.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_file", type=click.Path(path_type=Path), help="Also write the table (Markdown) here.")
@click.option("--json", "json_file", type=click.Path(path_type=Path), help="Also write the rows as JSON here.")
def merge(folders, out_file, json_file):
    """Merge the export matrix's reports: FOLDERS are the jobs' uploads (a bundle, or a rejected
    report, each with its job.json); prints one table of every artifact's parity figures."""
    _merge(list(folders), out_file, json_file)


@guarded
def _merge(folders, out_file, json_file):
    from .matrix import merge as merge_rows
    from .matrix import merged_markdown

    rows = merge_rows(folders)
    text = merged_markdown(rows)
    click.echo(text, nl=False)
    if out_file is not None:
        out_file.write_text(text, encoding="utf-8")
    if json_file is not None:
        json_file.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


@main.command()
@click.option("--shapes", default=None, metavar="LIST",
              help="Comma-separated shapes (default: all: smollm2-135m, smollm2-360m, qwen2.5-0.5b, llama-3.2-1b).")
@click.option("--targets", default="android,ios", show_default=True, metavar="LIST",
              help="android (ExecuTorch and ONNX, each beside its peer) and/or ios (Core ML, no peer).")
@click.option("--cache", "cache_dir", type=click.Path(path_type=Path),
              help="Where the random checkpoints are kept (default: ~/.cache/slm-export/shapes).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("dist/sweep"), show_default=True,
              help="Where sweep.md, sweep.json and sweep.svg are written (after every shape; the shapes a run does "
                   "not measure keep their earlier figures there).")
@click.option("--work", "work_dir", type=click.Path(path_type=Path),
              help="Keep the exported artifacts and logs here (default: temporary folders, removed).")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(min=1), help="Timed rounds per thread setting.")
@click.option("--threads", "threads", default="1,all", show_default=True, metavar="LIST",
              help="Thread counts to time, comma-separated; 'all' is every core this process may use.")
@click.option("--no-runtime", is_flag=True, help="Export cost and bytes only: no prefill and decode timing.")
def sweep(shapes, targets, cache_dir, out_dir, work_dir, repeats, threads, no_runtime):
    """The size sweep: bench on random llamas shaped like SmolLM2-135M, SmolLM2-360M, Qwen2.5-0.5B
    and Llama-3.2-1B (vocabularies included), ours beside each peer: export wall and CPU time, peak
    RSS, artifact bytes, prefill and decode speed. Writes a table, JSON and a log-log plot with the
    fitted exponents."""
    from .bench.sweep import SweepRequest, default_cache

    request = SweepRequest(
        shapes=tuple(s.strip() for s in shapes.split(",") if s.strip()) if shapes else SweepRequest().shapes,
        targets=tuple(t.strip() for t in targets.split(",") if t.strip()), cache_dir=cache_dir or default_cache(),
        work_dir=work_dir, repeats=repeats, threads=_parse_threads(threads), runtime=not no_runtime)
    _sweep(request, out_dir)


@guarded
def _sweep(request, out_dir):
    from .bench.sweep import check, run_sweep, write

    check(request)
    result = run_sweep(request, out_dir)
    md_path, json_path, svg_path = write(result, out_dir)
    click.echo(md_path.read_text(encoding="utf-8"), nl=False)
    click.echo(f"wrote {md_path}, {json_path} and {svg_path}", err=True)


@main.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path),
              help="Checkpoint directory (default: the built-in student).")
@click.option("--target", "target", default="android", show_default=True, metavar="NAME|FILE",
              help="Take the recipe from this target (a built-in one or a target file).")
@click.option("--format", "fmt", default="executorch", show_default=True,
              help="The format whose quantization is analysed (one with an eager estimate: executorch).")
@click.option("--quant", "quant", metavar="RECIPE",
              help="The recipe to analyse (default: the format's first auto candidate, its smallest).")
@click.option("--max-seq-len", type=click.IntRange(min=8), help="KV-cache length (default: the target's).")
@click.option("--text-tokens", type=click.IntRange(min=16),
              help="Score at most this many positions of the held-out text (default: all of it).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the figures to this JSON file.")
def sensitivity(model_dir, target, fmt, quant, max_seq_len, text_tokens, json_path):
    """Where a quantization recipe loses the model's predictions: the recipe applied to one part at
    a time (embedding, each decoder block, the head, each kind of linear), the rest fp32, each
    scored on the held-out text. Prints the parts, most costly first."""
    _sensitivity(model_dir, target, fmt, quant, max_seq_len, text_tokens, json_path)


@guarded
def _sensitivity(model_dir, target, fmt, quant, max_seq_len, text_tokens, json_path):
    from .checkpoint import load_checkpoint, require_decoder
    from .pipeline import cache_length
    from .recipes import load_target
    from .runtimes import runtime
    from .sensitivity import layer_sensitivity, render

    recipes = load_target(target)
    if fmt not in recipes.formats:
        raise InputError(f"target {target} does not emit {fmt} (it emits: {', '.join(recipes.formats)})")
    recipe = recipes.formats[fmt].recipe(quant)
    checkpoint = load_checkpoint(model_dir or _default_model())
    require_decoder(checkpoint, "sensitivity")
    result = layer_sensitivity(checkpoint, runtime(fmt), recipe, cache_length(checkpoint, max_seq_len or recipes.max_seq_len),
                               text_tokens)
    click.echo(render(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


@guarded
def _make_smollm2_shape(directory):
    from .bench.checkpoints import make_smollm2_shape

    click.echo(make_smollm2_shape(directory))


@guarded
def _bench(request, out_dir):
    from .bench.report import write
    from .bench.run import run_bench

    result = run_bench(request)
    md_path, json_path = write(result, out_dir, f"bench_{result['checkpoint']['name']}_{request.target}")
    click.echo(md_path.read_text(encoding="utf-8"), nl=False)
    click.echo(f"wrote {md_path} and {json_path}", err=True)
