"""Paired statistics against hand-computed values (scipy is not installed, and not needed)."""

from __future__ import annotations

import pytest

from structgen.regress.paired_stats import mcnemar_exact, paired_bootstrap_ci, paired_change


def test_mcnemar_exact_against_binomial_sums():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64)                       # 2 * (1/2)^6
    assert mcnemar_exact(5, 1) == pytest.approx(2 * (1 + 6) / 64)             # 2 * P[X <= 1], X ~ B(6, 1/2)
    assert mcnemar_exact(1, 5) == mcnemar_exact(5, 1)                          # two-sided: symmetric
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)    # 0.03857...
    assert mcnemar_exact(3, 3) == 1.0                                           # capped at 1
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_bootstrap_interval_is_exact_for_constant_differences_and_seeded():
    assert paired_bootstrap_ci([1] * 6, [0] * 6) == (-1.0, -1.0)
    assert paired_bootstrap_ci([1, 0, 1], [1, 0, 1]) == (0.0, 0.0)
    assert paired_bootstrap_ci([], []) == (0.0, 0.0)
    b, c = [1] * 30 + [0] * 10, [1] * 25 + [0] * 5 + [1] * 2 + [0] * 8
    assert paired_bootstrap_ci(b, c, seed=3) == paired_bootstrap_ci(b, c, seed=3)
    low, high = paired_bootstrap_ci(b, c, resamples=4000)
    # the point estimate -3/40 lies inside, the interval straddles it
    assert low < -3 / 40 < high


def test_bootstrap_weights_cases_by_their_outcome_counts():
    # one case with 9 outcomes all lost, one case with 1 outcome kept: resampling whole cases
    low, high = paired_bootstrap_ci([9, 1], [0, 1], [9, 1], resamples=2000)
    assert low == -1.0 and high == 0.0  # a resample of only the second case changes nothing


def test_paired_change_counts_flips_and_applies_the_rule():
    pairs = [([True], [False])] * 6 + [([True], [True])] * 30
    m = paired_change("exact", pairs)
    assert (m.cases, m.outcomes, m.right_to_wrong, m.wrong_to_right) == (36, 36, 6, 0)
    assert m.diff == pytest.approx(-6 / 36)
    assert m.regressed(0.02) and not m.regressed(0.2)     # significant, and past 2 points but not 20
    noise = paired_change("exact", [([True], [False]), ([False], [True])] + [([True], [True])] * 30)
    assert noise.diff == 0 and not noise.regressed(0.0)
    one = paired_change("exact", [([True], [False])] + [([True], [True])] * 9)   # 10 points, but one case
    assert -one.diff > 0.02 and not one.regressed(0.02)
