"""exporter.coreml_interp: the numpy MIL interpreter against torch, on models converted by
coremltools here (Core ML itself cannot run on Linux)."""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

ct = pytest.importorskip("coremltools")

from exporter.coreml_interp import SUPPORTED_OPS, MILProgram, UnsupportedOpError  # noqa: E402

TOL = {"fp32": 1e-5, "fp16": 1e-2}


def convert(module, args, inputs, path, *, fp32, states=(), dynamic_shapes=None, target=None, outputs=None):
    exported = torch.export.export(module.eval(), args, dynamic_shapes=dynamic_shapes).run_decompositions({})
    mlmodel = ct.convert(exported, inputs=inputs, outputs=outputs, states=list(states),
                         minimum_deployment_target=target or ct.target.iOS18, convert_to="mlprogram",
                         compute_precision=ct.precision.FLOAT32 if fp32 else ct.precision.FLOAT16,
                         skip_model_load=True)
    mlmodel.save(str(path))
    return mlmodel


def assert_close(actual, expected, precision):
    actual = np.asarray(actual, np.float32)
    expected = np.asarray(expected, np.float32)
    assert actual.shape == expected.shape
    tol = TOL[precision]
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(1.0, float(np.abs(expected).max())))


def run(path, precision, feeds, state=None):
    program = MILProgram.load(path, precision=precision)
    assert program.op_types() <= SUPPORTED_OPS, program.op_types() - SUPPORTED_OPS
    outputs = program.predict(feeds, state=state)
    return program, [outputs[n] for n in program.output_names]


# ----------------------------------------------------------------------------- models


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.c3 = nn.Conv2d(8, 6, 3, padding="same", dilation=2, bias=False)
        self.c4 = nn.Conv1d(6, 4, 5, stride=2)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        y = F.relu(self.c1(x))
        y = F.silu(self.c2(y))
        y = self.c3(y)
        z = self.c4(y.mean(dim=2))
        return F.avg_pool2d(self.pool(y), 2) + 0.5, torch.sigmoid(z)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln = nn.LayerNorm(16)
        self.up = nn.Linear(16, 48)
        self.down = nn.Linear(48, 16)

    def forward(self, x):
        # (approximate="tanh" is not used: coremltools 9.0 drops that kwarg from an exported
        # program and emits gelu EXACT; the modes are covered by test_gelu_modes)
        h = F.gelu(self.up(self.ln(x)))
        return x + torch.tanh(self.down(h))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(32, 32)
        self.kv = nn.Linear(32, 16)

    def forward(self, x, mask):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, 4, 8).transpose(1, 2)  # [1, 4, t, 8]
        k, v = self.kv(x).view(b, t, 1, 16).transpose(1, 2).split(8, dim=-1)  # one shared kv head
        scores = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5 + mask, dim=-1)  # broadcast over heads
        manual = scores @ v
        fused = F.scaled_dot_product_attention(q, k.expand(b, 4, t, 8), v.expand(b, 4, t, 8), attn_mask=mask)
        return torch.tanh(manual.transpose(1, 2).reshape(b, t, 32)), torch.exp(-fused.abs())


class Slicing(nn.Module):
    def forward(self, x, idx):
        a = x[:, 1:7:2, :]                        # strided slice
        b = x[..., -3:]                           # negative begin
        c = torch.where(a > 0, a, a * 0.1)        # select
        m = x[..., :1] > 0.5                      # boolean mask
        d = x.masked_fill(m, -1.0)
        e = torch.cumsum(x, dim=1)
        g = torch.index_select(x, 1, idx)         # gather with runtime indices
        top_v, top_i = torch.topk(x[0, 0], 3)
        h = torch.clamp(x, -0.5, 0.7) + torch.remainder(x, 0.3) + torch.floor(x * 3) + x.abs() * torch.erf(x)
        s = torch.sin(x) * torch.cos(x) - x * x + torch.maximum(x, -x) / (x.abs() + 1)
        am = torch.argmax(x, dim=-1)
        return c, b * 2, d, e, g, top_v, top_i.to(torch.int32), h, s, am.to(torch.int32)


class Stateful(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("cache", torch.zeros(1, 4, 8, dtype=torch.float16))
        self.proj = nn.Linear(2, 2)

    def forward(self, x):
        self.cache[:, :, 1:3] = self.cache[:, :, 1:3] + self.proj(x).to(torch.float16)
        self.cache[:, :, 5:6] = x[..., :1].to(torch.float16)
        return self.cache.float().sum(-1) * 2


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_conv_net(tmp_path, precision):
    torch.manual_seed(0)
    model, x = ConvNet(), torch.randn(1, 3, 16, 16)
    convert(model, (x,), [ct.TensorType(name="x", shape=x.shape)], tmp_path / "m.mlpackage", fp32=precision == "fp32")
    program, outs = run(tmp_path / "m.mlpackage", precision, {"x": x.numpy()})
    assert {"conv", "max_pool", "avg_pool"} <= program.op_types()
    with torch.no_grad():
        expected = model(x)
    for out, ref in zip(outs, expected, strict=True):
        assert_close(out, ref, precision)
    if precision == "fp16":
        assert outs[0].dtype == np.float16


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_layer_norm_gelu_mlp_flexible_length(tmp_path, precision):
    torch.manual_seed(1)
    model = MLP()
    seq = torch.export.Dim("seq", min=1, max=16)
    convert(model, (torch.randn(1, 5, 16),), [ct.TensorType(name="x", shape=(1, ct.RangeDim(1, 16), 16))],
            tmp_path / "m.mlpackage", fp32=precision == "fp32", dynamic_shapes={"x": {1: seq}})
    program = MILProgram.load(tmp_path / "m.mlpackage", precision=precision)
    assert {"layer_norm", "gelu", "linear"} <= program.op_types()
    for length in (3, 11):  # shapes come from the inputs
        x = torch.randn(1, length, 16)
        (out,) = program.predict({"x": x.numpy()}).values()
        with torch.no_grad():
            assert_close(out, model(x), precision)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_attention_broadcast_matmul_and_sdpa(tmp_path, precision):
    torch.manual_seed(2)
    model, x = Attention(), torch.randn(1, 6, 32)
    mask = torch.triu(torch.full((6, 6), -1e4), 1)[None, None]
    convert(model, (x, mask), [ct.TensorType(name="x", shape=x.shape), ct.TensorType(name="mask", shape=mask.shape)],
            tmp_path / "m.mlpackage", fp32=precision == "fp32")
    program, outs = run(tmp_path / "m.mlpackage", precision, {"x": x.numpy(), "mask": mask.numpy()})
    assert {"matmul", "softmax", "scaled_dot_product_attention"} <= program.op_types()
    with torch.no_grad():
        for out, ref in zip(outs, model(x, mask), strict=True):
            assert_close(out, ref, precision)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_slicing_select_gather_topk(tmp_path, precision):
    torch.manual_seed(3)
    model, x, idx = Slicing(), torch.randn(2, 8, 6), torch.tensor([5, 0, 2], dtype=torch.int32)
    convert(model, (x, idx), [ct.TensorType(name="x", shape=x.shape), ct.TensorType(name="idx", shape=(3,), dtype=np.int32)],
            tmp_path / "m.mlpackage", fp32=precision == "fp32")
    program, outs = run(tmp_path / "m.mlpackage", precision, {"x": x.numpy(), "idx": idx.numpy()})
    assert {"slice_by_index", "select", "gather", "cumsum", "topk"} <= program.op_types()
    with torch.no_grad():
        expected = model(x, idx)
    for i, (out, ref) in enumerate(zip(outs, expected, strict=True)):
        if ref.dtype == torch.int32:
            assert out.dtype == np.int32 and np.array_equal(out, ref.numpy()), i
        elif precision == "fp16" and i == 7:  # floor(x * 3) may land on the other side of an integer in fp16
            assert np.mean(np.abs(np.asarray(out, np.float32) - ref.numpy()) < 0.02) > 0.95
        else:
            assert_close(out, ref, precision)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_state_persists_across_calls(tmp_path, precision):
    torch.manual_seed(4)
    model = Stateful()
    convert(copy.deepcopy(model), (torch.randn(1, 4, 2),),
            [ct.TensorType(name="x", shape=(1, 4, 2))], tmp_path / "m.mlpackage", fp32=precision == "fp32",
            states=[ct.StateType(wrapped_type=ct.TensorType(shape=(1, 4, 8), dtype=np.float16), name="cache")])
    program = MILProgram.load(tmp_path / "m.mlpackage", precision=precision)
    assert program.state_names == ["cache"] and {"read_state", "write_state", "slice_update"} <= program.op_types()
    state = program.make_state()
    assert state["cache"].shape == (1, 4, 8) and not state["cache"].any()
    model.cache.zero_()
    for _ in range(2):
        x = torch.randn(1, 4, 2)
        (out,) = program.predict({"x": x.numpy()}, state=state).values()
        with torch.no_grad():
            ref = model(x)
        assert_close(out, ref, "fp16")  # the state itself is fp16 in the model
        assert_close(state["cache"], model.cache, "fp16")
    assert np.abs(state["cache"][:, :, 1:3]).sum() > 0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gelu_modes(tmp_path, precision):
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(4, 64))], opset_version=ct.target.iOS18)
    def prog(x):
        return (mb.gelu(x=x, mode="EXACT", name="exact"), mb.gelu(x=x, mode="TANH_APPROXIMATION", name="tanh"),
                mb.gelu(x=x, mode="SIGMOID_APPROXIMATION", name="sigmoid"))

    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    ct.convert(prog, minimum_deployment_target=ct.target.iOS18, convert_to="mlprogram", compute_precision=compute,
               skip_model_load=True).save(str(tmp_path / "m.mlpackage"))
    x = torch.linspace(-6, 6, 256).reshape(4, 64)
    _, (exact, tanh, sigmoid) = run(tmp_path / "m.mlpackage", precision, {"x": x.numpy()})
    assert_close(exact, F.gelu(x), precision)
    assert_close(tanh, F.gelu(x, approximate="tanh"), precision)
    assert_close(sigmoid, x * torch.sigmoid(1.702 * x), precision)


def test_unimplemented_op_raises_naming_it(tmp_path):
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 2, 4, 4))], opset_version=ct.target.iOS18)
    def prog(x):
        return mb.upsample_bilinear(x=mb.relu(x=x), scale_factor_height=2.0, scale_factor_width=2.0, name="up")

    mlmodel = ct.convert(prog, minimum_deployment_target=ct.target.iOS18, convert_to="mlprogram", skip_model_load=True)
    mlmodel.save(str(tmp_path / "m.mlpackage"))
    program = MILProgram.load(tmp_path / "m.mlpackage")  # loading never fails on an unknown op
    assert "upsample_bilinear" in program.op_types() and "upsample_bilinear" not in SUPPORTED_OPS
    with pytest.raises(UnsupportedOpError, match=r"op 'upsample_bilinear' \(output 'up\w*'\) is not implemented"):
        program.predict({"x": np.zeros((1, 2, 4, 4), np.float32)})


class TwoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(64, 96)
        self.b = nn.Linear(96, 64)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


COMPRESSIONS = {
    "int4-block32": (lambda cto: cto.linear_quantize_weights, lambda cto: cto.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32), "iOS18",
        "constexpr_blockwise_shift_scale"),
    "int8-affine-iOS16": (lambda cto: cto.linear_quantize_weights, lambda cto: cto.OpLinearQuantizerConfig(
        mode="linear", dtype="int8", granularity="per_channel"), "iOS16", "constexpr_affine_dequantize"),
    "palettize4": (lambda cto: cto.palettize_weights, lambda cto: cto.OpPalettizerConfig(mode="kmeans", nbits=4),
                   "iOS18", "constexpr_lut_to_dense"),
    "palettize4-grouped": (lambda cto: cto.palettize_weights, lambda cto: cto.OpPalettizerConfig(
        mode="kmeans", nbits=4, granularity="per_grouped_channel", group_size=16), "iOS18", "constexpr_lut_to_dense"),
    "palettize4-vector2": (lambda cto: cto.palettize_weights, lambda cto: cto.OpPalettizerConfig(
        mode="kmeans", nbits=4, cluster_dim=2), "iOS18", "constexpr_lut_to_dense"),
    "palettize2-iOS16": (lambda cto: cto.palettize_weights, lambda cto: cto.OpPalettizerConfig(mode="kmeans", nbits=2),
                         "iOS16", "constexpr_lut_to_dense"),
}


@pytest.mark.parametrize("scheme", list(COMPRESSIONS))
def test_compressed_weights_match_coremltools_decompression(tmp_path, scheme):
    import coremltools.optimize.coreml as cto

    compress, op_config, target, constexpr = COMPRESSIONS[scheme]
    torch.manual_seed(5)
    model, x = TwoLinear(), torch.randn(3, 64)
    mlmodel = convert(model, (x,), [ct.TensorType(name="x", shape=x.shape)], tmp_path / "plain.mlpackage", fp32=True,
                      target=getattr(ct.target, target))
    config = cto.OptimizationConfig(global_config=op_config(cto), op_type_configs={"linear": op_config(cto)})
    compressed = compress(cto)(mlmodel, config)
    compressed.save(str(tmp_path / "compressed.mlpackage"))
    cto.decompress_weights(compressed).save(str(tmp_path / "reference.mlpackage"))

    program = MILProgram.load(tmp_path / "compressed.mlpackage", precision="fp32")
    reference = MILProgram.load(tmp_path / "reference.mlpackage", precision="fp32")
    assert constexpr in program.op_types() and not any(t.startswith("constexpr_") for t in reference.op_types())
    # every decompressed constant equals coremltools' own decompression of it
    compared = 0
    for name, value in program._consts.items():
        if name in reference._consts and name in program._declared and not name.startswith("__"):
            np.testing.assert_allclose(value, reference._consts[name], rtol=1e-6, atol=1e-7, err_msg=name)
            compared += 1
    assert compared >= 2
    (out,) = program.predict({"x": x.numpy()}).values()
    (ref,) = reference.predict({"x": x.numpy()}).values()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # and stays near the uncompressed torch model
        expected = model(x).numpy()
    assert np.corrcoef(out.ravel(), expected.ravel())[0, 1] > 0.9


def test_student_llm_runs_and_decodes_fast(tmp_path):
    coreml = pytest.importorskip("exporter.runtimes.coreml")
    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.recipes import QuantRecipe, Thresholds
    from exporter.student import STUDENT_DIR

    checkpoint = load_checkpoint(STUDENT_DIR)
    path = coreml.emit(build_model(checkpoint, 128), QuantRecipe("none", {}, Thresholds()), 128, {}, tmp_path)
    decoder = build_model(checkpoint, 128)  # emit consumed its own
    program = MILProgram.load(path)
    assert program.op_types() <= SUPPORTED_OPS, program.op_types() - SUPPORTED_OPS
    assert program.state_names == ["keyCache", "valueCache"]

    reference = coreml.CoreMLDecoder(decoder, 128).eval()
    session = coreml.Session(path, "interpreter")
    ids, length, times = [1, 5, 9, 20, 33, 7], 0, []
    for step in range(8):
        end = length + len(ids)
        with torch.no_grad():
            expected = reference(torch.tensor([ids], dtype=torch.int32),
                                 torch.zeros(1, 1, len(ids), end, dtype=torch.float16))[0, -1].float()
        start = time.perf_counter()
        logits = session.forward(ids)
        times.append(time.perf_counter() - start)
        length = end
        assert F.cosine_similarity(logits, expected, dim=0) > 0.999, step
        assert int(logits.argmax()) == int(expected.argmax()), step
        ids = [int(expected.argmax())]
    assert np.median(times[1:]) < 0.1  # ~15 ms on a laptop core; generous for shared CI machines
