"""Drafter: after each step, decides what each sequence feeds the next forward beyond its committed tokens.

A draft is the forced run (structgen/engine/jump_forward.py) followed by proposals, cut where the constraint
rejects them. The proposer is prompt lookup (structgen/engine/speculative.py, per sequence in `propose`) or a
draft model (structgen/engine/draft_model.py, batched over every drafting sequence in `propose_batch`). The engine
puts the draft in `seq.draft_tokens`; the runner verifies every position in the same forward that computes the
KV, and the engine keeps the prefix the model agrees with plus the model's own next token.

NOTE: every proposer here is deterministic (q = one-hot; the draft model proposes its argmax), so verifying by
sampling each row independently and accepting while the sample equals the draft is exactly the speculative
acceptance rule: greedy rows reproduce plain decoding token for token, sampled rows keep the constrained target
distribution. Forced tokens are verified too: a forced run the model would have tokenized differently costs a
rejected position, never a changed output.

Switches: EngineConfig.forced_runs and EngineConfig.speculation ("prompt_lookup" | "draft_model") turn drafting on
for the server; both are on by default (forced runs + prompt lookup). num_speculative_tokens caps a proposal and
AdaptiveDraftLength picks k below it. GenerateRequest.speculation: None follows the server, False opts the request
out of forced runs and proposals, True asks for the server's proposer (prompt lookup when the server has no draft
model) when the server drafts at all (forced_runs or speculation on).

Counters: accepted forced tokens go to `seq.num_forced_tokens`, accepted proposals to `seq.num_draft_accepted`;
every other output token was sampled.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from .config import EngineConfig
from .draft_model import DraftModelProposer, DraftRequest
from .jump_forward import ForcedRunPlanner, vocabulary_bytes
from .sequence import Sequence
from .speculative import DRAFT_COSTS, AdaptiveDraftLength, PromptLookup, constrain_draft, space_aliases

# A forced run longer than this waits for the next step (keeps one sequence from hogging a step's token budget).
MAX_FORCED_TOKENS = 16


@dataclass
class _DraftState:
    lookup: PromptLookup | None
    draft_length: AdaptiveDraftLength | None   # k for the proposer (lookup or draft model); None = no proposals
    num_forced: int = 0                  # leading tokens of the current draft that are a forced run
    lookup_synced: int = 0               # tokens of seq.token_ids already in the lookup index
    proposed: int = 0                    # proposed tokens verified / accepted over the request (stats)
    accepted: int = 0


class Drafter:
    """Per-engine drafting policy; per-sequence state lives in a weak map. The draft model's KV is not: the
    engine calls `release(seq)` when a request leaves.

    proposer: the DraftModelProposer when config.speculation == "draft_model" (required then)."""

    def __init__(self, config: EngineConfig, tokenizer, *, cost_per_token: float = DRAFT_COSTS["cpu"][0],
                 cost_per_sequence: float = DRAFT_COSTS["cpu"][1], max_forced_tokens: int = MAX_FORCED_TOKENS,
                 proposer: DraftModelProposer | None = None):
        if config.speculation == "draft_model" and proposer is None:
            raise ValueError("EngineConfig.speculation='draft_model' needs a loaded draft model (LLMEngine.from_config "
                             "loads EngineConfig.draft_model; LLMEngine(..., draft_model=model) takes one)")
        self.config = config
        self.proposer = proposer if config.speculation == "draft_model" else None
        self.eos_token_ids = frozenset(tokenizer.eos_token_ids)
        self.planner = ForcedRunPlanner(tokenizer, max_tokens=max_forced_tokens) if config.forced_runs else None
        self._tokenizer = tokenizer
        self._aliases: dict[int, int] | None = None   # built on the first request that looks up
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

    def _proposer_kind(self, seq: Sequence) -> str | None:
        """"lookup", "draft_model" or None: what proposes tokens after the forced run for this request."""
        wanted = seq.request.speculation
        if wanted is False:
            return None
        if self.config.speculation == "draft_model":
            return "draft_model"
        if wanted is None:
            return "lookup" if self.config.speculation == "prompt_lookup" else None
        return "lookup"

    def _state(self, seq: Sequence) -> _DraftState:
        st = self._states.get(seq)
        if st is None:
            kind = self._proposer_kind(seq)
            lookup = kind == "lookup"
            if lookup and self._aliases is None:
                self._aliases = space_aliases(vocabulary_bytes(self._tokenizer).tokens)
            st = _DraftState(PromptLookup([], aliases=self._aliases) if lookup else None,
                             AdaptiveDraftLength(self.lookup_k, cost_per_token=self.cost_per_token,
                                                 cost_per_sequence=self.cost_per_sequence) if kind else None)
            self._states[seq] = st
        return st

    @staticmethod
    def _room(seq: Sequence, max_model_len: int) -> int:
        """Draft tokens that fit: the accepted drafts plus the model's own next token must fit max_tokens and the
        context."""
        return min(seq.sampling.max_tokens - seq.num_output_tokens, max_model_len - seq.num_tokens) - 1

    def propose(self, seq: Sequence, max_model_len: int, batch_size: int = 1) -> None:
        """Set `seq.draft_tokens` for the next step (cursor already advanced through every committed token).
        `batch_size`: sequences the next step will verify together (the bar a proposal must clear rises with it)."""
        seq.draft_tokens = []
        if seq.is_finished or seq.request.speculation is False:
            return
        st = self._state(seq)
        st.num_forced = 0
        room = self._room(seq, max_model_len)
        if room <= 0:
            return
        draft: list[int] = []
        if self.planner is not None and seq.cursor is not None:
            run = self.planner.plan(seq.cursor, seq.output_token_ids)
            draft = list(run.token_ids[:room])
            st.num_forced = len(draft)
        if st.lookup is not None and len(draft) < room:
            if st.lookup_synced < seq.num_tokens:
                st.lookup.extend(seq.token_ids[st.lookup_synced:])
                st.lookup_synced = seq.num_tokens
            k = min(st.draft_length.k(batch_size), room - len(draft))
            if k > 0:
                proposal = st.lookup.propose(k, suffix=draft)
                if proposal and seq.cursor is not None:
                    # Walk the forced part first (admitted by construction), then cut the proposal.
                    for t in draft:
                        if not seq.cursor.advance(t):
                            raise RuntimeError("a forced run the constraint rejects")  # planner invariant
                    try:
                        proposal = proposal[:constrain_draft(seq.cursor, proposal, eos_token_ids=self.eos_token_ids)]
                    finally:
                        if draft:
                            seq.cursor.rollback(len(draft))
                elif proposal:
                    proposal = proposal[:constrain_draft(None, proposal, eos_token_ids=self.eos_token_ids)]
                draft += proposal
        seq.draft_tokens = draft

    def propose_batch(self, seqs: list[Sequence], max_model_len: int) -> None:
        """`propose` for each sequence, then the draft model's tokens after the forced runs, in one batch."""
        asks: list[DraftRequest] = []
        for seq in seqs:
            self.propose(seq, max_model_len, len(seqs))
            if self.proposer is None or seq.is_finished:
                continue
            st = self._state(seq)
            if st.draft_length is None:     # this request has no proposer (e.g. it opted out)
                continue
            if st.draft_length.k(1) == 0:
                # Drafting would not pay even alone (and k never rises again without new evidence): drop the
                # request's draft KV.
                self.proposer.release(seq)
                continue
            k_adaptive = st.draft_length.k(len(seqs))
            if k_adaptive == 0:
                continue                    # not at this batch size; the draft KV stays for a smaller batch
            k = min(k_adaptive, self._room(seq, max_model_len) - len(seq.draft_tokens))
            if seq.draft_tokens and seq.draft_tokens[-1] in self.eos_token_ids:
                k = 0                       # a forced run that ends the output
            if k > 0:
                asks.append(DraftRequest(seq, k, list(seq.draft_tokens)))
        if not asks:
            return
        for ask, tokens in zip(asks, self.proposer.propose(asks)):
            if tokens:
                ask.seq.draft_tokens = ask.prefix + tokens

    def release(self, seq: Sequence) -> None:
        """The request left (finished, aborted): drop what the proposer holds for it (draft KV blocks)."""
        if self.proposer is not None:
            self.proposer.release(seq)

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
