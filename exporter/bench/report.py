"""Stage 5 of the benchmark: the result as rows (metric, ours, peer, ours/peer), Markdown and JSON.

`rows(result)` is the table in data form (also stored in the JSON under "rows"); `markdown`
renders it. Ratios are ours/peer for every row where both sides have a number, so a reader on a
noisy machine compares paired figures rather than absolute ones.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

MB = 1e6


def ratio(ours: float | None, peer: float | None) -> float | None:
    if ours is None or peer is None or peer == 0:
        return None
    return ours / peer


def _row(fmt: str, metric: str, unit: str, ours: float | None, peer: float | None,
         paired: bool = True) -> dict[str, Any]:
    return {"format": fmt, "metric": metric, "unit": unit, "ours": ours, "peer": peer,
            "ratio": ratio(ours, peer) if paired else None}


def _threads_label(threads: int) -> str:
    return f"{threads} thread" + ("" if threads == 1 else "s")


def format_rows(result: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    entry = result["formats"][fmt]
    sides = [entry["ours"], entry.get("peer")]
    out = []

    def add(metric: str, unit: str, get, paired: bool = True) -> None:
        ours, peer = (get(side) if side else None for side in sides)
        out.append(_row(fmt, metric, unit, ours, peer, paired))

    add("export wall", "s", lambda s: s["export"]["wall_s"])
    add("export CPU time, user+sys", "s", lambda s: s["export"]["cpu_s"])
    add("export peak RSS", "MB", lambda s: s["export"]["peak_rss_mb"])
    add("artifact: the file(s) the runtime loads", "MB", lambda s: s["artifact_bytes"] / MB)
    if entry["ours"].get("folder_bytes") is not None:
        add("artifact folder as bundled into the app", "MB", lambda s: s["folder_bytes"] / MB)
    if "quality" in entry["ours"]:
        add("held-out text: top-1 agreement with fp32", "", lambda s: s["quality"]["text_top1"])
        add("held-out text: perplexity change against fp32", "%", lambda s: 100 * s["quality"]["ppl_change"],
            paired=False)
    if "runtime" not in entry["ours"]:
        return out
    add("weights read per decoded token", "MB", lambda s: s["weight_bytes_per_token"] / MB)
    add(f"KV cache read per decoded token (mean context {result['mean_decode_context']:g})", "MB",
        lambda s: result["kv_read_bytes_per_token"] / MB)
    prompt, steps = result["prompt"]["tokens"], result["new_tokens"] - 1
    for threads in result["threads"]:
        key, label = str(threads), _threads_label(threads)
        bandwidth = result["machine"]["bandwidth"][key]["bytes_per_s"] / 1e9
        add(f"prefill, {prompt}-token prompt, {label}", "tok/s", lambda s, k=key: s["runtime"][k]["prefill_tok_s"])
        add(f"decode, {steps} steps, {label}", "tok/s", lambda s, k=key: s["runtime"][k]["decode_tok_s"])
        add(f"CPU time / wall time of the run, {label}", "", lambda s, k=key: s["runtime"][k]["cpu_per_wall"],
            paired=False)
        add(f"decode bound: {bandwidth:.1f} GB/s / bytes per token, {label}", "tok/s",
            lambda s, k=key: s["decode_bound"][k]["bound_tok_s"])
        add(f"decode / decode bound, {label}", "", lambda s, k=key: s["decode_bound"][k]["fraction"])
    return out


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for fmt in result["formats"] for row in format_rows(result, fmt)]


def number(value: float | None) -> str:
    """Three significant digits (whole numbers from 100 up), no exponent; "—" for no value."""
    if value is None:
        return "—"
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{2 - math.floor(math.log10(abs(value)))}f}"


def _describe_checkpoint(info: dict[str, Any]) -> str:
    return (f"`{info['path']}`: {info['family']}, {info['parameters'] / 1e6:.2f} M parameters, {info['layers']} layers, "
            f"hidden {info['hidden_size']}, {info['heads']} heads / {info['kv_heads']} kv heads (head_dim "
            f"{info['head_dim']}), intermediate {info['intermediate_size']}, vocab {info['vocab_size']}, "
            f"{'tied' if info['tied_embeddings'] else 'untied'} embeddings")


def _recipe_text(recipe: dict[str, Any]) -> str:
    params = ", ".join(f"{k} {v}" for k, v in recipe["params"].items())
    return recipe["name"] + (f" ({params})" if params else "")


def _agreement(entry: dict[str, Any]) -> str | None:
    if "greedy_first_difference" not in entry:
        return None
    where, unit = entry["greedy_first_difference"], entry["greedy_unit"]
    return "identical" if where is None else f"first difference at {unit} {where}"


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    bandwidth = ", ".join(f"{v['bytes_per_s'] / 1e9:.1f} GB/s with {_threads_label(int(k))}"
                          for k, v in machine["bandwidth"].items())
    bandwidth = f"measured read bandwidth {bandwidth}; " if bandwidth else ""
    load = " → ".join(", ".join(f"{x:.2f}" for x in machine[k]) for k in ("load_average_start", "load_average_end"))
    lines = [
        f"# slm-export bench: {result['checkpoint']['name']}, target {result['target']}",
        "",
        f"Checkpoint {_describe_checkpoint(result['checkpoint'])}. Cache {result['max_seq_len']} tokens; prompt "
        f"{result['prompt']['tokens']} tokens (with the tokenizer's special tokens); {result['new_tokens']} new tokens, greedy; best of "
        f"{result['repeats']}; ours and peer alternating in one process.",
        "",
        f"Machine: {machine['cpus']} CPUs; {bandwidth}load average (1, 5, 15 min) "
        f"{load}. Versions: {', '.join(f'{k} {v}' for k, v in machine['versions'].items())}.",
        "",
    ]
    table_rows = rows(result)
    runtime_formats = [f for f in result["formats"] if "runtime" in result["formats"][f]["ours"]]
    if runtime_formats:
        keys = ["export wall", "export CPU time, user+sys", "export peak RSS", "artifact: the file(s) the runtime loads",
                "held-out text: top-1 agreement with fp32"]
        short = ["export wall", "export CPU", "peak RSS", "artifact bytes", "text top-1"]
        for threads in result["threads"]:
            label = _threads_label(threads)
            keys += [f"prefill, {result['prompt']['tokens']}-token prompt, {label}",
                     f"decode, {result['new_tokens'] - 1} steps, {label}"]
            short += [f"prefill, {label}", f"decode, {label}"]
        lines += ["## Summary: ours / peer", "",
                  "| format | " + " | ".join(short) + " |", "|---|" + "---:|" * len(short)]
        for fmt in runtime_formats:
            by_metric = {r["metric"]: r for r in table_rows if r["format"] == fmt}
            lines.append(f"| {fmt} | " + " | ".join(number(by_metric[k]["ratio"]) if k in by_metric else "—"
                                                     for k in keys) + " |")
        lines.append("")
    for fmt, entry in result["formats"].items():
        tool = entry.get("peer_tool")
        peer_name = tool["name"] if tool else "peer"
        title = f"ours {_recipe_text(entry['recipe'])} " + (
            f"vs {peer_name} (`{' '.join(tool['flags'])}`)" if tool else "(no peer tool)")
        lines += [f"## {fmt}: {title}", "",
                  f"| metric | ours | {peer_name} | ours/peer |", "|---|---:|---:|---:|"]
        for row in table_rows:
            if row["format"] == fmt:
                unit = f" ({row['unit']})" if row["unit"] else ""
                lines.append(f"| {row['metric']}{unit} | {number(row['ours'])} | {number(row['peer'])} | "
                             f"{number(row['ratio']) if row['ratio'] is not None else ''} |")
        agreement = _agreement(entry)
        if agreement:
            lines.append(f"| greedy output, ours vs peer | {agreement} | | |")
        lines += [""] + [f"- {note}" for note in entry.get("notes", [])] + [""]
    return "\n".join(lines).rstrip() + "\n"


def tradeoff_html(result: dict[str, Any]) -> str:
    """Per format with quality figures, ours and the peer's artifact on the bytes/quality plot
    parity.html draws for the configurations an export tried."""
    from ..report import TradeoffPoint, tradeoff_svg

    parts = [f"<!doctype html><meta charset='utf-8'><title>slm-export bench: {html.escape(result['checkpoint']['name'])}"
             "</title><style>body{font-family:sans-serif;max-width:760px;margin:2em auto}</style>",
             f"<h1>slm-export bench: {html.escape(result['checkpoint']['name'])}, target {result['target']}</h1>"]
    for fmt, entry in result["formats"].items():
        points = []
        for kind, side in (("shipped", entry["ours"]), ("peer", entry.get("peer"))):
            if side and "quality" in side:
                label = (f"ours {entry['recipe']['name']}" if kind == "shipped"
                         else f"{entry['peer_tool']['name']} {' '.join(entry['peer_tool']['flags'])}")
                points.append(TradeoffPoint(label, side["artifact_bytes"], side["quality"]["text_top1"],
                                            side["quality"]["ppl_change"], kind))
        if points:
            parts += [f"<h2>{html.escape(fmt)}: bytes against quality</h2>", tradeoff_svg(points, None)]
    return "\n".join(parts) + "\n"


def write(result: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """OUT/<stem>.md, OUT/<stem>.json (the result with its rows) and OUT/<stem>.html (the
    bytes/quality plot, ours and the peer, where quality was measured)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md_path.write_text(markdown(result), encoding="utf-8")
    (out_dir / f"{stem}.html").write_text(tradeoff_html(result), encoding="utf-8")
    json_path.write_text(json.dumps({**result, "rows": rows(result)}, indent=1, ensure_ascii=False) + "\n",
                         encoding="utf-8")
    return md_path, json_path
