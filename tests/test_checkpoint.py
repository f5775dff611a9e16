"""Checkpoint loading: layouts we accept, and the clear errors for the ones we refuse."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import edit_json, save_random_checkpoint
from safetensors.torch import load_file, save_file

from exporter.checkpoint import CheckpointError, build_model, load_checkpoint
from exporter.models import MODELS


@pytest.fixture()
def llama_dir(tmp_path, family_checkpoint):
    target = tmp_path / "ckpt"
    shutil.copytree(family_checkpoint("llama", "llama3-rope-tied-gqa2"), target)
    return target


def test_loads_config_tokenizer_and_special_ids(llama_dir):
    ck = load_checkpoint(llama_dir)
    assert ck.model_type == "llama"
    assert ck.spec.num_kv_heads == 2 and ck.spec.rope_scaling.kind == "llama3"
    assert ck.tokenizer.tokenizer_json.name == "tokenizer.json"
    assert ck.bos_token_id == 1 and ck.eos_token_ids == [0]


def test_generation_config_overrides_config_and_accepts_eos_lists(llama_dir):
    edit_json(llama_dir / "generation_config.json", eos_token_id=[2, 3], bos_token_id=4)
    ck = load_checkpoint(llama_dir)
    # generation stops at generation_config's eos ids and at the tokenizer's eos (<|endoftext|>, 0)
    assert ck.bos_token_id == 4 and ck.eos_token_ids == [2, 3, 0]


def test_sharded_checkpoint_loads_identically(tmp_path, family_checkpoint):
    from transformers import AutoModelForCausalLM

    source = family_checkpoint("qwen2", "gqa4-untied")
    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(source).save_pretrained(sharded, max_shard_size="100KB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(source / f, sharded / f)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 1
    a, b = build_model(load_checkpoint(source)), build_model(load_checkpoint(sharded))
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


def test_bf16_weights_are_upcast(llama_dir):
    path = llama_dir / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(path).items()}, path)
    model = build_model(load_checkpoint(llama_dir))
    assert model.embed_tokens.weight.dtype == torch.float32


def test_pickle_only_weights_are_refused_with_a_conversion_hint(llama_dir):
    (llama_dir / "model.safetensors").unlink()
    (llama_dir / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match=r"pickle.*save_pretrained"):
        load_checkpoint(llama_dir)


def test_leftover_tensor_is_an_error(llama_dir):
    path = llama_dir / "model.safetensors"
    tensors = load_file(path)
    tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"not used.*q_proj\.bias"):
        build_model(load_checkpoint(llama_dir))


def test_missing_tensor_is_an_error(llama_dir):
    path = llama_dir / "model.safetensors"
    tensors = load_file(path)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"missing tensors model\.layers\.1\.mlp\.up_proj\.weight"):
        build_model(load_checkpoint(llama_dir))


def test_wrong_shape_names_tensor_and_expected_shape(llama_dir):
    path = llama_dir / "model.safetensors"
    tensors = load_file(path)
    tensors["model.norm.weight"] = torch.ones(63)
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match=r"model\.norm\.weight.*\[63\].*\[64\]"):
        build_model(load_checkpoint(llama_dir))


def test_tied_head_stored_anyway_must_equal_the_embedding(llama_dir):
    path = llama_dir / "model.safetensors"
    tensors = load_file(path)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, path)
    build_model(load_checkpoint(llama_dir))  # identical copy: accepted
    tensors["lm_head.weight"] += 1
    save_file(tensors, path)
    with pytest.raises(CheckpointError, match="differs from the embedding"):
        build_model(load_checkpoint(llama_dir))


@pytest.mark.parametrize(("change", "message"), [
    ({"model_type": "mamba"}, "model_type 'mamba' is not supported"),
    ({"num_attention_heads": 5, "head_dim": None}, "hidden_size .64. is not divisible by num_attention_heads .5."),
    ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads"),
    ({"hidden_size": 0}, "hidden_size must be a positive integer"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "rope type 'yarn' is not supported"),
])
def test_impossible_configs_name_the_field(llama_dir, change, message):
    edit_json(llama_dir / "config.json", **change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(llama_dir)


def test_tokenizer_larger_than_vocab_is_refused(tmp_path):
    config = dict(MODELS["gpt2"].tiny_config, vocab_size=280)
    save_random_checkpoint(tmp_path, config, tokenizer_vocab=280)
    edit_json(tmp_path / "config.json", vocab_size=270)
    with pytest.raises(CheckpointError, match=r"tokenizer has 280 tokens but the model's vocab_size is 270"):
        load_checkpoint(tmp_path)


def test_shard_outside_the_directory_is_refused(llama_dir):
    index = {"metadata": {}, "weight_map": {"model.norm.weight": "../evil.safetensors"}}
    (llama_dir / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        load_checkpoint(llama_dir)


def test_phi3_long_context_rope_is_refused_by_name(tmp_path, family_checkpoint):
    folder = tmp_path / "phi3"
    shutil.copytree(family_checkpoint("phi3", "partial-rotary-half-gqa2"), folder)
    edit_json(folder / "config.json", rope_scaling={"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0]})
    with pytest.raises(CheckpointError, match="rope scaling 'longrope' .* not supported"):
        load_checkpoint(folder)


def test_a_fused_weight_of_the_wrong_size_names_its_parts(tmp_path, family_checkpoint):
    folder = tmp_path / "phi3"
    shutil.copytree(family_checkpoint("phi3", "partial-rotary-half-gqa2"), folder)
    weights = load_file(folder / "model.safetensors")
    name = "model.layers.0.self_attn.qkv_proj.weight"
    weights[name] = weights[name][:-4]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"qkv_proj.weight' has shape \[124, 64\]; the config implies 128 rows "
                                              r"\(64 \+ 32 \+ 32 for layers.0.attn.q_proj.weight"):
        build_model(load_checkpoint(folder))


def test_gpt_neo_attention_types_that_do_not_cover_every_layer_are_refused(tmp_path, family_checkpoint):
    folder = tmp_path / "neo"
    shutil.copytree(family_checkpoint("gpt_neo", "global-local-window-24"), folder)
    edit_json(folder / "config.json", attention_types=[[["global", "local"], 1]])
    with pytest.raises(CheckpointError, match="attention_types gives 2 layers .* expected 4"):
        load_checkpoint(folder)
    checkpoint = load_checkpoint(family_checkpoint("gpt_neo", "global-local-window-24"))
    assert checkpoint.spec.windows() == [None, 24, None, 24] and checkpoint.spec.attention_scale == 1.0


@pytest.mark.parametrize(("family", "case", "change", "message"), [
    ("gptj", "rotary-8-of-16", {"rotary_dim": 7}, "rotary_dim must be an even number up to the head size"),
    ("gptj", "rotary-8-of-16", {"tie_word_embeddings": True}, "its head has a bias"),
    ("gemma3_text", "sliding-global-two-bases", {"final_logit_softcapping": 30.0},
     "final_logit_softcapping=30.0 is not supported"),
    ("gemma3_text", "sliding-global-two-bases", {"attn_logit_softcapping": 50.0},
     "attn_logit_softcapping=50.0 is not supported"),
    ("gemma3_text", "sliding-global-two-bases", {"use_bidirectional_attention": True},
     "use_bidirectional_attention=true"),
    ("gemma3_text", "sliding-global-two-bases", {"layer_types": ["sliding_attention", "full_attention"]},
     "layer_types lists 2 layers .* expected 3"),
    ("gemma3_text", "sliding-global-two-bases", {"rope_parameters": {
        "sliding_attention": {"rope_type": "linear", "factor": 2.0}, "full_attention": {"rope_type": "default"}}},
     "'linear' on sliding_attention layers"),
])
def test_family_configs_it_cannot_build_are_refused_by_field(tmp_path, family_checkpoint, family, case, change,
                                                             message):
    folder = tmp_path / family
    shutil.copytree(family_checkpoint(family, case), folder)
    edit_json(folder / "config.json", **change)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(folder)


def test_gemma3_reads_both_config_spellings_the_same():
    # transformers 5.x writes rope_parameters per layer kind and layer_types; 4.x wrote rope_theta,
    # rope_local_base_freq, rope_scaling (global layers) and sliding_window_pattern.
    from exporter.models.gemma3 import Gemma3Config

    common = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 7,
              "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 32, "sliding_window": 24,
              "query_pre_attn_scalar": 16}
    v5 = Gemma3Config.from_dict({**common, "layer_types": ["sliding_attention"] * 5 + ["full_attention", "sliding_attention"],
                                 "rope_parameters": {
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                     "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}}})
    v4 = Gemma3Config.from_dict({**common, "rope_theta": 1e6, "rope_local_base_freq": 10000.0,
                                 "rope_scaling": {"rope_type": "linear", "factor": 8.0}, "sliding_window_pattern": 6})
    assert v5.to_spec() == v4.to_spec()
    spec = v4.to_spec()
    assert spec.windows() == [24] * 5 + [None, 24]
    assert (spec.rope_theta, spec.local_rope_theta, spec.rope_scaling.factor) == (1e6, 10000.0, 8.0)
    assert spec.attention_scale == 0.25 and spec.embedding_scale == 8.0
