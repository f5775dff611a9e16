"""MIL reductions, softmax, cumsum."""

from __future__ import annotations

import numpy as np

from .registry import OPS, _axis, _bool, _f, _fl, _int, _ints, op

# ----------------------------------------------------------------------------- reductions


def _reduce(fn):
    def run(kw):
        x = _fl(kw["x"])
        axes = kw.get("axes")
        axes = None if axes is None else tuple(_ints(axes))
        return fn(x, axes, _bool(kw.get("keep_dims", False)))

    return run


def _logsumexp(x, axes, keep):
    x = _f(x)
    m = np.max(x, axis=axes, keepdims=True)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keep else np.squeeze(out, axis=axes if axes is not None else None)


OPS["reduce_sum"] = _reduce(lambda x, a, k: np.sum(x, axis=a, keepdims=k))
OPS["reduce_mean"] = _reduce(lambda x, a, k: np.mean(_f(x), axis=a, keepdims=k))
OPS["reduce_max"] = _reduce(lambda x, a, k: np.max(x, axis=a, keepdims=k))
OPS["reduce_min"] = _reduce(lambda x, a, k: np.min(x, axis=a, keepdims=k))
OPS["reduce_prod"] = _reduce(lambda x, a, k: np.prod(x, axis=a, keepdims=k))
OPS["reduce_sum_square"] = _reduce(lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k))
OPS["reduce_l1_norm"] = _reduce(lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k))
OPS["reduce_l2_norm"] = _reduce(lambda x, a, k: np.sqrt(np.sum(np.square(_f(x)), axis=a, keepdims=k)))
OPS["reduce_log_sum"] = _reduce(lambda x, a, k: np.log(np.sum(_f(x), axis=a, keepdims=k)))
OPS["reduce_log_sum_exp"] = _reduce(_logsumexp)


def _arg_reduce(fn):
    def run(kw):
        x = _fl(kw["x"])
        axis = _axis(kw.get("axis", -1), x.ndim)
        out = fn(x, axis=axis)
        if _bool(kw.get("keep_dims", False)):
            out = np.expand_dims(out, axis)
        return out.astype(np.int32)

    return run


OPS["reduce_argmax"] = _arg_reduce(np.argmax)
OPS["reduce_argmin"] = _arg_reduce(np.argmin)


@op("softmax")
def _softmax(kw):
    x = _f(kw["x"])
    axis = _int(kw.get("axis", -1))
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@op("cumsum")
def _cumsum(kw):
    x = _fl(kw["x"])
    axis = _axis(kw.get("axis", 0), x.ndim)
    if _bool(kw.get("reverse", False)):
        x = np.flip(x, axis)
    out = np.cumsum(x, axis=axis, dtype=x.dtype)
    if _bool(kw.get("exclusive", False)):
        out = out - x
    if _bool(kw.get("reverse", False)):
        out = np.flip(out, axis)
    return out
