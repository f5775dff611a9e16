"""The built-in student: a 1.3 M-parameter Llama distilled on CPython's own documentation.

Recipe (`python -m exporter.student.train`, about 25 minutes on 2 CPU cores, fully offline):

1. Corpus (`corpus.py`): the `pydoc_data` help topics plus the docstrings of the standard
   library's pure-Python modules, read with `ast` (never imported) in sorted file order. Every
   20th document is held out for evaluation.
2. Tokenizer: byte-level BPE, 4096 tokens, trained on the train split (`<|endoftext|>` id 0,
   `<|im_start|>` id 1).
3. Teacher: a 6-layer, 256-wide Llama (GQA 8/4, tied embeddings) trained on next-token
   prediction with AdamW and a warmup + cosine learning-rate schedule.
4. Student: a 4-layer, 128-wide Llama (GQA 4/2, tied embeddings, 512 positions) trained on the
   same stream against a mix of the teacher's temperature-softened distribution (KL, T=2) and the
   hard next-token labels (cross-entropy).
5. The student is saved in Hugging Face layout (config.json, model.safetensors with HF tensor
   names and no lm_head, tokenizer files, generation_config.json) to `STUDENT_DIR`, with a
   `recipe.json` recording hyperparameters, seeds, step counts, wall times and the held-out
   perplexities of teacher and student.

The encoder student (`slm-encoder/`, `python -m exporter.student.train_encoder`, about 14 minutes)
is a 1.66 M-parameter BERT distilled from all-MiniLM-L6-v2 on sentences of the same corpus; its
module docstring has the recipe.

Seeds, data order and step counts are fixed, so a rerun with the same Python and torch (and the
same thread count) reproduces the checkpoint up to floating-point reduction order.
"""

from pathlib import Path

STUDENT_DIR = Path(__file__).parent / "slm-student"
# The encoder student (exporter/student/train_encoder.py): a small BERT distilled from all-MiniLM-L6-v2.
ENCODER_STUDENT_DIR = Path(__file__).parent / "slm-encoder"

__all__ = ["ENCODER_STUDENT_DIR", "STUDENT_DIR"]
