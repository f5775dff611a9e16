"""MIL const, identity, elementwise binary and unary ops, casts."""

from __future__ import annotations

import math

import numpy as np

from ..values import DTYPE_STRINGS
from .registry import OPS, _erf, _f, _fl, op

# ----------------------------------------------------------------------------- const / identity


@op("identity")
def _identity(kw):
    return kw["x"]


# ----------------------------------------------------------------------------- elementwise binary


def _binary(fn):
    def run(kw):
        return fn(_fl(kw["x"]), _fl(kw["y"]))

    return run


OPS["add"] = _binary(np.add)
OPS["sub"] = _binary(np.subtract)
OPS["mul"] = _binary(np.multiply)
OPS["maximum"] = _binary(np.maximum)
OPS["minimum"] = _binary(np.minimum)
OPS["equal"] = _binary(np.equal)
OPS["not_equal"] = _binary(np.not_equal)
OPS["less"] = _binary(np.less)
OPS["less_equal"] = _binary(np.less_equal)
OPS["greater"] = _binary(np.greater)
OPS["greater_equal"] = _binary(np.greater_equal)
OPS["logical_and"] = _binary(np.logical_and)
OPS["logical_or"] = _binary(np.logical_or)
OPS["logical_xor"] = _binary(np.logical_xor)


@op("real_div")
def _real_div(kw):
    x, y = _fl(kw["x"]), _fl(kw["y"])
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        return np.floor_divide(x, y)  # the integer variant rounds toward -inf like floor_div
    return np.true_divide(_f(x), _f(y))


@op("floor_div")
def _floor_div(kw):
    x, y = _fl(kw["x"]), _fl(kw["y"])
    if x.dtype.kind == "f" or y.dtype.kind == "f":
        return np.floor(np.true_divide(_f(x), _f(y)))
    return np.floor_divide(x, y)


@op("mod")
def _mod(kw):
    return np.mod(_fl(kw["x"]), _fl(kw["y"]))


@op("pow")
def _pow(kw):
    x, y = _fl(kw["x"]), _fl(kw["y"])
    if x.dtype.kind == "f" or y.dtype.kind == "f":
        return np.power(_f(x), _f(y))
    return np.power(x, y)


# ----------------------------------------------------------------------------- elementwise unary


def _unary(fn):
    def run(kw):
        return fn(_f(kw["x"]))

    return run


def _unary_int(fn):
    def run(kw):
        return fn(_fl(kw["x"]))

    return run


OPS["abs"] = _unary_int(np.abs)
OPS["sign"] = _unary_int(np.sign)
OPS["square"] = _unary_int(np.square)
OPS["sqrt"] = _unary(np.sqrt)
OPS["exp"] = _unary(np.exp)
OPS["exp2"] = _unary(np.exp2)
OPS["floor"] = _unary(np.floor)
OPS["ceil"] = _unary(np.ceil)
OPS["round"] = _unary(np.round)  # MIL round: half to even (as numpy)
OPS["sin"] = _unary(np.sin)
OPS["cos"] = _unary(np.cos)
OPS["tan"] = _unary(np.tan)
OPS["asin"] = _unary(np.arcsin)
OPS["acos"] = _unary(np.arccos)
OPS["atan"] = _unary(np.arctan)
OPS["sinh"] = _unary(np.sinh)
OPS["cosh"] = _unary(np.cosh)
OPS["tanh"] = _unary(np.tanh)
OPS["atanh"] = _unary(np.arctanh)
OPS["relu"] = _unary(lambda x: np.maximum(x, np.float32(0)))
OPS["relu6"] = _unary(lambda x: np.clip(x, np.float32(0), np.float32(6)))
OPS["softsign"] = _unary(lambda x: x / (np.float32(1) + np.abs(x)))
OPS["erf"] = _unary(lambda x: np.asarray(_erf(x), np.float32))
OPS["logical_not"] = lambda kw: np.logical_not(kw["x"])


def _sigmoid(x):
    # numerically stable, no overflow warnings
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, np.float32(1) / (np.float32(1) + e), e / (np.float32(1) + e))


def _softplus(x):
    return np.maximum(x, np.float32(0)) + np.log1p(np.exp(-np.abs(x)))


OPS["sigmoid"] = _unary(_sigmoid)
OPS["silu"] = _unary(lambda x: x * _sigmoid(x))
OPS["softplus"] = _unary(_softplus)


@op("rsqrt")
def _rsqrt(kw):
    eps = kw.get("epsilon", 1e-12)
    return np.float32(1) / np.sqrt(_f(kw["x"]) + np.float32(eps))


@op("inverse")
def _inverse(kw):
    eps = kw.get("epsilon", 1e-4)
    return np.float32(1) / (_f(kw["x"]) + np.float32(eps))


@op("log")
def _log(kw):
    eps = kw.get("epsilon", 1e-45)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(_f(kw["x"]) + np.float32(eps))


@op("gelu")
def _gelu(kw):
    x = _f(kw["x"])
    mode = str(kw.get("mode", "EXACT"))
    if mode == "TANH_APPROXIMATION":
        return np.float32(0.5) * x * (1 + np.tanh(np.float32(math.sqrt(2 / math.pi)) * (x + np.float32(0.044715) * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(np.float32(1.702) * x)
    if mode != "EXACT":
        raise ValueError(f"gelu mode {mode!r}")
    return np.float32(0.5) * x * (1 + np.asarray(_erf(x / np.float32(math.sqrt(2))), np.float32))


@op("leaky_relu")
def _leaky_relu(kw):
    x = _f(kw["x"])
    return np.where(x >= 0, x, x * np.float32(kw.get("alpha", 0.01)))


@op("elu")
def _elu(kw):
    x = _f(kw["x"])
    return np.where(x > 0, x, np.float32(kw.get("alpha", 1.0)) * np.expm1(np.minimum(x, 0)))


@op("thresholded_relu")
def _thresholded_relu(kw):
    x = _f(kw["x"])
    return np.where(x >= np.float32(kw.get("alpha", 1.0)), x, np.float32(0))


@op("threshold")
def _threshold(kw):
    return np.maximum(_fl(kw["x"]), _fl(kw["alpha"]))


@op("clip")
def _clip(kw):
    return np.minimum(np.maximum(_f(kw["x"]), _f(kw["alpha"])), _f(kw["beta"]))


@op("clamped_relu")
def _clamped_relu(kw):
    x = _f(kw["x"])
    alpha, beta = np.float32(kw.get("alpha", 0.0)), np.float32(kw.get("beta", 6.0))
    return np.minimum(np.where(x >= 0, x, alpha * x), beta)


@op("linear_activation")
def _linear_activation(kw):
    return np.float32(kw["alpha"]) * _f(kw["x"]) + np.float32(kw.get("beta", 0.0))


@op("scaled_tanh")
def _scaled_tanh(kw):
    return np.float32(kw.get("alpha", 1.0)) * np.tanh(np.float32(kw.get("beta", 1.0)) * _f(kw["x"]))


@op("sigmoid_hard")
def _sigmoid_hard(kw):
    x = _f(kw["x"])
    return np.clip(np.float32(kw.get("alpha", 0.2)) * x + np.float32(kw.get("beta", 0.5)), 0, 1).astype(np.float32)


@op("softplus_parametric")
def _softplus_parametric(kw):
    x = _f(kw["x"])
    shape = [1, -1] + [1] * (x.ndim - 2)
    alpha, beta = _f(kw["alpha"]).reshape(shape), _f(kw["beta"]).reshape(shape)
    return alpha * _softplus(beta * x)


@op("prelu")
def _prelu(kw):
    x = _f(kw["x"])
    alpha = _f(kw["alpha"]).reshape([1, -1] + [1] * (x.ndim - 2))
    return np.where(x >= 0, x, alpha * x)


@op("cast")
def _cast(kw):
    dtype = DTYPE_STRINGS[str(kw["dtype"])]
    x = np.asarray(kw["x"])
    if dtype.kind in "iu" and x.dtype.kind == "f":
        x = np.trunc(x)
    return x.astype(dtype)
