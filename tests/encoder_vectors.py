"""The encoder vectors both apps' unit tests read: what the phone must compute the same way as the
exporter for the Search, Classify and Ask screens.

- tokenization: the built-in encoder student's tokenizer.json (copied beside the vectors as
  encoder_tokenizer.json, the file a bundle carries) encoded by Hugging Face `tokenizers` as
  `slm-export` proves it (encoder_verify.tokenizer_for: post-processor, no padding, truncated to
  the input limit), single texts and question/passage pairs (passage-only truncation), with each
  token's character offsets in UTF-16 code units (what Kotlin and Swift index strings by);
  also a cased variant of the same file (lowercase and accent stripping off);
- the Search screen's built-in passages (exporter/data/encoder_texts.json, what `run --task
  search` ranks by default) and a ranking: the student's embeddings of a query and those passages
  with the cosines and the order the exporter computes;
- label scores (softmax) and answer spans (encoder_verify.best_span) on seeded logits.

`python tests/encoder_vectors.py` rewrites the committed copies (FIXTURES); test_encoders.py fails
when they differ from what the exporter computes now.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURE_DIRS = (REPO / "android-demo/app/src/coreTest/resources", REPO / "ios-demo/SLMDemoTests/Fixtures")
VECTORS, TOKENIZER = "encoder_vectors.json", "encoder_tokenizer.json"
MAX_TOKENS = 128
RANKED_PASSAGES = 16  # the ranking vector's passages: the first of the Search screen's set
# Beyond encoder_verify.TOKENIZER_CASES: what else BERT's normalizer and pre-tokenizer do to text
# people type (control and zero-width characters, NBSP, dotted capital I, a word past
# max_input_chars_per_word, full-width forms, letters outside the vocabulary).
EXTRA_TEXTS = (
    "İstanbul ıi ǅ ß ﬁ Ⅻ",
    "zero\u200bwidth soft\u00adhyphen nbsp\u00a0space\u0007bell\u0000nul\ufffdreplacement",
    "full-width ＡＢＣ１２３！ and ideographic　space",
    "x" * 120 + " short",
    "qwxzqv zzzyzzy pneumonoultramicroscopicsilicovolcanoconiosis",
    "",
)


def _utf16(text: str, index: int) -> int:
    return len(text[:index].encode("utf-16-le")) // 2


def _encoding_json(encoding, texts: tuple[str, ...]) -> dict:
    offsets = []
    for (begin, end), sequence in zip(encoding.offsets, encoding.sequence_ids, strict=True):
        text = texts[sequence] if sequence is not None else ""
        offsets.append([_utf16(text, begin), _utf16(text, end)])
    return {"ids": encoding.ids, "type_ids": encoding.type_ids, "offsets": offsets,
            "sequence_ids": encoding.sequence_ids}


def _tokenizer_vectors(tokenizer_json: Path, texts: dict, variant: dict | None) -> dict:
    from tokenizers import Tokenizer, normalizers

    from exporter.encoder_verify import TOKENIZER_CASES

    def make():
        tokenizer = Tokenizer.from_file(str(tokenizer_json))
        if variant:
            tokenizer.normalizer = normalizers.BertNormalizer(**variant)
        tokenizer.no_padding()
        return tokenizer

    single_texts = [*TOKENIZER_CASES, *EXTRA_TEXTS, texts["long_text"]]
    single = make()
    single.enable_truncation(MAX_TOKENS)
    pair = make()
    pair.enable_truncation(MAX_TOKENS, strategy="only_second")
    pairs = [(p["question"], p["context"]) for p in texts["qa"]] + [("Where is it?", texts["long_text"])]
    return {
        "variant": variant,
        "single": [{"text": t, **_encoding_json(single.encode(t), (t,))} for t in single_texts],
        "pair": [{"question": q, "passage": p, **_encoding_json(pair.encode(q, p), (q, p))} for q, p in pairs],
    }


def _ranking(texts: dict) -> dict:
    import torch

    from exporter.checkpoint import build_model, load_checkpoint
    from exporter.encoder_verify import tokenizer_for
    from exporter.student import ENCODER_STUDENT_DIR

    checkpoint = load_checkpoint(ENCODER_STUDENT_DIR)
    model = build_model(checkpoint).eval()
    tokenizer = tokenizer_for(checkpoint.tokenizer.tokenizer_json, MAX_TOKENS)
    query, passages = "Who is playing music?", texts["sentences"][:RANKED_PASSAGES]
    with torch.no_grad():
        embeddings = np.stack([model(torch.tensor([e.ids]), torch.ones(1, len(e.ids), dtype=torch.long),
                                     torch.tensor([e.type_ids]))[0][0].numpy()
                               for e in tokenizer.encode_batch([query, *passages])])
    # float32, as the runtimes hand them to the app, written in float32's shortest form (which
    # Kotlin's and Swift's Float parsing read back exactly); cosines in float64 from those.
    as_text = [[float(str(v)) for v in row] for row in embeddings.astype(np.float32)]
    embeddings = np.asarray(as_text, dtype=np.float32).astype(np.float64)
    unit = embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True)
    cosines = unit[1:] @ unit[0]
    return {"query": query, "normalized": checkpoint.spec.pooling.normalize,
            "query_embedding": as_text[0], "passage_embeddings": as_text[1:],
            "cosines": [round(float(c), 9) for c in cosines],
            "order": [int(i) for i in np.argsort(-cosines, kind="stable")]}


def _softmax(rng: np.random.Generator) -> list[dict]:
    cases = []
    for width, scale in ((2, 3.0), (5, 10.0), (3, 80.0)):
        logits = np.asarray([float(str(v)) for v in (rng.standard_normal(width) * scale).astype(np.float32)])
        e = np.exp(logits - logits.max())
        cases.append({"logits": logits.tolist(), "probabilities": (e / e.sum()).tolist()})
    return cases


def _spans(rng: np.random.Generator) -> dict:
    from exporter.encoder_verify import MAX_ANSWER_TOKENS, best_span

    cases = []
    for length, passage in ((12, (5, 10)), (64, (9, 62)), (100, (3, 98)), (40, (20, 20))):
        start, end = (np.asarray([float(str(v)) for v in rng.standard_normal(length).astype(np.float32)])
                      for _ in range(2))
        cases.append({"start_logits": start.tolist(), "end_logits": end.tolist(), "passage": list(passage),
                      "span": list(best_span(start, end, passage))})
    return {"max_answer_tokens": MAX_ANSWER_TOKENS, "cases": cases}


def encoder_vectors() -> str:
    """The fixture's text."""
    from exporter.encoder_verify import load_texts
    from exporter.student import ENCODER_STUDENT_DIR

    texts = load_texts()
    tokenizer_json = ENCODER_STUDENT_DIR / "tokenizer.json"
    rng = np.random.default_rng(19)
    vectors = {
        "about": "written by tests/encoder_vectors.py from the built-in encoder student and HF tokenizers",
        "tokenizer": TOKENIZER,
        "max_tokens": MAX_TOKENS,
        "tokenizations": [
            _tokenizer_vectors(tokenizer_json, texts, None),
            _tokenizer_vectors(tokenizer_json, texts, {"clean_text": True, "handle_chinese_chars": True,
                                                       "strip_accents": False, "lowercase": False}),
        ],
        "passages": texts["sentences"],
        "qa_examples": texts["qa"],
        "ranking": _ranking(texts),
        "softmax": _softmax(rng),
        "spans": _spans(rng),
    }
    return json.dumps(vectors, indent=None, ensure_ascii=False) + "\n"


def fixture_files() -> dict[str, bytes]:
    from exporter.student import ENCODER_STUDENT_DIR

    return {VECTORS: encoder_vectors().encode("utf-8"),
            TOKENIZER: (ENCODER_STUDENT_DIR / "tokenizer.json").read_bytes()}


if __name__ == "__main__":
    files = fixture_files()
    for folder in FIXTURE_DIRS:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / name).write_bytes(data)
            print(folder / name)
