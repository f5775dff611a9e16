"""One module per runtime, each with the same small interface:

    FORMAT, TOKENIZER_IN_ARTIFACT (whether the tokenizer files go inside the artifact folder)
    EXTRA_FILES {name: purpose}: files emit writes into the artifact that no phone loads (moved
        to OUT/<target>/extras/<format>/, never bundled into an app)
    emit(decoder, recipe, max_seq_len, metadata, out_dir) -> Path     # quantize + export + write
    open_session(path) -> Session                                     # reset(); forward(ids) -> logits [V]
    generate(path, tokenizer_path, prompt_ids, max_new_tokens, on_token) -> list[int]   # the app's path
    artifact_metadata(checkpoint, max_seq_len) -> dict                # what the runtime reads from the file

Modules are imported lazily: each pulls in a heavy runtime.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Formats that have a runtime module. A format named in a target file but missing here is an error.
IMPLEMENTED = {"executorch": "exporter.runtimes.executorch", "onnx": "exporter.runtimes.onnx_genai",
               "coreml": "exporter.runtimes.coreml"}


def runtime(fmt: str) -> ModuleType:
    from ..errors import InputError

    if fmt not in IMPLEMENTED:
        raise InputError(f"format {fmt!r} has no runtime module yet (implemented: {', '.join(IMPLEMENTED)})")
    return importlib.import_module(IMPLEMENTED[fmt])
