"""model.onnx -> model.ort in a child process whose memory layout is the same every run.

Why a child: ONNX Runtime's ORT-format writer orders some tables by the addresses of the objects
they describe, so with address-space layout randomisation two conversions of the same model.onnx
wrote different model.ort bytes (same size, about 1,200 bytes of offsets apart). With
randomisation off for the converting process (Linux `personality(ADDR_NO_RANDOMIZE)`, what
`setarch -R` does) and nothing else varying before the conversion, the bytes are the same every
run (docs/TRUST.md). "Nothing else" means: the environment, which Python copies onto the heap (a
3,000-byte variable changed the bytes), is a fixed one (`-E`, and the parent passes only
LD_LIBRARY_PATH); the file names are relative; the session is built before the feeds are read.
Where the personality cannot be set (macOS, a seccomp profile that forbids it) the conversion
still runs and says so.

Protocol: run in the folder holding model.onnx as `python -E -P <this file> model.onnx model.ort`
(by path, so that it needs nothing from the environment to import); stdin carries the feeds
(.npz); stdout gets the optimized session's outputs (.npz, `output_<i>`) and `layout_fixed`
(whether randomisation was off).
"""

from __future__ import annotations

import io
import os
import sys

ADDR_NO_RANDOMIZE = 0x0040000
_REEXEC_ENV = "_SLM_ORT_CONVERT_REEXEC"


def _layout_fixed() -> bool:
    try:
        with open("/proc/self/personality") as f:
            return bool(int(f.read(), 16) & ADDR_NO_RANDOMIZE)
    except (OSError, ValueError):
        return False


def _reexec_without_randomisation() -> None:
    """Sets the personality and re-executes once (it applies from the next exec on)."""
    if _layout_fixed() or os.environ.get(_REEXEC_ENV):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        current = libc.personality(0xFFFFFFFF)
        if current == -1 or libc.personality(current | ADDR_NO_RANDOMIZE) == -1:
            return
    except (OSError, AttributeError):
        return
    os.environ[_REEXEC_ENV] = "1"
    try:
        os.execv(sys.executable, sys.orig_argv)
    except OSError:
        pass


def command(onnx_name: str, ort_name: str) -> list[str]:
    return [sys.executable, "-E", "-P", __file__, onnx_name, ort_name]


def environment() -> dict[str, str]:
    return {k: os.environ[k] for k in ("LD_LIBRARY_PATH",) if k in os.environ}


def main() -> None:
    _reexec_without_randomisation()
    onnx_name, ort_name = sys.argv[1:3]
    import numpy as np
    import onnxruntime as ort

    # The same options as onnxruntime.tools.convert_onnx_models_to_ort --optimization_style Fixed
    # (its _convert): every optimization, the optimized graph saved in ORT format, NchwcTransformer
    # off as for a non-amd64 target.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = ort_name
    options.add_session_config_entry("session.qdqisint8allowed", "0")
    options.add_session_config_entry("session.save_model_format", "ORT")
    session = ort.InferenceSession(onnx_name, options, providers=["CPUExecutionProvider"],
                                   disabled_optimizers=["NchwcTransformer"])
    feeds = np.load(io.BytesIO(sys.stdin.buffer.read()))
    wanted = {i.name for i in session.get_inputs()}
    outputs = session.run(None, {k: feeds[k] for k in feeds.files if k in wanted})
    result = io.BytesIO()
    np.savez(result, layout_fixed=np.array(_layout_fixed()),
             **{f"output_{i}": np.asarray(o) for i, o in enumerate(outputs)})
    sys.stdout.buffer.write(result.getvalue())


if __name__ == "__main__":
    main()
