"""Ours vs each format's own export tool, on the same weights: `slm-export bench` from a checkout.

Not run by CI (exports take minutes; timings need a quiet machine). The work is done by
`exporter.bench` (see its docstring, and `slm-export bench --help`); this script only runs that
command without installing the package:

    python benchmarks/bench.py --target android --out benchmarks/results      # the built-in student
    python benchmarks/bench.py --make-smollm2-shape /tmp/smollm2_shape          # random 135M-shaped llama
    python benchmarks/bench.py --model /tmp/smollm2_shape --target android --work /tmp/bench_135m \\
        --reuse-peer --out benchmarks/results

-v / -q (the command line's verbosity flags) may be given anywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from exporter.cli import main  # noqa: E402

GROUP_FLAGS = ("-v", "--verbose", "-q", "--quiet")

if __name__ == "__main__":
    args = sys.argv[1:]
    main([a for a in args if a in GROUP_FLAGS] + ["bench"] + [a for a in args if a not in GROUP_FLAGS],
         prog_name="benchmarks/bench.py")
