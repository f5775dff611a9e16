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
5. Held-out text (exporter/data/quality_text.json: prose, dialogue, code, French, German,
   Spanish; never used for calibration): the artifact reads each passage teacher-forced, and at
   every position we compare its top-1 with the reference's (`text_top1`) and score the passage's
   own next token: the perplexity change against the reference (`ppl_change`, relative), what
   llama.cpp users read first. ~1,800 tokens on a 512-token cache, so a quantization loss shows
   as a figure, not as the luck of 128 steps.
6. Aggregates are checked against the recipe's thresholds; every failure is named.

The reference can be recorded (top-k per step) so `slm-export verify` works without the
checkpoint; with a recorded reference, max-abs, cosine and KL are computed over the recorded
top-k ids (an approximation, said so in parity.json); the text metrics are exact either way (the
reference's top-2 ids and next-token log-probabilities are recorded per position).
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
    """What every runtime module's `open_session` returns. A session may also offer
    `forward_all(ids) -> [len(ids), V]` (every position's logits) where the runtime computes them
    anyway; the text metrics then read a passage in chunks instead of token by token."""

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
class TextReference:
    """One held-out passage: its ids and, for each position but the last, the reference's two best
    ids (for ties) and its negative log-likelihood of the passage's next token."""

    domain: str
    ids: list[int]
    top2: list[list[int]]
    top2_logits: list[list[float]]
    nll: list[float]

    def to_json(self) -> dict[str, Any]:
        return {"domain": self.domain, "ids": self.ids, "top2": self.top2,
                "top2_logits": [[round(v, 5) for v in row] for row in self.top2_logits],
                "nll": [round(v, 6) for v in self.nll]}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TextReference:
        return cls(raw["domain"], list(raw["ids"]), raw["top2"], raw["top2_logits"], list(raw["nll"]))


def load_quality_text() -> list[dict[str, str]]:
    return json.loads((resources.files("exporter") / "data" / "quality_text.json").read_text(encoding="utf-8"))["passages"]


def tokenize_quality_text(tokenizer, max_seq_len: int) -> list[tuple[str, list[int]]]:
    """(domain, ids) per passage, cut to the cache."""
    return [(p["domain"], tokenizer.encode(p["text"]).ids[:max_seq_len]) for p in load_quality_text()]


def make_text_reference(reference_lm, passages: list[tuple[str, list[int]]]) -> list[TextReference]:
    refs = []
    for domain, ids in passages:
        if len(ids) < 2:
            continue
        logits = reference_lm.full_logits(ids)[:-1].float()
        top = logits.topk(2, dim=-1)
        nll = -torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        refs.append(TextReference(domain, list(ids), top.indices.tolist(), top.values.tolist(), nll.tolist()))
    return refs


TEXT_CHUNK = 64  # positions per forward_all call: bounds the [chunk, V] logits a runtime returns


def passage_logits(session: Session, ids: list[int]) -> torch.Tensor:
    """The artifact's logits after each of ids[:-1], teacher-forced: [len(ids) - 1, V]."""
    session.reset()
    forward_all = getattr(session, "forward_all", None)
    rows = []
    if forward_all is not None:
        for start in range(0, len(ids) - 1, TEXT_CHUNK):
            rows.append(forward_all(ids[start:min(start + TEXT_CHUNK, len(ids) - 1)]).float())
        return torch.cat(rows)
    return torch.stack([session.forward([token]).float() for token in ids[:-1]])


def measure_text(session: Session, refs: list[TextReference]) -> dict[str, Any]:
    """text_top1 (ties count as agreement, as in compare_step), the perplexity of reference and
    artifact on the passages' own tokens, their relative change, and both per domain."""
    per_domain: dict[str, list[float]] = {}  # domain -> [agree, tokens, ref nll sum, artifact nll sum]
    for ref in refs:
        logits = passage_logits(session, ref.ids)
        nll = -torch.log_softmax(logits, -1).gather(1, torch.tensor(ref.ids[1:])[:, None])[:, 0]
        art_top1 = logits.argmax(-1).tolist()
        agree = sum(a == t[0] or (t_logit[0] - t_logit[1] < TIE_EPSILON and a == t[1])
                    for a, t, t_logit in zip(art_top1, ref.top2, ref.top2_logits, strict=True))
        totals = per_domain.setdefault(ref.domain, [0.0, 0.0, 0.0, 0.0])
        for i, v in enumerate((agree, len(art_top1), sum(ref.nll), float(nll.sum()))):
            totals[i] += v

    def figures(agree, tokens, ref_nll, art_nll):
        ppl_ref, ppl_art = math.exp(ref_nll / tokens), math.exp(art_nll / tokens)
        return {"top1": agree / tokens, "tokens": int(tokens), "ppl_reference": ppl_ref, "ppl": ppl_art,
                "ppl_change": ppl_art / ppl_ref - 1.0}

    total = [sum(t[i] for t in per_domain.values()) for i in range(4)]
    overall = figures(*total)
    return {"text_top1": overall["top1"], "ppl_change": overall["ppl_change"], "text_tokens": overall["tokens"],
            "ppl_reference": overall["ppl_reference"], "ppl": overall["ppl"],
            "domains": {d: figures(*t) for d, t in per_domain.items()}}


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
    text_domains: dict[str, dict[str, float]] = field(default_factory=dict)  # measure_text's per-domain figures

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        return {"passed": self.passed, "reference": self.reference, **self.metrics, "failures": self.failures}

    def to_json(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "format": self.format, "quantization": self.quantization,
                "reference": self.reference, "passed": self.passed, "metrics": self.metrics,
                "thresholds": self.thresholds, "failures": self.failures, "text_domains": self.text_domains,
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
    if not metrics["kl_mean"] <= thresholds.kl_mean_max:  # also catches NaN
        failures.append(f"kl_mean {metrics['kl_mean']:.3g} > {thresholds.kl_mean_max} ({worst('kl')})")
    if not metrics["cosine_min"] >= thresholds.cosine_min:
        failures.append(f"cosine_min {metrics['cosine_min']:.6f} < {thresholds.cosine_min} ({worst('cosine', min)})")
    if thresholds.max_abs_max is not None and not metrics["max_abs"] <= thresholds.max_abs_max:
        failures.append(f"max_abs {metrics['max_abs']:.3g} > {thresholds.max_abs_max} ({worst('max_abs')})")
    if "text_top1" in metrics and not metrics["text_top1"] >= thresholds.text_top1_min:
        failures.append(f"text_top1 {metrics['text_top1']:.4f} < {thresholds.text_top1_min} "
                        f"(over {metrics['text_tokens']} tokens of held-out text)")
    if "ppl_change" in metrics and thresholds.ppl_change_max is not None \
            and not metrics["ppl_change"] <= thresholds.ppl_change_max:
        failures.append(f"perplexity change {metrics['ppl_change']:+.2%} > +{thresholds.ppl_change_max * 100:g}% "
                        f"({metrics['ppl_reference']:.2f} -> {metrics['ppl']:.2f} on held-out text)")
    if metrics["greedy_prefix_min"] < thresholds.greedy_prefix_min:
        bad = min(prompts, key=lambda p: p.greedy_fraction)
        failures.append(f"greedy_prefix {metrics['greedy_prefix_min']:.3f} < {thresholds.greedy_prefix_min} "
                        f"(prompt '{bad.name}': {bad.greedy_status})")
    return failures


def verify_artifact(session: Session, references: list[PromptReference], thresholds: Thresholds, *,
                    artifact: str, fmt: str, quantization: str,
                    text: list[TextReference] | None = None) -> ParityResult:
    prompts = [run_prompt(session, ref) for ref in references]
    metrics = aggregate(prompts)
    domains = {}
    if text:
        measured = measure_text(session, text)
        domains = measured.pop("domains")
        metrics.update(measured)
    if any(math.isnan(v) for v in metrics.values()):
        failures = ["the artifact produced NaN logits"]
    else:
        failures = check_thresholds(metrics, thresholds, prompts)
    recorded = any(r.logits is None for r in references)
    return ParityResult(artifact, fmt, quantization, f"recorded-top{RECORDED_TOP_K}" if recorded else "checkpoint",
                        metrics, {k: v for k, v in asdict(thresholds).items() if k != "measured"}, failures, prompts,
                        domains)
