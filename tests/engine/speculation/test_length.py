"""AdaptiveDraftLength: k follows the acceptance rate and the cost of one more row at a batch size."""

from __future__ import annotations

import pytest

from structgen.engine.speculation.length import AdaptiveDraftLength


def test_adaptive_k_grows_with_acceptance_and_stops_when_it_does_not_pay():
    k = AdaptiveDraftLength(8, cost_per_token=0.1, cost_per_sequence=0.1)
    for _ in range(20):
        k.update(4, 4)
    high = k.k()
    assert high >= 6
    for _ in range(20):
        k.update(4, 0)
    assert k.k() == 0
    for _ in range(10):
        k.update(4, 2)
    assert 0 < k.k() < high


def test_adaptive_k_asks_more_of_a_draft_in_a_bigger_batch():
    # a = 2/3 after steady evidence. With a row costing 0.05 and a sequence 0.15 of a one-row forward, the bar a
    # draft position must clear is 0.05 at batch 1 ((2/3)^i > 0.05: i <= 7), 0.4 / 2.05 = 0.195 at batch 8
    # (i <= 4), and 1.6 / 5.65 = 0.283 at batch 32 (i <= 3); with rows as dear as sequences (0.15 each), 1.2 / 2.05
    # = 0.585 at batch 8 (i <= 1).
    k = AdaptiveDraftLength(8, cost_per_token=0.05, cost_per_sequence=0.15)
    for _ in range(40):
        k.update(5, 2)
    assert abs(k.acceptance_rate - 2 / 3) < 0.01  # 2 accepted of 3 judged per verification
    assert [k.k(b) for b in (1, 8, 32)] == [7, 4, 3]
    dear = AdaptiveDraftLength(8, cost_per_token=0.15, cost_per_sequence=0.15)
    for _ in range(40):
        dear.update(5, 2)
    assert dear.k(8) == 1
    free = AdaptiveDraftLength(4, cost_per_token=0.0)
    assert free.k(64) == 4


def test_adaptive_k_validates_its_inputs():
    with pytest.raises(ValueError):
        AdaptiveDraftLength(0)
    with pytest.raises(ValueError):
        AdaptiveDraftLength(4, decay=1.0)
    with pytest.raises(ValueError):
        AdaptiveDraftLength(4).update(2, 3)
