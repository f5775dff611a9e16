"""MIL shape manipulation: reshape, transpose, concat, slices, pad, fill, select, sort."""

from __future__ import annotations

import numpy as np

from ..values import DTYPE_STRINGS
from .registry import _axis, _bool, _fl, _int, _ints, op

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
