"""The guard that fails the suite when a test writes into the checkout sees what it must."""

from __future__ import annotations

import shutil

import pytest
from checkout_guard import REPO, changed_paths, checkout_state


@pytest.fixture
def before():
    state = checkout_state()
    if state is None:
        pytest.skip("not a git checkout")
    return state


def test_guard_sees_a_file_written_into_an_ignored_folder(before):
    # The demo app's bundle folder is git-ignored: plain `git status --porcelain` would miss this.
    folder = REPO / "android-demo/app/src/main/assets/slm"
    made = not folder.exists()
    probe = folder / ".checkout-guard-probe"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text("written by a test\n")
        assert "android-demo/app/src/main/assets/slm/.checkout-guard-probe" in changed_paths(before, checkout_state())
    finally:
        probe.unlink(missing_ok=True)
        if made:
            shutil.rmtree(folder, ignore_errors=True)
    assert changed_paths(before, checkout_state()) == []


def test_guard_ignores_python_caches(before):
    cache = REPO / "tests" / "__pycache__" / "checkout-guard-probe.pyc"
    cache.parent.mkdir(exist_ok=True)
    try:
        cache.write_bytes(b"cache")
        assert changed_paths(before, checkout_state()) == []
    finally:
        cache.unlink(missing_ok=True)
