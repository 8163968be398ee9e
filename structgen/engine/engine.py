"""LLMEngine (synchronous: `step() = schedule() -> run() -> postprocess()`). AsyncEngine (async_engine.py) drives
it from a background thread; loader.py builds one from an EngineConfig; output_builder.py turns committed tokens
into deltas. The serving API is written in docs/INTERFACES.md.

Threads: LLMEngine is used by one thread at a time (AsyncEngine's loop thread). Constraints compile in worker
processes (structgen/fsm/compile_pool.py); a finished compile wakes the loop. `stats()` may be read from any thread.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from concurrent.futures import Future

from ..fsm.budget import budget_refusal
from ..fsm.compile_pool import CompilePool
from . import output_builder
from .config import EngineConfig
from .detokenizer import IncrementalDetokenizer
from .loader import MAX_POSITIONS_CAP, load_engine_parts
from .outputs import EngineStats, GenerateOutput
from .requests import ConstraintSpec, GenerateRequest
from .scheduler import RequestTooLargeError, Scheduler, ScheduledSequence
from .sequence import Sequence
from .speculation import verify
from .speculation.drafter import Drafter
from .speculation.length import DRAFT_COSTS

_RATE_WINDOW_S = 5.0


def admission_error(seq: Sequence, max_model_len: int) -> str | None:
    """The refusal of a constrained request whose shortest completion does not fit its budget (None: it fits)."""
    room = max_model_len - seq.num_tokens
    try:
        need = seq.cursor.min_tokens_to_finish()
    except Exception as e:  # noqa: BLE001 - e.g. ConstraintTooComplexError while measuring the bound
        return f"{type(e).__name__}: {e}"
    return budget_refusal(need, seq.sampling.max_tokens, room)


class LLMEngine:
    """One model on one device. `draft_model`: a loaded LlamaModel of the same tokenizer, used when
    config.speculation == "draft_model" (from_config loads config.draft_model); `draft_kv_bytes` sizes its KV pool
    (default: `draft_model.default_draft_kv_bytes`)."""

    def __init__(self, config: EngineConfig, model, tokenizer, kv=None, *, draft_model=None,
                 draft_kv_bytes: int | None = None):
        import torch

        from .block_manager import BlockManager
        from .kv_cache import KVCache
        from .radix_cache import RadixCache
        from .runner import ModelRunner

        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.max_model_len = min(config.max_model_len or MAX_POSITIONS_CAP, model.max_positions)
        if kv is None:
            dtype = getattr(torch, config.resolved_dtype)
            kv = KVCache.from_budget(model.config, config.resolved_kv_cache_bytes, config.block_size,
                                     model.device, dtype)
        self.kv = kv
        self.block_manager = BlockManager(kv.num_blocks, kv.block_size)
        self.radix_cache = RadixCache(kv.block_size, self.block_manager) if config.enable_prefix_cache else None
        self.scheduler = Scheduler(self.block_manager, self.radix_cache, max_num_seqs=config.max_num_seqs,
                                   max_num_batched_tokens=config.max_num_batched_tokens,
                                   max_model_len=self.max_model_len)
        # Issue 6: forced runs and prompt-lookup / draft-model drafts, verified in the next forward
        # (structgen/engine/speculation/).
        proposer = None                 # without one, Drafter refuses speculation="draft_model"
        if config.speculation == "draft_model" and draft_model is not None:
            from .speculation.draft_model import DraftModelProposer, default_draft_kv_bytes

            proposer = DraftModelProposer(
                draft_model, target_vocab_size=model.config.vocab_size, tokenizer_vocab_size=tokenizer.vocab_size,
                eos_token_ids=tokenizer.eos_token_ids, block_size=kv.block_size, max_num_seqs=config.max_num_seqs,
                kv_cache_bytes=draft_kv_bytes or default_draft_kv_bytes(kv, draft_model.config, draft_model.dtype))
        # Draft rows are weighed against what a row and a sequence cost on this device (AdaptiveDraftLength).
        row_cost, seq_cost = DRAFT_COSTS["cpu" if model.device.type == "cpu" else "cuda"]
        self.drafter = Drafter(config, tokenizer, draft_model=proposer, cost_per_token=row_cost,
                               cost_per_sequence=seq_cost)
        # Rows: one per sequence, plus draft positions when speculating.
        max_rows = config.max_num_seqs * (1 + (self.drafter.max_draft_tokens if self.drafter.enabled else 0))
        self.runner = ModelRunner(model, kv, max_rows=max_rows, overlap_mask_fill=config.overlap_mask_fill,
                                  max_model_len=self.max_model_len)
        # Issue 14: constraints compile in worker processes with hard time and memory limits (fsm/compile_pool.py).
        self.compiler = CompilePool(tokenizer, workers=config.compile_workers, isolation=config.compile_isolation,
                                    max_queue=config.compile_queue, per_client=config.compile_per_client or None)
        self.eos_token_ids = frozenset(tokenizer.eos_token_ids)
        self._seqs: dict[str, Sequence] = {}
        self._compiling: list[Sequence] = []
        self._outbox: list[GenerateOutput] = []
        self._seed_counter = itertools.count()
        self.on_compiled = None         # callable run (in a pool thread) when a compile finishes
        # Counters.
        self._stats_lock = threading.Lock()
        self._steps = 0
        self._mask_steps = 0
        self._mask_time = 0.0
        self._forward_time = 0.0
        self._generated = 0
        self._forced = 0
        self._finished = collections.Counter()
        self._rate = collections.deque()    # (time, tokens) of recent steps

    @classmethod
    def from_config(cls, config: EngineConfig) -> "LLMEngine":
        """Load the model, tokenizer and draft model `config` names (loader.py) and build the engine."""
        model, tokenizer, draft = load_engine_parts(config)
        return cls(config, model, tokenizer, draft_model=draft)

    # ----- requests in -----
    def add_request(self, req: GenerateRequest) -> Sequence:
        """Queue a request. Errors of the request itself (too long, duplicate id) come back as a finished
        output with finish_reason="error" on the next step; nothing else is touched."""
        seq = Sequence(req, self.eos_token_ids)
        seq.detokenizer = IncrementalDetokenizer(
            self.tokenizer, req.sampling.stop,
            accept=(lambda text: output_builder.stop_allowed(seq, text, self.tokenizer))
            if req.sampling.stop and req.constraint is not None else None)
        if req.sampling.seed is None:
            seq.seed = self.config.seed * 1_000_003 + next(self._seed_counter)
        if req.request_id in self._seqs:
            self._fail(seq, f"request id {req.request_id!r} is already in flight")
            return seq
        vocab = self.model.config.vocab_size
        bad = [t for t in req.prompt_token_ids if not isinstance(t, int) or not 0 <= t < vocab]
        if bad:
            self._fail(seq, f"prompt token ids must be in [0, {vocab}); got {bad[:5]}")
            return seq
        bad = [t for t, _ in req.sampling.logit_bias if t >= vocab]
        if bad:
            self._fail(seq, f"logit_bias token ids must be < {vocab}, got {bad[:5]}")
            return seq
        try:
            self.scheduler.check_fits(seq)
        except RequestTooLargeError as e:
            self._fail(seq, str(e))
            return seq
        c = req.constraint
        if isinstance(c, ConstraintSpec):
            seq.compile_future = self.compiler.submit(c.kind, c.value, dict(c.options))
            if self.on_compiled is not None:
                seq.compile_future.add_done_callback(lambda _f: self.on_compiled())
            self._compiling.append(seq)
        elif c is not None:
            error = self._attach(seq, c)
            if error is not None:
                self._fail(seq, error)
                return seq
        self._seqs[req.request_id] = seq
        self.scheduler.add(seq)
        return seq

    def _attach(self, seq: Sequence, compiled) -> str | None:
        """Give `seq` a cursor of `compiled`; the error text if the constraint cannot finish within the request's
        budget (issue 13: refused up front, never truncated)."""
        seq.cursor = compiled.cursor()
        seq.mask_words = -(-compiled.vocab_size // 32)
        return admission_error(seq, self.max_model_len)

    def _resolve_compiles(self) -> None:
        still = []
        for seq in self._compiling:
            fut: Future = seq.compile_future
            if seq.is_finished:
                continue
            if not fut.done():
                still.append(seq)
                continue
            err = fut.exception()
            if err is not None:
                self._finish(seq, "error", f"{type(err).__name__}: {err}")
            else:
                error = self._attach(seq, fut.result()[0])
                if error is not None:
                    self._finish(seq, "error", error)
        self._compiling = still

    def abort(self, request_id: str) -> bool:
        """Finish the request with "abort" and free its KV blocks now. False if it is not in flight."""
        seq = self._seqs.get(request_id)
        if seq is None or seq.is_finished:
            return False
        self._finish(seq, "abort")
        return True

    def flush_prefix_cache(self) -> int:
        """Drop every prefix-cache entry no running request holds; returns the KV blocks freed (SGLang's
        /flush_cache). Engine thread only, like every other call that touches the cache."""
        if self.radix_cache is None:
            return 0
        return self.radix_cache.evict(self.radix_cache.num_blocks)

    def abort_all(self) -> None:
        """`abort` every request in flight (their final outputs come with the next step or drain_outputs)."""
        for rid in list(self._seqs):
            self.abort(rid)

    def fail_all(self, message: str) -> None:
        """Finish every request in flight with finish_reason="error" and `message` (the engine cannot go on)."""
        for seq in list(self._seqs.values()):
            self._finish(seq, "error", message)

    def drain_outputs(self) -> list[GenerateOutput]:
        """The outputs produced since the last step or drain, without stepping."""
        out, self._outbox = self._outbox, []
        return out

    # ----- the step -----
    def has_unfinished(self) -> bool:
        return bool(self._seqs) or bool(self._outbox)

    def has_work(self) -> bool:
        """There is something step() can do now (not just compiles to wait for)."""
        return bool(self._outbox) or self.scheduler.has_work or any(
            s.compile_future.done() for s in self._compiling)

    def step(self) -> list[GenerateOutput]:
        self._resolve_compiles()
        sched = self.scheduler.schedule()
        if not sched.is_empty:
            now = time.perf_counter()
            for sc in sched.scheduled:
                if sc.seq.first_scheduled_time is None:
                    sc.seq.first_scheduled_time = now
            result = self.runner.run(sched.scheduled)
            self._postprocess(sched.scheduled, result.sampled, result.failed or {}, result.budget_restricted or {})
            with self._stats_lock:
                self._steps += 1
                self._forward_time += result.forward_s
                if result.num_constrained_rows:
                    self._mask_steps += 1
                    self._mask_time += result.mask_s
        return self.drain_outputs()

    def _postprocess(self, scheduled: list[ScheduledSequence], sampled: list[list[int]],
                     failed: dict[str, str], budget_restricted: dict[str, int]) -> None:
        now = time.perf_counter()
        new_tokens = 0
        drafting: list[Sequence] = []
        for sc, toks in zip(scheduled, sampled):
            seq = sc.seq
            if seq.is_finished:
                continue
            if seq.request_id in failed:
                self._finish(seq, "error", failed[seq.request_id])
                continue
            if not toks:
                self.scheduler.commit(sc)
                continue
            pos = budget_restricted.get(seq.request_id)
            if pos is not None and seq.budget_restricted_at is None:
                seq.budget_restricted_at = pos
            # Verification (issue 6): the drafts the sampled rows agree with, then the next sample.
            drafts = seq.draft_tokens[:sc.num_drafts]
            accepted, commit = verify.accept(drafts, toks)
            seq.draft_tokens = []
            seq.append_tokens(commit[:accepted])
            self.scheduler.commit(sc, accepted)
            seq.append_tokens(commit[accepted:])
            self.drafter.observe(seq, len(drafts), accepted)
            if seq.first_token_time is None:
                seq.first_token_time = now
            new_tokens += len(commit)
            self._after_tokens(seq, commit)
            if not seq.is_finished and self.drafter.enabled:
                drafting.append(seq)
        if drafting:
            # After every commit of the step: a draft model proposes for all of them in one batch.
            self.drafter.propose_batch(drafting, self.max_model_len)
        with self._stats_lock:
            self._generated += new_tokens
            self._forced = self.drafter.accepted_forced_tokens
            self._rate.append((now, new_tokens))
            while self._rate and now - self._rate[0][0] > _RATE_WINDOW_S:
                self._rate.popleft()

    def _after_tokens(self, seq: Sequence, tokens: list[int]) -> None:
        """Advance the cursor, detokenize, check every finish condition (output_builder.consume), emit a delta."""
        verdict = output_builder.consume(seq, tokens, self.eos_token_ids, self.max_model_len)
        if verdict.error is not None:
            self._finish(seq, "error", verdict.error)
        elif verdict.reason is not None:
            self._finish(seq, verdict.reason, visible=verdict.visible)
        else:
            self._emit(seq, verdict.visible)

    # ----- outputs -----
    def _emit(self, seq: Sequence, tokens: list[int]) -> None:
        self._outbox.append(output_builder.build_output(seq, tokens, False))

    def _finish(self, seq: Sequence, reason: str, error: str | None = None, visible: list[int] = ()) -> None:
        self.scheduler.finish(seq, reason, error)
        self.drafter.release(seq)
        if seq.compile_future is not None and not seq.compile_future.done():
            seq.compile_future.cancel()
        self._seqs.pop(seq.request_id, None)
        self._outbox.append(output_builder.build_output(seq, list(visible), True))
        with self._stats_lock:
            self._finished[reason] += 1

    def _fail(self, seq: Sequence, message: str) -> None:
        seq.finish("error", message)
        self._outbox.append(output_builder.build_output(seq, [], True))
        with self._stats_lock:
            self._finished["error"] += 1

    # ----- conveniences -----
    def generate(self, requests: list[GenerateRequest]) -> dict[str, GenerateOutput]:
        """Run `requests` to completion (blocking); return each request's final output with the full text and
        token ids accumulated (for tests, benchmarks and the CLI)."""
        acc: dict[str, GenerateOutput] = {}
        for r in requests:
            self.add_request(r)
        while self.has_unfinished():
            if not self.has_work():
                time.sleep(0.001)       # only compiles are outstanding
                continue
            for o in self.step():
                prev = acc.get(o.request_id)
                if prev is not None:
                    o.token_ids = prev.token_ids + o.token_ids
                    o.text = prev.text + o.text
                    if prev.logprobs is not None or o.logprobs is not None:
                        o.logprobs = (prev.logprobs or []) + (o.logprobs or [])
                    if o.prompt_logprobs is None:
                        o.prompt_logprobs = prev.prompt_logprobs     # only the first output carries them
                acc[o.request_id] = o
        return acc

    def stats(self) -> EngineStats:
        bm, sch, rc = self.block_manager, self.scheduler, self.radix_cache
        with self._stats_lock:
            window = sum(n for _, n in self._rate)
            span = (self._rate[-1][0] - self._rate[0][0]) if len(self._rate) > 1 else 0.0
            return EngineStats(
                queue_len=len(sch.waiting), compiling=len(self._compiling), running=len(sch.running),
                kv_blocks_used=bm.num_used, kv_blocks_free=bm.num_free,
                kv_blocks_cached=rc.evictable_blocks if rc is not None else 0,
                prefix_hit_tokens=sch.prefix_hit_tokens, prefill_tokens=sch.prefill_tokens,
                generated_tokens=self._generated, forced_tokens=self._forced, preemptions=sch.num_preemptions,
                steps=self._steps, mask_time_s=self._mask_time,
                mask_time_per_step_s=self._mask_time / self._mask_steps if self._mask_steps else 0.0,
                forward_time_s=self._forward_time,
                tokens_per_s=(window / span) if span > 0 else 0.0,
                requests_finished=dict(self._finished))

    def close(self) -> None:
        self.runner.close()
        self.compiler.close()
