"""`slm-export bench --sweep`: how export cost and runtime speed grow with model size.

For each shape in checkpoints.SHAPES (random-weight llamas shaped like SmolLM2-135M and -360M,
Qwen2.5-0.5B and Llama-3.2-1B, vocabularies included; made once into the cache folder) it runs
the benchmark of run.py per target: android (ExecuTorch and ONNX Runtime, each beside its peer on
the same weights) and ios (Core ML, ours only: no peer tool). Quality on the held-out text is not
measured (random weights). The result is one JSON, a Markdown table and an SVG plot: export wall
time and peak RSS against parameters on log-log axes, ours and each peer, with the exponent of a
least-squares fit (time ~ parameters^k: k = 1 is linear in the weights).
"""

from __future__ import annotations

import html
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..progress import stage
from .checkpoints import SHAPES, make_shape, shape_parameters

log = logging.getLogger(__name__)

# Formats each target adds to the sweep (executorch is the same artifact in both targets).
TARGET_FORMATS = {"android": ("executorch", "onnx"), "ios": ("coreml",)}
SIDES = ("ours", "peer")


def default_cache() -> Path:
    return Path.home() / ".cache" / "slm-export" / "shapes"


@dataclass(frozen=True)
class SweepRequest:
    shapes: tuple[str, ...] = tuple(SHAPES)
    targets: tuple[str, ...] = ("android", "ios")
    cache_dir: Path = field(default_factory=default_cache)
    work_dir: Path | None = None
    repeats: int = 1
    threads: tuple[int, ...] = (1, os.cpu_count() or 1)
    runtime: bool = True
    prompt_tokens: int = 64
    new_tokens: int = 64


def check(request: SweepRequest) -> None:
    unknown = [s for s in request.shapes if s not in SHAPES]
    if unknown:
        raise InputError(f"unknown shape(s) {', '.join(unknown)} (known: {', '.join(SHAPES)})")
    bad = [t for t in request.targets if t not in TARGET_FORMATS]
    if bad:
        raise InputError(f"the sweep runs the built-in targets {', '.join(TARGET_FORMATS)}, not {', '.join(bad)}")


def checkpoint_for(shape: str, cache_dir: Path) -> Path:
    """The shape's random checkpoint in the cache, made on first use (atomic.cached_folder: complete
    or absent, by one process at a time)."""
    from ..atomic import cached_folder

    def make(staging: Path) -> None:
        with stage(f"make the random {shape}-shaped checkpoint"):
            make_shape(staging, shape)

    return cached_folder(cache_dir, shape, make)


def run_sweep(request: SweepRequest, out_dir: Path | None = None) -> dict[str, Any]:
    """Runs the sweep. With `out_dir`, the result is written after every shape (a long sweep
    stopped midway keeps what it measured), and the points of shapes this run does not measure
    are kept from the sweep.json already there, so sizes can be measured in separate runs."""
    from .run import BenchRequest, run_bench

    check(request)
    earlier = _earlier(out_dir, request.shapes)
    points: list[dict[str, Any]] = list(earlier.get("points", []))
    runs = list(earlier.get("runs", []))
    result: dict[str, Any] = {}
    for shape in request.shapes:
        model = checkpoint_for(shape, request.cache_dir)
        for target in request.targets:
            work = request.work_dir / shape / target if request.work_dir else None
            with stage(f"sweep {shape}, target {target}"):
                bench = run_bench(BenchRequest(
                    model_dir=model, target=target, formats=TARGET_FORMATS[target], repeats=request.repeats,
                    threads=request.threads, work_dir=work, quality=False, runtime=request.runtime,
                    prompt_tokens=request.prompt_tokens, new_tokens=request.new_tokens))
            runs.append({"shape": shape, "target": target, "bench": bench})
            points += sweep_points(shape, bench)
            result = _result(points, runs)
            if out_dir is not None:
                write(result, out_dir)
    return result


def _earlier(out_dir: Path | None, remeasured: tuple[str, ...]) -> dict[str, Any]:
    path = out_dir / "sweep.json" if out_dir else None
    if path is None or not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text())
    except ValueError:
        raise InputError(f"{path}: not a sweep result; remove it or pass another --out") from None
    return {"points": [p for p in earlier.get("points", []) if p["shape"] not in remeasured],
            "runs": [r for r in earlier.get("runs", []) if r["shape"] not in remeasured]}


def _result(points: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    shapes = sorted({p["shape"] for p in points}, key=lambda s: shape_parameters(SHAPES[s]))
    return {"schema": "slm-export-sweep/1",
            "shapes": {s: {"parameters": shape_parameters(SHAPES[s]),
                           **{k: SHAPES[s][k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}}
                       for s in shapes},
            "points": points, "fits": fits(points), "runs": runs}


def sweep_points(shape: str, bench: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per (format, side) of one bench result: export cost, bytes and speed."""
    out = []
    parameters = bench["checkpoint"]["parameters"]
    for fmt, entry in bench["formats"].items():
        for side in SIDES:
            figures = entry.get(side)
            if not figures:
                continue
            export = figures["export"]
            point = {"shape": shape, "parameters": parameters, "format": fmt, "side": side,
                     "tool": "slm-export" if side == "ours" else entry["peer_tool"]["name"],
                     "recipe": entry["recipe"]["name"] if side == "ours" else " ".join(entry["peer_tool"]["flags"]),
                     "export_wall_s": export["wall_s"], "export_cpu_s": export["cpu_s"],
                     "peak_rss_mb": export["peak_rss_mb"], "artifact_bytes": figures["artifact_bytes"]}
            if fmt == "executorch" and side == "peer":
                # The peer needs the Meta-layout conversion first: its cost belongs to the peer's export.
                convert = export.get("convert_to_meta", {})
                point["export_wall_s"] = round(export["wall_s"] + convert.get("wall_s", 0.0), 3)
                point["export_cpu_s"] = round(export["cpu_s"] + convert.get("cpu_s", 0.0), 3)
                point["peak_rss_mb"] = max(export["peak_rss_mb"], convert.get("peak_rss_mb", 0.0))
            for threads, speed in figures.get("runtime", {}).items():
                point[f"prefill_tok_s_{threads}"] = speed["prefill_tok_s"]
                point[f"decode_tok_s_{threads}"] = speed["decode_tok_s"]
                point[f"decode_bound_fraction_{threads}"] = figures["decode_bound"][threads]["fraction"]
            out.append(point)
    return out


def fit_exponent(xs: list[float], ys: list[float]) -> float | None:
    """The slope of log(y) on log(x) by least squares (None below two distinct x)."""
    pairs = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len({p[0] for p in pairs}) < 2:
        return None
    mx = sum(p[0] for p in pairs) / len(pairs)
    my = sum(p[1] for p in pairs) / len(pairs)
    return sum((x - mx) * (y - my) for x, y in pairs) / sum((x - mx) ** 2 for x, _ in pairs)


def fits(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (format, side): the exponents of export wall time and peak RSS in parameters."""
    out = []
    for fmt, side in sorted({(p["format"], p["side"]) for p in points}):
        line = sorted((p for p in points if p["format"] == fmt and p["side"] == side), key=lambda p: p["parameters"])
        xs = [p["parameters"] for p in line]
        out.append({"format": fmt, "side": side, "tool": line[0]["tool"], "sizes": len(line),
                    "wall_exponent": fit_exponent(xs, [p["export_wall_s"] for p in line]),
                    "rss_exponent": fit_exponent(xs, [p["peak_rss_mb"] for p in line])})
    return out


def _n(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    points = result["points"]
    threads = sorted({k.rsplit("_", 1)[1] for p in points for k in p if k.startswith("decode_tok_s_")}, key=int)
    lines = ["# slm-export bench --sweep: export cost and speed against model size", "",
             "Random-weight llamas shaped like each model (checkpoints.SHAPES); each target's default recipe; "
             "ours beside each format's peer on the same weights. Wall and CPU seconds, peak RSS of the export "
             "process (the ExecuTorch peer's includes its Meta-layout conversion).", ""]
    head = ["shape", "parameters", "format", "tool", "recipe", "export wall s", "export CPU s", "peak RSS MB",
            "artifact MB"]
    for t in threads:
        head += [f"prefill tok/s ({t}T)", f"decode tok/s ({t}T)", f"decode / bound ({t}T)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * 5 + "---:|" * (len(head) - 5)]
    for p in sorted(points, key=lambda p: (p["parameters"], p["format"], p["side"])):
        row = [p["shape"], f"{p['parameters'] / 1e6:,.0f} M", p["format"], p["tool"], f"`{p['recipe']}`",
               _n(p["export_wall_s"]), _n(p["export_cpu_s"]), _n(p["peak_rss_mb"], 0),
               _n(p["artifact_bytes"] / 1e6)]
        for t in threads:
            row += [_n(p.get(f"prefill_tok_s_{t}")), _n(p.get(f"decode_tok_s_{t}")),
                    _n(p.get(f"decode_bound_fraction_{t}"), 2)]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Ours / peer at each size:", "", "| shape | format | export wall | peak RSS | artifact bytes |",
              "|---|---|---:|---:|---:|"]
    for shape in result["shapes"]:
        for fmt in sorted({p["format"] for p in points if p["shape"] == shape}):
            side = {p["side"]: p for p in points if p["shape"] == shape and p["format"] == fmt}
            if "peer" not in side:
                continue
            o, q = side["ours"], side["peer"]
            lines.append(f"| {shape} | {fmt} | {o['export_wall_s'] / q['export_wall_s']:.2f} | "
                         f"{o['peak_rss_mb'] / q['peak_rss_mb']:.2f} | {o['artifact_bytes'] / q['artifact_bytes']:.2f} |")
    lines += ["", "Fitted exponents (export cost ~ parameters^k):", "", "| format | tool | sizes | wall k | peak RSS k |",
              "|---|---|---:|---:|---:|"]
    for f in result["fits"]:
        lines.append(f"| {f['format']} | {f['tool']} | {f['sizes']} | {_n(f['wall_exponent'], 2)} | "
                     f"{_n(f['rss_exponent'], 2)} |")
    return "\n".join(lines) + "\n"


COLORS = {("executorch", "ours"): "#1f77b4", ("executorch", "peer"): "#aec7e8", ("onnx", "ours"): "#d62728",
          ("onnx", "peer"): "#ff9896", ("coreml", "ours"): "#2ca02c"}


def svg(result: dict[str, Any]) -> str:
    """Two log-log panels (export wall time, peak RSS) against parameters, a line per format and
    side with its fitted exponent in the legend."""
    points = result["points"]
    if not points:
        return ""
    width, height, pad = 380, 300, 46
    xs = [p["parameters"] for p in points]
    panels = [("export_wall_s", "export wall time (s)", "wall_exponent"), ("peak_rss_mb", "peak RSS (MB)", "rss_exponent")]
    parts = [f'<svg width="{2 * width}" height="{height + 90}" xmlns="http://www.w3.org/2000/svg" font-size="10">',
             f'<rect width="{2 * width}" height="{height + 90}" fill="#fff"/>']
    lx0, lx1 = math.log10(min(xs) / 1.3), math.log10(max(xs) * 1.3)
    for index, (key, title, exponent_key) in enumerate(panels):
        ox = index * width
        ys = [p[key] for p in points if p[key] > 0]
        ly0, ly1 = math.log10(min(ys) / 1.5), math.log10(max(ys) * 1.5)

        def x(v: float, ox: int = ox) -> float:
            return ox + pad + (math.log10(v) - lx0) / (lx1 - lx0) * (width - 1.5 * pad)

        def y(v: float, ly0: float = ly0, ly1: float = ly1) -> float:
            return height - pad - (math.log10(v) - ly0) / (ly1 - ly0) * (height - 2 * pad)

        parts += [f'<text x="{ox + pad}" y="14" font-size="12">{html.escape(title)} against parameters (log-log)</text>',
                  f'<line x1="{ox + pad}" y1="{height - pad}" x2="{ox + width - pad / 2}" y2="{height - pad}" stroke="#999"/>',
                  f'<line x1="{ox + pad}" y1="{pad}" x2="{ox + pad}" y2="{height - pad}" stroke="#999"/>']
        for e in range(math.floor(ly0), math.ceil(ly1) + 1):
            if ly0 <= e <= ly1:
                parts.append(f'<text x="{ox + 4}" y="{y(10 ** e) + 3:.1f}">{10 ** e:g}</text>'
                             f'<line x1="{ox + pad - 3}" y1="{y(10 ** e):.1f}" x2="{ox + pad}" y2="{y(10 ** e):.1f}" stroke="#999"/>')
        for p in sorted({p["parameters"] for p in points}):
            parts.append(f'<text x="{x(p) - 14:.1f}" y="{height - pad + 12}">{p / 1e6:.0f}M</text>')
        for row, f in enumerate(result["fits"]):
            line = sorted((p for p in points if p["format"] == f["format"] and p["side"] == f["side"] and p[key] > 0),
                          key=lambda p: p["parameters"])
            color = COLORS.get((f["format"], f["side"]), "#777")
            if len(line) > 1:
                parts.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
                    color, " ".join(f"{x(p['parameters']):.1f},{y(p[key]):.1f}" for p in line)))
            for p in line:
                parts.append(f'<circle cx="{x(p["parameters"]):.1f}" cy="{y(p[key]):.1f}" r="3" fill="{color}">'
                             f'<title>{html.escape(p["tool"])} {p["format"]} {p["shape"]}: {p[key]:,.1f}</title></circle>')
            k = f[exponent_key]
            parts.append(f'<rect x="{ox + pad}" y="{height + 8 + 13 * row}" width="10" height="8" fill="{color}"/>'
                         f'<text x="{ox + pad + 14}" y="{height + 16 + 13 * row}">{html.escape(f["format"])} '
                         f'{html.escape(f["tool"])}: k = {"—" if k is None else f"{k:.2f}"}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js, plot = out_dir / "sweep.md", out_dir / "sweep.json", out_dir / "sweep.svg"
    md.write_text(markdown(result), encoding="utf-8")
    js.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    plot.write_text(svg(result), encoding="utf-8")
    return md, js, plot
