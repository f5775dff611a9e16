"""Stage 5, verify: run each artifact through its real runtime and compare with the reference.

1. A fixed prompt set (exporter/data/prompts.json), tokenized with the checkpoint's tokenizer.
2. The reference (eager fp32, same cache semantics) makes a greedy continuation per prompt and
   keeps the logits that chose each token.
3. Teacher forcing: the artifact is fed the prompt, then the reference's tokens one at a time;
   each step's logits are compared: max abs diff, cosine, top-1 agreement, top-5 overlap and
   KL(reference || artifact).
4. Free running: the artifact generates greedily on its own; we measure the identical prefix.
   Where the reference's top-2 logits are within TIE_EPSILON at the first difference, the flip is
   reported as a tie, not a failure.
5. Aggregates are checked against the recipe's thresholds; every failure is named.

The reference can be recorded (top-k per step) so `slm-export verify` works without the
checkpoint; with a recorded reference, max-abs, cosine and KL are computed over the recorded
top-k ids (an approximation, said so in parity.json).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any, Protocol

import torch

from .recipes import Thresholds

TIE_EPSILON = 1e-4
RECORDED_TOP_K = 32


class Session(Protocol):
    """What every runtime module's `open_session` returns."""

    def reset(self) -> None: ...
    def forward(self, ids: list[int]) -> torch.Tensor: ...  # last position's logits [V]


@dataclass
class PromptReference:
    name: str
    prompt_ids: list[int]
    greedy_ids: list[int]
    top_ids: torch.Tensor  # [n, k] int64, reference's top-k per step, best first
    top_logits: torch.Tensor  # [n, k] fp32
    logits: torch.Tensor | None = None  # [n, V] full reference logits (absent when recorded)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "prompt_ids": self.prompt_ids, "greedy_ids": self.greedy_ids,
                "top_ids": self.top_ids.tolist(),
                "top_logits": [[round(float(v), 5) for v in row] for row in self.top_logits]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PromptReference:
        return cls(raw["name"], list(raw["prompt_ids"]), list(raw["greedy_ids"]),
                   torch.tensor(raw["top_ids"], dtype=torch.long).reshape(len(raw["greedy_ids"]), -1),
                   torch.tensor(raw["top_logits"], dtype=torch.float32).reshape(len(raw["greedy_ids"]), -1))

    def is_tie(self, step: int) -> bool:
        top = self.top_logits[step]
        return len(top) > 1 and float(top[0] - top[1]) < TIE_EPSILON


def load_prompts() -> dict[str, Any]:
    return json.loads((resources.files("exporter") / "data" / "prompts.json").read_text(encoding="utf-8"))


def new_tokens(max_seq_len: int) -> int:
    """Reference continuation length: the prompt set's, but at most half a short cache."""
    return min(load_prompts()["max_new_tokens"], max_seq_len // 2)


def tokenize_prompts(tokenizer, max_seq_len: int) -> list[tuple[str, list[int]]]:
    """(name, ids) per prompt, encoded with the tokenizer's own post-processor (its bos template,
    if any), as the runtimes encode: the ExecuTorch runner with num_bos=1, GenAI's tokenizer.
    Prompts are cut so that prompt + continuation fit the cache."""
    spec = load_prompts()
    budget = max_seq_len - new_tokens(max_seq_len)
    cases = []
    for prompt in spec["prompts"]:
        ids = tokenizer.encode(prompt["text"]).ids
        if prompt.get("fill_context"):
            ids = ids * (budget // max(len(ids), 1) + 1)
        cases.append((prompt["name"], ids[:budget]))
    return cases


def make_reference(reference_lm, cases: list[tuple[str, list[int]]], max_new_tokens: int,
                   eos_ids: list[int]) -> list[PromptReference]:
    refs = []
    for name, ids in cases:
        greedy, logits = reference_lm.greedy(ids, max_new_tokens, eos_ids)
        top = logits.topk(RECORDED_TOP_K, dim=-1)
        refs.append(PromptReference(name, ids, greedy, top.indices, top.values, logits))
    return refs


@dataclass
class StepMetrics:
    max_abs: float
    cosine: float
    top1: float  # 1.0 agree, 0.0 disagree; a disagreement inside a tie counts as agreement
    top5_overlap: float
    kl: float
    tie: bool


def compare_step(ref: PromptReference, step: int, logits: torch.Tensor) -> StepMetrics:
    logits = logits.float()
    art_logprobs = torch.log_softmax(logits, -1)
    if ref.logits is not None:
        ref_logits = ref.logits[step].float()
        ref_logprobs = torch.log_softmax(ref_logits, -1)
        art_sel = logits
    else:  # recorded: only the reference's top-k are known
        idx = ref.top_ids[step]
        ref_logits = ref.top_logits[step]
        ref_logprobs = torch.log_softmax(ref_logits, -1)  # renormalised over top-k
        art_sel = logits[idx]
        art_logprobs = torch.log_softmax(art_sel, -1)
    kl = float((ref_logprobs.exp() * (ref_logprobs - art_logprobs)).sum().clamp_min(0.0))
    ref_top1 = int(ref.top_ids[step, 0])
    art_top1 = int(logits.argmax())
    tie = ref.is_tie(step)
    agree = art_top1 == ref_top1 or (tie and art_top1 == int(ref.top_ids[step, 1]))
    art_top5 = set(logits.topk(5).indices.tolist())
    overlap = len(art_top5 & set(ref.top_ids[step, :5].tolist())) / 5
    cosine = float(torch.nn.functional.cosine_similarity(ref_logits, art_sel, dim=0))
    return StepMetrics(max_abs=float((ref_logits - art_sel).abs().max()), cosine=cosine,
                       top1=1.0 if agree else 0.0, top5_overlap=overlap, kl=kl, tie=tie and not art_top1 == ref_top1)


@dataclass
class PromptResult:
    name: str
    prompt_tokens: int
    steps: list[StepMetrics]
    greedy_ids: list[int]
    greedy_prefix: int  # identical leading tokens in free-running generation
    greedy_status: str  # "identical" | "tie at step k" | "diverged at step k"
    greedy_margins: list[float] = field(default_factory=list)  # artifact's top-1 minus top-2 logit per step

    def stable_prefix(self, margin: float) -> int:
        """Leading generated tokens whose choice won by at least `margin` logits on this host:
        another CPU's kernels (ARM vs x86) should not flip them."""
        return next((i for i, m in enumerate(self.greedy_margins) if m < margin), len(self.greedy_margins))

    @property
    def greedy_fraction(self) -> float:
        if self.greedy_status.startswith(("identical", "tie")):
            return 1.0
        return self.greedy_prefix / max(len(self.greedy_ids), 1)


def run_prompt(session: Session, ref: PromptReference) -> PromptResult:
    # Teacher forcing: prompt, then the reference's own tokens.
    session.reset()
    steps = [compare_step(ref, 0, session.forward(ref.prompt_ids))]
    for i, token in enumerate(ref.greedy_ids[:-1], start=1):
        steps.append(compare_step(ref, i, session.forward([token])))
    # Free running.
    session.reset()
    logits = session.forward(ref.prompt_ids)
    generated: list[int] = []
    margins: list[float] = []
    while len(generated) < len(ref.greedy_ids):
        top2 = logits.topk(2).values
        margins.append(float(top2[0] - top2[1]))
        token = int(logits.argmax())
        generated.append(token)
        if len(generated) < len(ref.greedy_ids):
            logits = session.forward([token])
    prefix = next((i for i, (a, b) in enumerate(zip(generated, ref.greedy_ids, strict=True)) if a != b),
                  len(generated))
    if prefix == len(generated):
        status = "identical"
    elif ref.is_tie(prefix):
        status = f"tie at step {prefix}"
    else:
        status = f"diverged at step {prefix}"
    return PromptResult(ref.name, len(ref.prompt_ids), steps, generated, prefix, status, margins)


@dataclass
class ParityResult:
    artifact: str
    format: str
    quantization: str
    reference: str  # "checkpoint" or "recorded-top32"
    metrics: dict[str, float]
    thresholds: dict[str, Any]
    failures: list[str]
    prompts: list[PromptResult] = field(repr=False)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        return {"passed": self.passed, "reference": self.reference, **self.metrics, "failures": self.failures}

    def to_json(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "format": self.format, "quantization": self.quantization,
                "reference": self.reference, "passed": self.passed, "metrics": self.metrics,
                "thresholds": self.thresholds, "failures": self.failures,
                "prompts": [{"name": p.name, "prompt_tokens": p.prompt_tokens, "greedy_ids": p.greedy_ids,
                             "greedy_prefix": p.greedy_prefix, "greedy_status": p.greedy_status,
                             "steps": [{k: round(v, 7) if isinstance(v, float) else v
                                        for k, v in asdict(s).items()} for s in p.steps]}
                            for p in self.prompts]}


def aggregate(prompts: list[PromptResult]) -> dict[str, float]:
    steps = [s for p in prompts for s in p.steps]
    return {
        "top1": sum(s.top1 for s in steps) / len(steps),
        "top5_overlap": sum(s.top5_overlap for s in steps) / len(steps),
        "kl_mean": sum(s.kl for s in steps) / len(steps),
        "kl_max": max(s.kl for s in steps),
        "cosine_min": min(s.cosine for s in steps),
        "max_abs": max(s.max_abs for s in steps),
        "greedy_prefix_min": min(p.greedy_fraction for p in prompts),
        "ties": sum(s.tie for s in steps),
        "steps": len(steps),
    }


def check_thresholds(metrics: dict[str, float], thresholds: Thresholds, prompts: list[PromptResult]) -> list[str]:
    failures = []

    def worst(key: str, pick=max) -> str:
        name, step, value = pick(((p.name, i, getattr(s, key)) for p in prompts for i, s in enumerate(p.steps)),
                                 key=lambda t: t[2])
        return f"worst: prompt '{name}' step {step} = {value:.4g}"

    if metrics["top1"] < thresholds.top1_min:
        failures.append(f"top1 {metrics['top1']:.4f} < {thresholds.top1_min} ({worst('top1', min)})")
    if metrics["top5_overlap"] < thresholds.top5_overlap_min:
        failures.append(f"top5_overlap {metrics['top5_overlap']:.4f} < {thresholds.top5_overlap_min}")
    if not metrics["kl_mean"] <= thresholds.kl_max:  # also catches NaN
        failures.append(f"kl_mean {metrics['kl_mean']:.3g} > {thresholds.kl_max} ({worst('kl')})")
    if not metrics["cosine_min"] >= thresholds.cosine_min:
        failures.append(f"cosine_min {metrics['cosine_min']:.6f} < {thresholds.cosine_min} ({worst('cosine', min)})")
    if thresholds.max_abs_max is not None and not metrics["max_abs"] <= thresholds.max_abs_max:
        failures.append(f"max_abs {metrics['max_abs']:.3g} > {thresholds.max_abs_max} ({worst('max_abs')})")
    if metrics["greedy_prefix_min"] < thresholds.greedy_prefix_min:
        bad = min(prompts, key=lambda p: p.greedy_fraction)
        failures.append(f"greedy_prefix {metrics['greedy_prefix_min']:.3f} < {thresholds.greedy_prefix_min} "
                        f"(prompt '{bad.name}': {bad.greedy_status})")
    return failures


def verify_artifact(session: Session, references: list[PromptReference], thresholds: Thresholds, *,
                    artifact: str, fmt: str, quantization: str) -> ParityResult:
    prompts = [run_prompt(session, ref) for ref in references]
    metrics = aggregate(prompts)
    if any(math.isnan(v) for v in metrics.values()):
        failures = ["the artifact produced NaN logits"]
    else:
        failures = check_thresholds(metrics, thresholds, prompts)
    recorded = any(r.logits is None for r in references)
    return ParityResult(artifact, fmt, quantization, f"recorded-top{RECORDED_TOP_K}" if recorded else "checkpoint",
                        metrics, {k: v for k, v in asdict(thresholds).items() if k != "measured"}, failures, prompts)
