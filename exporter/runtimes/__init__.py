"""The runtimes: the only place that knows per-format facts.

Each format is registered below with what the rest of the package may ask without importing the
runtime (its name, its artifacts' suffixes, the quantization schemes its emit accepts); `runtime(fmt)`
imports the module itself, lazily, since each pulls in a heavy toolchain. Every module implements
`Runtime`. Code outside this package never compares a format name: it asks the registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


class Session(Protocol):
    """An opened artifact, stepped as a phone steps it."""

    def reset(self) -> None: ...

    def forward(self, ids: list[int]) -> torch.Tensor: ...  # logits [vocab] after the last id


class Runtime(Protocol):
    """The module contract of `exporter/runtimes/<module>.py`."""

    FORMAT: str
    TOKENIZER_IN_ARTIFACT: bool  # the tokenizer files go inside the artifact folder (the app reads them there)
    EXTRA_FILES: dict[str, str]  # files emit writes that no phone loads -> why they are kept (OUT/<target>/extras/)

    def artifact_metadata(self, checkpoint, max_seq_len: int) -> dict[str, Any]: ...  # what the app reads from the file

    # The decoder is the emit's to consume: it may quantize it in place or free its weights once
    # its own graph holds them (models.release_weights), so the caller passes one it does not reuse.
    def emit(self, decoder, recipe, max_seq_len: int, metadata: dict[str, Any], out_dir: Path) -> Path: ...

    def open_session(self, path: Path) -> Session: ...

    # The artifact's own metadata, with at least `format`, `max_seq_len`, `eos_ids` and `bos_id`
    # (None: the artifact names none), the keys tokenizer parity and `run` read.
    def read_metadata(self, path: Path) -> dict[str, Any]: ...

    def special_ids(self, metadata: dict[str, Any]) -> tuple[int | None, list[int]]: ...  # (bos, eos) from it

    # Optional: estimate_session(decoder, recipe, max_seq_len, only=None) -> Session, the recipe's
    # quantization on the eager decoder it consumes (lets --quant auto skip a hopeless candidate,
    # and `sensitivity`).


@dataclass(frozen=True)
class Registration:
    """What the package may ask about a format without importing its runtime."""

    format: str
    module: str
    suffixes: tuple[str, ...]  # an artifact (file or folder) of this format ends so
    folder_marker: str | None  # ... or is a folder holding this file
    schemes: tuple[str, ...]  # the quantization schemes emit accepts (a recipe's `scheme`, default its name)
    # The artifact always states a bos id, a placeholder when the model has none (genai_config.json
    # requires one; the exporter writes the pad id there): tokenizer parity skips it then.
    bos_always_stated: bool = False
    # Which device tokenizer the phone runs for this format, checked against `tokenizers` by
    # tokenizer_parity (None: the app's own tokenizer, not checked here).
    device_tokenizer: str | None = None
    tools: tuple[str, ...] = ()  # the packages that make or run its artifacts (versions go into the manifest)
    # Encoders (exporter.models.encoder): the module with emit_encoder / open_encoder_session /
    # encoder_metadata / read_encoder_metadata (None: `module`), and the schemes its emit_encoder accepts.
    encoder_module: str | None = None
    encoder_schemes: tuple[str, ...] = ("none",)
    # An export's peak resident memory as a multiple of the model's fp32 weights, measured with -v
    # on random llamas (benchmarks/RESULTS.md, issue #20): pipeline.check_machine_memory refuses a
    # model whose estimate is above the machine's memory.
    memory_factor: float = 3.0


REGISTRY: dict[str, Registration] = {r.format: r for r in (
    Registration("executorch", "exporter.runtimes.executorch", (".pte",), None,
                 ("none", "8da4w", "8da8w"), device_tokenizer="executorch",
                 tools=("executorch", "torchao"), encoder_schemes=("none", "8da8w"),
                 memory_factor=2.5),  # 1B: 2.5x with a deep copy; 1.5x since it quantizes a fresh decoder (margin kept)
    Registration("onnx", "exporter.runtimes.onnx_genai", (), "genai_config.json",
                 ("none", "int4", "int8w", "int8"), bos_always_stated=True, device_tokenizer="genai",
                 tools=("onnx", "onnxscript", "onnxruntime", "onnxruntime-genai"),
                 encoder_module="exporter.runtimes.onnx_encoder", encoder_schemes=("none", "int8", "int8w"),
                 memory_factor=3.0),  # 0.5B: 3.0x with the quantizer's copies; 1B: about 2x since (margin kept)
    Registration("coreml", "exporter.runtimes.coreml", (".mlpackage", ".mlmodel"), None,
                 ("none", "fp32", "int4", "int8", "palettize4", "palettize6"), tools=("coremltools",),
                 encoder_schemes=("none", "fp32", "int8"),
                 memory_factor=3.0),  # 1B: about 3x, coremltools' conversion (benchmarks/RESULTS.md)
)}

def format_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def registration(fmt: str) -> Registration:
    from ..errors import InputError

    if fmt not in REGISTRY:
        raise InputError(f"unknown format {fmt!r} (known: {', '.join(REGISTRY)})")
    return REGISTRY[fmt]


def runtime(fmt: str) -> Runtime:
    return importlib.import_module(registration(fmt).module)


def encoder_runtime(fmt: str):
    """The module that emits and runs this format's encoder artifacts (see `Registration.encoder_module`)."""
    reg = registration(fmt)
    return importlib.import_module(reg.encoder_module or reg.module)


def format_of(path: Path) -> str | None:
    """The format of an artifact on disk, by its suffix or marker file (None: not an artifact)."""
    path = Path(path)
    for reg in REGISTRY.values():
        if path.suffix in reg.suffixes or (reg.folder_marker and path.is_dir() and (path / reg.folder_marker).is_file()):
            return reg.format
    return None


def formats_where(test: Callable[[Registration], bool]) -> list[str]:
    return [fmt for fmt, reg in REGISTRY.items() if test(reg)]
