"""How many tokens to draft: AdaptiveDraftLength weighs the acceptance rate seen so far against what one more
verified row costs on this device (DRAFT_COSTS)."""

from __future__ import annotations


# (cost of one more forward row, of one more sequence) relative to a one-row forward, per device type, for
# AdaptiveDraftLength. CPU: measured (see its doc); CUDA: a decode step is memory-bound and rows are nearly free
# until large batches -- an estimate, not measured here.
DRAFT_COSTS = {"cpu": (0.05, 0.15), "cuda": (0.005, 0.02)}


class AdaptiveDraftLength:
    """Chooses k per request from the acceptance rate seen so far and the size of the batch it will verify in.

    The per-token acceptance rate a is tracked as an exponentially weighted ratio of accepted to judged draft
    tokens, so draft position i is accepted with probability about a^i. A step's cost, relative to a one-sequence
    one-row forward, is about 1 + cost_per_sequence * (B - 1) for B sequences (attention, KV, sampling: work per
    sequence) plus cost_per_token for each extra row (the matmuls). One more draft row yields a^i tokens in
    expectation against the B tokens the step makes anyway, so it raises throughput when
    a^i > B * cost_per_token / (1 + cost_per_sequence * (B - 1)). `k(batch_size)` is the longest draft whose every
    position clears that bar (0 when none does).

    Args:
        k_max: the largest draft (EngineConfig.num_speculative_tokens).
        cost_per_token: extra cost of one more row in a forward relative to a one-row forward.
        cost_per_sequence: extra cost of one more sequence (decoding one row) relative to a one-row forward.
        decay: weight kept by the history at each update.
        initial_rate: the acceptance rate assumed before any evidence. Low on purpose: the first draft of a
            request is then short (1 token in a batch of 8, 2 alone), and one accepted draft lifts a past 0.8 (prompt
            lookup averages about 0.5 on the extraction dev set, far more on copied spans).

    The CPU defaults come from SmolLM2-135M on 2 cores at 600 tokens of context (`benchmarks/bench_model_step.py
    --batches 1 8 --rows 1 2 4 --context 600 --no-hf`): one row ~70 ms, 8 sequences ~146 ms, +2.6-4 ms per extra
    row past 16. The bar is then 0.05 at batch 1, 0.19 at batch 8 and 0.29 at 32.
    """

    def __init__(self, k_max: int, *, cost_per_token: float = DRAFT_COSTS["cpu"][0],
                 cost_per_sequence: float = DRAFT_COSTS["cpu"][1], decay: float = 0.7, initial_rate: float = 0.3):
        if k_max < 1:
            raise ValueError(f"k_max must be >= 1, got {k_max}")
        if cost_per_token < 0 or cost_per_sequence < 0:
            raise ValueError(f"costs must be >= 0, got {cost_per_token}, {cost_per_sequence}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if not 0.0 <= initial_rate <= 1.0:
            raise ValueError(f"initial_rate must be in [0, 1], got {initial_rate}")
        self.k_max = k_max
        self.cost_per_token = cost_per_token
        self.cost_per_sequence = cost_per_sequence
        self.decay = decay
        self._accepted = initial_rate
        self._judged = 1.0

    @property
    def acceptance_rate(self) -> float:
        return self._accepted / self._judged

    def update(self, proposed: int, accepted: int) -> None:
        """Record one verification: `accepted` of `proposed` draft tokens taken (forced tokens excluded)."""
        if proposed <= 0:
            return
        if not 0 <= accepted <= proposed:
            raise ValueError(f"accepted ({accepted}) must be in [0, proposed={proposed}]")
        judged = accepted + (1 if accepted < proposed else 0)  # tokens after the first rejection were not judged
        self._accepted = self.decay * self._accepted + accepted
        self._judged = self.decay * self._judged + judged

    def k(self, batch_size: int = 1) -> int:
        """Draft length for a step that verifies in a batch of `batch_size` sequences."""
        a = min(self.acceptance_rate, 0.999)
        b = max(batch_size, 1)
        bar = b * self.cost_per_token / (1.0 + self.cost_per_sequence * (b - 1))  # see the class doc
        k, p = 0, 1.0
        while k < self.k_max:
            p *= a
            if p <= bar:
                break
            k += 1
        return k
