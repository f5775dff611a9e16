"""Resident memory after each step of the ONNX emit (issue #20), for one checkpoint:

    python benchmarks/onnx_memory.py CHECKPOINT_DIR [OUT_DIR]

build the fp32 decoder, trace and copy the blocks into an fp32 graph (onnx_genai._export),
trim the C heap, quantize it with the target's int4 recipe, save, free the graph, trim the C heap
(progress.release_memory), convert to model.ort. Prints RSS now and the process peak per step.
benchmarks/RESULTS.md (issue #20) quotes it on the Qwen2.5-0.5B shape
(`slm-export sweep` makes it in ~/.cache/slm-export/shapes/qwen2.5-0.5b).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def main(checkpoint_dir: str, out: str | None = None) -> None:
    import gc

    import onnx

    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.progress import current_rss_mb, peak_rss_mb, release_memory
    from exporter.recipes import load_target
    from exporter.runtimes import onnx_genai

    start = time.perf_counter()

    def mark(step: str) -> None:
        print(f"{time.perf_counter() - start:7.1f} s  {step:<28} RSS {current_rss_mb():7.0f} MB, peak {peak_rss_mb():7.0f} MB",
              flush=True)

    folder = Path(out or tempfile.mkdtemp(prefix="slm_onnx_memory_"))
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(Path(checkpoint_dir))
    mark("load (config, tensor names)")
    decoder = build_model(checkpoint, 512)
    mark("fp32 decoder")
    model = onnx_genai._export(decoder)
    mark("fp32 graph, every block")
    release_memory()  # as onnx_genai.emit does before quantizing
    mark("heap trimmed")
    recipe = load_target("android").formats["onnx"].recipe("int4")
    model = onnx_genai.quantize(model, recipe, decoder.spec.tie_word_embeddings, folder, decoder.spec.num_layers)
    gc.collect()
    mark("int4 graph")
    onnx.save_model(model, str(folder / onnx_genai.ONNX_FILE), save_as_external_data=model.ByteSize() > 1_800_000_000,
                    all_tensors_to_one_file=True, location=onnx_genai.ONNX_FILE + ".data")
    mark("saved")
    del model
    gc.collect()
    mark("graph freed")
    release_memory()
    mark("heap trimmed")
    onnx_genai._to_ort(folder, decoder.spec)
    mark("model.ort")
    print(f"fp32 weights: {4 * checkpoint.spec.num_parameters / 1e6:.0f} MB; output in {folder}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
