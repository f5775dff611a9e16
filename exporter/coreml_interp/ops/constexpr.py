"""MIL constexpr ops: decompressing weights (shift/scale, look-up tables, sparsity)."""

from __future__ import annotations

import math

import numpy as np

from ..values import DTYPE_STRINGS, unpack_bits
from .registry import _axis, _ints, op

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
