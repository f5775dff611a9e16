"""Chat models: template sources, the sandbox, the portable form against Jinja and transformers,
stop ids, double-BOS detection, and (`slow`: exports, about 3 minutes) a chat export run through
each runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CHAT_STYLES, add_chat_template, edit_json, save_random_checkpoint

from exporter.chat import (
    TEST_CONVERSATIONS,
    ChatTemplateError,
    check_manifest_chat,
    compile_template,
    derive_portable,
    read_chat_template,
)
from exporter.checkpoint import load_checkpoint
from exporter.tokenizer_parity import check_chat_prompts

TINY_LLAMA = {"model_type": "llama", "vocab_size": 320, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def chat_checkpoint(tmp_path_factory):
    """chat_checkpoint(style) -> a random-weight llama with that CHAT_STYLES template (cached)."""
    made: dict[str, Path] = {}

    def make(style: str) -> Path:
        if style not in made:
            directory = tmp_path_factory.mktemp(f"chat-{style}")
            save_random_checkpoint(directory, TINY_LLAMA, tokenizer_vocab=312)
            add_chat_template(directory, style)
            made[style] = directory
        return made[style]

    return make


def _transformers_render(folder: Path, template: str, messages, add_generation_prompt: bool):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    # chat_template.json is a processor's file that AutoTokenizer does not read: pass the template
    kwargs = {"chat_template": template}
    text = tok.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs)
    ids = tok.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=True, **kwargs)
    return text, list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@pytest.mark.parametrize("style", sorted(CHAT_STYLES))
def test_each_template_source_is_read_and_renders_as_transformers(chat_checkpoint, style):
    folder = chat_checkpoint(style)
    checkpoint = load_checkpoint(folder)
    chat = checkpoint.chat
    assert chat.source == CHAT_STYLES[style]["file"] and chat.template == CHAT_STYLES[style]["template"]
    rendered = [v for v in chat.vectors if "text" in v]
    assert len(rendered) == 2 * len(TEST_CONVERSATIONS)  # every test conversation, with and without a prompt
    for vector in rendered:
        assert (vector["text"], vector["ids"]) == _transformers_render(folder, chat.template, vector["messages"],
                                                                       vector["add_generation_prompt"]), vector["name"]


def test_named_template_list_uses_default_and_a_list_without_one_is_refused(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "tool_use", "template": "tools"}, {"name": "default", "template": "plain"}]}))
    assert read_chat_template(tmp_path) == ("plain", "tokenizer_config.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [{"name": "rag", "template": "x"}]}))
    with pytest.raises(ChatTemplateError, match='without a "default"'):
        read_chat_template(tmp_path)
    (tmp_path / "chat_template.jinja").write_text("jinja wins")  # transformers prefers the .jinja file
    assert read_chat_template(tmp_path) == ("jinja wins", "chat_template.jinja")


@pytest.mark.parametrize("escape", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{% set ns = namespace(_hidden=1) %}{{ ns._hidden }}",
    "{{ messages.append({'role': 'user', 'content': 'x'}) }}",  # the sandbox is immutable
    "{{ raise_exception.__globals__['__builtins__'] }}",
])
def test_the_sandbox_refuses_escapes(chat_checkpoint, tmp_path, escape):
    import jinja2

    render = compile_template(escape)
    with pytest.raises(jinja2.exceptions.SecurityError):
        render([{"role": "user", "content": "hi"}], True)
    folder = tmp_path / "ckpt"
    shutil.copytree(chat_checkpoint("chatml"), folder)
    (folder / "chat_template.jinja").write_text(escape)
    with pytest.raises(ChatTemplateError, match="chat_template.jinja: the template fails"):
        load_checkpoint(folder)


def test_a_syntax_error_names_the_file_and_line(chat_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(chat_checkpoint("chatml"), folder)
    (folder / "chat_template.jinja").write_text("{% for m in messages %}\n{{ m.content }")
    with pytest.raises(ChatTemplateError, match=r"chat_template.jinja: not a valid Jinja template \(.* at line 2\)"):
        load_checkpoint(folder)


@pytest.mark.parametrize("style", sorted(CHAT_STYLES))
def test_portable_form_renders_every_test_conversation_as_jinja(chat_checkpoint, style):
    chat = load_checkpoint(chat_checkpoint(style)).chat
    assert chat.portable is not None
    for vector in chat.vectors:
        if "text" in vector and all(m["role"] in chat.portable.roles for m in vector["messages"]):
            assert chat.portable.render(vector["messages"], vector["add_generation_prompt"]) == vector["text"]
    assert chat.end_of_turn == CHAT_STYLES[style]["end_of_turn"]
    assert check_manifest_chat(chat.to_manifest()) == []


def test_what_the_portable_form_cannot_express_is_reported(chat_checkpoint):
    chat = load_checkpoint(chat_checkpoint("gemma")).chat
    # Gemma writes the system prompt into the first user turn: no system role, said so
    assert "system" not in chat.portable.roles
    assert chat.unsupported == ["system messages (the template does not render them as their own turn)"]
    assert load_checkpoint(chat_checkpoint("chatml")).chat.portable.default_system.startswith("You are a helpful")

    upper = compile_template("{% for m in messages %}<{{ m.role }}>{{ m.content | upper }}</s>{% endfor %}")
    portable, unsupported = derive_portable(lambda messages, add=False: upper(messages, add))
    assert portable is None and any("renders differently" in u for u in unsupported), unsupported


def test_a_system_turn_the_portable_form_gets_wrong_is_dropped_not_approximated():
    template = ("{% for m in messages %}<{{ m.role }}>{% if m.role == 'system' %}{{ m.content | upper }}"
                "{% else %}{{ m.content }}{% endif %}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    render = compile_template(template)
    portable, unsupported = derive_portable(lambda messages, add=False: render(messages, add))
    assert portable is not None and "system" not in portable.roles  # user and assistant turns still work
    assert len(unsupported) == 1 and unsupported[0].startswith("system messages (conversation 'system and user'")
    for _, messages in TEST_CONVERSATIONS:
        if all(m["role"] != "system" for m in messages):
            assert portable.render(messages, True) == render(messages, True)


def test_stop_ids_hold_eos_and_end_of_turn(chat_checkpoint):
    for style, spec in CHAT_STYLES.items():
        checkpoint = load_checkpoint(chat_checkpoint(style))
        tokenizer_json = json.loads((chat_checkpoint(style) / "tokenizer.json").read_text())
        added = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
        assert checkpoint.eos_token_ids == [added["<|endoftext|>"], added[spec["end_of_turn"]]], style
        assert checkpoint.chat.stop_token_ids == checkpoint.eos_token_ids


def test_double_bos_is_detected_for_each_device_tokenizer(chat_checkpoint):
    folder = chat_checkpoint("llama3")  # the template writes <|begin_of_text|>; the post-processor adds it too
    chat = load_checkpoint(folder).chat.to_manifest()
    assert chat["bos_in_template"] and check_chat_prompts(folder / "tokenizer.json", chat) == []
    wrong = {**chat, "bos_added_by_runtime": 1, "add_special_tokens": True}  # what a completion prompt does
    problems = check_chat_prompts(folder / "tokenizer.json", wrong)
    assert len(problems) == 2 and all("double BOS, the runtime adds BOS 312" in p for p in problems), problems
    assert problems[0].startswith("executorch") and problems[1].startswith("onnxruntime-genai")


def test_special_tokens_in_chat_prompts_are_single_ids_on_every_device_tokenizer(chat_checkpoint, tmp_path):
    folder = chat_checkpoint("chatml")
    chat = load_checkpoint(folder).chat.to_manifest()
    assert check_chat_prompts(folder / "tokenizer.json", chat) == []
    # a device tokenizer.json that lost <|im_end|> as an added token splits it into pieces: caught
    broken = tmp_path / "tokenizer.json"
    data = json.loads((folder / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<|im_end|>"]
    broken.write_text(json.dumps(data))
    problems = check_chat_prompts(folder / "tokenizer.json", chat, device_tokenizer_json=broken)
    assert problems and problems[0].startswith("executorch") and "first difference at token" in problems[0]


def test_generation_defaults_come_from_generation_config(chat_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(chat_checkpoint("chatml"), folder)
    edit_json(folder / "generation_config.json", temperature=0.6, top_p=0.9, top_k=40, repetition_penalty=1.1,
              max_new_tokens=200, do_sample=True)
    assert load_checkpoint(folder).chat.generation == {"temperature": 0.6, "top_p": 0.9, "top_k": 40,
                                                        "repetition_penalty": 1.1, "max_new_tokens": 200}


def _slm(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def chat_bundle(chat_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("chat-out")
    done = _slm("--target", "android", "--model", str(chat_checkpoint("llama3")), "--out", str(out), "--no-bundle",
                "--quant", "none")
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "android"


@pytest.mark.slow
def test_chat_export_ships_template_stop_ids_and_a_chat_self_test(chat_checkpoint, chat_bundle):
    from exporter.runtimes import runtime

    manifest = json.loads((chat_bundle / "manifest.json").read_text())
    checkpoint = load_checkpoint(chat_checkpoint("llama3"))
    assert manifest["chat"] == checkpoint.chat.to_manifest()
    stop = set(checkpoint.eos_token_ids)
    for artifact in manifest["artifacts"]:
        meta = runtime(artifact["format"]).read_metadata(chat_bundle / artifact["path"])
        assert set(meta["eos_ids"]) == stop, artifact["format"]  # .pte get_eos_ids, genai_config eos_token_id
        chat_case = next(c for c in artifact["self_test"]["cases"] if c["name"].startswith("chat: "))
        vector = next(v for v in manifest["chat"]["vectors"] if v["name"] == "one user turn" and v["add_generation_prompt"])
        assert chat_case["prompt_ids"] == vector["ids"]
    genai = json.loads((chat_bundle / "onnx" / "genai_config.json").read_text())
    assert set(genai["model"]["eos_token_id"]) == stop


@pytest.fixture(scope="module")
def chat_coreml_bundle(chat_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("chat-out-ios")
    done = _slm("--target", "ios", "--formats", "coreml", "--model", str(chat_checkpoint("llama3")), "--out", str(out),
                "--no-bundle", "--quant", "fp32")
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "ios"


@pytest.mark.slow  # a Core ML conversion and the MIL interpreter's parity run: minutes on 2 cores
def test_the_coreml_artifact_stops_at_every_stop_id(chat_checkpoint, chat_coreml_bundle):
    from exporter.runtimes import runtime

    manifest = json.loads((chat_coreml_bundle / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    meta = runtime("coreml").read_metadata(chat_coreml_bundle / artifact["path"])
    assert set(meta["eos_ids"]) == set(load_checkpoint(chat_checkpoint("llama3")).eos_token_ids) == \
        set(manifest["chat"]["stop_token_ids"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["executorch", "onnx", "coreml"])
def test_run_chat_feeds_apply_chat_template_ids(chat_checkpoint, chat_bundle, request, fmt):
    bundle = request.getfixturevalue("chat_coreml_bundle") if fmt == "coreml" else chat_bundle
    done = _slm("run", str(bundle), "--chat", "--prompt", "What is the capital of France?", "--system",
                "Be brief.", "--json", "--format", fmt, "--max-new-tokens", "4")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]
    template = CHAT_STYLES["llama3"]["template"]
    assert result["prompt_ids"] == _transformers_render(chat_checkpoint("llama3"), template, messages, True)[1]
    assert result["stop_reason"] in ("stop_token", "max_new_tokens") and result["format"] == fmt


@pytest.mark.slow
def test_run_chat_on_a_base_model_is_a_clear_error(chat_bundle, tmp_path):
    bundle = tmp_path / "base"
    shutil.copytree(chat_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["chat"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    done = _slm("run", str(bundle), "--chat", "--prompt", "hi")
    assert done.returncode == 2 and "no chat template (a base model)" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_verify_catches_an_edited_chat_template(chat_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(chat_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["chat"]["portable"]["roles"]["user"]["suffix"] = "<|eot_id|>\n"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    done = _slm("verify", str(bundle))
    assert done.returncode == 1 and "the portable form renders other text than the template" in done.stderr, \
        done.stderr[-2000:]


def test_the_apps_chat_vectors_are_what_the_exporter_writes(tmp_path):
    from chat_vectors import FIXTURES, chat_sections

    expected = chat_sections(tmp_path)
    for fixture in FIXTURES:
        assert fixture.read_text(encoding="utf-8") == expected, f"{fixture} is stale: run python tests/chat_vectors.py"


@pytest.mark.slow
def test_interactive_chat_keeps_history_and_resets(chat_bundle):
    done = subprocess.run([sys.executable, "-m", "exporter", "run", str(chat_bundle), "--chat", "--format", "onnx",
                           "--max-new-tokens", "3"], input="Hi there\nAnd again\n/reset\nHello\n/quit\n",
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("bot> ") == 3 and done.stderr.count("[history cleared]") == 1


@pytest.mark.slow
def test_ctrl_c_ends_the_reply_not_the_session(chat_bundle):
    from exporter.generate import generate
    from exporter.runner import Conversation, open_for_run

    target = open_for_run(chat_bundle, "onnx", None)
    conversation = Conversation(target.chat, target.tokenizer, target.max_seq_len)
    conversation.turns.append({"role": "user", "content": "Count to ten."})
    ids, dropped = conversation.prompt_ids(8)
    assert dropped == 0
    pieces = []

    def interrupt_after_one(text):  # what SIGINT does while a reply streams
        pieces.append(text)
        raise KeyboardInterrupt

    result = generate(target.session, target.tokenizer, ids, 8, target.eos_ids, on_text=interrupt_after_one,
                      interruptible=True)
    assert result.stop_reason == "interrupted" and len(result.generated_ids) == 1 and result.text == "".join(pieces)
    with pytest.raises(KeyboardInterrupt):  # outside a chat session, Ctrl-C still stops the program
        generate(target.session, target.tokenizer, ids, 8, target.eos_ids, on_text=interrupt_after_one)


@pytest.mark.slow
def test_history_is_trimmed_to_fit_the_context(chat_bundle):
    from exporter.runner import Conversation, open_for_run

    target = open_for_run(chat_bundle, "onnx", None)
    conversation = Conversation(target.chat, target.tokenizer, target.max_seq_len, system="Be brief.")
    for i in range(40):
        conversation.turns += [{"role": "user", "content": f"Question {i} about the quick brown fox?"},
                               {"role": "assistant", "content": f"Answer {i} about the lazy dog."}]
    conversation.turns.append({"role": "user", "content": "Last question?"})
    ids, dropped = conversation.prompt_ids(64)
    assert dropped > 0 and len(ids) + 64 <= target.max_seq_len
    assert conversation.messages()[0] == {"role": "system", "content": "Be brief."}
    assert conversation.turns[0]["role"] == "user" and conversation.turns[-1]["content"] == "Last question?"
