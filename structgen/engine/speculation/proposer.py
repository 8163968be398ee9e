"""The one interface every source of draft tokens implements (forced runs, prompt lookup, a draft model)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..sequence import Sequence


@dataclass
class DraftRequest:
    """One sequence's ask: up to `k` tokens continuing seq.token_ids + `prefix`.

    prefix: uncommitted tokens already in the draft (a forced run); the constraint admits them by construction.
    """

    seq: Sequence
    k: int
    prefix: list[int] = field(default_factory=list)


class Proposer(Protocol):
    """Proposes draft tokens for a batch of sequences; the target model verifies them in the next forward.

    NOTE: every proposer is deterministic -- its tokens are a function of the committed prefix (q = one-hot) --
    which is what makes `verify.accept` exact. Each returned list is admitted by the sequence's constraint after
    `prefix` and holds at most `k` tokens; every cursor ends where it started.
    """

    def propose(self, requests: list[DraftRequest]) -> list[list[int]]:
        """Draft tokens for each request (possibly none), in order."""
        ...

    def release(self, seq: Sequence) -> None:
        """The request left or stopped drafting: drop what is held for it (a no-op when nothing is)."""
        ...
