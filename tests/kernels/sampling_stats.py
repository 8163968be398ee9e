"""A chi-square goodness-of-fit check for the statistical sampling tests (no scipy here)."""

from __future__ import annotations

import math

import torch


def chi_square_z(counts: torch.Tensor, expected_probs: torch.Tensor) -> float:
    """The Wilson-Hilferty normal score of Pearson's chi-square statistic (df = categories - 1) for `counts` against
    `expected_probs` (both over the same categories, expected > 0). z > 3.7 means p < 1e-4."""
    counts = counts.double()
    n = counts.sum()
    exp = expected_probs.double() / expected_probs.double().sum() * n
    stat = float(((counts - exp) ** 2 / exp).sum())
    df = counts.numel() - 1
    return ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
