"""parity.html: the human report of the verify stage, with an SVG plot per artifact of the
per-step KL and top-1 agreement (no plotting dependency: the SVG is written by hand)."""

from __future__ import annotations

import html
import math
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


def write_html(results: list[ParityResult], path: Path, title: str) -> None:
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:760px;margin:2em auto}td,th{padding:2px 8px;"
             "text-align:right}th{text-align:left}.fail{color:#c0392b}.pass{color:#1e8449}</style>",
             f"<h1>{html.escape(title)}</h1>"]
    for r in results:
        verdict = "<span class='pass'>passed</span>" if r.passed else "<span class='fail'>FAILED</span>"
        parts.append(f"<h2>{html.escape(r.artifact)} ({r.format}, {r.quantization}): {verdict}</h2>")
        parts.append(f"<p>reference: {r.reference}</p><table><tr><th>metric</th><th>measured</th><th>threshold</th></tr>")
        limits = {"top1": ("top1_min", ">="), "top5_overlap": ("top5_overlap_min", ">="), "kl_mean": ("kl_max", "<="),
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
