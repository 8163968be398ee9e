"""Percentiles and small summaries shared by every benchmark mode (plain numpy, no state)."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np


def percentile(values: Sequence[float] | np.ndarray, q: float) -> float:
    """The q-th percentile (0..100, linear interpolation); NaN for no values, so an empty cell reads "-"."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return math.nan
    return float(np.percentile(arr, q))


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The value at rank round(q * (n - 1)) of the sorted values (q in 0..1, no interpolation); NaN for none."""
    xs = sorted(values)
    if not xs:
        return math.nan
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def mean(values: Sequence[float] | np.ndarray) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()) if arr.size else math.nan


def summarize(values: Sequence[float] | np.ndarray, quantiles: Iterable[float] = (50, 90, 99)) -> dict[str, float]:
    """{"n", "avg", "p50", "p90", ...} of `values`; the keys are there even when `values` is empty."""
    arr = np.asarray(values, dtype=np.float64)
    out: dict[str, float] = {"n": int(arr.size), "avg": mean(arr)}
    for q in quantiles:
        out[quantile_key(q)] = percentile(arr, q)
    return out


def quantile_key(q: float) -> str:
    """50 -> "p50", 99.9 -> "p99.9"."""
    return f"p{q:g}"


def ratio(value: float, reference: float) -> float:
    """value / reference, NaN when either is missing or the reference is zero."""
    if reference is None or value is None or math.isnan(reference) or math.isnan(value) or reference == 0:
        return math.nan
    return value / reference


def fmt(value: float | int | None, unit_scale: float = 1.0, digits: int = 3) -> str:
    """A table cell: `value * unit_scale` with `digits` significant figures; "-" when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) and unit_scale == 1.0:
        return str(value)
    scaled = float(value) * unit_scale
    if scaled == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(scaled)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{scaled:.{decimals}f}"


def fmt_ratio(value: float) -> str:
    """3 significant figures: 0.00123x stays readable where 2 decimals would print 0.00x."""
    return "-" if value is None or math.isnan(value) else fmt(value) + "x"


def fmt_pct(part: int, whole: int) -> str:
    return "-" if whole == 0 else f"{100.0 * part / whole:.1f}%"
