from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from checkout_guard import changed_paths, checkout_state  # noqa: E402
from helpers import save_random_checkpoint  # noqa: E402

from exporter.models import MODELS  # noqa: E402

# Each family's own parity cases (Family.test_variants): adding a family adds its cases here.
FAMILY_CASES: dict[str, list[tuple[str, dict]]] = {name: family.test_cases() for name, family in MODELS.items()}

_CHECKOUT_BEFORE = pytest.StashKey[dict | None]()


def pytest_sessionstart(session):
    # Checked once, by the process that sees the whole run (pytest-xdist's workers each see a part).
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_CHECKOUT_BEFORE] = checkout_state()


def pytest_sessionfinish(session, exitstatus):
    """Fail the run when the tests changed the checkout (tests/checkout_guard.py)."""
    before = session.config.stash.get(_CHECKOUT_BEFORE, None)
    after = checkout_state() if before is not None else None
    changed = changed_paths(before, after) if after is not None else []
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        reporter.write_line(f"FAILED: the tests wrote into the checkout ({len(changed)} paths): {shown}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


CASE_IDS = [(family, name) for family, cases in FAMILY_CASES.items() for name, _ in cases]


def case_config(family: str, name: str) -> dict:
    return dict(next(cfg for n, cfg in FAMILY_CASES[family] if n == name), vocab_size=320)


@pytest.fixture(scope="session")
def family_checkpoint(tmp_path_factory):
    """family_checkpoint(family, case) -> path of a saved random-weight checkpoint (cached)."""
    made: dict[tuple[str, str], Path] = {}

    def make(family: str, name: str) -> Path:
        if (family, name) not in made:
            directory = tmp_path_factory.mktemp(f"{family}-{name}")
            made[(family, name)] = save_random_checkpoint(directory, case_config(family, name))
        return made[(family, name)]

    return make
