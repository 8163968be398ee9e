"""LLMEngine (synchronous: `step() = schedule() -> run() -> postprocess()`) and AsyncEngine (a background loop
thread feeding async streams of GenerateOutput deltas). The serving API is written in docs/INTERFACES.md.

Threads: LLMEngine is used by one thread at a time (AsyncEngine's loop thread). Constraints compile in a
thread pool; a finished compile wakes the loop. `stats()` may be read from any thread.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import AsyncIterator

from .config import EngineConfig
from .detokenizer import IncrementalDetokenizer
from .outputs import EngineStats, GenerateOutput, Timings, Usage
from .requests import ConstraintSpec, GenerateRequest
from .scheduler import RequestTooLargeError, Scheduler, ScheduledSequence
from .sequence import Sequence

_MAX_POSITIONS_CAP = 8192
_RATE_WINDOW_S = 5.0


def compile_spec(spec: ConstraintSpec, tokenizer):
    """Compile a ConstraintSpec with the FSM layer (raises ConstraintError subclasses)."""
    from ..fsm import compile_constraint

    return compile_constraint(spec.kind, spec.value, tokenizer, **dict(spec.options))


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
        self.max_model_len = min(config.max_model_len or _MAX_POSITIONS_CAP, model.max_positions)
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
        # (structgen/engine/drafter.py).
        from .drafter import Drafter

        proposer = None                 # without one, Drafter refuses speculation="draft_model"
        if config.speculation == "draft_model" and draft_model is not None:
            from .draft_model import DraftModelProposer, default_draft_kv_bytes

            proposer = DraftModelProposer(
                draft_model, target_vocab_size=model.config.vocab_size, tokenizer_vocab_size=tokenizer.vocab_size,
                eos_token_ids=tokenizer.eos_token_ids, block_size=kv.block_size, max_num_seqs=config.max_num_seqs,
                kv_cache_bytes=draft_kv_bytes or default_draft_kv_bytes(kv, draft_model.config, draft_model.dtype))
        # Draft rows are weighed against what a row and a sequence cost on this device (AdaptiveDraftLength).
        from .speculative import DRAFT_COSTS

        row_cost, seq_cost = DRAFT_COSTS["cpu" if model.device.type == "cpu" else "cuda"]
        self.drafter = Drafter(config, tokenizer, proposer=proposer, cost_per_token=row_cost,
                               cost_per_sequence=seq_cost)
        # Rows: one per sequence, plus draft positions when speculating.
        max_rows = config.max_num_seqs * (1 + (self.drafter.max_draft_tokens if self.drafter.enabled else 0))
        self.runner = ModelRunner(model, kv, max_rows=max_rows, overlap_mask_fill=config.overlap_mask_fill)
        self.compile_pool = ThreadPoolExecutor(config.compile_workers, thread_name_prefix="structgen-compile")
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
        import torch

        from .weights import load_model

        from .. import settings

        threads = config.num_threads or settings.get("STRUCTGEN_NUM_THREADS")
        if threads and config.resolved_device == "cpu":
            torch.set_num_threads(threads)
        device = config.resolved_device
        max_len = min(config.max_model_len or _MAX_POSITIONS_CAP, _MAX_POSITIONS_CAP)
        dtype = getattr(torch, config.resolved_dtype)
        model = load_model(config.model, device, dtype, max_positions=max_len)
        tokenizer = load_tokenizer(config.model)
        draft = None
        if config.speculation == "draft_model":
            if config.draft_model == config.model:
                draft = model               # self-drafting (a test of the path): share the weights
            else:
                check_draft_tokenizer(config.draft_model, tokenizer)
                draft = load_model(config.draft_model, device, dtype, max_positions=max_len)
        return cls(config, model, tokenizer, draft_model=draft)

    # ----- requests in -----
    def add_request(self, req: GenerateRequest) -> Sequence:
        """Queue a request. Errors of the request itself (too long, duplicate id) come back as a finished
        output with finish_reason="error" on the next step; nothing else is touched."""
        seq = Sequence(req, self.eos_token_ids)
        seq.detokenizer = IncrementalDetokenizer(self.tokenizer, req.sampling.stop)
        if req.sampling.seed is None:
            seq.seed = self.config.seed * 1_000_003 + next(self._seed_counter)
        if req.request_id in self._seqs:
            self._fail(seq, f"request id {req.request_id!r} is already in flight")
            return seq
        bad = [t for t in req.prompt_token_ids if not isinstance(t, int) or not 0 <= t < self.model.config.vocab_size]
        if bad:
            self._fail(seq, f"prompt token ids must be in [0, {self.model.config.vocab_size}); got {bad[:5]}")
            return seq
        try:
            self.scheduler.check_fits(seq)
        except RequestTooLargeError as e:
            self._fail(seq, str(e))
            return seq
        c = req.constraint
        if isinstance(c, ConstraintSpec):
            seq.compile_future = self.compile_pool.submit(compile_spec, c, self.tokenizer)
            if self.on_compiled is not None:
                seq.compile_future.add_done_callback(lambda _f: self.on_compiled())
            self._compiling.append(seq)
        elif c is not None:
            self._attach(seq, c)
        self._seqs[req.request_id] = seq
        self.scheduler.add(seq)
        return seq

    def _attach(self, seq: Sequence, compiled) -> None:
        seq.cursor = compiled.cursor()
        seq.mask_words = -(-compiled.vocab_size // 32)

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
                self._attach(seq, fut.result())
        self._compiling = still

    def abort(self, request_id: str) -> bool:
        """Finish the request with "abort" and free its KV blocks now. False if it is not in flight."""
        seq = self._seqs.get(request_id)
        if seq is None or seq.is_finished:
            return False
        self._finish(seq, "abort")
        return True

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
            self._postprocess(sched.scheduled, result.sampled, result.failed or {})
            with self._stats_lock:
                self._steps += 1
                self._forward_time += result.forward_s
                if result.num_constrained_rows:
                    self._mask_steps += 1
                    self._mask_time += result.mask_s
        out, self._outbox = self._outbox, []
        return out

    def _postprocess(self, scheduled: list[ScheduledSequence], sampled: list[list[int]],
                     failed: dict[str, str]) -> None:
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
            # Verification (issue 6): accept the drafts the model agrees with, then its own next token.
            drafts = seq.draft_tokens[:sc.num_drafts]
            accepted = 0
            while accepted < len(drafts) and toks[accepted] == drafts[accepted]:
                accepted += 1
            commit = drafts[:accepted] + [toks[accepted]]
            seq.draft_tokens = []
            seq.append_tokens(drafts[:accepted])
            self.scheduler.commit(sc, accepted)
            seq.append_tokens(commit[-1:])
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
        """Advance the cursor, detokenize, check every finish condition, emit a delta."""
        sp = seq.sampling
        visible = []
        reason = None
        for i, t in enumerate(tokens):
            try:
                ok = seq.cursor is None or seq.cursor.advance(t)
            except Exception as e:  # noqa: BLE001 - e.g. ConstraintTooComplexError on a lazily built state
                self._finish(seq, "error", f"{type(e).__name__}: {e}")
                return
            if not ok:
                self._finish(seq, "error", f"internal error: token {t} was sampled against the constraint")
                return
            if t in self.eos_token_ids and not sp.ignore_eos:
                reason = "stop"
            else:
                visible.append(t)
                seq.detokenizer.add((t,))
                if seq.detokenizer.stopped:
                    reason = "stop"
                elif seq.cursor is not None and seq.cursor.is_terminated():
                    reason = "stop"             # nothing but EOS can follow: plain decoding skips the EOS step
            if reason is not None:
                if i < len(tokens) - 1:
                    # A verified draft ended the output and the same forward produced tokens past the end (the
                    # bonus token after a drafted EOS, or the model's EOS). Plain decoding never runs those steps:
                    # drop them, so that usage and token ids match decoding without drafts exactly.
                    del seq.token_ids[len(seq.token_ids) - (len(tokens) - 1 - i):]
                    seq.num_computed_tokens = min(seq.num_computed_tokens, seq.num_tokens)
                break
        if reason is None and (seq.num_output_tokens >= sp.max_tokens or seq.num_tokens >= self.max_model_len):
            reason = "length"
        if reason is not None:
            self._finish(seq, reason, visible=visible)
        else:
            self._emit(seq, visible)

    # ----- outputs -----
    def _delta(self, seq: Sequence, tokens: list[int], finished: bool) -> GenerateOutput:
        now = time.perf_counter()
        text = seq.detokenizer.delta(final=finished) if seq.detokenizer is not None else ""
        return GenerateOutput(
            request_id=seq.request_id, token_ids=list(tokens), text=text, finished=finished,
            finish_reason=seq.finish_reason if finished else None, error=seq.error if finished else None,
            usage=Usage(prompt_tokens=seq.prompt_len, cached_tokens=seq.num_cached_prompt_tokens,
                        completion_tokens=seq.num_output_tokens, forced_tokens=seq.num_forced_tokens,
                        draft_accepted_tokens=seq.num_draft_accepted),
            timings=Timings(
                queued_s=(seq.first_scheduled_time or now) - seq.arrival_time,
                ttft_s=None if seq.first_token_time is None else seq.first_token_time - seq.arrival_time,
                total_s=now - seq.arrival_time))

    def _emit(self, seq: Sequence, tokens: list[int]) -> None:
        self._outbox.append(self._delta(seq, tokens, False))

    def _finish(self, seq: Sequence, reason: str, error: str | None = None, visible: list[int] = ()) -> None:
        self.scheduler.finish(seq, reason, error)
        self.drafter.release(seq)
        if seq.compile_future is not None and not seq.compile_future.done():
            seq.compile_future.cancel()
        self._seqs.pop(seq.request_id, None)
        self._outbox.append(self._delta(seq, list(visible), True))
        with self._stats_lock:
            self._finished[reason] += 1

    def _fail(self, seq: Sequence, message: str) -> None:
        seq.finish("error", message)
        self._outbox.append(self._delta(seq, [], True))
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
        self.compile_pool.shutdown(wait=False, cancel_futures=True)


def check_draft_tokenizer(draft_path: str, tokenizer) -> None:
    """ValueError when the draft model's folder has a vocabulary other than the target's (token -> id; chat
    template and EOS may differ, e.g. a base model drafting for its instruct sibling). A folder without a
    tokenizer is checked by vocabulary size only, when the engine is built."""
    try:
        draft_tok = load_tokenizer(draft_path)
    except (FileNotFoundError, OSError, ValueError):
        return
    if draft_tok.hf.get_vocab(with_added_tokens=True) != tokenizer.hf.get_vocab(with_added_tokens=True):
        raise ValueError(f"the draft model {draft_path!r} has another vocabulary than the target model "
                         f"({draft_tok!r} vs {tokenizer!r}): a draft model must share the target's tokenizer")


def load_tokenizer(model: str):
    from pathlib import Path

    from ..tokenizer import Tokenizer, default_tokenizer

    if model == "default":
        return default_tokenizer()
    path = Path(model).expanduser()
    folder = path.parent if path.is_file() else path
    return Tokenizer.from_dir(folder)


class AsyncEngine:
    """An LLMEngine driven by a background thread; `generate()` streams deltas to asyncio callers."""

    def __init__(self, engine: LLMEngine):
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.config = engine.config
        self.max_model_len = engine.max_model_len
        self._inbox: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._dead: BaseException | None = None
        engine.on_compiled = self._wake.set

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> "AsyncEngine":
        return cls(LLMEngine.from_config(cfg))

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="structgen-engine", daemon=True)
        self._thread.start()

    async def shutdown(self) -> None:
        """Stop the loop; every request still in flight finishes with "abort"."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        self.engine.close()

    async def generate(self, req: GenerateRequest) -> AsyncIterator[GenerateOutput]:
        """Stream deltas of `req` until one has finished=True. Request errors arrive as finish_reason="error".
        Closing the iterator early (a cancelled client) aborts the request and frees its KV blocks."""
        if self._thread is None:
            await self.start()
        queue: asyncio.Queue = asyncio.Queue()
        if req.request_id in self._streams or self._stopping or self._dead is not None:
            why = (f"request id {req.request_id!r} is already in flight" if req.request_id in self._streams
                   else "the engine is shutting down")
            yield GenerateOutput(req.request_id, [], "", True, "error", why, Usage(len(req.prompt_token_ids)))
            return
        self._streams[req.request_id] = (asyncio.get_running_loop(), queue)
        self._inbox.append(("add", req))
        self._wake.set()
        finished = False
        try:
            while not finished:
                out = await queue.get()
                finished = out.finished
                yield out
        finally:
            if not finished:
                self._inbox.append(("abort", req.request_id))
                self._wake.set()
            self._streams.pop(req.request_id, None)

    async def compile(self, spec: ConstraintSpec):
        """Compile in the engine's compile pool (raises ConstraintError for a bad constraint)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.engine.compile_pool, compile_spec, spec, self.tokenizer)

    async def abort(self, request_id: str) -> None:
        self._inbox.append(("abort", request_id))
        self._wake.set()

    def stats(self) -> EngineStats:
        return self.engine.stats()

    # ----- the loop thread -----
    def _loop(self) -> None:
        eng = self.engine
        try:
            while not self._stopping:
                while self._inbox:
                    op, arg = self._inbox.popleft()
                    if op == "add":
                        eng.add_request(arg)
                    else:
                        eng.abort(arg)
                if eng.has_work():
                    self._dispatch(eng.step())
                    continue
                self._wake.wait(0.5)
                self._wake.clear()
        except BaseException as e:  # noqa: BLE001 - a crashed loop must fail every stream, not hang them
            self._dead = e
            for rid in list(eng._seqs):
                eng._finish(eng._seqs[rid], "error", f"engine failure: {type(e).__name__}: {e}")
            self._dispatch(eng._outbox)
            eng._outbox = []
            raise
        for rid in list(eng._seqs):
            eng.abort(rid)
        self._dispatch(eng.step())

    def _dispatch(self, outputs: list[GenerateOutput]) -> None:
        for o in outputs:
            target = self._streams.get(o.request_id)
            if target is not None:
                loop, queue = target
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, o)
                except RuntimeError:
                    pass                # the caller's event loop is closed; nobody is listening
