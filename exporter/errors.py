"""Error types and the exit codes the CLI maps them to.

InputError (exit 2): bad usage or bad input; the message is one line naming the file and problem.
ExportError (exit 1): an export, a runtime or a parity check failed.
"""

from __future__ import annotations


class InputError(ValueError):
    exit_code = 2


class ExportError(RuntimeError):
    exit_code = 1


class ParityError(ExportError):
    """An artifact did not reproduce the reference within its recipe's thresholds."""
