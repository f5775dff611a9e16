"""`slm-export run BUNDLE --text A [--text B]` for an encoder bundle: tokenize as the app does
(tokenizer.json's post-processor, no padding, truncated to the bundle's input limit), run one
artifact through its runtime, and say what the task's outputs mean.

    feature-extraction       the embedding of each text (its size and norm) and the cosine of every pair
    sequence-classification  each text's labels with softmax scores, best first
    token-classification     each token of the text with its label and score
    question-answering       --text QUESTION --text PASSAGE: the answer span, its score and position
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .encoder_verify import best_span, tokenizer_for
from .errors import InputError
from .runtimes import encoder_runtime


@dataclass
class EncoderBundle:
    path: Path
    manifest: dict[str, Any]
    artifact: dict[str, Any]
    session: Any

    @property
    def task(self) -> str:
        return self.manifest["encoder"]["task"]


def open_encoder_bundle(bundle: Path, manifest: dict[str, Any], fmt: str | None) -> EncoderBundle:
    artifacts = manifest["artifacts"]
    chosen = next((a for a in artifacts if fmt is None or a["format"] == fmt), None)
    if chosen is None:
        raise InputError(f"{bundle}: no {fmt} artifact (it has {', '.join(a['format'] for a in artifacts)})")
    return EncoderBundle(bundle, manifest, chosen, encoder_runtime(chosen["format"]).open_encoder_session(
        bundle / chosen["path"]))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def run_texts(target: EncoderBundle, texts: list[str]) -> dict[str, Any]:
    """The task's answer for `texts`, as one JSON-ready object (also what `run --json` prints)."""
    encoder = target.manifest["encoder"]
    max_tokens = target.manifest["model"]["max_seq_len"]
    tokenizer = tokenizer_for(target.path / target.manifest["tokenizer"]["path"], max_tokens)
    task, count = encoder["task"], len(encoder["inputs"])
    if task == "question-answering":
        if len(texts) != 2:
            raise InputError("question answering takes two texts: --text QUESTION --text PASSAGE")
        tokenizer.enable_truncation(max_tokens, strategy="only_second")
        encodings = [tokenizer.encode(texts[0], texts[1])]
    else:
        encodings = tokenizer.encode_batch(texts)
    start = time.perf_counter()
    outputs = [target.session.run([np.asarray([values], dtype=np.int64) for values in
                                   (e.ids, [1] * len(e.ids), e.type_ids)][:count]) for e in encodings]
    seconds = time.perf_counter() - start
    result: dict[str, Any] = {"artifact": target.artifact["path"], "format": target.artifact["format"], "task": task,
                              "tokens": [len(e.ids) for e in encodings],
                              "ms_per_text": round(1000 * seconds / len(encodings), 2)}
    if task == "feature-extraction":
        embeddings = np.stack([o[0][0] for o in outputs]).astype(np.float64)
        unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
        result["embeddings"] = [{"text": t, "size": int(e.size), "norm": round(float(np.linalg.norm(e)), 6),
                                 "first": [round(float(v), 6) for v in e[:8]]} for t, e in zip(texts, embeddings,
                                                                                              strict=True)]
        result["cosine"] = [[round(float(v), 6) for v in row] for row in unit @ unit.T]
    elif task == "sequence-classification":
        labels = encoder["labels"]
        result["labels"] = [{"text": t, "scores": sorted(({"label": labels[i], "score": round(float(p), 6)}
                                                          for i, p in enumerate(_softmax(o[0][0]))),
                                                         key=lambda s: -s["score"])}
                            for t, o in zip(texts, outputs, strict=True)]
    elif task == "token-classification":
        labels = encoder["labels"]
        result["tokens_labelled"] = [
            {"text": t, "tokens": [{"token": token, "label": labels[int(p.argmax())], "score": round(float(p.max()), 6)}
                                   for token, p in zip(e.tokens, _softmax(o[0][0]), strict=True)]}
            for t, e, o in zip(texts, encodings, outputs, strict=True)]
    else:
        encoding, (start_logits, end_logits) = encodings[0], (outputs[0][0][0], outputs[0][1][0])
        passage = [i for i, s in enumerate(encoding.sequence_ids) if s == 1]
        if not passage:
            raise InputError("the passage is empty after truncation")
        first, last = best_span(start_logits, end_logits, (passage[0], passage[-1]))
        begin, end = encoding.offsets[first][0], encoding.offsets[last][1]
        result["answer"] = {"text": texts[1][begin:end], "start_char": begin, "end_char": end,
                            "score": round(float(start_logits[first] + end_logits[last]), 4),
                            "tokens": [first, last]}
    return result


def search(target: EncoderBundle, query: str, passages: list[str] | None = None, top: int = 5) -> dict[str, Any]:
    """`run --task search`: the passages (default: the built-in set the apps' Search screen shows,
    exporter/data/encoder_texts.json's sentences) ranked by cosine to the query."""
    from .encoder_verify import load_texts

    if target.task != "feature-extraction":
        raise InputError(f"{target.path}: search needs a feature-extraction encoder, this one does {target.task}")
    passages = passages or load_texts()["sentences"]
    result = run_texts(target, [query, *passages])
    scores = result.pop("cosine")[0][1:]
    result.pop("embeddings")
    order = sorted(range(len(passages)), key=lambda i: -scores[i])
    result["query"] = query
    result["ranked"] = [{"passage": passages[i], "cosine": scores[i]} for i in order[:top]]
    return result


def render(result: dict[str, Any]) -> str:
    lines = []
    if "ranked" in result:
        lines.append(f"query: {result['query']}")
        lines += [f"  {r['cosine']:.4f}  {r['passage']}" for r in result["ranked"]]
    if "embeddings" in result:
        for i, e in enumerate(result["embeddings"]):
            lines.append(f"[{i}] {e['size']} dims, norm {e['norm']:.4f}: {e['text']}")
        if len(result["embeddings"]) > 1:
            lines.append("cosine:")
            lines += ["  " + " ".join(f"{v:7.4f}" for v in row) for row in result["cosine"]]
    for item in result.get("labels", []):
        lines.append(f"{item['text']}: " + ", ".join(f"{s['label']} {s['score']:.3f}" for s in item["scores"]))
    for item in result.get("tokens_labelled", []):
        lines.append(" ".join(f"{t['token']}/{t['label']}" for t in item["tokens"]))
    if "answer" in result:
        a = result["answer"]
        lines.append(f"answer: {a['text']!r} (characters {a['start_char']}-{a['end_char']}, score {a['score']})")
    lines.append(f"[{result['format']} {result['artifact']}, {result['ms_per_text']} ms per text]")
    return "\n".join(lines)
