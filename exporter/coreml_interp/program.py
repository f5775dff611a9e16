"""Loading a saved .mlpackage and executing its MIL program op by op in numpy.

Design: the interpreter walks the MIL protobuf (``spec.mlProgram``) directly instead of
rebuilding a pymil Program with coremltools' milproto loader. The loader re-runs pymil type
inference and op validation for every op (slow, and it fails on op/opset combinations pymil is
stricter about than the runtime), and it rewrites ``write_state``+``read_state`` pairs into
``coreml_update_state``. Walking the proto keeps exactly what Core ML would execute: op types,
parameter bindings, and the declared output dtypes, which drive fp16 emulation. Only the weight
blob reader (``coremltools.libmilstoragepython._BlobStorageReader``) is borrowed from coremltools.

At load, every op is compiled to a step ``(fn, name refs, output casters)``; constants, constexpr
decompression and any op whose inputs are all constant are evaluated once and cached, so a
predict call only runs the input-dependent ops.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping

import numpy as np
from coremltools.proto import Model_pb2

from ..errors import ExportError
from .ops import CONST_OPS, OPS, STATE_OPS
from .values import DT, RUNTIME_DTYPE, BlobStore, decode_value, dtype_name, tensor_shape

SUPPORTED_OPS = frozenset(OPS) | STATE_OPS | CONST_OPS

# ops that only move or pick values: when every data input already has the output's declared
# dtype, the output needs no rounding (it holds the same, already rounded, values)
_DATA_MOVEMENT = {
    "identity": ("x",), "reshape": ("x",), "expand_dims": ("x",), "squeeze": ("x",), "transpose": ("x",),
    "slice_by_index": ("x",), "slice_by_size": ("x",), "tile": ("x",), "reverse": ("x",), "flatten2d": ("x",),
    "gather": ("x",), "gather_along_axis": ("x",), "gather_nd": ("x",), "split": ("x",),
    "concat": ("values",), "stack": ("values",), "slice_update": ("x", "update"), "select": ("a", "b"),
    "reshape_like": ("x",), "maximum": ("x", "y"), "minimum": ("x", "y"), "relu": ("x",),
}

# parameters that are tuples of tensors (TupleInputType) even when given one element
_TUPLE_PARAMS = {("concat", "values"), ("stack", "values"), ("einsum", "values"), ("reshape_like", "ref_tensors")}


class UnsupportedOpError(ExportError):
    """The program uses a MIL op the interpreter does not implement."""


def _unsupported_message(op_type: str, output: str) -> str:
    return f"op '{op_type}' (output '{output}') is not implemented by the MIL interpreter"


def _find_model_files(path: str) -> tuple[str, str]:
    """-> (model.mlmodel path, weights directory) for an .mlpackage or a bare .mlmodel."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path, os.path.join(os.path.dirname(path), "weights")
    manifest = os.path.join(path, "Manifest.json")
    model = None
    if os.path.exists(manifest):
        data = json.loads(open(manifest).read())
        entries = data.get("itemInfoEntries", {})
        root = entries.get(data.get("rootModelIdentifier", ""), {})
        if root.get("path"):
            model = os.path.join(path, "Data", root["path"])
    if model is None or not os.path.exists(model):
        model = os.path.join(path, "Data", "com.apple.CoreML", "model.mlmodel")
    if not os.path.exists(model):
        raise FileNotFoundError(f"{path}: no Core ML model spec found (expected Data/com.apple.CoreML/model.mlmodel)")
    return model, os.path.join(os.path.dirname(model), "weights")


def _caster(data_type: int, precision: str):
    """Function rounding an op output to the program-declared dtype (see module docstring)."""
    if data_type == DT.FLOAT16 and precision == "fp16":
        return lambda v: np.asarray(v, np.float16).astype(np.float32)
    dtype = RUNTIME_DTYPE.get(data_type)
    if dtype is None:
        return lambda v: v
    if dtype.kind in "iu":
        def cast_int(v, dtype=dtype):
            v = np.asarray(v)
            if v.dtype.kind == "f":
                v = np.trunc(v)
            return v.astype(dtype, copy=False)
        return cast_int
    return lambda v, dtype=dtype: np.asarray(v, dtype)


_THREADPOOLS = []


def _blas_threads(limit: int | None):
    """Context limiting numpy's BLAS threads. Decode-sized matmuls are far slower multi-threaded on
    a busy machine (thread wake-ups, CPU-quota throttling). threadpoolctl is deliberately optional,
    not a declared dependency: without it the limit is skipped (same results, only speed differs)."""
    if limit is None:
        return contextlib.nullcontext()
    if not _THREADPOOLS:
        try:
            from threadpoolctl import ThreadpoolController  # optional, undeclared: no thread limit without it

            _THREADPOOLS.append(ThreadpoolController())
        except ImportError:  # pragma: no cover - optional dependency
            _THREADPOOLS.append(None)
    controller = _THREADPOOLS[0]
    return contextlib.nullcontext() if controller is None else controller.limit(limits=limit, user_api="blas")


class _Step:
    __slots__ = ("fn", "refs", "list_refs", "outs", "casts", "op_type", "label", "kind", "state_name", "frees")

    def __init__(self, **kw):
        self.frees: list[str] = []  # set by MILProgram._plan_frees
        for k, v in kw.items():
            setattr(self, k, v)


class MILProgram:
    """A Core ML ML Program (.mlpackage) executed by a numpy reference interpreter.

    precision="fp16" rounds every op output the program declares fp16 to fp16 (compute happens in
    fp32, then rounds, like a CPU fp16 backend); "fp32" keeps every float in fp32 (int/bool
    dtypes are honoured in both modes). States are dicts name -> ndarray, mutated in place.
    """

    def __init__(self, spec: Model_pb2.Model, weights_dir: str, precision: str = "fp16", function: str = "main"):
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'fp16' or 'fp32', not {precision!r}")
        if spec.WhichOneof("Type") != "mlProgram":
            raise ValueError(f"only ML Program models can be interpreted, this one is {spec.WhichOneof('Type')!r}")
        self.spec = spec
        self.precision = precision
        self.blas_threads: int | None = 1  # None: numpy's default BLAS threading
        program = spec.mlProgram
        if function not in program.functions:
            raise ValueError(f"the program has no function {function!r} (has {sorted(program.functions)})")
        func = program.functions[function]
        self.opset = func.opset
        block = func.block_specializations[func.opset]
        self._blobs = BlobStore(weights_dir)

        self._input_types: dict[str, tuple[int, list]] = {}
        self._state_types: dict[str, tuple[int, list]] = {}
        for nv in func.inputs:
            kind = nv.type.WhichOneof("type")
            if kind == "stateType":
                tt = nv.type.stateType.wrappedType.tensorType
                self._state_types[nv.name] = (tt.dataType, tensor_shape(tt))
            elif kind == "tensorType":
                tt = nv.type.tensorType
                self._input_types[nv.name] = (tt.dataType, tensor_shape(tt))
            else:
                raise ValueError(f"function input {nv.name!r} has unsupported type {kind}")

        desc = spec.description
        self.input_names = [i.name for i in desc.input] or list(self._input_types)
        self.state_names = [s.name for s in desc.state] or list(self._state_types)
        block_outputs = list(block.outputs)
        self.output_names = [o.name for o in desc.output] or block_outputs
        if len(self.output_names) != len(block_outputs):
            raise ValueError("model description and MIL block disagree on the number of outputs")
        self._output_refs = dict(zip(self.output_names, block_outputs, strict=True))
        self._output_types: dict[str, int] = {}

        self._op_types: set[str] = set()
        self._consts: dict[str, object] = {}
        self._steps: list[_Step] = []
        self._unsupported: list[tuple[str, str]] = []
        self._declared: dict[str, int] = {}
        self._compile(block)
        self._plan_frees()
        for name, ref in self._output_refs.items():
            self._output_types[name] = self._declared.get(ref, self._input_types.get(ref, (DT.FLOAT32,))[0])

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, path, precision: str = "fp16", function: str = "main") -> MILProgram:
        model_path, weights_dir = _find_model_files(path)
        spec = Model_pb2.Model()
        with open(model_path, "rb") as f:
            spec.ParseFromString(f.read())
        return cls(spec, weights_dir, precision=precision, function=function)

    def _decode(self, value):
        return decode_value(value, self._blobs)

    def _compile(self, block) -> None:
        imm_count = 0
        for op_spec in block.operations:
            op_type = op_spec.type
            self._op_types.add(op_type)
            outs = [o.name for o in op_spec.outputs]
            label = outs[0] if outs else self._op_name(op_spec)
            for o in op_spec.outputs:
                if o.type.WhichOneof("type") == "tensorType":
                    self._declared[o.name] = o.type.tensorType.dataType
            casts = [_caster(self._declared.get(o, -1), self.precision) for o in outs]

            if op_type == "const":
                value = self._decode(op_spec.attributes["val"])
                self._consts[outs[0]] = casts[0](value) if isinstance(value, np.ndarray) else value
                continue

            if op_spec.blocks or (op_type not in SUPPORTED_OPS):
                self._unsupported.append((op_type, label))
                self._steps.append(_Step(fn=None, refs=[], list_refs=[], outs=outs, casts=casts,
                                         op_type=op_type, label=label, kind="unsupported", state_name=None))
                continue

            # parameters: name bindings refer to earlier values; immediate values become constants
            refs, list_refs = [], []
            for param, argument in op_spec.inputs.items():
                names = []
                for binding in argument.arguments:
                    which = binding.WhichOneof("binding")
                    if which == "name":
                        names.append(binding.name)
                    else:
                        imm_count += 1
                        key = f"__immediate_{imm_count}"
                        self._consts[key] = self._decode(binding.value)
                        names.append(key)
                if len(names) == 1 and (op_type, param) not in _TUPLE_PARAMS:
                    refs.append((param, names[0]))
                else:
                    list_refs.append((param, names))
            for param, value in op_spec.attributes.items():  # iOS16 constexpr ops use attributes
                if param == "name":
                    continue
                imm_count += 1
                key = f"__immediate_{imm_count}"
                self._consts[key] = self._decode(value)
                refs.append((param, key))

            if op_type in STATE_OPS:
                param = "state" if op_type == "coreml_update_state" else "input"
                state_name = dict(refs)[param]
                if state_name not in self._state_types:
                    raise ValueError(f"{op_type} {label!r} refers to {state_name!r}, which is not a state")
                data = [(p, r) for p, r in refs if p in ("data", "value")]
                self._steps.append(_Step(fn=None, refs=data, list_refs=[], outs=outs, casts=casts,
                                         op_type=op_type, label=label, kind=op_type, state_name=state_name))
                continue

            moved = _DATA_MOVEMENT.get(op_type)
            if moved and outs:
                out_types = {self._declared.get(o) for o in outs}
                in_types = {self._value_type(r) for p, r in refs if p in moved}
                in_types |= {self._value_type(r) for p, rs in list_refs if p in moved for r in rs}
                if len(out_types) == 1 and in_types == out_types and None not in out_types:
                    casts = [np.asarray] * len(outs)

            step = _Step(fn=OPS[op_type], refs=refs, list_refs=list_refs, outs=outs, casts=casts,
                         op_type=op_type, label=label, kind="op", state_name=None)
            all_const = all(r in self._consts for _, r in refs) and all(
                r in self._consts for _, rs in list_refs for r in rs)
            if all_const:
                try:
                    self._run_step(step, self._consts)
                    continue
                except Exception:  # leave it to predict, which reports the failing op
                    pass
            self._steps.append(step)

    def _value_type(self, name: str):
        """Declared dtype of a named value (op output or function input); None if unknown."""
        if name in self._declared:
            return self._declared[name]
        if name in self._input_types:
            return self._input_types[name][0]
        return None

    @staticmethod
    def _op_name(op_spec) -> str:
        if "name" in op_spec.attributes:
            strings = op_spec.attributes["name"].immediateValue.tensor.strings.values
            if strings:
                return strings[0]
        return op_spec.type

    # ------------------------------------------------------------------ introspection

    def op_types(self) -> set[str]:
        """The set of MIL op types in the program (including const / constexpr ops)."""
        return set(self._op_types)

    def unsupported_ops(self) -> list[tuple[str, str]]:
        """(op type, output name) of every op the interpreter cannot run, in program order."""
        return list(self._unsupported)

    def input_spec(self) -> dict[str, tuple[str, list]]:
        """name -> (MIL dtype name, declared shape with None for flexible dims)."""
        return {n: (dtype_name(t), list(s)) for n, (t, s) in self._input_types.items()}

    def state_spec(self) -> dict[str, tuple[str, list]]:
        return {n: (dtype_name(t), list(s)) for n, (t, s) in self._state_types.items()}

    # ------------------------------------------------------------------ execution

    def _state_dtype(self, data_type: int):
        if data_type == DT.FLOAT16:
            return np.dtype(np.float16) if self.precision == "fp16" else np.dtype(np.float32)
        return RUNTIME_DTYPE[data_type]

    def make_state(self) -> dict[str, np.ndarray]:
        """Zero-initialised states (fp16 states are float16 arrays in fp16 mode, float32 in fp32 mode)."""
        state = {}
        for name, (data_type, shape) in self._state_types.items():
            if any(d is None for d in shape):
                raise ValueError(f"state {name!r} has a flexible shape {shape}")
            state[name] = np.zeros(shape, self._state_dtype(data_type))
        return state

    def _plan_frees(self) -> None:
        """Each step's `frees`: the values no later step (nor the outputs) reads, dropped from the
        environment after it runs. Besides memory, this lets slice_update write into a dying
        buffer instead of copying it: a KV-cache update per layer copied the whole cache (SmolLM2:
        11.8 MB, 60 times a step, 63% of the interpreter's time)."""
        last: dict[str, int] = {}
        for i, step in enumerate(self._steps):
            for _, r in step.refs:
                last[r] = i
            for _, rs in step.list_refs:
                for r in rs:
                    last[r] = i
        keep = set(self._output_refs.values()) | set(self._consts)
        frees: dict[int, list[str]] = {}
        for ref, i in last.items():
            if ref not in keep:
                frees.setdefault(i, []).append(ref)
        for i, step in enumerate(self._steps):
            step.frees = frees.get(i, [])

    def _run_step(self, step: _Step, env: dict) -> None:
        kw = {p: env[r] for p, r in step.refs}
        for p, rs in step.list_refs:
            kw[p] = [env[r] for r in rs]
        if step.op_type == "slice_update" and step.frees and dict(step.refs).get("x") in step.frees:
            x = kw["x"]
            # Only env and kw hold it (no view of it is alive elsewhere): safe to overwrite.
            if isinstance(x, np.ndarray) and x.flags.owndata and x.flags.writeable and sys.getrefcount(x) <= 4:
                kw["_in_place"] = True
            del x
        result = step.fn(kw)
        outs = step.outs
        if len(outs) == 1:
            env[outs[0]] = step.casts[0](result)
        else:
            for name, cast, value in zip(outs, step.casts, result, strict=True):
                env[name] = cast(value)

    def predict(self, inputs: Mapping[str, np.ndarray], state: dict | None = None) -> dict[str, np.ndarray]:
        """Runs the program. `state` (from make_state) is read and updated in place; without one,
        a fresh zero state is used and dropped."""
        with _blas_threads(self.blas_threads):
            return self._predict(inputs, state)

    def _predict(self, inputs, state):
        if self._unsupported:
            op_type, label = self._unsupported[0]
            raise UnsupportedOpError(_unsupported_message(op_type, label))
        missing = [n for n in self._input_types if n not in inputs]
        unknown = [n for n in inputs if n not in self._input_types]
        if missing or unknown:
            raise ValueError(f"model inputs are {sorted(self._input_types)}; missing {missing}, unknown {unknown}")
        if state is None:
            state = self.make_state()
        missing_states = [n for n in self._state_types if n not in state]
        if missing_states:
            raise ValueError(f"state is missing {missing_states} (use program.make_state())")

        env = dict(self._consts)
        for name, (data_type, shape) in self._input_types.items():
            value = np.asarray(inputs[name])
            if value.ndim != len(shape) or any(d is not None and d != v for d, v in zip(shape, value.shape, strict=True)):
                raise ValueError(f"input {name!r} has shape {value.shape}, the model declares {shape} (None = flexible)")
            env[name] = _caster(data_type, self.precision)(value)

        for step in self._steps:
            try:
                kind = step.kind
                if kind == "op":
                    self._run_step(step, env)
                    for ref in step.frees:
                        env.pop(ref, None)
                elif kind == "read_state":
                    current = state[step.state_name]
                    if current.dtype == np.float16:  # already fp16 values: one converting copy
                        env[step.outs[0]] = current.astype(np.float32)
                    else:
                        env[step.outs[0]] = step.casts[0](np.array(current, copy=True))
                else:  # write_state / coreml_update_state
                    value = env[step.refs[0][1]]
                    target = state[step.state_name]
                    if np.shape(value) != target.shape:
                        raise ValueError(f"writes shape {np.shape(value)} into state of shape {target.shape}")
                    target[...] = value
                    if step.outs:
                        env[step.outs[0]] = step.casts[0](value)
            except UnsupportedOpError:
                raise
            except Exception as e:
                raise ExportError(f"MIL interpreter: op '{step.op_type}' (output '{step.label}') failed: "
                                  f"{type(e).__name__}: {e}") from e

        outputs = {}
        for name, ref in self._output_refs.items():
            value = env[ref]
            data_type = self._output_types[name]
            if data_type == DT.FLOAT16 and self.precision == "fp16":
                value = np.asarray(value, np.float16)
            elif data_type in RUNTIME_DTYPE:
                value = np.asarray(value, RUNTIME_DTYPE[data_type])
            outputs[name] = value
        return outputs
