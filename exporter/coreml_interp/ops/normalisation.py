"""MIL layer/instance/l2 normalisation and scaled dot-product attention."""

from __future__ import annotations

import math

import numpy as np

from .registry import _f, _ints, op

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
