"""The parity metrics on hand-made logits: ties, top-5 overlap, KL, the recorded top-k reference,
aggregation and the messages a failed threshold prints."""

from __future__ import annotations

import math

import pytest
import torch

from exporter.recipes import Thresholds
from exporter.verify import (
    TIE_EPSILON,
    PromptReference,
    PromptResult,
    aggregate,
    check_thresholds,
    compare_step,
    run_prompt,
)

V = 10


def _reference(rows: list[list[float]], recorded_k: int | None = None) -> PromptReference:
    logits = torch.tensor(rows, dtype=torch.float32)
    k = recorded_k or V
    top = logits.topk(k, dim=-1)
    return PromptReference("p", [1, 2], logits.argmax(-1).tolist(), top.indices, top.values,
                           None if recorded_k else logits)


def _row(best: int, second: int | None = None, gap: float = 2.0) -> list[float]:
    row = [float(-i) * 0.1 for i in range(V)]  # a distinct, descending background
    row[best] = 5.0
    if second is not None:
        row[second] = 5.0 - gap
    return row


def test_identical_logits_are_exact():
    ref = _reference([_row(3, 4)])
    step = compare_step(ref, 0, ref.logits[0].clone())
    assert (step.top1, step.top5_overlap, step.max_abs, step.kl, step.tie) == (1.0, 1.0, 0.0, 0.0, False)
    assert step.cosine == pytest.approx(1.0, abs=1e-6)


def test_top1_disagreement_counts_zero_unless_it_is_a_tie():
    clear = _reference([_row(3, 4, gap=1.0)])
    swapped = torch.tensor(_row(4, 3, gap=1.0))
    step = compare_step(clear, 0, swapped)
    assert step.top1 == 0.0 and not step.tie and step.kl > 0.1

    tied = _reference([_row(3, 4, gap=TIE_EPSILON / 2)])
    step = compare_step(tied, 0, swapped)
    assert step.top1 == 1.0 and step.tie  # the reference could have picked either
    third = torch.tensor(_row(5, 3, gap=1.0))
    assert compare_step(tied, 0, third).top1 == 0.0  # a tie excuses only the runner-up


def test_top5_overlap_counts_shared_ids():
    ref = _reference([[10.0, 9, 8, 7, 6, 0, 0, 0, 0, 0]])
    art = torch.tensor([10.0, 9, 8, 0, 0, 7, 6, 0, 0, 0])  # ids 0-2 shared, 3-4 replaced by 5-6
    assert compare_step(ref, 0, art).top5_overlap == pytest.approx(3 / 5)


def test_kl_matches_its_definition_and_is_never_negative():
    ref = _reference([_row(1, 2)])
    art = torch.tensor(_row(1, 2, gap=0.5))
    p, q = torch.log_softmax(ref.logits[0], -1), torch.log_softmax(art, -1)
    expected = float((p.exp() * (p - q)).sum())
    assert compare_step(ref, 0, art).kl == pytest.approx(expected, rel=1e-5)
    assert compare_step(ref, 0, ref.logits[0] + 3.0).kl == 0.0  # a shifted copy: same distribution


def test_recorded_reference_compares_over_its_top_k_only():
    full = _reference([_row(2, 7)])
    recorded = _reference([_row(2, 7)], recorded_k=4)
    art = torch.tensor(_row(2, 7, gap=1.0))
    art[9] = 4.0  # outside the recorded top-4: seen by the full comparison only
    on_full, on_recorded = compare_step(full, 0, art), compare_step(recorded, 0, art)
    assert on_full.top1 == on_recorded.top1 == 1.0
    assert on_recorded.max_abs == pytest.approx(1.0)  # the largest difference among the recorded ids
    assert on_full.max_abs > on_recorded.max_abs


class _Replay:
    """A session replaying fixed logits, one row per forward call."""

    def __init__(self, rows):
        self.rows, self.i = [torch.tensor(r) for r in rows], 0

    def reset(self):
        self.i = 0

    def forward(self, ids):
        row = self.rows[min(self.i, len(self.rows) - 1)]
        self.i += 1
        return row


def test_greedy_status_and_aggregation():
    ref = _reference([_row(3), _row(4), _row(5, 6, gap=TIE_EPSILON / 2)])
    same = run_prompt(_Replay(ref.logits.tolist()), ref)
    assert same.greedy_status == "identical" and same.greedy_fraction == 1.0
    diverged = run_prompt(_Replay([_row(3), _row(6), _row(5)]), ref)
    assert diverged.greedy_status == "diverged at step 1" and diverged.greedy_prefix == 1
    tie = run_prompt(_Replay([_row(3), _row(4), _row(6, 5, gap=1.0)]), ref)
    assert tie.greedy_status == "tie at step 2" and tie.greedy_fraction == 1.0

    metrics = aggregate([same, diverged])
    assert metrics["steps"] == 6 and metrics["top1"] == pytest.approx(5 / 6)
    assert metrics["kl_max"] >= metrics["kl_mean"] > 0
    assert metrics["greedy_prefix_min"] == pytest.approx(1 / 3)


def test_threshold_messages_name_the_metric_the_limit_and_the_worst_step():
    ref = _reference([_row(3), _row(4)])
    bad = run_prompt(_Replay([_row(3), _row(5)]), ref)
    metrics = aggregate([bad])
    failures = check_thresholds(metrics, Thresholds(top1_min=0.9, kl_mean_max=1e-3, cosine_min=0.9999,
                                                    greedy_prefix_min=1.0, top5_overlap_min=0.0), [bad])
    assert any(f.startswith("top1 0.5000 < 0.9 (worst: prompt 'p' step 1") for f in failures), failures
    assert any(f.startswith("kl_mean ") and "> 0.001 (worst: prompt 'p' step 1" in f for f in failures), failures
    assert any(f.startswith("cosine_min ") for f in failures)
    nan = dict(metrics, kl_mean=math.nan)
    assert any(f.startswith("kl_mean nan") for f in check_thresholds(nan, Thresholds(kl_mean_max=10.0), [bad]))
    assert check_thresholds(metrics, Thresholds(top1_min=0.5, kl_mean_max=100, cosine_min=-1, greedy_prefix_min=0,
                                                top5_overlap_min=0), [bad]) == []


def test_greedy_fraction_of_a_prompt_result():
    result = PromptResult("p", 2, [], [1, 2, 3, 4], 1, "diverged at step 1")
    assert result.greedy_fraction == 0.25
