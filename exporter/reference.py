"""The PyTorch fp32 reference: the same decoder and the same static-cache semantics the
artifacts use, in eager mode. Parity compares every artifact against this.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .models import Decoder
from .models.cache import NoCache, StaticKVCache


class ReferenceLM:
    """Prefill/decode through a static KV cache of `max_seq_len` positions (batch 1)."""

    def __init__(self, model: Decoder, max_seq_len: int):
        self.model = model.eval()
        spec = model.spec
        self.max_seq_len = max_seq_len
        self.cache = StaticKVCache(spec.num_layers, spec.num_kv_heads, max_seq_len, spec.head_dim, spec.windows())
        self.length = 0

    def reset(self) -> None:
        self.cache.reset()
        self.length = 0

    @torch.no_grad()
    def forward(self, ids: Sequence[int]) -> torch.Tensor:
        """Feed `ids` at the next positions; returns logits [len(ids), V]."""
        if self.length + len(ids) > self.max_seq_len:
            raise ValueError(f"sequence of {self.length + len(ids)} tokens exceeds the context of {self.max_seq_len}")
        positions = torch.arange(self.length, self.length + len(ids))
        tokens = torch.tensor([list(ids)], dtype=torch.long)
        logits = self.model(tokens, positions[None], self.cache.bind(positions))
        self.length += len(ids)
        return logits[0]

    @torch.no_grad()
    def full_logits(self, ids: Sequence[int]) -> torch.Tensor:
        """All-positions logits in one cache-free pass: [len(ids), V]."""
        tokens = torch.tensor([list(ids)], dtype=torch.long)
        positions = torch.arange(len(ids))[None]
        return self.model(tokens, positions, NoCache(len(ids), sliding_window=self.model.spec.windows()))[0]

    def greedy(self, prompt_ids: Sequence[int], max_new_tokens: int,
               eos_ids: Sequence[int] = ()) -> tuple[list[int], torch.Tensor]:
        """Greedy continuation: (new ids, logits [n, V] that chose each of them)."""
        self.reset()
        logits = self.forward(prompt_ids)[-1]
        new_ids, step_logits = [], []
        budget = min(max_new_tokens, self.max_seq_len - len(prompt_ids))
        for _ in range(budget):
            step_logits.append(logits)
            token = int(logits.argmax())
            new_ids.append(token)
            if token in eos_ids or len(new_ids) == budget:
                break
            logits = self.forward([token])[-1]
        return new_ids, torch.stack(step_logits) if step_logits else torch.empty(0)
