"""Memory bandwidth, bytes read per decoded token, and the decode bound they imply.

Decoding one token reads every weight once (batch 1: each matmul is a matrix-vector product)
plus the keys and values cached so far; at these sizes that traffic, not arithmetic, bounds the
speed. So:

    decode bound (tok/s) = read bandwidth (bytes/s) / bytes read per decoded token

Bytes read per decoded token, the model used here:

- weights: the artifact's bytes (a .pte file; an ONNX model's initializers), except that a table
  read only by gather ops with one row per vocabulary entry (the token embedding, when the head
  does not share its storage) counts as the one row a token gathers. A tied head that shares the
  embedding's storage is read whole by the head, so that table counts whole. Graph structure and
  metadata in a .pte (a few KB) count as weights.
- KV cache: 2 (keys, values) x layers x kv_heads x head_dim x 4 bytes (fp32 caches in all four
  artifacts) x the mean context of the timed decode steps. With a P-token prompt and N new
  tokens, prefill yields the first token and decode step j = 1..N-1 attends over P + j
  positions: mean P + N/2. A runtime that reads its whole static cache each step (ours on
  ExecuTorch reads all max_seq_len positions, masked) reads more than this; the bound counts
  what a token needs, not what an implementation reads.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

# ExecuTorch ScalarType -> bytes per element (executorch/exir/scalar_type.py).
_ET_ELEMENT_BYTES = {0: 1, 1: 1, 2: 2, 3: 4, 4: 8, 5: 2, 6: 4, 7: 8, 11: 1, 15: 2}


def measure_bandwidth(threads: int, size_bytes: int = 512 << 20, repeats: int = 5) -> dict[str, Any]:
    """Read bandwidth of `threads` threads streaming a `size_bytes` array (far above any
    last-level cache) with numpy's max, which releases the GIL and is memory-bound. Each thread
    reads its own contiguous slice. Returns the best of `repeats` in bytes/s and every run."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    data = np.ones(size_bytes // 4, dtype=np.float32)  # written once, so every page is resident
    chunks = np.array_split(data, threads)
    runs = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(np.max, chunks))  # warm-up: threads started, TLB warm
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.max, chunks))
            runs.append(data.nbytes / (time.perf_counter() - start))
    return {"threads": threads, "bytes": int(data.nbytes), "bytes_per_s": max(runs), "runs": runs}


def kv_read_bytes(spec, context: float, element_bytes: int = 4) -> float:
    """Keys and values one decoded token reads at `context` cached positions."""
    return 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * element_bytes * context


def mean_decode_context(prompt_tokens: int, new_tokens: int) -> float:
    """Mean positions attended over by the timed decode steps (see the module docstring)."""
    return prompt_tokens + new_tokens / 2


def decode_bound(bytes_per_s: float, bytes_per_token: float) -> float:
    return bytes_per_s / bytes_per_token


def _gathered_table(rows: int, total: int, vocab_size: int) -> bool:
    return rows == vocab_size and total > 0


def pte_weight_bytes(path: Path, vocab_size: int) -> dict[str, Any]:
    """Weights a decoded token reads from a .pte: the file's bytes, less the rows not gathered
    of constant tables used only by embedding ops (aten::embedding, quantized embedding kernels)."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import KernelCall, Tensor

    program = deserialize_pte_binary(path.read_bytes()).program
    plan = next(p for p in program.execution_plan if p.name == "forward")
    users: dict[int, set[str]] = {}
    for chain in plan.chains:
        for instruction in chain.instructions:
            call = instruction.instr_args
            if isinstance(call, KernelCall):
                for arg in call.args:
                    users.setdefault(arg, set()).add(plan.operators[call.op_index].name)
    tables = []
    for index, value in enumerate(plan.values):
        tensor = value.val
        if not (isinstance(tensor, Tensor) and tensor.data_buffer_idx > 0 and tensor.allocation_info is None):
            continue  # not a constant
        ops = users.get(index, set())
        if ops and all("embedding" in op for op in ops) and tensor.sizes:
            size = math.prod(tensor.sizes) * _ET_ELEMENT_BYTES.get(int(tensor.scalar_type), 4)
            if _gathered_table(tensor.sizes[0], size, vocab_size):
                tables.append({"index": index, "shape": list(tensor.sizes), "bytes": size, "ops": sorted(ops)})
    return _weights(path.stat().st_size, tables, "file")


_PASS_THROUGH = {"Reshape", "Transpose", "Cast", "Identity", "Unsqueeze", "Squeeze", "Flatten"}
_GATHER_INPUTS = {"Gather": {0}, "GatherBlockQuantized": {0, 2, 3}}  # data, scales, zero points


def _onnx_tensor_bytes(tensor) -> int:
    import onnx

    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        entries = {e.key: e.value for e in tensor.external_data}
        if "length" in entries:
            return int(entries["length"])
    elif tensor.raw_data:
        return len(tensor.raw_data)
    bits = 4 if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4) else \
        8 * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return math.prod(tensor.dims) * bits // 8


def onnx_weight_bytes(path: Path, vocab_size: int) -> dict[str, Any]:
    """Weights a decoded token reads from an ONNX model: its initializers (and Constant nodes),
    less the rows not gathered of tables used only by Gather/GatherBlockQuantized on axis 0,
    looking through shape-only ops (Reshape, Transpose, ...) between a table and its users."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = value
    consumers: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for position, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, position))

    def uses(name: str):
        for node, position in consumers.get(name, []):
            if node.op_type in _PASS_THROUGH and position == 0:
                yield from uses(node.output[0])
            else:
                yield node, position

    def gathers_rows(node, position: int) -> bool:
        axis_name = "gather_axis" if node.op_type == "GatherBlockQuantized" else "axis"
        axis = next((a.i for a in node.attribute if a.name == axis_name), 0)
        return position in _GATHER_INPUTS.get(node.op_type, ()) and axis == 0

    total, tables = 0, []
    for name, tensor in constants.items():
        size = _onnx_tensor_bytes(tensor)
        total += size
        found = list(uses(name))
        if found and tensor.dims and all(gathers_rows(n, p) for n, p in found) \
                and _gathered_table(tensor.dims[0], size, vocab_size):
            tables.append({"name": name, "shape": list(tensor.dims), "bytes": size,
                           "ops": sorted({n.op_type for n, _ in found})})
    return _weights(total, tables, "initializers")


def _weights(total: int, tables: list[dict[str, Any]], counted: str) -> dict[str, Any]:
    not_read = sum(t["bytes"] - t["bytes"] // t["shape"][0] for t in tables)
    return {"counted": counted, "total_bytes": int(total), "gathered_tables": tables,
            "weight_bytes_per_token": int(total - not_read)}
