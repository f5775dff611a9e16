"""The command's entry point (`slm-export`, `python -m exporter`): before anything is imported,
it re-executes itself once with a fixed PYTHONHASHSEED.

Why: coremltools' graph passes walk sets and dicts keyed by strings, whose order follows Python's
per-process hash seed, so two conversions of the same model folded different ops and wrote
different Core ML programs (model.mlmodel, and so manifest.json). With one seed they are byte
identical (docs/TRUST.md). A caller that sets PYTHONHASHSEED itself keeps its own value.
"""

from __future__ import annotations

import os
import sys

PROG_ENV = "_SLM_EXPORT_PROG"  # the name the user typed, for usage lines after the re-exec


def main() -> None:
    if "PYTHONHASHSEED" not in os.environ and sys.executable:
        os.environ["PYTHONHASHSEED"] = "0"
        os.environ[PROG_ENV] = os.path.basename(sys.argv[0]) if not sys.argv[0].endswith("__main__.py") \
            else "python -m exporter"
        try:
            os.execv(sys.executable, [sys.executable, "-m", "exporter", *sys.argv[1:]])
        except OSError:
            pass  # cannot re-execute: run as is (Core ML programs may then differ run to run)
    from .cli import main as cli_main

    cli_main(prog_name=os.environ.pop(PROG_ENV, None) or None)
