"""Writing outputs so that nothing half-done is ever in place: build in a staging folder beside
the destination, then swap with renames on one filesystem; the old folder goes only after."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path, prefix: str) -> None:
    """Remove `<prefix><pid>` folders left by runs that were killed (their pid is gone)."""
    for stale in parent.glob(f"{prefix}*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def staging_dir(parent: Path, name: str) -> Path:
    """A fresh `.staging-<name>-<pid>` folder in `parent`, after removing killed runs' leftovers."""
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale(parent, f".staging-{name}-")
    clean_stale(parent, f".old-{name}-")
    staging = parent / f".staging-{name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def swap_into_place(staging: Path, destination: Path) -> None:
    old = destination.with_name(f".old-{destination.name}-{os.getpid()}")
    if destination.exists():
        os.rename(destination, old)
    os.rename(staging, destination)
    shutil.rmtree(old, ignore_errors=True)
