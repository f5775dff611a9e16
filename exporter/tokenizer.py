"""Tokenizer helpers: the pipeline reads tokenizer.json with `tokenizers`, as the device
runtimes do (never transformers' AutoTokenizer, which may substitute a family's own class).

`train_byte_bpe` makes the GPT-2/SmolLM style byte-level BPE used by the built-in student and by
the test checkpoints.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = (EOS_TOKEN, BOS_TOKEN)  # ids 0 and 1


def train_byte_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer (ByteLevel pre-tokenizer and decoder, no normalizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok, directory: Path, model_max_length: int) -> None:
    """tokenizer.json plus the tokenizer_config.json that names bos/eos (HF layout)."""
    directory.mkdir(parents=True, exist_ok=True)
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))
