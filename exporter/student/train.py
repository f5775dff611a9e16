"""Reproducible recipe for the built-in student: tokenizer, teacher, distilled student.

    python -m exporter.student.train [--out DIR] [--steps-scale F] [--threads N] [--seed S]
                                     [--max-docs N] [--eval-windows N]

See `exporter.student` for the recipe in words. Step counts are fixed constants (sized for about
12 minutes per model on 2 CPU cores); `--steps-scale` multiplies them (tests use ~0.002).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.cache import NoCache
from ..models.decoder import Decoder
from ..models.llama import LlamaConfig
from ..tokenizer import BOS_TOKEN, EOS_TOKEN, save_tokenizer, train_byte_bpe
from . import STUDENT_DIR, corpus
from .hf_save import save_llama_checkpoint

VOCAB_SIZE = 4096
EOS_ID, BOS_ID = 0, 1
PROMPT = "The function returns"
LOG_EVERY_S = 30.0

TEACHER_CONFIG = {
    "vocab_size": VOCAB_SIZE, "hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 6,
    "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
}
STUDENT_CONFIG = {
    "vocab_size": VOCAB_SIZE, "hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
}


@dataclass(frozen=True)
class PhaseConfig:
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.05
    weight_decay: float = 0.1
    grad_clip: float = 1.0


# Sized from measured throughput on 2 idle cores (teacher ~2800 tok/s, student with the teacher's
# forward ~4500 tok/s): about 9 minutes each; recipe.json records the actual wall times.
TEACHER_PHASE = PhaseConfig(steps=700, batch_size=16, seq_len=128, lr=1.5e-3)
STUDENT_PHASE = PhaseConfig(steps=1200, batch_size=16, seq_len=128, lr=3e-3)
DISTILL_TEMPERATURE = 2.0
DISTILL_ALPHA = 0.7  # weight of the KL term; 1 - alpha goes to hard-label cross-entropy


def log(msg: str) -> None:
    print(f"[student {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- data

def encode_stream(tok, docs: list[str]) -> torch.Tensor:
    """Documents tokenized and concatenated, each followed by <|endoftext|>."""
    ids: list[int] = []
    for enc in tok.encode_batch(docs, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(EOS_ID)
    return torch.tensor(ids, dtype=torch.long)


def batches(stream: torch.Tensor, phase: PhaseConfig, seed: int):
    """Deterministic random windows: yields (inputs, targets), each [B, T]."""
    g = torch.Generator().manual_seed(seed)
    span = phase.seq_len + 1
    high = len(stream) - span
    if high <= 0:
        raise ValueError(f"training stream has {len(stream)} tokens, fewer than one window of {span}")
    offsets = torch.arange(span)
    while True:
        starts = torch.randint(0, high + 1, (phase.batch_size,), generator=g)
        window = stream[starts[:, None] + offsets]
        yield window[:, :-1], window[:, 1:]


def eval_windows(stream: torch.Tensor, seq_len: int, limit: int | None) -> torch.Tensor:
    """Non-overlapping windows of seq_len + 1 tokens over the held-out stream: [N, seq_len + 1]."""
    n = (len(stream) - 1) // seq_len
    if limit is not None:
        n = min(n, limit)
    if n == 0:
        raise ValueError(f"held-out stream has {len(stream)} tokens, fewer than one window")
    idx = torch.arange(n)[:, None] * seq_len + torch.arange(seq_len + 1)
    return stream[idx]


# ----------------------------------------------------------------------------- model helpers

def build(config: dict) -> Decoder:
    return Decoder(LlamaConfig.from_dict(config).to_spec())


def init_weights(model: Decoder, std: float = 0.02) -> None:
    """GPT-2 style init: N(0, 0.02), output projections scaled by 1/sqrt(2 * layers)."""
    n_layers = model.spec.num_layers
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif p.dim() >= 2:
                scale = 1 / math.sqrt(2 * n_layers) if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
                p.normal_(0.0, std * scale)
            else:
                p.zero_()


def forward(model: Decoder, tokens: torch.Tensor) -> torch.Tensor:
    b, t = tokens.shape
    positions = torch.arange(t).expand(b, t)
    return model(tokens, positions, NoCache(t))


@torch.no_grad()
def perplexity(model: Decoder, windows: torch.Tensor, batch_size: int = 16) -> float:
    """exp(mean next-token cross-entropy) over every target token of the windows."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = windows[i:i + batch_size]
        logits = forward(model, w[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
        count += w[:, 1:].numel()
    return math.exp(total / count)


@torch.no_grad()
def greedy(model: Decoder, tok, prompt: str = PROMPT, new_tokens: int = 24) -> str:
    model.eval()
    ids = tok.encode(prompt, add_special_tokens=False).ids
    prompt_len = len(ids)
    for _ in range(new_tokens):
        context = torch.tensor([ids[-model.max_positions:]])
        nxt = int(forward(model, context)[0, -1].argmax())
        if nxt == EOS_ID:
            break
        ids.append(nxt)
    return prompt + tok.decode(ids[prompt_len:], skip_special_tokens=True)


def lr_at(step: int, phase: PhaseConfig) -> float:
    warmup = max(1, round(phase.warmup_fraction * phase.steps))
    if step < warmup:
        return phase.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, phase.steps - warmup)
    return phase.lr * (phase.min_lr_ratio + (1 - phase.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer(model: Decoder, phase: PhaseConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": phase.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=phase.lr, betas=(0.9, 0.95), eps=1e-8)


def train_loop(name: str, model: Decoder, phase: PhaseConfig, data,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> dict:
    """Runs `phase.steps` AdamW steps; loss_fn(inputs, targets) -> (loss to minimize, hard CE)."""
    opt = optimizer(model, phase)
    model.train()
    losses: list[float] = []
    ce_losses: list[float] = []
    start = last_log = time.perf_counter()
    tokens_per_step = phase.batch_size * phase.seq_len
    for step in range(phase.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, phase)
        inputs, targets = next(data)
        loss, ce = loss_fn(inputs, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), phase.grad_clip)
        opt.step()
        losses.append(loss.item())
        ce_losses.append(ce.item())
        now = time.perf_counter()
        if now - last_log >= LOG_EVERY_S or step in (4, phase.steps - 1):
            done = step + 1
            rate = done * tokens_per_step / (now - start)
            eta = (phase.steps - done) * (now - start) / done
            recent = sum(losses[-20:]) / len(losses[-20:])
            log(f"{name} step {done}/{phase.steps} loss {recent:.3f} ce {ce_losses[-1]:.3f} "
                f"lr {lr_at(step, phase):.2e} {rate:.0f} tok/s eta {eta / 60:.1f} min")
            last_log = now
    wall = time.perf_counter() - start
    k = max(1, min(20, len(losses) // 4))
    every = max(1, len(losses) // 50)
    return {
        "steps": phase.steps,
        "wall_s": round(wall, 1),
        "tokens_per_s": round(phase.steps * tokens_per_step / wall, 1),
        "tokens_seen": phase.steps * tokens_per_step,
        "loss_first": sum(losses[:k]) / k,
        "loss_last": sum(losses[-k:]) / k,
        "ce_first": sum(ce_losses[:k]) / k,
        "ce_last": sum(ce_losses[-k:]) / k,
        "loss_curve": [[i + 1, round(losses[i], 4)] for i in range(0, len(losses), every)],
    }


def scaled(phase: PhaseConfig, scale: float, minimum: int = 6) -> PhaseConfig:
    return PhaseConfig(**{**asdict(phase), "steps": max(minimum, round(phase.steps * scale))})


# ----------------------------------------------------------------------------- recipe

def run(out: Path, steps_scale: float = 1.0, threads: int = 2, seed: int = 0,
        max_docs: int | None = None, eval_windows_limit: int | None = None) -> dict:
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    timings: dict[str, float] = {}

    # (a) corpus and tokenizer
    t = time.perf_counter()
    train_docs, held_docs = corpus.train_and_held_out(max_docs)
    log(f"corpus: {len(train_docs)} train / {len(held_docs)} held-out documents, "
        f"{sum(map(len, train_docs))} / {sum(map(len, held_docs))} characters")
    tok = train_byte_bpe(train_docs, VOCAB_SIZE)
    train_stream = encode_stream(tok, train_docs)
    held_stream = encode_stream(tok, held_docs)
    timings["tokenizer_s"] = round(time.perf_counter() - t, 1)
    log(f"tokenizer: {tok.get_vocab_size()} tokens; {len(train_stream)} train / {len(held_stream)} "
        f"held-out tokens ({timings['tokenizer_s']} s)")
    assert tok.token_to_id(EOS_TOKEN) == EOS_ID and tok.token_to_id(BOS_TOKEN) == BOS_ID

    teacher_phase = scaled(TEACHER_PHASE, steps_scale)
    student_phase = scaled(STUDENT_PHASE, steps_scale)
    windows = eval_windows(held_stream, teacher_phase.seq_len, eval_windows_limit)

    # (b) teacher
    torch.manual_seed(seed)
    teacher = build(TEACHER_CONFIG)
    init_weights(teacher)
    log(f"teacher: {teacher.spec.num_parameters / 1e6:.2f} M parameters, {teacher_phase.steps} steps "
        f"of {teacher_phase.batch_size}x{teacher_phase.seq_len} tokens")

    def teacher_loss(inputs, targets):
        ce = F.cross_entropy(forward(teacher, inputs).flatten(0, 1), targets.flatten())
        return ce, ce.detach()

    teacher_stats = train_loop("teacher", teacher, teacher_phase, batches(train_stream, teacher_phase, seed + 1),
                               teacher_loss)
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher_stats["held_out_ppl"] = perplexity(teacher, windows)
    teacher_stats["greedy"] = greedy(teacher, tok)
    log(f"teacher: held-out perplexity {teacher_stats['held_out_ppl']:.2f}; {teacher_stats['greedy']!r}")

    # (c) student, distilled from the teacher's logits
    torch.manual_seed(seed + 2)
    student = build(STUDENT_CONFIG)
    init_weights(student)
    log(f"student: {student.spec.num_parameters / 1e6:.2f} M parameters, {student_phase.steps} steps "
        f"of {student_phase.batch_size}x{student_phase.seq_len} tokens")
    temp, alpha = DISTILL_TEMPERATURE, DISTILL_ALPHA

    def student_loss(inputs, targets):
        with torch.no_grad():
            teacher_logp = F.log_softmax(forward(teacher, inputs).flatten(0, 1) / temp, dim=-1)
        logits = forward(student, inputs).flatten(0, 1)
        kl = F.kl_div(F.log_softmax(logits / temp, dim=-1), teacher_logp, log_target=True,
                      reduction="batchmean") * temp * temp
        ce = F.cross_entropy(logits, targets.flatten())
        return alpha * kl + (1 - alpha) * ce, ce.detach()

    student_stats = train_loop("student", student, student_phase, batches(train_stream, student_phase, seed + 3),
                               student_loss)
    student_stats["held_out_ppl"] = perplexity(student, windows)
    student_stats["greedy"] = greedy(student, tok)
    log(f"student: held-out perplexity {student_stats['held_out_ppl']:.2f}; {student_stats['greedy']!r}")

    # (e) save
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_llama_checkpoint(student, out, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    save_tokenizer(tok, out, model_max_length=STUDENT_CONFIG["max_position_embeddings"])
    recipe = {
        "description": "Student distilled from a larger teacher on CPython's pydoc topics and stdlib docstrings; "
                       "see exporter/student/__init__.py",
        "seed": seed,
        "threads": threads,
        "steps_scale": steps_scale,
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "torch": torch.__version__,
        "corpus": {
            "train_documents": len(train_docs), "held_out_documents": len(held_docs),
            "held_out_every": corpus.HELD_OUT_EVERY, "max_docs": max_docs,
            "train_tokens": len(train_stream), "held_out_tokens": len(held_stream),
            "eval_windows": len(windows), "eval_window_tokens": teacher_phase.seq_len,
        },
        "tokenizer": {"type": "byte-level BPE", "vocab_size": tok.get_vocab_size(),
                      "eos_token": EOS_TOKEN, "eos_token_id": EOS_ID, "bos_token": BOS_TOKEN, "bos_token_id": BOS_ID},
        "teacher": {"config": TEACHER_CONFIG, "parameters": teacher.spec.num_parameters,
                    "phase": asdict(teacher_phase), **teacher_stats},
        "student": {"config": STUDENT_CONFIG, "parameters": student.spec.num_parameters,
                    "phase": asdict(student_phase), "distill_temperature": temp, "distill_alpha": alpha,
                    **student_stats},
        "optimizer": "AdamW(betas=(0.9, 0.95), weight decay on matrices), linear warmup + cosine to min_lr_ratio, "
                     "grad clip",
        "prompt": PROMPT,
        "uniform_ppl": float(VOCAB_SIZE),
        "wall_time_s": {**timings, "teacher_s": teacher_stats["wall_s"], "student_s": student_stats["wall_s"],
                        "total_s": round(time.perf_counter() - t0, 1)},
    }
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    log(f"saved to {out} in {recipe['wall_time_s']['total_s'] / 60:.1f} min")
    return recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exporter.student.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=STUDENT_DIR, help="output folder (default: the shipped student)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiplies every step count")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-docs", type=int, default=None, help="use only the first N corpus documents")
    parser.add_argument("--eval-windows", type=int, default=None, help="cap on held-out evaluation windows")
    args = parser.parse_args(argv)
    if args.steps_scale <= 0:
        parser.error("--steps-scale must be positive")
    run(args.out, args.steps_scale, args.threads, args.seed, args.max_docs, args.eval_windows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
