"""Token generation over any runtime session, with streaming text that never splits a
character: a byte-level vocabulary can end a token inside a UTF-8 sequence, and printing that
half character is a known crash in mobile apps streaming CJK or emoji. `tokenizers`'
DecodeStream holds such bytes back until the character is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Generation:
    prompt_ids: list[int]
    generated_ids: list[int]
    text: str
    stopped_at_eos: bool
    prefill_seconds: float
    decode_seconds: float

    @property
    def decode_tokens_per_second(self) -> float:
        steps = max(len(self.generated_ids) - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds > 0 else 0.0


def generate(session, tokenizer, prompt_ids: Sequence[int], max_new_tokens: int, eos_ids: Sequence[int],
             temperature: float = 0.0, seed: int = 0,
             on_text: Callable[[str], None] | None = None) -> Generation:
    """Greedy (temperature 0) or sampled generation; `on_text` receives complete characters."""
    import time

    from tokenizers.decoders import DecodeStream

    generator = torch.Generator().manual_seed(seed)
    stream = DecodeStream(skip_special_tokens=True)
    session.reset()
    start = time.perf_counter()
    logits = session.forward(list(prompt_ids))
    prefill = time.perf_counter() - start
    ids: list[int] = []
    pieces: list[str] = []
    at_eos = False
    start = time.perf_counter()
    while len(ids) < max_new_tokens:
        if temperature > 0:
            token = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator))
        else:
            token = int(logits.argmax())
        ids.append(token)
        if token in eos_ids:
            at_eos = True
            break
        piece = stream.step(tokenizer, token)
        if piece:
            pieces.append(piece)
            if on_text:
                on_text(piece)
        if len(ids) < max_new_tokens:
            logits = session.forward([token])
    return Generation(list(prompt_ids), ids, "".join(pieces), at_eos, prefill, time.perf_counter() - start)
