"""Drafter: after each step, decides what each sequence feeds the next forward beyond its committed tokens.

A draft is the forced run (forced.py) followed by a proposer's tokens (lookup.py: prompt lookup; draft_model.py: a
smaller model), each proposer called once per step with every sequence it drafts for (proposer.py). The engine
puts the draft in `seq.draft_tokens`; the runner verifies every position in the same forward that computes the
KV, and the engine keeps what `verify.accept` returns.

NOTE: every proposer here is deterministic (q = one-hot; the draft model proposes its argmax), so verifying by
sampling each row independently and accepting while the sample equals the draft is exactly the speculative
acceptance rule (verify.py): greedy rows reproduce plain decoding token for token, sampled rows keep the
constrained target distribution. Forced tokens are verified too: a forced run the model would have tokenized
differently costs a rejected position, never a changed output.

Switches: EngineConfig.forced_runs and EngineConfig.speculation ("prompt_lookup" | "draft_model") turn drafting on
for the server; both are on by default (forced runs + prompt lookup). num_speculative_tokens caps a proposal and
AdaptiveDraftLength (length.py) picks k below it. GenerateRequest.speculation: None follows the server, False opts
the request out of forced runs and proposals, True asks for the server's proposer (prompt lookup when the server
has no draft model) when the server drafts at all (forced_runs or speculation on).

Counters: accepted forced tokens go to `seq.num_forced_tokens`, accepted proposals to `seq.num_draft_accepted`;
every other output token was sampled.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from ..config import EngineConfig
from ..sequence import Sequence
from .forced import ForcedRunPlanner
from .length import DRAFT_COSTS, AdaptiveDraftLength
from .lookup import LookupProposer
from .proposer import DraftRequest, Proposer

# A forced run longer than this waits for the next step (keeps one sequence from hogging a step's token budget).
MAX_FORCED_TOKENS = 16


@dataclass
class _DraftState:
    proposer: Proposer | None                  # what proposes after the forced run; None = no proposals
    draft_length: AdaptiveDraftLength | None   # k for the proposer
    num_forced: int = 0                  # leading tokens of the current draft that are a forced run
    proposed: int = 0                    # proposed tokens verified / accepted over the request (stats)
    accepted: int = 0


class Drafter:
    """Per-engine drafting policy; per-sequence state lives in a weak map. The draft model's KV is not: the
    engine calls `release(seq)` when a request leaves.

    draft_model: the DraftModelProposer when config.speculation == "draft_model" (required then)."""

    def __init__(self, config: EngineConfig, tokenizer, *, cost_per_token: float = DRAFT_COSTS["cpu"][0],
                 cost_per_sequence: float = DRAFT_COSTS["cpu"][1], max_forced_tokens: int = MAX_FORCED_TOKENS,
                 draft_model: Proposer | None = None):
        if config.speculation == "draft_model" and draft_model is None:
            raise ValueError("EngineConfig.speculation='draft_model' needs a loaded draft model (LLMEngine.from_config "
                             "loads EngineConfig.draft_model; LLMEngine(..., draft_model=model) takes one)")
        self.config = config
        self.eos_token_ids = frozenset(tokenizer.eos_token_ids)
        self.forced = ForcedRunPlanner(tokenizer, max_tokens=max_forced_tokens) if config.forced_runs else None
        self.draft_model = draft_model if config.speculation == "draft_model" else None
        self.lookup = LookupProposer(tokenizer, self.eos_token_ids)
        self.max_forced_tokens = max_forced_tokens if config.forced_runs else 0
        self.lookup_k = config.num_speculative_tokens
        self.cost_per_token = cost_per_token
        self.cost_per_sequence = cost_per_sequence
        self._states: "weakref.WeakKeyDictionary[Sequence, _DraftState]" = weakref.WeakKeyDictionary()
        # Engine-wide counters.
        self.proposed_tokens = 0             # proposals (lookup or draft model) verified / accepted
        self.accepted_proposed_tokens = 0
        self.accepted_forced_tokens = 0
        self.rejected_forced_tokens = 0

    @property
    def max_draft_tokens(self) -> int:
        """Most draft tokens one sequence may carry into a step (the runner sizes its mask rows with it)."""
        return self.max_forced_tokens + self.lookup_k

    @property
    def enabled(self) -> bool:
        return self.config.forced_runs or self.config.speculation != "off"

    def _proposer_for(self, seq: Sequence) -> Proposer | None:
        """What proposes tokens after the forced run for this request (None: nothing)."""
        wanted = seq.request.speculation
        if wanted is False:
            return None
        if self.draft_model is not None:
            return self.draft_model
        if wanted is None and self.config.speculation != "prompt_lookup":
            return None
        return self.lookup

    def _state(self, seq: Sequence) -> _DraftState:
        st = self._states.get(seq)
        if st is None:
            proposer = self._proposer_for(seq)
            st = _DraftState(proposer, AdaptiveDraftLength(self.lookup_k, cost_per_token=self.cost_per_token,
                                                           cost_per_sequence=self.cost_per_sequence)
                             if proposer is not None else None)
            self._states[seq] = st
        return st

    @staticmethod
    def _room(seq: Sequence, max_model_len: int) -> int:
        """Draft tokens that fit: the accepted drafts plus the model's own next token must fit max_tokens and the
        context. (A constrained draft that fits this room but not the constraint's bound is cut by the runner's
        budget guard, which checks every verify row against its own budget -- issue 13.)"""
        return seq.token_budget(max_model_len) - 1

    def propose(self, seq: Sequence, max_model_len: int, batch_size: int = 1) -> None:
        """`propose_batch` for one sequence that will be verified in a batch of `batch_size`."""
        self.propose_batch([seq], max_model_len, batch_size)

    def propose_batch(self, seqs: list[Sequence], max_model_len: int, batch_size: int | None = None) -> None:
        """Set `seq.draft_tokens` of each sequence for the next step (cursors already advanced through every
        committed token): its forced run, then what its proposer adds, each proposer called once for all.
        `batch_size` (default len(seqs)): sequences the next step verifies together (the bar a proposal must
        clear rises with it)."""
        batch_size = len(seqs) if batch_size is None else batch_size
        asks: dict[int, tuple[Proposer, list[DraftRequest]]] = {}
        for seq in seqs:
            seq.draft_tokens = []
            if seq.is_finished or seq.request.speculation is False:
                continue
            st = self._state(seq)
            st.num_forced = 0
            room = self._room(seq, max_model_len)
            forced: list[int] = []
            if room > 0 and self.forced is not None and seq.cursor is not None:
                forced = self.forced.propose([DraftRequest(seq, room)])[0]
                st.num_forced = len(forced)
                seq.draft_tokens = forced
            if st.proposer is None:
                continue
            if st.draft_length.k(1) == 0:
                # Drafting would not pay even alone (and k never rises again without new evidence): drop what
                # the proposer holds for the request (e.g. its draft KV).
                st.proposer.release(seq)
                continue
            k = min(st.draft_length.k(batch_size), room - len(forced))
            if forced and forced[-1] in self.eos_token_ids:
                k = 0                       # a forced run that ends the output
            if k > 0:
                asks.setdefault(id(st.proposer), (st.proposer, []))[1].append(DraftRequest(seq, k, list(forced)))
        for proposer, group in asks.values():
            for ask, tokens in zip(group, proposer.propose(group)):
                if tokens:
                    ask.seq.draft_tokens = ask.prefix + tokens

    def release(self, seq: Sequence) -> None:
        """The request left (finished, aborted): drop what its proposer holds for it (draft KV blocks)."""
        st = self._states.get(seq)
        if st is not None and st.proposer is not None:
            st.proposer.release(seq)

    def observe(self, seq: Sequence, num_drafts: int, accepted: int) -> None:
        """Record a verification of the first `num_drafts` tokens of the draft: `accepted` of them were kept."""
        if num_drafts <= 0:
            return
        st = self._state(seq)
        forced = min(st.num_forced, num_drafts)
        forced_ok = min(accepted, forced)
        seq.num_forced_tokens += forced_ok
        self.accepted_forced_tokens += forced_ok
        self.rejected_forced_tokens += forced - forced_ok
        proposed = num_drafts - forced
        if proposed > 0 and accepted >= forced:
            proposed_ok = accepted - forced
            seq.num_draft_accepted += proposed_ok
            st.proposed += proposed
            st.accepted += proposed_ok
            self.proposed_tokens += proposed
            self.accepted_proposed_tokens += proposed_ok
            if st.draft_length is not None:
                st.draft_length.update(proposed, proposed_ok)
        st.num_forced = 0
