"""Encoder bundles: bytes and latency per text of each artifact, one thread, against PyTorch eager
on the same checkpoint in the same process (the figures in benchmarks/RESULTS.md).

Each of the fixed encoder texts (exporter/data/encoder_texts.json) is run alone (batch 1, no
padding), as a phone embeds a query; ExecuTorch's thread pool and ONNX Runtime's intra-op pool are
set to one thread, torch too. Core ML's artifact is timed only on macOS (elsewhere the MIL
interpreter runs it, which says nothing about a phone). Prints a Markdown table.

Usage: python benchmarks/encoder_latency.py MODEL_DIR BUNDLE_DIR [BUNDLE_DIR ...]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from exporter.bench.runtime import set_executorch_threads
from exporter.checkpoint import build_model, load_checkpoint
from exporter.encoder_verify import load_texts, tokenizer_for
from exporter.manifest import artifact_digest
from exporter.runtimes import encoder_runtime

ROUNDS = 3


def timed(run, inputs: list[list[np.ndarray]]) -> float:
    """Best of ROUNDS passes over every text (after one warm-up pass): milliseconds per text."""
    for x in inputs:
        run(x)
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for x in inputs:
            run(x)
        best = min(best, (time.perf_counter() - start) / len(inputs))
    return 1000 * best


def main(model_dir: str, bundles: list[str]) -> None:
    set_executorch_threads(1)
    checkpoint = load_checkpoint(Path(model_dir))
    encoder = build_model(checkpoint)
    manifest = json.loads((Path(bundles[0]) / "manifest.json").read_text())
    count = len(manifest["encoder"]["inputs"])
    tokenizer = tokenizer_for(checkpoint.tokenizer.tokenizer_json, manifest["model"]["max_seq_len"])
    encodings = tokenizer.encode_batch(load_texts()["sentences"])
    inputs = [[np.asarray([e.ids], dtype=np.int64), np.ones((1, len(e.ids)), dtype=np.int64),
               np.asarray([e.type_ids], dtype=np.int64)][:count] for e in encodings]
    mean_tokens = sum(len(e.ids) for e in encodings) / len(encodings)

    def eager(x):
        with torch.no_grad():
            return encoder(*(torch.from_numpy(a) for a in x))

    reference_ms = timed(eager, inputs)
    print(f"{checkpoint.name}: {len(inputs)} texts, {mean_tokens:.1f} tokens on average, 1 thread\n")
    print("| bundle | artifact | recipe | bytes | ms per text | / PyTorch eager fp32 |")
    print("|---|---|---|---:|---:|---:|")
    print(f"| | PyTorch eager (fp32) | | | {reference_ms:.2f} | 1.00 |")
    for bundle in map(Path, bundles):
        manifest = json.loads((bundle / "manifest.json").read_text())
        for artifact in manifest["artifacts"]:
            size = artifact_digest(bundle / artifact["path"])[0]
            if artifact["format"] == "coreml" and sys.platform != "darwin":
                print(f"| {bundle.name} | {artifact['path']} | {artifact['quantization']} | {size / 1e6:.1f} MB | "
                      "(macOS only) | |")
                continue
            module = encoder_runtime(artifact["format"])
            session = module.open_encoder_session(bundle / artifact["path"])
            if artifact["format"] == "onnx":
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                session.session = ort.InferenceSession(str(bundle / artifact["path"]), options,
                                                       providers=["CPUExecutionProvider"])
            ms = timed(session.run, inputs)
            print(f"| {bundle.name} | {artifact['path']} | {artifact['quantization']} | {size / 1e6:.1f} MB | "
                  f"{ms:.2f} | {ms / reference_ms:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
