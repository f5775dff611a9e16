"""Writes the `measured` figures of the target files: each recipe exported from the built-in
student and verified, its parity summary put into the file that defines it (`targets/<target>.toml`, or a format
table it includes, `targets/formats/*.toml`) in place of the
recipe's old `measured = {...}` (the thresholds beside it stay as they are: they are decisions,
the figures are evidence).

    python -m exporter.bench.measure_targets [--target android] [--recipes 8da4w-e8,int8w] [--targets-dir DIR]

Each recipe runs in its own `slm-export --target T --formats F --quant R --no-bundle` process, the
command a reader can rerun; a recipe that fails its gate is written too (its figures are what
the thresholds were judged against).
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from ..recipes import load_target, target_names

KEYS = ("top1", "top5_overlap", "kl_mean", "kl_max", "cosine_min", "max_abs", "greedy_prefix_min", "text_top1",
        "ppl_change")


def _figure(value: float) -> str:
    return f"{value:.4g}"


def measured_table(summary: dict, date: str) -> str:
    """The TOML inline table written for one recipe."""
    parts = [f'date = "{date}"'] + [f"{k} = {_figure(summary[k])}" for k in KEYS if k in summary]
    return "measured = { " + ", ".join(parts) + " }"


def replace_measured(text: str, fmt: str, recipe: str, table: str) -> str:
    """`text` (a target file) with the `measured` table of [formats.fmt.recipes.recipe] replaced,
    or added at the end of its `parity = {...}` line."""
    header = f"[formats.{fmt}.recipes.{recipe}]"
    start = text.index(header)
    line_start = text.index("\nparity = {", start) + 1
    line_end = text.index("\n", line_start)
    line = text[line_start:line_end]
    if "measured = {" in line:
        line = re.sub(r"measured = \{[^}]*\}", table, line)
    else:
        line = line.rstrip().removesuffix("}").rstrip().rstrip(",") + f", {table} }}"
    return text[:line_start] + line + text[line_end:]


def defining_file(targets_dir: Path, target: str, fmt: str, recipe: str) -> Path:
    """The file holding [formats.fmt.recipes.recipe] for this target: its own, or a format file
    it includes."""
    header = f"[formats.{fmt}.recipes.{recipe}]"
    for path in [targets_dir / f"{target}.toml", *sorted((targets_dir / "formats").glob("*.toml"))]:
        if header in path.read_text():
            return path
    raise SystemExit(f"no file under {targets_dir} defines {header}")


def measure(target: str, fmt: str, recipe: str, work: Path) -> dict:
    out = work / f"{target}-{fmt}-{recipe}"
    command = [sys.executable, "-m", "exporter", "--target", target, "--formats", fmt, "--quant", recipe,
               "--out", str(out), "--no-bundle", "-q"]
    done = subprocess.run(command, capture_output=True, text=True)
    report = out / target / "parity.json" if done.returncode == 0 else out / f"{target}.rejected" / "parity.json"
    if not report.is_file():
        raise SystemExit(f"{' '.join(command[2:])} failed without a parity report: {done.stderr.strip()[-500:]}")
    (result,) = json.loads(report.read_text())
    return {**result["metrics"], "passed": result["passed"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=target_names(), action="append")
    parser.add_argument("--recipes", help="comma-separated recipe names (default: every recipe)")
    parser.add_argument("--targets-dir", type=Path, default=Path(__file__).resolve().parents[2] / "targets")
    args = parser.parse_args(argv)
    wanted = set(args.recipes.split(",")) if args.recipes else None
    date = datetime.date.today().isoformat()
    done: set[tuple[Path, str, str]] = set()  # a shared format file (formats/*.toml) is measured once
    with tempfile.TemporaryDirectory(prefix="slm-measure-") as tmp:
        for target in args.target or target_names():
            for fmt, formats in load_target(target).formats.items():
                for recipe in formats.recipes:
                    if wanted and recipe not in wanted:
                        continue
                    path = defining_file(args.targets_dir, target, fmt, recipe)
                    if (path, fmt, recipe) in done:
                        continue
                    done.add((path, fmt, recipe))
                    summary = measure(target, fmt, recipe, Path(tmp))
                    path.write_text(replace_measured(path.read_text(), fmt, recipe, measured_table(summary, date)))
                    print(f"{target} {fmt} {recipe}: {'passed' if summary['passed'] else 'FAILED'}, "
                          f"top1 {summary['top1']:.4f}, text top1 {summary.get('text_top1', float('nan')):.4f}",
                          flush=True)


if __name__ == "__main__":
    main()
