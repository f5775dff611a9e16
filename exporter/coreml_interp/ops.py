"""numpy implementations of MIL operations.

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
from numpy.lib.stride_tricks import sliding_window_view

from .values import DTYPE_STRINGS, unpack_bits

try:  # scipy is optional: exact erf when present, vectorised math.erf otherwise
    from scipy.special import erf as _erf
except Exception:  # pragma: no cover
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


# ----------------------------------------------------------------------------- linear algebra


@op("matmul")
def _matmul(kw):
    x, y = _fl(kw["x"]), _fl(kw["y"])
    if _bool(kw.get("transpose_x", False)) and x.ndim >= 2:
        x = np.swapaxes(x, -1, -2)
    if _bool(kw.get("transpose_y", False)) and y.ndim >= 2:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@op("linear")
def _linear(kw):
    x, w = _f(kw["x"]), _f(kw["weight"])
    out = np.matmul(x, w.T)
    if kw.get("bias") is not None:
        out = out + _f(kw["bias"])
    return out


@op("einsum")
def _einsum(kw):
    return np.einsum(str(kw["equation"]), *[_f(v) for v in kw["values"]])


def _norm_pads(kw, in_sp, ksz, strides, dil):
    nsp = len(in_sp)
    pad_type = str(kw.get("pad_type", "valid")).lower()
    if pad_type == "valid":
        return [(0, 0)] * nsp
    if pad_type == "custom":
        pad = _ints(kw.get("pad", [0] * 2 * nsp))
        return [(pad[2 * i], pad[2 * i + 1]) for i in range(nsp)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for i in range(nsp):
            out = -(-in_sp[i] // strides[i])
            total = max((out - 1) * strides[i] + (ksz[i] - 1) * dil[i] + 1 - in_sp[i], 0)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if pad_type == "same" else (big, small))
        return pads
    raise ValueError(f"pad_type {pad_type!r}")


def _windows(x, ksz, strides, dil, pads, pad_value=0.0):
    """x (N, C, *sp) -> (N, C, *out, *k) windows."""
    nsp = len(ksz)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(pads), constant_values=pad_value) if any(p != (0, 0) for p in pads) else x
    eff = [(k - 1) * d + 1 for k, d in zip(ksz, dil, strict=True)]
    win = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nsp)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + tuple(slice(None, None, d) for d in dil)
    return win[index]


@op("conv")
def _conv(kw):
    x, w = _f(kw["x"]), _f(kw["weight"])
    nsp = w.ndim - 2
    strides = _ints(kw.get("strides", [1] * nsp))
    dil = _ints(kw.get("dilations", [1] * nsp))
    groups = _int(kw.get("groups", 1))
    ksz = list(w.shape[2:])
    pads = _norm_pads(kw, x.shape[2:], ksz, strides, dil)
    win = _windows(x, ksz, strides, dil, pads)  # N, C, *out, *k
    n, c = x.shape[:2]
    out_sp = win.shape[2:2 + nsp]
    p, k = int(np.prod(out_sp)), int(np.prod(ksz))
    cg = c // groups
    cout = w.shape[0]
    win = win.reshape(n, groups, cg, p, k).transpose(0, 1, 3, 2, 4).reshape(n, groups, p, cg * k)
    wr = w.reshape(groups, cout // groups, cg * k).transpose(0, 2, 1)  # G, Cg*K, Cout_g
    out = np.matmul(win, wr)  # N, G, P, Cout_g
    out = out.transpose(0, 1, 3, 2).reshape((n, cout) + tuple(out_sp))
    if kw.get("bias") is not None:
        out = out + _f(kw["bias"]).reshape([1, -1] + [1] * nsp)
    return out


def _pool(reducer):
    def run(kw):
        x = _f(kw["x"])
        ksz = _ints(kw["kernel_sizes"])
        nsp = len(ksz)
        strides = _ints(kw.get("strides", [1] * nsp))
        if _bool(kw.get("ceil_mode", False)):
            raise NotImplementedError("pooling with ceil_mode=True")
        pads = _norm_pads(kw, x.shape[2:], ksz, strides, [1] * nsp)
        axes = tuple(range(-nsp, 0))
        if reducer == "max":
            return np.max(_windows(x, ksz, strides, [1] * nsp, pads, -np.inf), axis=axes)
        win = _windows(x, ksz, strides, [1] * nsp, pads)
        total = np.sum(win, axis=axes)
        if _bool(kw.get("exclude_padding_from_average", False)):
            ones = np.ones((1, 1) + x.shape[2:], np.float32)
            return total / np.sum(_windows(ones, ksz, strides, [1] * nsp, pads), axis=axes)
        return total / np.float32(np.prod(ksz))

    return run


OPS["max_pool"] = _pool("max")
OPS["avg_pool"] = _pool("avg")


# ----------------------------------------------------------------------------- normalisation


@op("layer_norm")
def _layer_norm(kw):
    x = _f(kw["x"])
    axes = tuple(_ints(kw["axes"])) if kw.get("axes") is not None else tuple(range(x.ndim))
    eps = np.float32(kw.get("epsilon", 1e-5))
    mean = np.mean(x, axis=axes, keepdims=True)
    d = x - mean
    var = np.mean(d * d, axis=axes, keepdims=True)
    out = d / np.sqrt(var + eps)
    norm_axes = sorted(a % x.ndim for a in axes)
    bshape = [x.shape[i] if i in norm_axes else 1 for i in range(x.ndim)]
    if kw.get("gamma") is not None:
        out = out * _f(kw["gamma"]).reshape(bshape)
    if kw.get("beta") is not None:
        out = out + _f(kw["beta"]).reshape(bshape)
    return out


@op("batch_norm")
def _batch_norm(kw):
    x = _f(kw["x"])
    shape = [1, -1] + [1] * (x.ndim - 2)
    mean, var = _f(kw["mean"]).reshape(shape), _f(kw["variance"]).reshape(shape)
    out = (x - mean) / np.sqrt(var + np.float32(kw.get("epsilon", 1e-5)))
    if kw.get("gamma") is not None:
        out = out * _f(kw["gamma"]).reshape(shape)
    if kw.get("beta") is not None:
        out = out + _f(kw["beta"]).reshape(shape)
    return out


@op("instance_norm")
def _instance_norm(kw):
    x = _f(kw["x"])
    axes = tuple(range(2, x.ndim))
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean((x - mean) ** 2, axis=axes, keepdims=True)
    out = (x - mean) / np.sqrt(var + np.float32(kw.get("epsilon", 1e-5)))
    shape = [1, -1] + [1] * (x.ndim - 2)
    if kw.get("gamma") is not None:
        out = out * _f(kw["gamma"]).reshape(shape)
    if kw.get("beta") is not None:
        out = out + _f(kw["beta"]).reshape(shape)
    return out


@op("l2_norm")
def _l2_norm(kw):
    x = _f(kw["x"])
    axes = tuple(range(-3, 0))
    norm = np.sqrt(np.maximum(np.sum(x * x, axis=axes, keepdims=True), np.float32(kw.get("epsilon", 1e-6))))
    return x / norm


# ----------------------------------------------------------------------------- attention


@op("scaled_dot_product_attention")
def _sdpa(kw):
    q, k, v = _f(kw["query"]), _f(kw["key"]), _f(kw["value"])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * np.float32(1.0 / math.sqrt(q.shape[-1]))
    mask = kw.get("attn_mask")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == bool:
            scores = np.where(mask, scores, np.float32(-np.inf))
        else:
            scores = scores + _f(mask)
    m = np.max(scores, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, np.float32(0))
    e = np.exp(scores - m)
    return np.matmul(e / np.sum(e, axis=-1, keepdims=True), v)


# ----------------------------------------------------------------------------- shape manipulation


@op("reshape")
def _reshape(kw):
    x = np.asarray(kw["x"])
    shape = _ints(kw["shape"])
    # a 0 copies the matching input dim, counting from the right (iOS17 rule; equal to the
    # iOS15 same-index rule whenever len(shape) == rank(x))
    offset = len(shape) - x.ndim
    for i, s in enumerate(shape):
        if s == 0:
            j = i - offset
            shape[i] = x.shape[j] if 0 <= j < x.ndim else 1
    return x.reshape(shape)


@op("reshape_like")
def _reshape_like(kw):
    x = np.asarray(kw["x"])
    refs = kw["ref_tensors"]
    begins, ends = _ints(kw["begins"]), _ints(kw["ends"])
    end_masks = [bool(b) for b in np.asarray(kw["end_masks"]).reshape(-1)]
    shape = []
    for ref, b, e, m in zip(refs, begins, ends, end_masks, strict=True):
        s = np.shape(ref)
        shape += list(s[b:] if m else s[b:e])
    return x.reshape(shape)


@op("transpose")
def _transpose(kw):
    return np.transpose(kw["x"], _ints(kw["perm"]))


@op("expand_dims")
def _expand_dims(kw):
    return np.expand_dims(kw["x"], tuple(_ints(kw["axes"])))


@op("squeeze")
def _squeeze(kw):
    x = np.asarray(kw["x"])
    axes = kw.get("axes")
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(_ints(axes)))


@op("flatten2d")
def _flatten2d(kw):
    x = np.asarray(kw["x"])
    axis = _axis(kw.get("axis", 1), x.ndim)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


@op("concat")
def _concat(kw):
    values = [np.asarray(v) for v in kw["values"]]
    if values[0].ndim == 0:  # scalars concatenate into a 1-D tensor (pymil concat type inference)
        values = [v.reshape(1) for v in values]
    axis = _int(kw["axis"])
    if _bool(kw.get("interleave", False)):
        rank = values[0].ndim
        axis = axis % rank
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


@op("stack")
def _stack(kw):
    return np.stack([np.asarray(v) for v in kw["values"]], axis=_int(kw["axis"]))


@op("split")
def _split(kw):
    x = np.asarray(kw["x"])
    axis = _axis(kw["axis"], x.ndim)
    if kw.get("split_sizes") is not None:
        sizes = _ints(kw["split_sizes"])
        return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))
    n = _int(kw["num_splits"])
    return tuple(np.split(x, n, axis=axis))


def _index_slices(x, kw):
    rank = x.ndim
    begin, end = _ints(kw["begin"]), _ints(kw["end"])
    stride = _ints(kw["stride"]) if kw.get("stride") is not None else [1] * rank
    bmask = [bool(b) for b in np.asarray(kw["begin_mask"]).reshape(-1)] if kw.get("begin_mask") is not None else [False] * rank
    emask = [bool(b) for b in np.asarray(kw["end_mask"]).reshape(-1)] if kw.get("end_mask") is not None else [False] * rank
    smask = [bool(b) for b in np.asarray(kw["squeeze_mask"]).reshape(-1)] if kw.get("squeeze_mask") is not None else [False] * rank
    slices = []
    for i in range(rank):
        if smask[i]:
            slices.append(begin[i])  # integer index drops the axis
            continue
        b = None if bmask[i] else begin[i]
        e = None if emask[i] else end[i]
        slices.append(slice(b, e, stride[i]))
    return tuple(slices)


@op("slice_by_index")
def _slice_by_index(kw):
    x = np.asarray(kw["x"])
    return x[_index_slices(x, kw)]


@op("slice_update")
def _slice_update(kw):
    # _in_place: the program's last use of x (MILProgram._plan_frees), so no copy is needed.
    x = kw["x"] if kw.get("_in_place") else np.array(kw["x"], copy=True)
    index = _index_slices(x, kw)
    target = x[index]
    x[index] = np.asarray(kw["update"]).reshape(np.shape(target))
    return x


@op("slice_by_size")
def _slice_by_size(kw):
    x = np.asarray(kw["x"])
    begin, size = _ints(kw["begin"]), _ints(kw["size"])
    index = []
    for i in range(x.ndim):
        b = begin[i] + x.shape[i] if begin[i] < 0 else begin[i]
        index.append(slice(b, None if size[i] == -1 else b + size[i]))
    return x[tuple(index)]


@op("tile")
def _tile(kw):
    return np.tile(kw["x"], _ints(kw["reps"]))


@op("reverse")
def _reverse(kw):
    x = np.asarray(kw["x"])
    axes = kw.get("axes")
    return np.flip(x, axis=None if axes is None else tuple(_ints(axes)))


@op("pad")
def _pad(kw):
    x = np.asarray(kw["x"])
    pad = _ints(kw["pad"])
    n = len(pad) // 2
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = str(kw.get("mode", "constant"))
    if mode == "constant":
        return np.pad(x, widths, constant_values=np.asarray(kw.get("constant_val", 0.0)).item())
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    raise ValueError(f"pad mode {mode!r}")


@op("shape")
def _shape(kw):
    return np.asarray(np.shape(kw["x"]), np.int32)


@op("fill")
def _fill(kw):
    return np.full(_ints(kw["shape"]), np.asarray(kw.get("value", 0.0)))


@op("fill_like")
def _fill_like(kw):
    return np.full(np.shape(kw["ref_tensor"]), np.asarray(kw.get("value", 0.0)))


@op("range_1d")
def _range_1d(kw):
    start, end, step = (np.asarray(kw[k]).item() for k in ("start", "end", "step"))
    return np.arange(start, end, step)


@op("band_part")
def _band_part(kw):
    x = np.asarray(kw["x"])
    lower, upper = _int(kw.get("lower", -1)), _int(kw.get("upper", -1))
    m, n = x.shape[-2:]
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    keep = np.ones((m, n), bool)
    if lower >= 0:
        keep &= (i - j) <= lower
    if upper >= 0:
        keep &= (j - i) <= upper
    return np.where(keep, x, np.zeros((), x.dtype))


@op("select")
def _select(kw):
    return np.where(np.asarray(kw["cond"]).astype(bool), _fl(kw["a"]), _fl(kw["b"]))


@op("one_hot")
def _one_hot(kw):
    idx = np.asarray(kw["indices"]).astype(np.int64)
    depth = _int(kw["one_hot_vector_size"])
    axis = _int(kw.get("axis", -1))
    on, off = np.asarray(kw.get("on_value", 1.0)), np.asarray(kw.get("off_value", 0.0))
    hot = idx[..., None] == np.arange(depth)
    out = np.where(hot, on, off)
    return np.moveaxis(out, -1, axis) if axis != -1 else out


@op("non_zero")
def _non_zero(kw):
    return np.transpose(np.nonzero(kw["x"])).astype(np.int32)


@op("argsort")
def _argsort(kw):
    x = _fl(kw["x"])
    axis = _int(kw.get("axis", -1))
    ascending = _bool(kw.get("ascending", False))
    return np.argsort(x if ascending else -x, axis=axis, kind="stable").astype(np.int32)


@op("topk")
def _topk(kw):
    x = _fl(kw["x"])
    axis = _axis(kw.get("axis", -1), x.ndim)
    k = _int(kw.get("k", 1))
    ascending = _bool(kw.get("ascending", False))
    order = np.argsort(x if ascending else -x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    values = np.take_along_axis(x, idx, axis=axis)
    dtype = DTYPE_STRINGS[str(kw.get("output_indices_dtype", "int32"))]
    return values, idx.astype(dtype)


# ----------------------------------------------------------------------------- gather / scatter


def _wrap(indices, size):
    indices = np.asarray(indices).astype(np.int64)
    return np.where(indices < 0, indices + size, indices)


@op("gather")
def _gather(kw):
    x = np.asarray(kw["x"])
    axis = _axis(kw.get("axis", 0), x.ndim)
    batch_dims = _int(kw.get("batch_dims", 0))
    idx = _wrap(kw["indices"], x.shape[axis])
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    bshape = x.shape[:batch_dims]
    xs = x.reshape((-1,) + x.shape[batch_dims:])
    ids = idx.reshape((-1,) + idx.shape[batch_dims:])
    parts = [np.take(xs[b], ids[b], axis=axis - batch_dims) for b in range(xs.shape[0])]
    out = np.stack(parts)
    return out.reshape(bshape + out.shape[1:])


@op("gather_along_axis")
def _gather_along_axis(kw):
    x = np.asarray(kw["x"])
    axis = _axis(kw.get("axis", 0), x.ndim)
    return np.take_along_axis(x, _wrap(kw["indices"], x.shape[axis]), axis=axis)


@op("gather_nd")
def _gather_nd(kw):
    x = np.asarray(kw["x"])
    idx = np.asarray(kw["indices"]).astype(np.int64)
    batch_dims = _int(kw.get("batch_dims", 0))
    if batch_dims:
        raise NotImplementedError("gather_nd with batch_dims > 0")
    k = idx.shape[-1]
    idx = np.where(idx < 0, idx + np.asarray(x.shape[:k]), idx)
    return x[tuple(idx[..., i] for i in range(k))]


def _scatter_combine(mode):
    return {
        "update": None, "add": np.add, "sub": np.subtract, "mul": np.multiply,
        "div": np.divide, "max": np.maximum, "min": np.minimum,
    }[mode]


@op("scatter")
def _scatter(kw):
    data = np.array(kw["data"], copy=True)
    axis = _axis(kw.get("axis", 0), data.ndim)
    idx = _wrap(kw["indices"], data.shape[axis])
    upd = np.moveaxis(np.asarray(kw["updates"]), axis, 0) if axis else np.asarray(kw["updates"])
    moved = np.moveaxis(data, axis, 0)
    fn = _scatter_combine(str(kw.get("mode", "add")))
    if fn is None:
        moved[idx] = upd
    else:
        fn.at(moved, idx, upd)
    return data


@op("scatter_along_axis")
def _scatter_along_axis(kw):
    data = np.array(kw["data"], copy=True)
    axis = _axis(kw.get("axis", 0), data.ndim)
    idx = _wrap(kw["indices"], data.shape[axis])
    upd = np.asarray(kw["updates"])
    fn = _scatter_combine(str(kw.get("mode", "add")))
    grids = np.indices(idx.shape, sparse=True)
    full = tuple(idx if d == axis else grids[d] for d in range(data.ndim))
    if fn is None:
        data[full] = upd
    else:
        fn.at(data, full, upd)
    return data


@op("scatter_nd")
def _scatter_nd(kw):
    data = np.array(kw["data"], copy=True)
    idx = np.asarray(kw["indices"]).astype(np.int64)
    k = idx.shape[-1]
    idx = np.where(idx < 0, idx + np.asarray(data.shape[:k]), idx)
    full = tuple(idx[..., i] for i in range(k))
    fn = _scatter_combine(str(kw.get("mode", "add")))
    if fn is None:
        data[full] = kw["updates"]
    else:
        fn.at(data, full, kw["updates"])
    return data


# ----------------------------------------------------------------------------- constexpr (compression)


def _scale_like(p, data_shape):
    """Repeat a blockwise parameter (rank == data rank) to the data's shape."""
    p = np.asarray(p)
    for axis, (d, s) in enumerate(zip(data_shape, p.shape, strict=True)):
        if s != d:
            p = np.repeat(p, d // s, axis=axis)
    return p


@op("constexpr_blockwise_shift_scale")
def _blockwise_shift_scale(kw):
    data = np.asarray(kw["data"]).astype(np.float32)
    scale = np.asarray(kw["scale"], np.float32)
    if kw.get("offset") is not None:
        data = data - _scale_like(np.asarray(kw["offset"]).astype(np.float32), data.shape)
    return data * _scale_like(scale, data.shape)


@op("constexpr_lut_to_dense")
def _lut_to_dense(kw):
    lut = np.asarray(kw["lut"])
    indices = np.asarray(kw["indices"])
    if "shape" in kw:  # iOS16: flat packed uint8 indices, 1-D lut, explicit shape
        shape = _ints(kw["shape"])
        nbits = int(round(math.log2(lut.size)))
        count = int(np.prod(shape))
        unpacked = unpack_bits(indices.astype(np.uint8).tobytes(), nbits, count, False)
        return lut.reshape(-1)[unpacked.astype(np.int64)].reshape(shape)
    # iOS18: indices already unpacked (uintN), lut [*blocks, 2^nbits, vector_size]
    rank = indices.ndim
    vector_size = lut.shape[-1]
    vector_axis = kw.get("vector_axis")
    idx = indices.astype(np.int64)
    if vector_size > 1:
        vaxis = _axis(vector_axis, rank)
        idx = np.swapaxes(idx, -1, vaxis)
        lut = np.swapaxes(lut, -3, vaxis)
    # block id of every element (palettes are per block), then pick lut[block, index]
    lead = lut.shape[:rank]
    bid = np.zeros((1,) * rank, np.int64)
    for axis in range(rank):
        per = idx.shape[axis] // lead[axis]
        coord = (np.arange(idx.shape[axis]) // per).reshape([-1 if a == axis else 1 for a in range(rank)])
        bid = bid * lead[axis] + coord
    out = lut.reshape(-1, lut.shape[-2], vector_size)[bid, idx]  # [*idx, vs]
    out = out.reshape(idx.shape[:-1] + (idx.shape[-1] * vector_size,))
    if vector_size > 1:
        out = np.swapaxes(out, -1, _axis(vector_axis, rank))
    return out


@op("constexpr_affine_dequantize")
def _affine_dequantize(kw):
    q = np.asarray(kw["quantized_data"]).astype(np.float32)
    axis = _axis(kw["axis"], q.ndim)

    def expand(p):
        p = np.asarray(p).astype(np.float32)
        if p.ndim == 0:
            return p
        shape = [1] * q.ndim
        shape[axis] = -1
        return p.reshape(shape)

    return (q - expand(kw["zero_point"])) * expand(kw["scale"])


@op("constexpr_cast")
def _constexpr_cast(kw):
    return np.asarray(kw["source_val"]).astype(DTYPE_STRINGS[str(kw["output_dtype"])])


@op("constexpr_sparse_to_dense")
def _sparse_to_dense(kw):
    nonzero = np.asarray(kw["nonzero_data"])
    mask = np.asarray(kw["mask"])
    if "shape" in kw:  # iOS16: packed uint8 bitmask + shape
        shape = _ints(kw["shape"])
        flat = np.zeros(int(np.prod(shape)), nonzero.dtype)
        bits = np.unpackbits(mask.astype(np.uint8), bitorder="little")[: flat.size]
        flat[bits != 0] = nonzero
        return flat.reshape(shape)
    out = np.zeros(mask.shape, nonzero.dtype)
    out[mask != 0] = nonzero
    return out


# States are handled by the executor (they need the state dict), listed here for SUPPORTED_OPS.
STATE_OPS = frozenset({"read_state", "write_state", "coreml_update_state"})
CONST_OPS = frozenset({"const"})
