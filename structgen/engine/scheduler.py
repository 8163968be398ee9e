"""Scheduler: first-come-first-served continuous batching over a paged KV pool. Plain Python, no tensors.

Each step it decides, for every sequence, how many of its uncomputed tokens go through the next forward:
running sequences first (decodes, forced runs, drafts, the next chunk of a long prompt), in arrival order,
then waiting sequences while the token budget, the sequence limit and the KV pool allow. When a running
sequence needs a block and none can be freed by evicting the prefix cache, the newest running sequence is
preempted: its blocks are let go (full pages stay in the prefix cache) and it is recomputed later.

Sequences whose constraint is still compiling stay in the queue without holding up the ones behind them.

Prompt logprobs (GenerateRequest.prompt_logprobs_from = p): prompt token i's logprob comes from the logits at
position i - 1, so until its first output token such a sequence wants a logits row at every prompt position from
q = max(p, 1) - 1 on. Those rows are the last positions of each prefill chunk (like every other logits row), the
prefix-cache match stops at q (cached positions produce no logits), and at most `max_prompt_logprob_rows` of them
go through one step (a chunk that would hold more is cut: the prompt is prefilled in more, shorter chunks).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..errors import StructgenError
from .block_manager import BlockManager
from .radix_cache import RadixCache
from .sequence import Sequence, SequenceStatus


class RequestTooLargeError(StructgenError, ValueError):
    """A request that could never be served by this engine (prompt or KV need beyond its limits)."""


@dataclass
class ScheduledSequence:
    seq: Sequence
    context_len: int                    # tokens with KV before this step
    num_new_tokens: int                 # tokens in this step's forward: committed chunk + drafts
    num_drafts: int = 0                 # the last num_drafts of them are draft tokens (issue 6)
    num_logits: int = 0                 # logits rows wanted (the last positions); 0 = mid-prefill chunk
    # Logits rows wanted just before those, for prompt logprobs only (never sampled): the prompt positions
    # first_prompt_logits_position .. + num_prompt_logits - 1, each giving the logprob of the prompt token after it.
    num_prompt_logits: int = 0

    @property
    def first_prompt_logits_position(self) -> int:
        return self.context_len + self.num_new_tokens - self.num_logits - self.num_prompt_logits

    @property
    def num_committed_new(self) -> int:
        return self.num_new_tokens - self.num_drafts


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


# Prompt-logprob logits rows per step: each is a (vocab,) float32 row (192 KiB for a 49k vocabulary, 512 KiB for
# 128k), and log_softmax makes a second copy, so 256 rows cost at most ~256 MiB.
MAX_PROMPT_LOGPROB_ROWS = 256


class Scheduler:
    def __init__(self, block_manager: BlockManager, radix_cache: RadixCache | None, *, max_num_seqs: int,
                 max_num_batched_tokens: int, max_model_len: int,
                 max_prompt_logprob_rows: int = MAX_PROMPT_LOGPROB_ROWS):
        if max_prompt_logprob_rows < 1:
            raise ValueError(f"max_prompt_logprob_rows must be >= 1, got {max_prompt_logprob_rows}")
        self.max_prompt_logprob_rows = max_prompt_logprob_rows
        self._rows_left = max_prompt_logprob_rows   # prompt logprob rows still free in the step being scheduled
        self.bm = block_manager
        self.cache = radix_cache
        self.page = block_manager.block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        # Counters (cumulative).
        self.num_preemptions = 0
        self.prefix_hit_tokens = 0
        self.prefill_tokens = 0

    # ----- admission -----
    def check_fits(self, seq: Sequence) -> None:
        """Raise RequestTooLargeError if `seq` could never run, even alone with the whole KV pool."""
        if seq.prompt_len >= self.max_model_len:
            raise RequestTooLargeError(
                f"request {seq.request_id}: prompt has {seq.prompt_len} tokens, but the engine's max_model_len "
                f"is {self.max_model_len} (prompt plus at least one output token must fit)")
        total = min(seq.prompt_len + seq.sampling.max_tokens, self.max_model_len)
        need = self.bm.blocks_for(total)
        if need > self.bm.num_blocks:
            raise RequestTooLargeError(
                f"request {seq.request_id}: {seq.prompt_len} prompt + {seq.sampling.max_tokens} max_tokens needs "
                f"{need} KV blocks of {self.page} tokens, but the pool has only {self.bm.num_blocks}; shorten the "
                f"prompt, lower max_tokens or raise the KV memory budget")

    def add(self, seq: Sequence) -> None:
        """Queue `seq` (raises RequestTooLargeError if it can never fit; nothing else is touched then)."""
        self.check_fits(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.running) or any(not s.constraint_pending for s in self.waiting)

    # ----- the step -----
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        # Pages being computed this step by prompts; a waiting prompt that would compute the same page
        # waits one step and then reads it from the prefix cache instead (a shared instruction computed once).
        pages_in_flight: set[tuple[int, ...]] = set()
        scheduled_ids: set[int] = set()
        self._rows_left = self.max_prompt_logprob_rows

        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            committed = seq.num_uncomputed_tokens
            drafts = len(seq.draft_tokens) if committed <= budget else 0
            num_new = self._cap_prompt_rows(seq, seq.num_computed_tokens, min(committed + drafts, budget))
            if num_new == 0:
                i += 1                  # its next prompt logprob rows wait for a step with rows to spare
                continue
            need = self.bm.blocks_for(seq.num_computed_tokens + num_new) - len(seq.block_table)
            while not self._reserve(need):
                victim = self.running[-1]
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not SequenceStatus.RUNNING:
                break                   # it preempted itself: nobody behind it can run either
            seq.block_table.extend(self.bm.allocate(need))
            if committed > 1:
                self._note_in_flight(seq, pages_in_flight)
            out.scheduled.append(self._scheduled(seq, num_new, min(drafts, num_new - min(committed, num_new))))
            scheduled_ids.add(id(seq))
            budget -= num_new
            i += 1

        if out.preempted:
            return out                  # under memory pressure, admit nobody new this step
        self._admit(out, budget, pages_in_flight)
        return out

    def _admit(self, out: SchedulerOutput, budget: int, pages_in_flight: set) -> None:
        skipped: list[Sequence] = []
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.constraint_pending:
                skipped.append(self.waiting.popleft())   # compiling: let the ones behind it go first
                continue
            match = None
            matched = 0
            if self.cache is not None:
                # Leave at least one token to compute: its logits give the next token. Prompt logprobs need the
                # logits of every position from q on: those are computed, never read from the cache.
                q = _prompt_logits_from(seq)
                limit = seq.num_tokens - 1 if q is None else min(seq.num_tokens - 1, q)
                match = self.cache.match_prefix(seq.token_ids[:limit])
                matched = match.num_tokens
                key = tuple(seq.token_ids[:matched + self.page])
                if matched + self.page <= limit and key in pages_in_flight:
                    break               # its next page is being computed right now by an earlier prompt
                self.cache.lock(match.node)
            num_new = self._cap_prompt_rows(seq, matched, min(seq.num_tokens - matched, budget))
            if num_new == 0:
                if match is not None:
                    self.cache.unlock(match.node)
                break                   # no prompt logprob rows left this step
            need = self.bm.blocks_for(matched + num_new) - (len(match.blocks) if match else 0)
            if not self._reserve(need):
                if match is not None:
                    self.cache.unlock(match.node)
                break
            self.waiting.popleft()
            if match is not None:
                self.bm.incref(match.blocks)
                seq.block_table = list(match.blocks)
                seq.cache_node = match.node
                seq.num_cached_pages = len(match.blocks)
                if seq.num_preemptions == 0 and seq.first_scheduled_time is None:
                    seq.num_cached_prompt_tokens = min(matched, seq.prompt_len)
                self.prefix_hit_tokens += matched
            seq.num_computed_tokens = matched
            seq.block_table.extend(self.bm.allocate(need))
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            if num_new > 1:
                self._note_in_flight(seq, pages_in_flight)
            out.scheduled.append(self._scheduled(seq, num_new, 0))
            budget -= num_new
        for seq in reversed(skipped):
            self.waiting.appendleft(seq)

    def _scheduled(self, seq: Sequence, num_new: int, num_drafts: int) -> ScheduledSequence:
        start = seq.num_computed_tokens
        reaches_end = start + num_new - num_drafts >= seq.num_tokens
        prompt_rows = 0
        q = _prompt_logits_from(seq)
        if q is not None:
            # Positions max(q, start) .. the chunk's end, less the last prompt position (its row is the sample's).
            prompt_rows = max(0, min(start + num_new, seq.prompt_len - 1) - max(q, start))
            self._rows_left -= prompt_rows
        return ScheduledSequence(seq=seq, context_len=start, num_new_tokens=num_new, num_drafts=num_drafts,
                                 num_logits=(1 + num_drafts) if reaches_end else 0, num_prompt_logits=prompt_rows)

    def _cap_prompt_rows(self, seq: Sequence, start: int, num_new: int) -> int:
        """`num_new` cut so that the chunk from `start` holds at most the step's remaining prompt logprob rows
        (0: none left for it this step). Unchanged for a sequence that wants no prompt logprobs."""
        q = _prompt_logits_from(seq)
        if q is None:
            return num_new
        first = max(q, start)
        if first + self._rows_left >= seq.prompt_len - 1:
            return num_new              # the rows left cover the rest of its prompt
        return max(0, min(num_new, first + self._rows_left - start))

    def _note_in_flight(self, seq: Sequence, pages: set) -> None:
        start = seq.num_computed_tokens - seq.num_computed_tokens % self.page
        if start + self.page <= seq.num_tokens:
            pages.add(tuple(seq.token_ids[:start + self.page]))

    def _reserve(self, n: int) -> bool:
        """Make `n` blocks free, evicting unlocked prefix-cache leaves if needed."""
        if n <= self.bm.num_free:
            return True
        if self.cache is not None and self.bm.num_free + self.cache.evictable_blocks >= n:
            self.cache.evict(n - self.bm.num_free)
        return n <= self.bm.num_free

    # ----- after the forward -----
    def commit(self, sched: ScheduledSequence, num_accepted_drafts: int = 0) -> None:
        """Record that the step computed KV for the committed chunk and the accepted drafts (which the caller
        has already appended to token_ids). Blocks that held only rejected drafts go back to the pool."""
        seq = sched.seq
        if seq.status is not SequenceStatus.RUNNING:
            return
        prompt_part = max(0, min(seq.prompt_len, sched.context_len + sched.num_committed_new) - sched.context_len)
        self.prefill_tokens += prompt_part
        seq.num_prefilled_tokens += prompt_part
        seq.num_computed_tokens = sched.context_len + sched.num_committed_new + num_accepted_drafts
        keep = self.bm.blocks_for(seq.num_computed_tokens)
        if sched.num_drafts and len(seq.block_table) > keep:
            self.bm.decref(seq.block_table[keep:])
            del seq.block_table[keep:]
        self._cache_pages(seq)

    def _cache_pages(self, seq: Sequence) -> None:
        """Insert the sequence's newly completed full pages (committed tokens only) into the prefix cache."""
        if self.cache is None:
            return
        n_pages = seq.num_computed_tokens // self.page
        if n_pages <= seq.num_cached_pages:
            return
        node = self.cache.insert(seq.token_ids[:n_pages * self.page], seq.block_table[:n_pages])
        self.cache.lock(node)
        if seq.cache_node is not None:
            self.cache.unlock(seq.cache_node)
        seq.cache_node = node
        seq.num_cached_pages = n_pages

    # ----- leaving -----
    def _release(self, seq: Sequence) -> None:
        """Let go of every block of `seq`; its computed full pages stay in the prefix cache."""
        if self.cache is not None:
            self._cache_pages(seq)
            if seq.cache_node is not None:
                self.cache.unlock(seq.cache_node)
        seq.cache_node = None
        seq.num_cached_pages = 0
        self.bm.decref(seq.block_table)
        seq.block_table = []
        seq.num_computed_tokens = 0
        seq.draft_tokens = []

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence, reason: str, error: str | None = None) -> None:
        """Finish `seq` (any state) and free its blocks at once."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
            self._release(seq)
        elif seq.status is SequenceStatus.WAITING:
            try:
                self.waiting.remove(seq)
            except ValueError:
                pass
        seq.finish(reason, error)

    def find(self, request_id: str) -> Sequence | None:
        for seq in self.running:
            if seq.request_id == request_id:
                return seq
        for seq in self.waiting:
            if seq.request_id == request_id:
                return seq
        return None


def _prompt_logits_from(seq: Sequence) -> int | None:
    """The first position whose logits `seq`'s prompt logprobs need, while it still needs them (before its first
    output token); None otherwise."""
    p = seq.request.prompt_logprobs_from
    if p is None or seq.num_output_tokens:
        return None
    return max(p, 1) - 1
