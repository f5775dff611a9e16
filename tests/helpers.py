"""Test checkpoints: random-weight models of every family, saved by transformers itself."""

from __future__ import annotations

import json
from pathlib import Path

from exporter.tokenizer import save_tokenizer, train_byte_bpe

# Text for the tiny test tokenizers: ASCII, code, non-ASCII, so BPE learns some merges.
TOKENIZER_TEXT = [
    "The quick brown fox jumps over the lazy dog. " * 4,
    "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n",
    "Grüße aus Köln — naïve café, 東京 and emoji 🙂 too.",
    "import os, sys\nfor i in range(10):\n    print(i * 2)\n",
]


def save_random_checkpoint(directory: Path, hf_config: dict, seed: int = 0, tokenizer_vocab: int | None = None) -> Path:
    """Builds `hf_config` with transformers (random weights), saves it with save_pretrained,
    and adds a byte-level BPE tokenizer.json. Returns the directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    # The test tokenizers put <|endoftext|> at id 0 and <|im_start|> at id 1 (exporter.tokenizer):
    # the config's ids must agree, or tokenizer parity's bos/eos check rightly fails.
    config = {**hf_config, "bos_token_id": 1, "eos_token_id": 0}
    model_type = config.pop("model_type")
    hf = AutoConfig.for_model(model_type, **config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf)
    # Random init is small enough that logits are nearly flat; scale up so argmax is decisive.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.mul_(4.0 if "embed" in name or "wte" in name or "wpe" in name else 2.0)
            elif "norm" in name and name.endswith("weight"):
                # Norm weights start at their identity (1, or 0 where the norm scales by 1 + w as
                # Gemma's does): move them off it, so a mistaken offset or a swapped norm shows.
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(directory)
    vocab = tokenizer_vocab or hf.vocab_size  # every id the model can emit decodes
    save_tokenizer(train_byte_bpe(TOKENIZER_TEXT, vocab), directory, model_max_length=256)
    return directory


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def byte_level_piece(tokenizer, token_id: int) -> bytes:
    """The bytes one token of a byte-level BPE vocabulary stands for (special tokens as text)."""
    from tokenizers.pre_tokenizers import ByteLevel

    if not hasattr(byte_level_piece, "table"):
        printable = [c for c in ByteLevel.alphabet()]
        # GPT-2's byte<->unicode table: printable bytes map to themselves, the rest to 256+n.
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs, n = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        byte_level_piece.table = {chr(c): b for b, c in zip(bs, cs, strict=True)}
        assert set(printable) == set(byte_level_piece.table)
    token = tokenizer.id_to_token(token_id)
    if token in {t.content for t in tokenizer.get_added_tokens_decoder().values()}:
        return token.encode()
    return bytes(byte_level_piece.table[c] for c in token)


def as_runner_prints(pieces: list[bytes]) -> bytes:
    """What the ExecuTorch runner's safe_printf prints for these pieces: a single-byte piece that
    is neither printable nor whitespace is dropped (isprint/isspace in the C locale)."""
    kept = [p for p in pieces if len(p) != 1 or 32 <= p[0] < 127 or p[0] in b"\t\n\v\f\r "]
    return b"".join(kept)


# Chat templates of three shapes, each kept where a real checkpoint of that shape keeps it:
# ChatML with a default system prompt (SmolLM2, Qwen2.5) in chat_template.jinja; Llama 3, which
# writes BOS itself while its tokenizer's post-processor adds one too, in tokenizer_config.json;
# Gemma, which merges the system prompt into the first user turn, in chat_template.json.
CHAT_STYLES = {
    "chatml": {
        "file": "chat_template.jinja", "tokens": ["<|im_end|>"], "bos": None, "end_of_turn": "<|im_end|>",
        "template": ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                     "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                     "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                     "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                     "{% endif %}"),
    },
    "llama3": {
        "file": "tokenizer_config.json", "tokens": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                                    "<|eot_id|>"],
        "bos": "<|begin_of_text|>", "end_of_turn": "<|eot_id|>",
        "template": ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
                     "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
                     "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    },
    "gemma": {
        "file": "chat_template.json", "tokens": ["<bos>", "<start_of_turn>", "<end_of_turn>"], "bos": "<bos>",
        "end_of_turn": "<end_of_turn>",
        "template": ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = "
                     "messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}"
                     "{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
                     "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
                     "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
                     "{% endif %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
                     "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + "
                     "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
                     "{{ '<start_of_turn>model\n' }}{% endif %}"),
    },
}


def add_chat_template(directory: Path, style: str) -> dict:
    """Gives the checkpoint in `directory` (made with a tokenizer_vocab a few ids below its
    vocab_size) the special tokens and chat template of `style` (CHAT_STYLES). With a BOS of its
    own, the tokenizer's post-processor adds that BOS (as Llama 3's and Gemma's do) and config.json
    names it. Returns the style."""
    from tokenizers import Tokenizer, processors

    spec = CHAT_STYLES[style]
    tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    tok.add_special_tokens(spec["tokens"])
    if spec["bos"]:
        bos = tok.token_to_id(spec["bos"])
        tok.post_processor = processors.TemplateProcessing(single=f"{spec['bos']} $A", pair=f"{spec['bos']} $A $B",
                                                           special_tokens=[(spec["bos"], bos)])
        edit_json(directory / "config.json", bos_token_id=bos)
        if (directory / "generation_config.json").is_file():
            edit_json(directory / "generation_config.json", bos_token_id=bos)
    tok.save(str(directory / "tokenizer.json"))
    changes = {"bos_token": spec["bos"]} if spec["bos"] else {}
    if spec["file"] == "tokenizer_config.json":
        changes["chat_template"] = spec["template"]
    edit_json(directory / "tokenizer_config.json", **changes)
    if spec["file"] == "chat_template.jinja":
        (directory / "chat_template.jinja").write_text(spec["template"])
    elif spec["file"] == "chat_template.json":
        (directory / "chat_template.json").write_text(json.dumps({"chat_template": spec["template"]}))
    return spec


# Special tokens of the test WordPiece tokenizers, in id order: [PAD] first, so pad_token_id 0 is
# BERT's and DistilBERT's; RoBERTa's configs say 1, and its tokenizer puts [PAD] there.
WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ROBERTA_SPECIALS = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]


def save_wordpiece_tokenizer(directory: Path, vocab_size: int, specials: list[str]) -> None:
    """A BERT-style tokenizer.json (lower-casing, accent stripping, CJK split, WordPiece with
    [UNK]; [CLS] A [SEP] B [SEP] with segment ids) trained on the test texts."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    from exporter.encoder_verify import load_texts

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    texts = load_texts()
    corpus = [*TOKENIZER_TEXT, *texts["sentences"], *(q["question"] + " " + q["context"] for q in texts["qa"])]
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
         "mask_token": "[MASK]", "model_max_length": 128, "tokenizer_class": "BertTokenizerFast"}))


ENCODER_HEADS = {"Model": "AutoModel", "ForSequenceClassification": "AutoModelForSequenceClassification",
                 "ForTokenClassification": "AutoModelForTokenClassification",
                 "ForQuestionAnswering": "AutoModelForQuestionAnswering"}


def save_random_encoder(directory: Path, hf_config: dict, seed: int = 0, pooling: dict | None = None) -> Path:
    """A random-weight encoder saved by transformers, of the class its `architectures` names, with
    a WordPiece tokenizer.json; `pooling` ({"mode": "mean", "normalize": True}) adds
    sentence-transformers' modules.json and 1_Pooling/config.json."""
    import torch
    import transformers

    config = dict(hf_config)
    model_type = config.pop("model_type")
    architecture = config["architectures"][0]
    head = next(cls for suffix, cls in ENCODER_HEADS.items() if architecture.endswith(suffix))
    hf = transformers.AutoConfig.for_model(model_type, **config)
    torch.manual_seed(seed)
    model = getattr(transformers, head).from_config(hf)
    with torch.no_grad():  # spread the outputs so argmax and spans are decisive
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.mul_(2.0)
            elif "LayerNorm" in name or "layer_norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(directory)
    save_wordpiece_tokenizer(directory, hf.vocab_size, ROBERTA_SPECIALS if model_type == "roberta" else WORDPIECE_SPECIALS)
    if pooling is not None:
        dense = pooling.get("dense")  # {"out_features": N, "activation": "tanh" | "identity"}
        (directory / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            *([{"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}] if dense else []),
            *([{"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}]
              if pooling.get("normalize") else [])]))
        if dense:
            from safetensors.torch import save_file

            width = hf.hidden_size if model_type != "distilbert" else hf.dim
            (directory / "2_Dense").mkdir(exist_ok=True)
            activation = {"tanh": "torch.nn.modules.activation.Tanh", "identity": "torch.nn.modules.linear.Identity"}
            (directory / "2_Dense" / "config.json").write_text(json.dumps(
                {"in_features": width, "out_features": dense["out_features"], "bias": True,
                 "activation_function": activation[dense["activation"]]}))
            save_file({"linear.weight": torch.randn(dense["out_features"], width) * 0.2,
                       "linear.bias": torch.randn(dense["out_features"]) * 0.1},
                      str(directory / "2_Dense" / "model.safetensors"))
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": hf.hidden_size if model_type != "distilbert" else hf.dim,
            "pooling_mode_cls_token": pooling["mode"] == "cls", "pooling_mode_mean_tokens": pooling["mode"] == "mean",
            "pooling_mode_max_tokens": pooling["mode"] == "max", "pooling_mode_mean_sqrt_len_tokens": False}))
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 96, "do_lower_case": False}))
    return directory
