"""Progress on stderr: numbered stages with elapsed time, peak memory in verbose mode."""

from __future__ import annotations

import logging
import resource
import sys
import time
from contextlib import contextmanager

log = logging.getLogger("exporter")


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def release_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc's malloc_trim):
    a format's graph and protobuf leave freed but retained heap behind (1.7 GB after the ONNX
    emit of a 0.5B model), which the next format's peak would otherwise stack on."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the allocator keeps what it keeps
        pass


def current_rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return float("nan")


@contextmanager
def stage(name: str):
    """Logs the start and end of a long step: `[trace] executorch ... 12.3 s`."""
    start = time.perf_counter()
    log.info("%s ...", name)
    try:
        yield
    except BaseException:
        log.info("%s failed after %.1f s", name, time.perf_counter() - start)
        raise
    log.info("%s done in %.1f s", name, time.perf_counter() - start)
    log.debug("%s: peak memory %.0f MB, now %.0f MB", name, peak_rss_mb(), current_rss_mb())


def configure_logging(verbose: bool, quiet: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("exporter")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if not verbose:
        # Third-party chatter that says nothing actionable to a user of the CLI: torchao's optional
        # CUDA kernels failing to load on a CPU machine, torch's pytree deprecations, and the
        # FutureWarnings of torch.export internals. -v shows all of it.
        for name in ("torchao", "torch.utils._pytree", "torch._export", "torch.export"):
            logging.getLogger(name).setLevel(logging.ERROR)
        import warnings

        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Mutation on a buffer")
        warnings.filterwarnings("ignore", message="This API is experimental")
