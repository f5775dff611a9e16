"""Encoder parity: every artifact against the fp32 PyTorch reference, per task.

The inputs are fixed texts the package ships (exporter/data/encoder_texts.json): paraphrase
pairs in several domains and languages, question/passage pairs, and one text longer than any
input limit. They are tokenized once (tokenizers, tokenizer.json with its post-processor,
truncated to the model's input limit), grouped into batches of different lengths, right-padded
(attention mask 0), so every artifact sees padding and truncation as an app's batch would. A
runtime whose graph takes one text at a time (ExecuTorch's) gets each row alone, still padded to
its batch's length.

What is compared, per task:

    feature-extraction       cosine of each text's embedding to the reference's (minimum, mean),
                             and nearest-neighbour agreement: for each text, the other text most
                             similar to it, by the artifact's embeddings and by the reference's
    sequence-classification  label agreement (argmax) and the largest logit error
    token-classification     label agreement over real tokens and the largest logit error
    question-answering       exact span match (the best span, start <= end <= start + 30, inside
                             the passage) and the largest start/end logit error
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch

from .recipes import EncoderThresholds

# Texts per padded batch: lengths differ inside a batch, so padding is always exercised.
BATCH = 8
# The longest answer span considered (tokens), as in transformers' question-answering pipeline.
MAX_ANSWER_TOKENS = 30


def load_texts() -> dict[str, Any]:
    return json.loads((resources.files("exporter") / "data" / "encoder_texts.json").read_text(encoding="utf-8"))


@dataclass
class EncoderCase:
    """One tokenized input: ids, segment ids and, for a question/passage pair, where the passage is."""

    name: str
    ids: list[int]
    type_ids: list[int]
    passage: tuple[int, int] | None = None  # [first, last] token of the passage (question answering)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ids": self.ids, "type_ids": self.type_ids,
                **({"passage": list(self.passage)} if self.passage else {})}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> EncoderCase:
        return cls(raw["name"], raw["ids"], raw["type_ids"], tuple(raw["passage"]) if raw.get("passage") else None)


def tokenizer_for(tokenizer_json, max_tokens: int):
    """tokenizer.json as the apps use it: its post-processor ([CLS] ... [SEP]), no padding (the
    checkpoint's file may pad to a fixed length), truncated to the model's input limit."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_tokens)
    return tokenizer


# What a WordPiece or BPE tokenizer on the phone most often gets wrong: case and accents, CJK
# (split per character by BERT's pre-tokenizer), characters outside the vocabulary ([UNK]),
# punctuation runs, digits, and a text past the input limit (truncation).
TOKENIZER_CASES = (
    "Hello, World! HELLO world.",
    "Café déjà vu: naïve façades in São Paulo, Ångström, Müller, Straße.",
    "東京は日本の首都です。北京和上海",
    "Emoji 🙂🚀 and rare glyphs ꙮ ᚠᛇᚻ",
    "Numbers 0123456789, prices $3.50 & 100%; mail a.b@c.org?! (yes) [no] <maybe>",
    "don't can't won't it's y'all",
    "  leading and trailing spaces   and\ttabs\nnewlines  ",
    "def tokenize(text: str) -> list[str]: return text.split()",
)


def encoder_tokenizer_vectors(tokenizer_json, max_tokens: int, texts=None) -> list[dict[str, Any]]:
    """[{"text", "ids"}] as the app must encode them (post-processor, no padding, truncated to
    `max_tokens`): the manifest's tokenizer.self_test for an encoder bundle."""
    tokenizer = tokenizer_for(tokenizer_json, max_tokens)
    chosen = list(texts) if texts is not None else [*TOKENIZER_CASES, load_texts()["long_text"]]
    return [{"text": t, "ids": e.ids} for t, e in zip(chosen, tokenizer.encode_batch(chosen), strict=True)]


def make_cases(tokenizer_json, task: str, max_tokens: int) -> list[EncoderCase]:
    texts = load_texts()
    tokenizer = tokenizer_for(tokenizer_json, max_tokens)
    if task == "question-answering":
        # Truncate the passage, never the question.
        tokenizer.enable_truncation(max_tokens, strategy="only_second")
        cases = []
        for i, pair in enumerate(texts["qa"]):
            encoding = tokenizer.encode(pair["question"], pair["context"])
            passage = [t for t, s in enumerate(encoding.sequence_ids) if s == 1]
            cases.append(EncoderCase(f"qa {i}", encoding.ids, encoding.type_ids, (passage[0], passage[-1])))
        return cases
    sentences = [*texts["sentences"], texts["long_text"]]
    return [EncoderCase(f"text {i}", e.ids, e.type_ids) for i, e in enumerate(tokenizer.encode_batch(sentences))]


def batches(cases: list[EncoderCase], pad_id: int) -> list[tuple[list[int], list[np.ndarray]]]:
    """(case indices, [input_ids, attention_mask, token_type_ids]) per batch, right-padded."""
    out = []
    for start in range(0, len(cases), BATCH):
        chunk = cases[start:start + BATCH]
        length = max(len(c.ids) for c in chunk)
        ids = np.full((len(chunk), length), pad_id, dtype=np.int64)
        mask = np.zeros((len(chunk), length), dtype=np.int64)
        types = np.zeros((len(chunk), length), dtype=np.int64)
        for row, case in enumerate(chunk):
            ids[row, :len(case.ids)], mask[row, :len(case.ids)], types[row, :len(case.ids)] = \
                case.ids, 1, case.type_ids
        out.append((list(range(start, start + len(chunk))), [ids, mask, types]))
    return out


PER_TOKEN_TASKS = ("token-classification", "question-answering")  # outputs [B, T, ...]


def run_cases(run, cases: list[EncoderCase], pad_id: int, num_inputs: int, max_batch: int,
              per_token: bool) -> list[list[np.ndarray]]:
    """Each case's outputs, `run(inputs) -> outputs` called per padded batch (per row when the
    graph takes fewer texts at once); per-token outputs lose their padding positions."""
    results: list[list[np.ndarray]] = [[] for _ in cases]
    for indices, inputs in batches(cases, pad_id):
        inputs = inputs[:num_inputs]
        if max_batch >= len(indices):
            outputs = run(inputs)
        else:
            rows = [run([x[r:r + 1] for x in inputs]) for r in range(len(indices))]
            outputs = [np.concatenate(parts, axis=0) for parts in zip(*rows, strict=True)]
        for row, index in enumerate(indices):
            length = len(cases[index].ids)
            results[index] = [o[row, :length] if per_token else o[row] for o in outputs]
    return results


@dataclass
class EncoderReference:
    task: str
    cases: list[EncoderCase]
    outputs: list[list[np.ndarray]]

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "cases": [c.to_json() for c in self.cases],
                "outputs": [[np.round(o, 6).tolist() for o in outs] for outs in self.outputs]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> EncoderReference:
        return cls(raw["task"], [EncoderCase.from_json(c) for c in raw["cases"]],
                   [[np.asarray(o, dtype=np.float32) for o in outs] for outs in raw["outputs"]])


def make_reference(encoder, cases: list[EncoderCase]) -> EncoderReference:
    from .models.encoder import input_names

    spec = encoder.spec
    count = len(input_names(spec))

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            return [o.float().numpy() for o in encoder(*(torch.from_numpy(x) for x in inputs))]

    return EncoderReference(spec.task, cases, run_cases(run, cases, spec.pad_token_id, count, len(cases),
                                                        spec.task in PER_TOKEN_TASKS))


def best_span(start: np.ndarray, end: np.ndarray, passage: tuple[int, int]) -> tuple[int, int]:
    """The (start, end) inside the passage with the highest start + end logit, end - start < 30."""
    first, last = passage
    best, span = -np.inf, (first, first)
    for s in range(first, last + 1):
        stop = min(last, s + MAX_ANSWER_TOKENS - 1)
        e = s + int(np.argmax(end[s:stop + 1]))
        if start[s] + end[e] > best:
            best, span = start[s] + end[e], (s, e)
    return span


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(-1) / np.maximum(np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1), 1e-12)


def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=-1)


def measure(reference: EncoderReference, outputs: list[list[np.ndarray]]) -> dict[str, float]:
    """The task's figures for an artifact's outputs (the module docstring says which)."""
    task, ref = reference.task, reference.outputs
    max_abs = max(float(np.abs(a - r).max()) for got, want in zip(outputs, ref, strict=True)
                  for a, r in zip(got, want, strict=True))
    if task == "feature-extraction":
        got, want = np.stack([o[0] for o in outputs]), np.stack([o[0] for o in ref])
        cosines = _cosines(got, want)
        agreement = float((nearest_neighbours(got) == nearest_neighbours(want)).mean())
        return {"cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean()),
                "neighbour_agreement": agreement, "max_abs": max_abs, "texts": len(outputs)}
    if task == "question-answering":
        spans = [best_span(*got, c.passage) == best_span(*want, c.passage)
                 for got, want, c in zip(outputs, ref, reference.cases, strict=True)]
        return {"span_match": float(np.mean(spans)), "max_abs": max_abs, "texts": len(outputs)}
    # classification: one label per text, or per real token
    agree = np.concatenate([(got[0].argmax(-1) == want[0].argmax(-1)).reshape(-1)
                            for got, want in zip(outputs, ref, strict=True)])
    return {"label_agreement": float(agree.mean()), "max_abs": max_abs, "texts": len(outputs),
            "labels_compared": int(agree.size)}


def check(figures: dict[str, float], thresholds: EncoderThresholds) -> list[str]:
    """What failed, each naming the figure and its threshold ([] when every figure passes)."""
    failures = []
    for key, limit in (("cosine_min", thresholds.cosine_min),
                       ("neighbour_agreement", thresholds.neighbour_agreement_min),
                       ("label_agreement", thresholds.label_agreement_min),
                       ("span_match", thresholds.span_match_min)):
        if key in figures and not figures[key] >= limit:  # NaN fails
            failures.append(f"{key} {figures[key]:.4f} < {limit}")
    if thresholds.max_abs_max is not None and not figures["max_abs"] <= thresholds.max_abs_max:
        failures.append(f"max_abs {figures['max_abs']:.3g} > {thresholds.max_abs_max}")
    return failures


@dataclass
class EncoderParity:
    artifact: str
    format: str
    quantization: str
    figures: dict[str, float]
    thresholds: EncoderThresholds
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        return {"passed": self.passed, "reference": "pytorch-fp32", **{k: round(v, 6) if isinstance(v, float) else v
                                                                       for k, v in self.figures.items()}}

    def to_json(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "format": self.format, "quantization": self.quantization,
                "passed": self.passed, "figures": self.figures, "failures": self.failures,
                "thresholds": {k: v for k, v in vars(self.thresholds).items() if k != "measured"}}


def verify_encoder_artifact(session, reference: EncoderReference, thresholds: EncoderThresholds, *, artifact: str,
                            fmt: str, quantization: str, pad_id: int, num_inputs: int) -> EncoderParity:
    outputs = run_cases(session.run, reference.cases, pad_id, num_inputs, session.max_batch,
                        reference.task in PER_TOKEN_TASKS)
    figures = measure(reference, outputs)
    return EncoderParity(artifact, fmt, quantization, figures, thresholds, check(figures, thresholds))
