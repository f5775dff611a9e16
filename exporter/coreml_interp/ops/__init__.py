"""numpy implementations of MIL operations, one module per kind of op; every module registers
its ops in `registry.OPS` (by MIL op type) with the `op` decorator, and this package imports them
all. See registry.py for the calling convention."""

from . import constexpr, elementwise, gather, linalg, normalisation, reductions, shape  # noqa: F401  (registers)
from .registry import CONST_OPS, OPS, STATE_OPS, op

__all__ = ["CONST_OPS", "OPS", "STATE_OPS", "op"]
