"""extract_many's shared policy (structgen/client/batch.py): which errors are retried, and for how long."""

from __future__ import annotations

import grpc
import pytest

import structgen
from structgen.client import batch


def test_retry_delay_only_for_transient_refusals_within_the_retries():
    busy = structgen.Overloaded(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
    gone = structgen.Unavailable(grpc.StatusCode.UNAVAILABLE, "shutting down")
    bad = structgen.InvalidRequest(grpc.StatusCode.INVALID_ARGUMENT, "too long")
    assert 0 < batch.retry_delay(busy, 0, 2) <= 0.375 and batch.retry_delay(gone, 1, 2) > 0
    assert batch.retry_delay(busy, 2, 2) is None  # spent
    assert batch.retry_delay(bad, 0, 5) is None and batch.retry_delay(ValueError("x"), 0, 5) is None
    assert all(batch.backoff(a) <= 12.0 for a in range(20))  # capped (8 s x jitter <= 1.5)


def test_concurrency_must_be_positive():
    with pytest.raises(ValueError, match="concurrency"):
        batch.check_concurrency(0)
