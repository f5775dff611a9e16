"""Capturing what native code (C++ runtimes and tokenizers) writes straight to file descriptors 1
and 2, which Python's sys.stdout redirection cannot see."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class Captured:
    data: bytes = b""  # filled when the block exits

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


@contextlib.contextmanager
def native_output(fds: tuple[int, ...] = (1, 2)) -> Iterator[Captured]:
    """Points `fds` at one temporary file for the block (C stdio and Python's buffers flushed on
    both sides), then restores them; the bytes written are in the yielded `Captured`."""
    libc = ctypes.CDLL(None)
    captured = Captured()
    saved = [os.dup(fd) for fd in fds]
    with tempfile.TemporaryFile() as sink:
        sys.stdout.flush()
        sys.stderr.flush()
        libc.fflush(None)
        for fd in fds:
            os.dup2(sink.fileno(), fd)
        try:
            yield captured
        finally:
            libc.fflush(None)
            for fd, copy in zip(fds, saved, strict=True):
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            captured.data = sink.read()
