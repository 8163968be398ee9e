"""Paired statistics for two runs over the same cases: is a change in accuracy more than noise?

Every figure is paired by case: the baseline and the candidate answered the same inputs, so the question is how
many cases flipped and which way, not how two independent accuracies differ.

- `mcnemar_exact(b, c)`: the exact (binomial) two-sided McNemar test. Under "no change" each of the b + c
  discordant cases (b: right -> wrong, c: wrong -> right) is equally likely to go either way, so
  p = min(1, 2 * P[X <= min(b, c)]) for X ~ Binomial(b + c, 1/2), summed exactly with integers.
- `paired_bootstrap_ci(...)`: a percentile interval of the candidate-minus-baseline accuracy, resampling *cases*
  with replacement (seeded). A case may carry several binary outcomes (its fields), which are not independent:
  resampling whole cases keeps them together, so the same function serves case-level and field-level accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import comb

import numpy as np


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b right->wrong and c wrong->right flips (1.0 when none flipped)."""
    if b < 0 or c < 0:
        raise ValueError(f"flip counts must be >= 0, got {b}, {c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = Fraction(sum(comb(n, i) for i in range(min(b, c) + 1)), 2 ** n)
    return float(min(Fraction(1), 2 * tail))


def paired_bootstrap_ci(baseline_right, candidate_right, totals=None, *, resamples: int = 2000,
                        confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """(low, high) percentile interval of accuracy(candidate) - accuracy(baseline).

    baseline_right / candidate_right: per case, how many of its outcomes were right (0/1 for one outcome per
    case); totals: per case, how many outcomes it has (default 1 each). Accuracy = sum(right) / sum(totals) over
    a resample of cases. Deterministic for a given seed. (0.0, 0.0) for no cases."""
    b = np.asarray(baseline_right, dtype=np.float64)
    c = np.asarray(candidate_right, dtype=np.float64)
    t = np.ones_like(b) if totals is None else np.asarray(totals, dtype=np.float64)
    if not b.shape == c.shape == t.shape or b.ndim != 1:
        raise ValueError("baseline_right, candidate_right and totals must be 1-D of equal length")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(b)
    if n == 0 or t.sum() == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))            # (resamples, cases)
    tot = t[picks].sum(axis=1)
    diff = np.divide(c[picks].sum(axis=1) - b[picks].sum(axis=1), tot, out=np.zeros(resamples), where=tot > 0)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diff, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedChange:
    """One metric, baseline vs candidate, over the same cases."""

    name: str
    cases: int                  # cases the metric covers
    outcomes: int               # binary outcomes (== cases unless several per case, e.g. fields)
    baseline_right: int
    candidate_right: int
    right_to_wrong: int         # outcomes right in the baseline, wrong in the candidate
    wrong_to_right: int
    p_value: float              # exact McNemar over the flipped outcomes
    ci: tuple[float, float]     # paired bootstrap interval of the accuracy difference

    @property
    def baseline_rate(self) -> float:
        return self.baseline_right / self.outcomes if self.outcomes else float("nan")

    @property
    def candidate_rate(self) -> float:
        return self.candidate_right / self.outcomes if self.outcomes else float("nan")

    @property
    def diff(self) -> float:
        return self.candidate_rate - self.baseline_rate if self.outcomes else 0.0

    def significant(self, alpha: float = 0.05) -> bool:
        """The drop is more than noise: the exact McNemar p is below `alpha` AND the paired bootstrap interval
        lies wholly below zero. Both, because each fails alone where the other holds: the percentile bootstrap
        is over-confident on a handful of cases (one case resampled is a point, "certain"), and McNemar over
        fields counts a case's fields as independent trials, which they are not (the case-resampling interval
        keeps them together)."""
        return self.p_value < alpha and self.ci[1] < 0

    def regressed(self, max_drop: float, alpha: float = 0.05) -> bool:
        """The rule, one for every accuracy metric: the accuracy dropped by more than `max_drop` (absolute) AND
        the drop is significant (`significant`). The size test keeps a real but negligible drop on a huge set from
        failing CI; the significance test keeps a small set's noise from being called a regression."""
        return self.outcomes > 0 and -self.diff > max_drop and self.significant(alpha)


def paired_change(name: str, pairs: list[tuple[list[bool], list[bool]]], *, resamples: int = 2000,
                  confidence: float = 0.95, seed: int = 0) -> PairedChange:
    """`pairs`: per case, (baseline outcomes, candidate outcomes), lists of equal length (one per outcome)."""
    pairs = [(bl, cl) for bl, cl in pairs if bl]
    b_right = [sum(bl) for bl, _ in pairs]
    c_right = [sum(cl) for _, cl in pairs]
    totals = [len(bl) for bl, _ in pairs]
    r2w = sum(x and not y for bl, cl in pairs for x, y in zip(bl, cl))
    w2r = sum(y and not x for bl, cl in pairs for x, y in zip(bl, cl))
    ci = paired_bootstrap_ci(b_right, c_right, totals, resamples=resamples, confidence=confidence, seed=seed)
    return PairedChange(name, len(pairs), sum(totals), sum(b_right), sum(c_right), r2w, w2r,
                        mcnemar_exact(r2w, w2r), ci)
