"""The acceptance rule the engine runs on every verified draft.

The runner samples every logits row of a sequence with the normal sampler -- row j is masked by the constraint
state after drafts[:j] and seeded by (request seed, output position), exactly as plain decoding would sample that
position -- and `accept` keeps the drafts while they equal those samples, then the sample after them.

NOTE: this is the speculative-sampling rule (accept d with probability min(1, p(d) / q(d)), else draw from
max(p - q, 0) renormalized) for a deterministic proposer, q = one-hot(d): P(accept) = p(d) and a rejection draws
from p with d excluded. Every proposer here is deterministic (forced runs, prompt lookup, the draft model's
argmax), so greedy requests get plain decoding's tokens and sampled requests keep the masked target distribution
(tests/engine/speculation/test_verify.py checks the distribution through the engine). A sampling proposer would
need q in this rule.
"""

from __future__ import annotations

from typing import Sequence


def accept(drafts: Sequence[int], sampled: Sequence[int]) -> tuple[int, list[int]]:
    """(number of drafts accepted, the tokens to commit): `drafts[:n] + [sampled[n]]`.

    drafts: the k draft tokens that were verified; sampled: the k + 1 tokens sampled from the sequence's logits
    rows (row j predicts the token after drafts[:j]).
    """
    n = 0
    while n < len(drafts) and sampled[n] == drafts[n]:
        n += 1
    return n, [*drafts[:n], sampled[n]]
