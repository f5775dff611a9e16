"""A numpy reference interpreter for Core ML ML Programs (.mlpackage).

Core ML cannot predict on Linux; this runs a saved .mlpackage's MIL program op by op so the
verify stage and `slm-export run` can execute Core ML artifacts anywhere::

    from exporter.coreml_interp import MILProgram, UnsupportedOpError
    program = MILProgram.load("model.mlpackage", precision="fp16")   # or "fp32"
    state = program.make_state()
    outputs = program.predict({"inputIds": ids, "causalMask": mask}, state=state)

`SUPPORTED_OPS` lists the MIL op types it implements; `program.op_types()` those a program uses.
A program with an op outside SUPPORTED_OPS loads, but `predict` raises UnsupportedOpError.
"""

from .program import SUPPORTED_OPS, MILProgram, UnsupportedOpError

__all__ = ["MILProgram", "SUPPORTED_OPS", "UnsupportedOpError"]
