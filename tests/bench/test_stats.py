"""structgen/bench/stats.py: percentiles, summaries and table cells."""

import math

import pytest

from structgen.bench import stats


def test_percentiles_interpolate_and_empty_is_nan():
    values = [4.0, 1.0, 3.0, 2.0]
    assert stats.percentile(values, 50) == 2.5
    assert stats.percentile(values, 100) == 4.0
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError):
        stats.percentile(values, 101)


def test_summary_keys_are_stable_even_without_values():
    s = stats.summarize(range(1, 1001), (50, 99.9))
    assert s["n"] == 1000 and s["avg"] == 500.5 and set(s) == {"n", "avg", "p50", "p99.9"}
    assert s["p99.9"] == pytest.approx(999.001)
    empty = stats.summarize([], (50,))
    assert empty["n"] == 0 and math.isnan(empty["p50"])


def test_cells_and_ratios():
    assert stats.fmt(0.0123456, 1e3) == "12.3"
    assert stats.fmt(1234.5) == "1234"
    assert stats.fmt(math.nan) == "-" and stats.fmt(None) == "-"
    assert stats.fmt(7) == "7"
    assert stats.fmt_ratio(stats.ratio(3.0, 1.5)) == "2.00x"
    assert stats.fmt_ratio(stats.ratio(1.0, 800.0)) == "0.00125x"
    assert stats.fmt_ratio(stats.ratio(3.0, 0.0)) == "-"
    assert stats.fmt_pct(1, 3) == "33.3%" and stats.fmt_pct(0, 0) == "-"


def test_nearest_rank_takes_a_value_of_the_sample():
    assert stats.nearest_rank([3.0, 1.0, 2.0], 0.5) == 2.0
    assert stats.nearest_rank([1.0, 2.0, 3.0, 4.0], 0.95) == 4.0     # round(0.95 * 3) = 3
    assert stats.nearest_rank([1.0, 2.0], 0.0) == 1.0
    assert math.isnan(stats.nearest_rank([], 0.5))
