"""The op registry (MIL op type -> numpy implementation) and the helpers the op modules share.

Every implementation takes ``kw``: a dict from the op's input (parameter) names to values (numpy
arrays, python str for string parameters, python lists for tuple inputs such as concat's
``values``). Optional inputs the program leaves out are simply absent. An implementation returns
one value, or a tuple for multi-output ops. Outputs are cast to the dtype the program declares by
the executor, so implementations may compute in whatever float width is convenient (fp32).

Semantics follow coremltools/converters/mil/mil/ops/defs/iOS15..iOS18.
"""

from __future__ import annotations

import math

import numpy as np

# scipy is deliberately optional, not a declared dependency: the interpreter only needs erf, which
# math.erf gives exactly (vectorised, slower); scipy's is used when it happens to be installed.
try:
    from scipy.special import erf as _erf  # optional, undeclared: math.erf below without it
except ImportError:  # pragma: no cover
    _erf_scalar = np.vectorize(math.erf, otypes=[np.float64])

    def _erf(x):
        return _erf_scalar(x).astype(np.float32)


OPS: dict = {}


def op(*names):
    def register(fn):
        for n in names:
            OPS[n] = fn
        return fn

    return register


def _f(x):
    """As a float32 array (ints and bools pass through unchanged for int-capable ops)."""
    x = np.asarray(x)
    return x if x.dtype == np.float32 else x.astype(np.float32)


def _fl(x):
    """Float view for float math; keeps int dtypes for ops that support them."""
    x = np.asarray(x)
    if x.dtype.kind == "f" and x.dtype != np.float32:
        return x.astype(np.float32)
    return x


def _int(v) -> int:
    return int(np.asarray(v).reshape(-1)[0]) if np.ndim(v) else int(v)


def _ints(v) -> list[int]:
    return [int(i) for i in np.asarray(v).reshape(-1)]


def _bool(v) -> bool:
    return bool(np.asarray(v).reshape(-1)[0]) if np.ndim(v) else bool(v)


def _axis(a, rank: int) -> int:
    a = _int(a)
    return a + rank if a < 0 else a


# States are handled by the executor (they need the state dict), listed here for SUPPORTED_OPS.
STATE_OPS = frozenset({"read_state", "write_state", "coreml_update_state"})
CONST_OPS = frozenset({"const"})
