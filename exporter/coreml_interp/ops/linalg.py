"""MIL matmul, linear, einsum, convolution and pooling."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .registry import OPS, _bool, _f, _fl, _int, _ints, op

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
