"""What stays resident after each ExecuTorch emit (issue #20): emits the same checkpoint N times in
one process, as `--target all` emits ExecuTorch once per target, and prints RSS and the number of
live ExportedPrograms after each (freed heap trimmed, progress.release_memory):

    python benchmarks/executorch_memory.py [SHAPE] [LAYERS] [RUNS] [--keep-graphs]

SHAPE is one of bench.checkpoints.SHAPES (default smollm2-135m) cut to LAYERS blocks (default 4),
made with random weights in a temporary folder; the android target's 8da4w-e8 recipe.
`--keep-graphs` skips executorch._forget_lowered_graphs, to compare with what ExecuTorch's globals
keep. benchmarks/RESULTS.md quotes the defaults: +135 MB per emit with --keep-graphs, +35 MB without
(RSS 237 MB before; 853 vs 564 MB after three emits).
"""

from __future__ import annotations

import gc
import sys
import tempfile
from pathlib import Path


def main(shape: str, layers: int, runs: int, keep_graphs: bool) -> None:
    from exporter.bench import checkpoints
    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.progress import current_rss_mb, release_memory
    from exporter.recipes import load_target
    from exporter.runtimes import executorch

    if keep_graphs:
        executorch._forget_lowered_graphs = lambda: None
    cut = f"{shape}-{layers}-layers"
    checkpoints.SHAPES[cut] = dict(checkpoints.SHAPES[shape], num_hidden_layers=layers)
    recipe = load_target("android").formats["executorch"].recipes["8da4w-e8"]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = load_checkpoint(checkpoints.make_shape(Path(tmp) / "model", cut))
        release_memory()
        print(f"{cut}, keep graphs: {keep_graphs}; before: {current_rss_mb():.0f} MB", flush=True)
        for run in range(1, runs + 1):
            executorch.emit(build_model(checkpoint, 512), recipe, 512, {}, Path(tmp) / f"out{run}")
            release_memory()
            live = sum(type(o).__name__ == "ExportedProgram" for o in gc.get_objects())
            print(f"after emit {run}: {current_rss_mb():.0f} MB, live ExportedPrograms {live}", flush=True)


if __name__ == "__main__":
    flags = [a for a in sys.argv[1:] if a.startswith("--")]
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(args[0] if args else "smollm2-135m", int(args[1]) if len(args) > 1 else 4,
         int(args[2]) if len(args) > 2 else 3, "--keep-graphs" in flags)
