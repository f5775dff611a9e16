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
