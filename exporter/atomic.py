"""Writing outputs so that nothing half-done is ever in place: build in a staging folder beside
the destination, then swap with renames on one filesystem; the old folder goes only after."""

from __future__ import annotations

import errno
import os
import shutil
from contextlib import contextmanager
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


@contextmanager
def space_checked(folder: Path, needed: int, what: str):
    """A full disk (or quota) while writing into `folder` becomes one ExportError naming the
    path, the free space and about how much `what` needs. The callers build in a staging folder
    that their own cleanup removes as the error passes, so nothing half-written remains and the
    earlier output is untouched."""
    from .errors import ExportError

    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = 0
        where = e.filename or folder
        raise ExportError(f"{where}: no space left on the device while writing {what} ({free / 1e6:.1f} MB free; it "
                          f"needs about {needed / 1e6:.0f} MB); nothing was moved into place, the earlier output is "
                          "untouched") from None


def cached_folder(cache: Path, name: str, make) -> Path:
    """`cache/name`, made on first use by `make(staging)` in a staging folder swapped into place only
    when complete (a killed maker leaves nothing half-made), by one process at a time: two
    processes filling the same entry (pytest's workers, CI jobs sharing a cache) make it once; the
    second waits on an exclusive lock on `cache/.making-<name>.lock`, then finds it made. The
    kernel drops the lock of a killed maker."""
    import fcntl

    folder = cache / name
    if folder.is_dir():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    fd = os.open(cache / f".making-{name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not folder.is_dir():  # else made while this process waited
            staging = staging_dir(cache, name)
            try:
                make(staging)
                swap_into_place(staging, folder)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    finally:
        os.close(fd)
    return folder


@contextmanager
def exclusive(folder: Path, name: str):
    """One writer at a time for `folder/name`: an exclusive lock on `folder/.lock-<name>` (holding
    the writer's pid), taken without waiting. A second export into the same output (two terminals,
    CI jobs sharing a folder) fails at once, saying which process holds it, instead of racing the
    first one's swap. The kernel drops the lock of a killed run; the file goes with the lock."""
    import fcntl

    from .errors import ExportError, InputError

    path = folder / f".lock-{name}"
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(f"{folder}: cannot write the output there ({e.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ExportError(f"{folder / name}: another slm-export (pid {holder}) is writing it now; nothing was "
                              "written; wait for it to finish or pass another --out") from None
        # The holder before us may have removed the file after we opened it: lock the file that is
        # at the path now.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.close(fd)
