"""Decoding MIL protobuf values (immediate tensors and weight-blob references) into numpy.

Runtime representation used by the interpreter:

* floating tensors (fp16 / fp32 / fp64) are held as float32 arrays (fp16 values are exactly
  representable; the precision mode decides whether op outputs are rounded back to fp16);
* integer and bool tensors keep their own numpy dtype (sub-byte types are unpacked one element
  per byte: int4 -> int8, uint1..uint6 -> uint8);
* string scalars become ``str``; lists become python lists.
"""

from __future__ import annotations

import os

import numpy as np
from coremltools.proto import MIL_pb2

DT = MIL_pb2.DataType

# proto dataType -> numpy dtype that the interpreter holds values of that type in
RUNTIME_DTYPE = {
    DT.BOOL: np.dtype(bool),
    DT.FLOAT16: np.dtype(np.float32),
    DT.FLOAT32: np.dtype(np.float32),
    DT.FLOAT64: np.dtype(np.float32),
    DT.INT8: np.dtype(np.int8),
    DT.INT16: np.dtype(np.int16),
    DT.INT32: np.dtype(np.int32),
    DT.INT64: np.dtype(np.int64),
    DT.INT4: np.dtype(np.int8),
    DT.UINT8: np.dtype(np.uint8),
    DT.UINT16: np.dtype(np.uint16),
    DT.UINT32: np.dtype(np.uint32),
    DT.UINT64: np.dtype(np.uint64),
    DT.UINT1: np.dtype(np.uint8),
    DT.UINT2: np.dtype(np.uint8),
    DT.UINT3: np.dtype(np.uint8),
    DT.UINT4: np.dtype(np.uint8),
    DT.UINT6: np.dtype(np.uint8),
}

# element types whose immediate values are serialised as raw bytes (coremltools
# types.IMMEDIATE_VALUE_TYPES_IN_BYTES)
_SUB_BYTE_BITS = {DT.INT4: 4, DT.UINT1: 1, DT.UINT2: 2, DT.UINT3: 3, DT.UINT4: 4, DT.UINT6: 6}
_SIGNED_SUB_BYTE = {DT.INT4}
_BYTES_NP = {
    DT.FLOAT16: np.float16, DT.INT8: np.int8, DT.UINT8: np.uint8, DT.UINT32: np.uint32,
    DT.FLOAT32: np.float32, DT.INT32: np.int32, DT.INT16: np.int16, DT.UINT16: np.uint16,
}

# MIL dtype strings (cast / constexpr_cast / topk output_indices_dtype) -> numpy
DTYPE_STRINGS = {
    "bool": np.dtype(bool), "fp16": np.dtype(np.float16), "fp32": np.dtype(np.float32),
    "fp64": np.dtype(np.float64), "int8": np.dtype(np.int8), "int16": np.dtype(np.int16),
    "int32": np.dtype(np.int32), "int64": np.dtype(np.int64), "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16), "uint32": np.dtype(np.uint32), "uint64": np.dtype(np.uint64),
}


def dtype_name(data_type: int) -> str:
    return DT.Name(data_type)


def tensor_shape(tensor_type) -> list[int | None]:
    """Declared shape of a MILSpec.TensorType: ints for fixed dims, None for unknown ones."""
    dims = []
    for d in tensor_type.dimensions:
        dims.append(int(d.constant.size) if d.WhichOneof("dimension") == "constant" else None)
    return dims


def unpack_bits(packed: np.ndarray, nbits: int, count: int, signed: bool) -> np.ndarray:
    """Sub-byte values packed LSB-first (coremltools' pack_elements_into_bits layout)."""
    bits = np.unpackbits(np.frombuffer(packed, np.uint8), bitorder="little")
    need = count * nbits
    if bits.size < need:
        bits = np.concatenate([bits, np.zeros(need - bits.size, np.uint8)])
    bits = bits[:need].reshape(count, nbits).astype(np.int32)
    values = (bits << np.arange(nbits, dtype=np.int32)).sum(axis=1)
    if signed:
        values = np.where(values >= (1 << (nbits - 1)), values - (1 << nbits), values)
        return values.astype(np.int8)
    return values.astype(np.uint8)


class BlobStore:
    """Reads weight blobs by offset with coremltools' MIL storage reader."""

    def __init__(self, weights_dir: str):
        self.weights_dir = weights_dir
        self._readers: dict[str, object] = {}

    def read(self, file_name: str, offset: int, data_type: int) -> np.ndarray:
        from coremltools.libmilstoragepython import _BlobStorageReader

        path = os.path.join(self.weights_dir, file_name.split("/")[-1])
        reader = self._readers.get(path)
        if reader is None:
            if not os.path.exists(path):
                raise FileNotFoundError(f"weight file {path} referenced by the model is missing")
            reader = self._readers[path] = _BlobStorageReader(path)
        method = {
            DT.FLOAT16: "read_fp16_data", DT.FLOAT32: "read_float_data", DT.INT8: "read_int8_data",
            DT.UINT8: "read_uint8_data", DT.INT16: "read_int16_data", DT.UINT16: "read_uint16_data",
            DT.INT32: "read_int32_data", DT.UINT32: "read_uint32_data", DT.INT4: "read_int4_data",
            DT.UINT1: "read_uint1_data", DT.UINT2: "read_uint2_data", DT.UINT3: "read_uint3_data",
            DT.UINT4: "read_uint4_data", DT.UINT6: "read_uint6_data",
        }.get(data_type)
        if method is None:
            raise NotImplementedError(f"weight blobs of type {dtype_name(data_type)} are not supported")
        data = np.asarray(getattr(reader, method)(offset))
        if data_type == DT.FLOAT16:
            data = data.view(np.float16)
        return data


def decode_value(value, blobs: BlobStore):
    """MILSpec.Value -> numpy array (runtime dtype), str, or list."""
    vtype = value.type.WhichOneof("type")
    if vtype == "listType" or value.immediateValue.WhichOneof("value") == "list":
        return [decode_value(v, blobs) for v in value.immediateValue.list.values]
    if vtype != "tensorType":
        raise NotImplementedError(f"MIL values of type {vtype} are not supported")
    ttype = value.type.tensorType
    data_type = ttype.dataType
    shape = tuple(tensor_shape(ttype))
    if any(d is None for d in shape):
        raise ValueError("a constant value has an unknown dimension")
    count = int(np.prod(shape)) if shape else 1
    kind = value.WhichOneof("value")

    if kind == "blobFileValue":
        arr = blobs.read(value.blobFileValue.fileName, value.blobFileValue.offset, data_type)
        arr = arr.reshape(shape)
    else:
        tv = value.immediateValue.tensor
        which = tv.WhichOneof("value")
        if which == "strings":
            strings = list(tv.strings.values)
            return strings[0] if not shape else np.array(strings, dtype=object).reshape(shape)
        if which == "bytes":
            raw = tv.bytes.values
            if data_type in _SUB_BYTE_BITS:
                arr = unpack_bits(raw, _SUB_BYTE_BITS[data_type], count, data_type in _SIGNED_SUB_BYTE)
            elif data_type in _BYTES_NP:
                arr = np.frombuffer(raw, _BYTES_NP[data_type])[:count].copy()
            else:
                raise NotImplementedError(f"byte-encoded immediate of type {dtype_name(data_type)}")
        elif which == "floats":
            arr = np.asarray(tv.floats.values, np.float32)
        elif which == "doubles":
            arr = np.asarray(tv.doubles.values, np.float64)
        elif which == "ints":
            arr = np.asarray(tv.ints.values, np.int64)
        elif which == "longInts":
            arr = np.asarray(tv.longInts.values, np.int64)
        elif which == "bools":
            arr = np.asarray(tv.bools.values, bool)
        else:
            raise NotImplementedError(f"immediate tensor encoding {which!r}")
        arr = arr.reshape(shape)
    if data_type == DT.STRING:
        return arr
    return np.asarray(arr, RUNTIME_DTYPE[data_type])
