"""Resident memory of the Core ML conversion (issue #20), for one checkpoint:

    python benchmarks/coreml_memory.py CHECKPOINT_DIR [--coremltools-pass]

builds the fp32 decoder and converts it to the fp16 Core ML program (torch.export, then
ct.convert), printing RSS and the process peak after each step. By default the conversion runs our
fp16 pass (coreml.fp16_precision); with --coremltools-pass, coremltools' own add_fp16_cast, whose
overflow check (np.where over each whole constant) briefly holds 8 times the largest weight. Run
each in its own process: the peak is the process's. benchmarks/RESULTS.md quotes it on the
SmolLM2-135M and Llama-3.2-1B shapes (`slm-export sweep` makes them in ~/.cache/slm-export/shapes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(checkpoint_dir: str, coremltools_pass: bool) -> None:
    import coremltools as ct

    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.progress import current_rss_mb, peak_rss_mb
    from exporter.runtimes import coreml

    start = time.perf_counter()

    def mark(step: str) -> None:
        print(f"{time.perf_counter() - start:7.1f} s  {step:<34} RSS {current_rss_mb():7.0f} MB, peak {peak_rss_mb():7.0f} MB",
              flush=True)

    if coremltools_pass:
        coreml.fp16_precision = lambda selector, release_source=None: {"compute_precision": ct.transform.FP16ComputePrecision(op_selector=selector)}
    checkpoint = load_checkpoint(Path(checkpoint_dir))
    decoder = build_model(checkpoint, 512)
    largest = max(p.numel() for p in decoder.parameters())
    mark("fp32 decoder")
    coreml._convert(decoder, 512, fp32=False)
    mark(f"fp16 program ({'coremltools' if coremltools_pass else 'our'} fp16 pass)")
    print(f"fp32 weights: {4 * checkpoint.spec.num_parameters / 1e6:.0f} MB, the largest {4 * largest / 1e6:.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1], "--coremltools-pass" in sys.argv[2:])
