"""The encoder math (BERT and its students: DistilBERT, TinyBERT, MiniLM; RoBERTa), written once.

An encoder reads a whole text at once: token, position (and segment) embeddings, a LayerNorm,
then post-norm blocks (attention + residual + LayerNorm, MLP + residual + LayerNorm), every token
seeing every other unmasked token. What it returns depends on the task the checkpoint was trained
for (`EncoderSpec.task`), and the task head is part of the exported graph, so every runtime
returns the task's own outputs:

    feature-extraction        embeddings [B, E]  (sentence-transformers pooling: mean / cls / max,
                                                  then L2 normalisation where the checkpoint asks)
    sequence-classification   logits [B, C]
    token-classification      logits [B, T, C]
    question-answering        start_logits [B, T], end_logits [B, T]

forward(input_ids [B,T] int64, attention_mask [B,T] int64, token_type_ids [B,T] int64) with 1 for
a real token and 0 for padding. The norm and MLP are the decoder's (`decoder.LayerNorm`, `MLP`);
the family differences (weight names, head shapes, position offsets) live in bert.py and
distilbert.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .decoder import ACTIVATIONS, MLP, LayerNorm

TASKS = ("feature-extraction", "sequence-classification", "token-classification", "question-answering")
Task = Literal["feature-extraction", "sequence-classification", "token-classification", "question-answering"]
# What each task's graph returns, in order.
TASK_OUTPUTS = {
    "feature-extraction": ("embeddings",),
    "sequence-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
}
# The additive mask value for padding keys: large enough that softmax gives them ~0, small
# enough that fp16 holds it (Core ML) and that scores + mask does not overflow.
MASKED = -1e4


@dataclass(frozen=True)
class Projection:
    """sentence-transformers' Dense module after the pooling: a linear layer and its activation."""

    in_features: int
    out_features: int
    bias: bool = True
    activation: Literal["identity", "tanh"] = "tanh"


@dataclass(frozen=True)
class Pooling:
    """sentence-transformers' Pooling, Dense and Normalize modules (modules.json, 1_Pooling/config.json)."""

    mode: Literal["mean", "cls", "max"] = "mean"
    normalize: bool = False
    source: str = "default"  # where it was read: "sentence-transformers" or "default" (no modules.json)
    projection: Projection | None = None  # part of the graph; the manifest states the result's size only

    def to_json(self) -> dict:
        return {"mode": self.mode, "normalize": self.normalize, "source": self.source}


@dataclass(frozen=True)
class EncoderSpec:
    """Everything the encoder math needs, normalized from a family's HF config."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2  # 0: no segment embedding (DistilBERT)
    norm_eps: float = 1e-12
    activation: str = "gelu"
    # RoBERTa numbers the real tokens' positions from pad_token_id + 1 (padding sits at pad_token_id).
    positions_after_padding_id: bool = False
    task: Task = "feature-extraction"
    labels: tuple[str, ...] = ()  # id2label, in id order (classification tasks)
    # The classification head's shape: "pooler" (BERT: dense + tanh on [CLS], then the classifier),
    # "pre_classifier" (DistilBERT: dense + ReLU on [CLS]), "dense_tanh" (RoBERTa: dense + tanh on
    # <s>, then out_proj).
    classifier: Literal["pooler", "pre_classifier", "dense_tanh"] = "pooler"
    pooling: Pooling = field(default_factory=Pooling)
    pad_token_id: int = 0
    # The longest input the model was trained on (sentence-transformers' max_seq_length; 0: every
    # position the embedding table has). Longer texts are truncated to it.
    max_input_tokens: int = 0
    extra: dict = field(default_factory=dict, compare=False)

    # What the shared loader and the decoder's MLP ask of any spec.
    tie_word_embeddings: bool = False
    mlp: str = "plain"
    mlp_bias: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def outputs(self) -> tuple[str, ...]:
        return TASK_OUTPUTS[self.task]

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
                     "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) is not divisible by num_attention_heads "
                             f"({self.num_heads})")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {self.activation!r} (supported: {', '.join(sorted(ACTIVATIONS))})")
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r} (known: {', '.join(TASKS)})")
        if self.task in ("sequence-classification", "token-classification") and not self.labels:
            raise ValueError(f"a {self.task} model needs its labels (id2label or num_labels)")
        if not (self.norm_eps > 0):
            raise ValueError(f"norm eps must be positive, got {self.norm_eps!r}")

    @property
    def num_parameters(self) -> int:
        e, f = self.hidden_size, self.intermediate_size
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * e + 2 * e
        per_layer = 4 * (e * e + e) + 2 * e * f + f + e + 4 * e
        head = {"feature-extraction": 0, "token-classification": e * self.num_labels + self.num_labels,
                "question-answering": 2 * e + 2,
                "sequence-classification": e * e + e + e * self.num_labels + self.num_labels}[self.task]
        return embeddings + self.num_layers * per_layer + head


class EncoderAttention(nn.Module):
    def __init__(self, spec: EncoderSpec):
        super().__init__()
        e = spec.hidden_size
        self.num_heads, self.head_dim = spec.num_heads, spec.head_dim
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(e, e) for _ in range(4))

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        """x [B,T,E], mask_bias [B,1,1,T] (0 for a real key, MASKED for padding)."""
        b, t, _ = x.shape
        q, k, v = (proj(x).reshape(b, t, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim)) + mask_bias
        attended = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.o_proj(attended.transpose(1, 2).reshape(b, t, -1))


class EncoderBlock(nn.Module):
    """Post-norm: x = norm(x + attention(x)); x = norm(x + mlp(x))."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.attn = EncoderAttention(spec)
        self.attn_norm = LayerNorm(spec.hidden_size, spec.norm_eps)
        self.mlp = MLP(spec)
        self.mlp_norm = LayerNorm(spec.hidden_size, spec.norm_eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x, mask_bias))
        return self.mlp_norm(x + self.mlp(x))


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling, projection: nn.Module | None = None) -> torch.Tensor:
    """sentence-transformers' pooling of hidden [B,T,E] over the real tokens (mask [B,T] float),
    then its Dense module (`projection`) and normalisation where the checkpoint has them."""
    if pooling.mode == "cls":
        pooled = hidden[:, 0]
    elif pooling.mode == "max":
        pooled = (hidden + (1.0 - mask)[..., None] * -1e9).amax(dim=1)
    else:
        summed = (hidden * mask[..., None]).sum(dim=1)
        pooled = summed / mask.sum(dim=1, keepdim=True).clamp(min=1e-9)
    if projection is not None:
        pooled = projection(pooled)
        if pooling.projection.activation == "tanh":
            pooled = torch.tanh(pooled)
    if pooling.normalize:
        # F.normalize's clamp, written out: norm / max(norm, eps).
        pooled = pooled / pooled.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return pooled


class Encoder(nn.Module):
    """The encoder and its task head; see the module docstring for inputs and outputs."""

    def __init__(self, spec: EncoderSpec):
        super().__init__()
        self.spec = spec
        e = spec.hidden_size
        self.embed_tokens = nn.Embedding(spec.vocab_size, e)
        self.embed_positions = nn.Embedding(spec.max_position_embeddings, e)
        if spec.type_vocab_size:
            self.embed_types = nn.Embedding(spec.type_vocab_size, e)
        self.embed_norm = LayerNorm(e, spec.norm_eps)
        self.layers = nn.ModuleList(EncoderBlock(spec) for _ in range(spec.num_layers))
        dense = spec.pooling.projection if spec.task == "feature-extraction" else None
        if dense is not None:
            self.projection = nn.Linear(dense.in_features, dense.out_features, bias=dense.bias)
        if spec.task == "sequence-classification":
            self.pre_classifier = nn.Linear(e, e)
            self.classifier = nn.Linear(e, spec.num_labels)
        elif spec.task == "token-classification":
            self.classifier = nn.Linear(e, spec.num_labels)
        elif spec.task == "question-answering":
            self.qa_outputs = nn.Linear(e, 2)

    def positions(self, attention_mask: torch.Tensor) -> torch.Tensor:
        t = attention_mask.shape[1]
        if self.spec.positions_after_padding_id:
            return torch.cumsum(attention_mask, dim=1) * attention_mask + self.spec.pad_token_id
        return torch.arange(t, device=attention_mask.device)[None].expand_as(attention_mask)

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        x = self.embed_tokens(input_ids) + self.embed_positions(self.positions(attention_mask))
        if self.spec.type_vocab_size:
            types = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            x = x + self.embed_types(types)
        x = self.embed_norm(x)
        mask_bias = ((1.0 - attention_mask.to(x.dtype)) * MASKED)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        hidden = self.hidden_states(input_ids, attention_mask, token_type_ids)
        task = self.spec.task
        if task == "feature-extraction":
            return (pool(hidden, attention_mask.to(hidden.dtype), self.spec.pooling, getattr(self, "projection", None)),)
        if task == "sequence-classification":
            first = self.pre_classifier(hidden[:, 0])
            first = F.relu(first) if self.spec.classifier == "pre_classifier" else torch.tanh(first)
            return (self.classifier(first),)
        if task == "token-classification":
            return (self.classifier(hidden),)
        start, end = self.qa_outputs(hidden).unbind(dim=-1)
        return start, end


def input_names(spec: EncoderSpec) -> tuple[str, ...]:
    """The graph's inputs, in order: token_type_ids only where the model has segments."""
    return ("input_ids", "attention_mask", *(("token_type_ids",) if spec.type_vocab_size else ()))


class EncoderGraph(nn.Module):
    """The encoder with exactly `input_names(spec)` as its inputs (what the runtimes trace)."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.encoder(input_ids, attention_mask, token_type_ids)


class SegmentlessEncoderGraph(EncoderGraph):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        return self.encoder(input_ids, attention_mask)


def graph_of(encoder: Encoder) -> EncoderGraph:
    return (EncoderGraph if encoder.spec.type_vocab_size else SegmentlessEncoderGraph)(encoder).eval()


# The largest batch the exported graphs accept (a phone embeds a handful of passages at a time).
MAX_BATCH = 64


def example_inputs(spec: EncoderSpec, batch: int = 2, tokens: int = 8) -> tuple[torch.Tensor, ...]:
    """Sample inputs for tracing (sizes >= 2: torch.export specialises dimensions of size 0 and 1)."""
    ids = torch.randint(0, spec.vocab_size, (batch, tokens))
    return (ids, torch.ones(batch, tokens, dtype=torch.long), *((torch.zeros_like(ids),) if spec.type_vocab_size else ()))
