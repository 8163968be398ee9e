"""What `extract_many` means, for both clients: one result per document in input order, per-item errors, the
retry policy for transient refusals and the progress bar. The clients only supply the waiting (threads or
asyncio)."""

from __future__ import annotations

import random
import sys
import warnings
from dataclasses import dataclass
from typing import Any

from .errors import BudgetClosedWarning, Overloaded, Unavailable
from .extraction import Extracted

# Transient refusals (shutting down / queue full): retried with exponential backoff + jitter.
RETRYABLE = (Unavailable, Overloaded)


@dataclass(frozen=True)
class ExtractResult:
    """One item of `extract_many`: `value` when it worked, `error` (an exception) when it did not.
    `closed_by_budget`: the value is valid, but the token budget closed it (see BudgetClosedWarning)."""

    index: int
    value: Any = None
    error: Exception | None = None
    closed_by_budget: bool = False

    @classmethod
    def of(cls, index: int, extracted: Extracted) -> "ExtractResult":
        return cls(index, value=extracted.value, closed_by_budget=extracted.closed_by_budget)

    @property
    def ok(self) -> bool:
        return self.error is None


def single_value(extracted: Extracted, stacklevel: int = 3):
    """What `extract` returns: the value; a BudgetClosedWarning first when the budget closed it."""
    if extracted.closed_by_budget:
        warnings.warn("the token budget closed this extraction (finish reason 'budget'): the value is valid, but "
                      "the model was cut short; raise max_tokens for the full value", BudgetClosedWarning,
                      stacklevel=stacklevel)
    return extracted.value


def check_concurrency(concurrency: int):
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")


def backoff(attempt: int) -> float:
    return min(8.0, 0.25 * 2 ** attempt) * (0.5 + random.random())


def retry_delay(error: Exception, attempt: int, retries: int) -> float | None:
    """Seconds to wait before trying an item again after `error` on its `attempt`-th try (0-based), or None
    when the error is its result: not transient, or the retries are spent."""
    if isinstance(error, RETRYABLE) and attempt < retries:
        return backoff(attempt)
    return None


def progress(total: int, enabled: bool):
    """A tqdm bar on stderr, shown only when asked and stderr is a terminal."""
    from tqdm import tqdm

    return tqdm(total=total, unit="doc", disable=not (enabled and sys.stderr.isatty()))
