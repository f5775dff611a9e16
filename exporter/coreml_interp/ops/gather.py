"""MIL gather and scatter."""

from __future__ import annotations

import numpy as np

from .registry import _axis, _int, op

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
