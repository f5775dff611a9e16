"""parity.html: the human report of the verify stage, with an SVG plot per artifact of the
per-step KL and top-1 agreement, and per format a plot of bytes against the quality kept on the
held-out text for every configuration tried (no plotting dependency: the SVG is written by hand).
`bench` draws the same trade-off plot with the peer's artifact beside ours."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from .verify import ParityResult

WIDTH, HEIGHT, PAD = 720, 180, 36


def _plot(result: ParityResult) -> str:
    steps = [(p.name, s) for p in result.prompts for s in p.steps]
    n = max(len(steps), 2)
    kls = [max(s.kl, 1e-12) for _, s in steps]
    lo, hi = math.log10(min(kls)), math.log10(max(max(kls), 1e-11))
    hi = hi if hi > lo else lo + 1

    def x(i: int) -> float:
        return PAD + i * (WIDTH - 2 * PAD) / (n - 1)

    def y_kl(v: float) -> float:
        return HEIGHT - PAD - (math.log10(v) - lo) / (hi - lo) * (HEIGHT - 2 * PAD)

    kl_line = " ".join(f"{x(i):.1f},{y_kl(v):.1f}" for i, v in enumerate(kls))
    misses = "".join(f'<circle cx="{x(i):.1f}" cy="{PAD / 2:.1f}" r="3" fill="#c0392b"><title>{html.escape(name)} '
                     f"step: top-1 differs</title></circle>"
                     for i, (name, s) in enumerate(steps) if s.top1 < 1)
    bounds, start = [], 0
    for p in result.prompts:
        start += len(p.steps)
        if start < len(steps):
            bounds.append(f'<line x1="{x(start):.1f}" y1="{PAD}" x2="{x(start):.1f}" y2="{HEIGHT - PAD}" '
                          'stroke="#ccc" stroke-dasharray="3"/>')
    return (f'<svg width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg" font-size="10">'
            f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>{"".join(bounds)}'
            f'<polyline fill="none" stroke="#2c7fb8" stroke-width="1.5" points="{kl_line}"/>{misses}'
            f'<text x="4" y="{PAD}">1e{hi:.1f}</text><text x="4" y="{HEIGHT - PAD}">1e{lo:.1f}</text>'
            f'<text x="{PAD}" y="{HEIGHT - 8}">teacher-forced step (prompts separated by dashed lines); '
            'blue: KL(reference || artifact), log scale; red dots: top-1 differs</text></svg>')


@dataclass(frozen=True)
class TradeoffPoint:
    """One configuration on the bytes/quality plot."""

    label: str  # the recipe, or the peer tool and its flags
    bytes: int
    text_top1: float
    ppl_change: float | None
    kind: str  # "shipped", "failed" (tried and refused by the gate) or "peer"


COLORS = {"shipped": "#1e8449", "failed": "#c0392b", "peer": "#7f7f7f"}


def tradeoff_points(tried: list[dict], shipped: str | None) -> list[TradeoffPoint]:
    """The points of a manifest's `search.tried` list (estimated-only candidates have no bytes and
    are left out of the plot; the table beside it lists them)."""
    return [TradeoffPoint(t["quantization"], t["bytes"], t["text_top1"], t.get("ppl_change"),
                          "shipped" if t["quantization"] == shipped and t["passed"] else "failed")
            for t in tried if t.get("bytes") and "text_top1" in t]


def tradeoff_svg(points: list[TradeoffPoint], gate_top1: float | None) -> str:
    """Artifact bytes (x, MB, from 0) against held-out text top-1 (y), one labelled dot per
    configuration, the gate as a dashed line."""
    if not points:
        return ""
    top_mb = max(p.bytes for p in points) / 1e6 * 1.15
    floor = min([p.text_top1 for p in points] + [gate_top1 if gate_top1 is not None else 1.0])
    lo = max(0.0, math.floor(floor * 10 - 0.5) / 10)

    def x(mb: float) -> float:
        return PAD + mb / top_mb * (WIDTH - 3 * PAD)

    def y(top1: float) -> float:
        return HEIGHT - PAD - (top1 - lo) / (1 - lo) * (HEIGHT - 2 * PAD)

    parts = [f'<svg width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg" font-size="10">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fff"/>',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="#999"/>',
             f'<text x="2" y="{y(1.0) + 3:.1f}">1.0</text><text x="2" y="{y(lo) + 3:.1f}">{lo:.1f}</text>',
             f'<text x="{x(0) - 3:.1f}" y="{HEIGHT - PAD + 12}">0</text>',
             f'<text x="{x(top_mb / 1.15) - 12:.1f}" y="{HEIGHT - PAD + 12}">{top_mb / 1.15:.1f} MB</text>']
    if gate_top1 is not None:
        parts.append(f'<line x1="{PAD}" y1="{y(gate_top1):.1f}" x2="{WIDTH - PAD}" y2="{y(gate_top1):.1f}" '
                     f'stroke="#1e8449" stroke-dasharray="4"/><text x="{WIDTH - PAD - 70}" y="{y(gate_top1) - 3:.1f}">'
                     f"gate {gate_top1:g}</text>")
    for p in points:
        ppl = f", perplexity {p.ppl_change:+.1%}" if p.ppl_change is not None else ""
        parts.append(f'<circle cx="{x(p.bytes / 1e6):.1f}" cy="{y(p.text_top1):.1f}" r="4" fill="{COLORS[p.kind]}">'
                     f"<title>{html.escape(p.label)}: {p.bytes / 1e6:.1f} MB, text top-1 {p.text_top1:.3f}{ppl} "
                     f"({p.kind})</title></circle>"
                     f'<text x="{x(p.bytes / 1e6) + 6:.1f}" y="{y(p.text_top1) + 3:.1f}">{html.escape(p.label)}</text>')
    parts.append(f'<text x="{PAD}" y="{HEIGHT - 8}">artifact bytes (x) against top-1 agreement with fp32 on the '
                 "held-out text (y); green: shipped, red: refused by the gate, grey: the peer</text></svg>")
    return "".join(parts)


def write_html(results: list[ParityResult], path: Path, title: str,
               tradeoffs: dict[str, tuple[list[TradeoffPoint], float | None]] | None = None) -> None:
    """`tradeoffs`: per format searched by --quant auto, the points of every configuration tried
    and the gate's text top-1."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:760px;margin:2em auto}td,th{padding:2px 8px;"
             "text-align:right}th{text-align:left}.fail{color:#c0392b}.pass{color:#1e8449}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    for fmt, (points, gate_top1) in (tradeoffs or {}).items():
        parts.append(f"<h2>{html.escape(fmt)}: bytes against quality, every configuration tried</h2>")
        parts.append(tradeoff_svg(points, gate_top1))
    for r in results:
        verdict = "<span class='pass'>passed</span>" if r.passed else "<span class='fail'>FAILED</span>"
        parts.append(f"<h2>{html.escape(r.artifact)} ({r.format}, {r.quantization}): {verdict}</h2>")
        parts.append(f"<p>reference: {r.reference}</p><table><tr><th>metric</th><th>measured</th><th>threshold</th></tr>")
        limits = {"top1": ("top1_min", ">="), "top5_overlap": ("top5_overlap_min", ">="), "kl_mean": ("kl_mean_max", "<="),
                  "cosine_min": ("cosine_min", ">="), "max_abs": ("max_abs_max", "<="),
                  "greedy_prefix_min": ("greedy_prefix_min", ">=")}
        for key, value in r.metrics.items():
            limit = limits.get(key)
            shown = f"{limit[1]} {r.thresholds.get(limit[0])}" if limit and r.thresholds.get(limit[0]) is not None else ""
            parts.append(f"<tr><th>{key}</th><td>{value:.6g}</td><td>{shown}</td></tr>")
        parts.append("</table>")
        for failure in r.failures:
            parts.append(f"<p class='fail'>{html.escape(failure)}</p>")
        parts.append(_plot(r))
        parts.append("<table><tr><th>prompt</th><th>tokens</th><th>free-running greedy</th></tr>")
        for p in r.prompts:
            parts.append(f"<tr><th>{html.escape(p.name)}</th><td>{p.prompt_tokens}</td>"
                         f"<td>{html.escape(p.greedy_status)} ({p.greedy_prefix}/{len(p.greedy_ids)})</td></tr>")
        parts.append("</table>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
