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
    interrupted: bool = False  # Ctrl-C during the reply (interruptible=True)

    @property
    def stop_reason(self) -> str:
        return "stop_token" if self.stopped_at_eos else "interrupted" if self.interrupted else "max_new_tokens"

    @property
    def decode_tokens_per_second(self) -> float:
        steps = max(len(self.generated_ids) - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds > 0 else 0.0


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
            generator: torch.Generator) -> int:
    """One id from the logits: greedy at temperature 0, else from the softmax at that temperature
    restricted to the top_k ids and to the smallest set whose probability reaches top_p."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, -1)
    order = probs.argsort(descending=True)
    ranked = probs[order]
    keep = torch.ones_like(ranked, dtype=torch.bool)
    if top_k:
        keep[top_k:] = False
    if top_p is not None and top_p < 1.0:
        before = ranked.cumsum(0) - ranked  # probability of the ids ranked above each one
        keep &= before < top_p
    ranked = torch.where(keep, ranked, torch.zeros_like(ranked))
    return int(order[torch.multinomial(ranked / ranked.sum(), 1, generator=generator)])


def generate(session, tokenizer, prompt_ids: Sequence[int], max_new_tokens: int, eos_ids: Sequence[int],
             temperature: float = 0.0, seed: int = 0,
             on_text: Callable[[str], None] | None = None, top_k: int | None = None, top_p: float | None = None,
             interruptible: bool = False) -> Generation:
    """Greedy (temperature 0) or sampled generation; `on_text` receives complete characters.
    Generation stops at any of `eos_ids` (the stop ids), whose text is never emitted. With
    `interruptible`, Ctrl-C ends the reply (not the program) and returns what was generated."""
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
    interrupted = False
    try:
        while len(ids) < max_new_tokens:
            token = _sample(logits, temperature, top_k, top_p, generator)
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
    except KeyboardInterrupt:
        if not interruptible:
            raise
        interrupted = True
    return Generation(list(prompt_ids), ids, "".join(pieces), at_eos, prefill, time.perf_counter() - start,
                      interrupted)
