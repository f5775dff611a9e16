"""The test suite must not write into the checkout (docs: tests write under tmp_path only).

conftest.py records `checkout_state()` when the session starts and fails the session when it differs
at the end: a test that bundles into a demo app, writes dist/ or edits a tracked file is caught,
ignored paths included (the demo apps' bundle folders are git-ignored).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What running Python and its tools writes into any checkout; not the tests' doing.
CACHES = ("__pycache__/", ".pytest_cache/", ".ruff_cache/")


def checkout_state(repo: Path = REPO) -> dict[str, tuple] | None:
    """{path: (git status code, bytes, mtime_ns)} of every changed, untracked or ignored file, or
    None outside a git checkout (an unpacked sdist has nothing to guard)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--ignored", "--untracked-files=all"],
                             cwd=repo, capture_output=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    state: dict[str, tuple] = {}
    for entry in out.decode("utf-8", "surrogateescape").split("\0"):
        code, path = entry[:2], entry[3:]
        if not path or any(cache in path for cache in CACHES) or path.endswith(".pyc"):
            continue
        try:
            stat = (repo / path).stat()
            state[path] = (code, stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:  # a deleted tracked file
            state[path] = (code, None, None)
    return state


def changed_paths(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))
