"""Core ML artifacts: the stateful .mlpackage contract, and parity through the MIL interpreter
(Apple's Core ML itself on macOS, where open_session picks it)."""

from __future__ import annotations

import collections
import copy
import shutil

import numpy as np
import pytest
import torch
from conftest import FAMILY_CASES

from exporter.checkpoint import build_model, load_checkpoint
from exporter.pipeline import ExportRequest, export
from exporter.recipes import QuantRecipe, Thresholds, load_target
from exporter.reference import ReferenceLM
from exporter.runtimes import coreml
from exporter.student import STUDENT_DIR

MAX_SEQ_LEN = 64


def _emit(checkpoint, out_dir, recipe="fp32", params=None, decoder=None):
    # emit consumes its decoder (frees its weights): a test's own decoder is given as a copy.
    decoder = copy.deepcopy(decoder) if decoder is not None else build_model(checkpoint, MAX_SEQ_LEN)
    return coreml.emit(decoder, QuantRecipe(recipe, params or {}, Thresholds()), MAX_SEQ_LEN,
                       coreml.artifact_metadata(checkpoint, MAX_SEQ_LEN), out_dir)


def test_package_follows_the_swift_transformers_stateful_interface(family_checkpoint, tmp_path):
    import coremltools as ct

    checkpoint = load_checkpoint(family_checkpoint("qwen2", "gqa4-untied"))
    spec = ct.utils.load_spec(str(_emit(checkpoint, tmp_path, "none")))
    description = spec.description
    inputs = {i.name: i for i in description.input}
    assert set(inputs) == {"inputIds", "causalMask"}
    assert inputs["inputIds"].type.multiArrayType.dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
    assert inputs["causalMask"].type.multiArrayType.dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT16
    assert len(inputs["causalMask"].type.multiArrayType.shape) == 4
    (output,) = description.output
    assert output.name == "logits"  # its rank (3) is checked by predicting, below
    s = checkpoint.spec
    states = {st.name: list(st.type.stateType.arrayType.shape) for st in description.state}
    assert states == {name: [s.num_layers, 1, s.num_kv_heads, MAX_SEQ_LEN, s.head_dim]
                      for name in ("keyCache", "valueCache")}
    meta = dict(description.metadata.userDefined)
    assert meta["co.huggingface.exporters.name"] and meta["slm_export.context_length"] == str(MAX_SEQ_LEN)
    assert meta["slm_export.eos_token_ids"] == str(checkpoint.eos_token_ids)
    assert spec.specificationVersion >= 9  # iOS 18: stateful models


@pytest.mark.parametrize("family", sorted(FAMILY_CASES))
def test_interpreter_reproduces_reference_greedy_tokens_fp32(family, family_checkpoint, tmp_path):
    checkpoint = load_checkpoint(family_checkpoint(family, FAMILY_CASES[family][0][0]))
    session = coreml.open_session(_emit(checkpoint, tmp_path), engine="interpreter", precision="fp32")
    ref = ReferenceLM(build_model(checkpoint, MAX_SEQ_LEN), MAX_SEQ_LEN)
    prompt = [t for t in range(3, 30)]  # longer than the mistral case's window
    expected, logits = ref.greedy(prompt, 32)
    top2 = logits.topk(2).values
    ties = (top2[:, 0] - top2[:, 1]) <= 1e-4
    steps = [session.forward(prompt)]
    while len(steps) < len(expected):
        steps.append(session.forward([int(steps[-1].argmax())]))
    got = [int(step.argmax()) for step in steps]
    first_difference = next((i for i, (a, b) in enumerate(zip(got, expected, strict=True)) if a != b), None)
    assert first_difference is None or bool(ties[first_difference]), f"diverged at step {first_difference}"
    if first_difference is None:  # the logits too: a wrong scale can leave random-weight greedy ids unchanged
        assert (torch.stack([torch.as_tensor(step).reshape(-1) for step in steps]) - logits).abs().max() < 1e-3


def test_zero_mask_and_real_causal_mask_give_the_same_logits(family_checkpoint, tmp_path):
    """swift-transformers passes an all-zero causalMask [1,1,1,tokens+1] even at prefill; other
    drivers pass a real causal mask. The model must be right under both."""
    checkpoint = load_checkpoint(family_checkpoint("llama", "llama3-rope-tied-gqa2"))
    path = _emit(checkpoint, tmp_path)
    session = coreml.open_session(path, engine="interpreter", precision="fp32")
    program, ids = session.program, [5, 9, 2, 7, 11, 4]
    ref = ReferenceLM(build_model(checkpoint, MAX_SEQ_LEN), MAX_SEQ_LEN)
    expected = torch.stack([ref.forward([t])[-1] for t in ids])

    def run(mask_for):
        state, end, rows = program.make_state(), 0, []
        for chunk in (ids[:4], ids[4:5], ids[5:]):  # prefill 4, then one at a time
            end += len(chunk)
            out = program.predict({"inputIds": np.asarray([chunk], np.int32), "causalMask": mask_for(len(chunk), end)},
                                  state=state)
            assert out["logits"].shape == (1, len(chunk), checkpoint.spec.vocab_size)
            rows.append(np.asarray(out["logits"], np.float32)[0])
        return torch.from_numpy(np.concatenate(rows))

    zero = run(lambda q, end: np.zeros((1, 1, q, end), np.float16))
    causal = run(lambda q, end: np.triu(np.full((q, end), -np.inf, np.float32), k=end - q + 1)
                 .astype(np.float16)[None, None])
    assert torch.equal(zero, causal)
    assert (zero - expected).abs().max() < 1e-3


def test_planted_fp16_overflow_is_caught_and_fp32_statistics_fix_it(tmp_path):
    """Scale the student's residual stream by 1000 (embedding, o_proj and down_proj together;
    the head untied and left alone): the same function in fp32, but inside an RMSNorm computed
    in fp16 x**2 overflows (|x| > 256), and so does mean(x**2) + eps (the student's largest
    mean(x**2) is ~8.5, so ~8.5e6 here, while max |x| ~ 1e4 still fits fp16): SmolLM2-135M's
    residual stream does this unscaled. Keeping the op types in FP32_STATISTICS fixed only the
    first; keeps_fp32 also keeps the eps add between reduce_mean and rsqrt."""
    checkpoint = load_checkpoint(STUDENT_DIR)
    decoder = build_model(checkpoint, MAX_SEQ_LEN)
    with torch.no_grad():
        decoder.lm_head.weight = torch.nn.Parameter(decoder.embed_tokens.weight.clone())
        decoder.embed_tokens.weight.mul_(1000)
        for layer in decoder.layers:
            layer.attn.o_proj.weight.mul_(1000)
            layer.mlp.down_proj.weight.mul_(1000)
    ids = list(range(3, 20))
    expected = ReferenceLM(build_model(checkpoint, MAX_SEQ_LEN), MAX_SEQ_LEN).forward(ids)[-1]
    assert (ReferenceLM(decoder, MAX_SEQ_LEN).forward(ids)[-1] - expected).abs().max() < 1e-2  # same function

    def kl_after(params, where):
        session = coreml.open_session(_emit(checkpoint, where, "none", params, decoder), engine="interpreter")
        got = session.forward(ids)
        p = torch.log_softmax(expected, -1)
        return float((p.exp() * (p - torch.log_softmax(got.float(), -1))).sum())

    broken = kl_after({"fp32_statistics": False}, tmp_path / "fp16-stats")
    kept = kl_after({}, tmp_path / "fp32-stats")
    thresholds = load_target("ios").formats["coreml"].recipes["none"].thresholds
    assert not broken <= thresholds.kl_mean_max  # NaN or a large KL: parity fails
    assert kept <= thresholds.kl_mean_max


@pytest.mark.slow  # two conversions (25 s); the default suite keeps under 15 minutes
def test_a_residual_stream_past_fp16s_range_is_kept_in_fp32(tmp_path):
    """Gemma 3 270M's residual stream reaches 1.04e5 from layer 11 on, past fp16's 65504, while each
    block's output stays small. Planted here the way Gemma builds it: the student's embedding
    multiplied by a factor (Gemma: sqrt(hidden)) that puts the stream near 2e5, every weight as
    trained. Computed in fp16 the stream overflows to inf and the logits are not finite; kept in
    fp32 (fp32_residual, the default) it gives the fp32 model's logits."""
    import dataclasses

    checkpoint = load_checkpoint(STUDENT_DIR)
    decoder = build_model(checkpoint, MAX_SEQ_LEN)
    factor = 2e5 / float(decoder.embed_tokens.weight.abs().max())
    decoder.spec = dataclasses.replace(decoder.spec, embedding_scale=factor)
    ids = list(range(3, 20))
    assert max(float(peak) for peak in _stream_peaks(decoder, ids)) > 65504
    expected = ReferenceLM(decoder, MAX_SEQ_LEN).forward(ids)[-1]

    def logits(params, where):
        session = coreml.open_session(_emit(checkpoint, where, "none", params, decoder), engine="interpreter")
        return session.forward(ids).float()

    assert not torch.isfinite(logits({"fp32_residual": False}, tmp_path / "fp16-stream")).all()
    kept = logits({}, tmp_path / "fp32-stream")
    p = torch.log_softmax(expected, -1)
    kl = float((p.exp() * (p - torch.log_softmax(kept, -1))).sum())
    assert kl <= load_target("ios").formats["coreml"].recipes["none"].thresholds.kl_mean_max


def _stream_peaks(decoder, ids):
    """The largest |x| of the residual stream after each block, in fp32."""
    from exporter.models.cache import NoCache

    peaks = []
    hooks = [layer.register_forward_hook(lambda m, i, out: peaks.append(out.abs().max())) for layer in decoder.layers]
    try:
        with torch.no_grad():
            decoder(torch.tensor([ids]), torch.arange(len(ids))[None], NoCache(len(ids)))
    finally:
        for hook in hooks:
            hook.remove()
    return peaks


def test_student_fp16_and_int4_pass_their_thresholds(tmp_path):
    target = load_target("ios")
    for recipe in ("none", "int4"):
        (result,) = export(ExportRequest(STUDENT_DIR, tmp_path / recipe, ("ios",), quant=recipe,
                                         formats=("coreml",), max_seq_len=128, bundle=False))
        (parity,) = result.results
        assert parity.passed, parity.failures
        assert parity.metrics["top1"] >= target.formats["coreml"].recipes[recipe].thresholds.top1_min
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize(("recipe", "bytes_per_weight"), [("none", 2.0), pytest.param("int8", 1.0, marks=pytest.mark.slow)])
def test_tied_embedding_is_stored_once(recipe, bytes_per_weight, tmp_path):
    """The gather and the head read one constant (fp16, or compressed once): a second copy of the
    student's table (4096 x 128, 40% of its weights) would show in the weight file."""
    checkpoint = load_checkpoint(STUDENT_DIR)
    package = _emit(checkpoint, tmp_path, recipe)
    weights = sum(f.stat().st_size for f in package.rglob("weight*.bin"))
    spec = checkpoint.spec
    assert spec.tie_word_embeddings
    # per-channel int8 adds a scale per output row; headers and alignment a little more
    assert weights < spec.num_parameters * bytes_per_weight * 1.1 + 64_000
    assert weights > spec.num_parameters * bytes_per_weight * 0.9


@pytest.mark.parametrize("values", [[1.0, -2.5], [65504.0], [65505.0], [-7e4, 1.0], [np.inf, 3.0], [-np.inf],
                                    [1e38], [3e38, 7e4], [np.nan], [np.nan, 7e4], [0.0] * 9 + [7e4]])
def test_frugal_overflow_check_agrees_with_coremltools(values):
    """The fp16 pass coremltools runs and ours differ only in how they test a constant for fp16
    overflow; on the edges (65504, 1e38, infinities, NaN, the last entry of the last chunk) they agree."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.passes.defs.quantization import add_fp16_cast
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    coreml.fp16_precision(lambda op: True)  # registers our pass
    constant = np.asarray(values, dtype=np.float32).reshape(-1, 1)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 1))])
    def program(x):
        return mb.add(x=x, y=constant)

    (add,) = [op for op in program.functions["main"].operations if op.op_type == "add"]
    ours = PASS_REGISTRY["slm_export::add_fp16_cast"]
    assert ours.fp16_overflow(add) == add_fp16_cast().fp16_overflow(add)
    assert coreml._fits_fp16(constant, chunk=3) == coreml._fits_fp16(constant)


def test_frugal_fp16_pass_frees_each_fp32_weight_as_it_folds_it(monkeypatch):
    """A weight only one op reads becomes its fp16 constant while the pass runs, and its fp32
    array is freed then, not when the pipeline ends (at 1B, every fp32 weight beside its fp16
    copy was the Core ML conversion's peak)."""
    import gc
    import weakref

    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    coreml.fp16_precision(lambda op: True)  # registers our pass
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((4, 4)).astype(np.float32) for _ in range(3)]
    alive = [weakref.ref(w) for w in weights]
    expected = [w.astype(np.float16) for w in weights]

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))])
    def program(x):
        for w in weights:
            x = mb.linear(x=x, weight=w)
        return x

    weights.clear()  # the program's constants are now each array's only holder
    ours = PASS_REGISTRY["slm_export::add_fp16_cast"]
    seen = []
    transform = type(ours).transform_op

    def watched(self, op):
        transform(self, op)
        if op.op_type == "linear":
            gc.collect()
            seen.append([ref() is not None for ref in alive])

    monkeypatch.setattr(type(ours), "transform_op", watched)
    ours.op_selector = lambda op: True
    ours.apply(program)
    assert seen == [[False, True, True], [False, False, True], [False, False, False]]
    linears = [op for op in program.functions["main"].operations if op.op_type == "linear"]
    assert all(np.array_equal(op.weight.val, w) for op, w in zip(linears, expected, strict=True))


def _float_ops(mlmodel) -> collections.Counter:
    """The converted program's floating-point ops, each as (type, output dtypes, a constant's
    bytes), counted. Two conversions in one process differ a little in shape handling, whichever
    fp16 pass runs (a shape, a slice op more or fewer): integer ops are left out, and the caller
    compares kinds, not counts, but for `linear`."""
    from coremltools.converters.mil.mil.types import builtin_to_string

    counted = collections.Counter()
    for op in mlmodel._mil_program.functions["main"].operations:
        dtypes = tuple(builtin_to_string(o.dtype) for o in op.outputs)
        if any(d in ("fp16", "fp32") for d in dtypes):
            value = op.outputs[0].val if op.op_type == "const" else None
            counted[(op.op_type, dtypes, None if value is None else np.asarray(value).tobytes())] += 1
    return counted


def test_frugal_fp16_pass_converts_to_the_same_program_as_coremltools(family_checkpoint, monkeypatch):
    """One linear weight planted past fp16's range (so the overflow check keeps that op in fp32):
    the program converted with our fp16 pass (which folds each constant to fp16 as it goes and
    frees the torch weights) has coremltools' own floating-point ops, each constant byte for byte."""
    import coremltools as ct

    checkpoint = load_checkpoint(family_checkpoint("llama", "llama3-rope-tied-gqa2"))

    def converted():
        decoder = build_model(checkpoint, MAX_SEQ_LEN)
        with torch.no_grad():
            decoder.layers[0].mlp.up_proj.weight[0, 0] = 7e4
        return coreml._convert(decoder, MAX_SEQ_LEN, fp32=False)

    ours = _float_ops(converted())

    def coremltools_own(op_selector, release_source=None):
        return {"compute_precision": ct.transform.FP16ComputePrecision(op_selector=op_selector)}

    monkeypatch.setattr(coreml, "fp16_precision", coremltools_own)
    theirs = _float_ops(converted())
    assert ours.keys() == theirs.keys()
    assert ours[("linear", ("fp32",), None)] == theirs[("linear", ("fp32",), None)]
    assert ours[("linear", ("fp16",), None)] == theirs[("linear", ("fp16",), None)]
    assert ours[("linear", ("fp32",), None)] == 1  # the planted one; every other linear is fp16
    assert ours[("linear", ("fp16",), None)] == 7 * checkpoint.spec.num_layers  # q k v o gate up down
