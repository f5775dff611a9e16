"""The built-in encoder student beside its teacher (the figures in README.md): size, latency per
text (PyTorch eager, 1 thread, best of 3), and retrieval quality on the fixed encoder texts
(exporter/data/encoder_texts.json: 28 paraphrase pairs in several domains and languages, never
used in training): how often a sentence's nearest neighbour is its paraphrase, how often the
student's nearest neighbour is the teacher's, and the cosine of the student's embeddings to the
teacher's (the same 384-dimensional space, through the student's Dense layer).

Usage: python benchmarks/encoder_student.py [TEACHER_DIR] [STUDENT_DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from exporter.checkpoint import build_model, load_checkpoint
from exporter.encoder_verify import load_texts, tokenizer_for


def embed(folder: Path, texts: list[str]) -> tuple[torch.Tensor, float, int, int]:
    checkpoint = load_checkpoint(folder)
    model = build_model(checkpoint)
    encodings = tokenizer_for(checkpoint.tokenizer.tokenizer_json, 256).encode_batch(texts)
    inputs = [(torch.tensor([e.ids]), torch.ones(1, len(e.ids), dtype=torch.long)) for e in encodings]
    with torch.no_grad():
        embeddings = torch.cat([model(ids, mask)[0] for ids, mask in inputs])
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for ids, mask in inputs:
                model(ids, mask)
            best = min(best, (time.perf_counter() - start) / len(inputs))
    size = sum(f.stat().st_size for f in checkpoint.weight_files)
    return embeddings, 1000 * best, sum(p.numel() for p in model.parameters()), size


def nearest(x: torch.Tensor) -> torch.Tensor:
    s = F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).T
    s.fill_diagonal_(-2.0)
    return s.argmax(-1)


def main(teacher_dir: Path, student_dir: Path) -> None:
    torch.set_num_threads(1)
    sentences = load_texts()["sentences"]
    partner = torch.tensor([i ^ 1 for i in range(len(sentences))])  # pairs are stored side by side
    rows = {}
    for name, folder in (("teacher (all-MiniLM-L6-v2)", teacher_dir), ("student", student_dir)):
        rows[name] = embed(folder, sentences)
    teacher, student = rows["teacher (all-MiniLM-L6-v2)"][0], rows["student"][0]
    print(f"{len(sentences)} sentences ({len(sentences) // 2} paraphrase pairs), 1 thread\n")
    print("| model | parameters | weights | ms per text (eager) | nearest neighbour = its paraphrase |")
    print("|---|---:|---:|---:|---:|")
    for name, (emb, ms, params, size) in rows.items():
        pairs = float((nearest(emb) == partner).float().mean())
        print(f"| {name} | {params / 1e6:.2f} M | {size / 1e6:.1f} MB | {ms:.2f} | {pairs:.3f} |")
    print(f"\nstudent vs teacher: mean cosine {float(F.cosine_similarity(student, teacher).mean()):.3f}, "
          f"same nearest neighbour {float((nearest(student) == nearest(teacher)).float().mean()):.3f}")


if __name__ == "__main__":
    from exporter.bench.real_models import make_real_checkpoint
    from exporter.student import ENCODER_STUDENT_DIR

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else make_real_checkpoint("all-minilm-l6-v2"),
         Path(sys.argv[2]) if len(sys.argv) > 2 else ENCODER_STUDENT_DIR)
