"""ModelRunner: owns every tensor of a step. Builds the ForwardBatch, runs the model, processes the logits (logit_bias,
penalties, DRY: kernels/logits_processing.py), fills the batch bitmask from the cursors of constrained rows, applies
it in one kernel, samples, records logprobs, and returns token ids.

Rows: a scheduled sequence wants `num_logits` logits rows (its last positions): 1 for a decode or the last chunk
of a prefill, 1 + k when k draft tokens are verified (issue 6), 0 for a middle prefill chunk. Each row gets its
own mask row: for drafts the cursor walks along the draft while filling (Cursor.fill_along) and ends where it began.

Prompt logprob rows (`num_prompt_logits`, just before a sequence's sampled rows) come out of the same forward; they
are turned into prompt logprobs first (raw log_softmax) and dropped, so everything after sees the sampled rows only.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ..kernels.dispatch import backends_for
from ..kernels.logits_processing import LogitsProcessing, RowHistory, row_needs_history, row_needs_processing
from ..kernels.sampling import SamplingBatch, sample
from . import sampling_state
from .forward_batch import build_forward_batch
from .kv_cache import KVCache
from .mask_buffer import MaskBuffer
from .scheduler import ScheduledSequence


def _row_starts(scheduled: list[ScheduledSequence]) -> list[int]:
    """The first logits row of each scheduled sequence."""
    starts, r = [], 0
    for sc in scheduled:
        starts.append(r)
        r += sc.num_logits
    return starts


@dataclass
class StepResult:
    sampled: list[list[int]]            # per scheduled sequence: one token per logits row (empty if none)
    forward_s: float = 0.0
    mask_s: float = 0.0
    num_constrained_rows: int = 0
    # request_id -> error for sequences whose cursor raised while filling (e.g. ConstraintTooComplexError on
    # a lazily built state): the engine fails those requests alone; their sampled tokens are meaningless.
    failed: dict[str, str] | None = None
    # request_id -> output position of the first row the budget guard resampled this step (issue 13).
    budget_restricted: dict[str, int] | None = None


class ModelRunner:
    def __init__(self, model, kv: KVCache, *, max_rows: int, overlap_mask_fill: bool = False,
                 max_model_len: int | None = None):
        self.model = model
        # The context a sequence may fill (the engine's max_model_len); None: only max_tokens limits the budget.
        self.max_model_len = max_model_len if max_model_len is not None else 1 << 62
        self.kv = kv
        self.device = model.device
        self.vocab_size = model.config.vocab_size
        self.num_words = -(-self.vocab_size // 32)
        self.max_rows = max_rows
        self._masks = MaskBuffer(max_rows, self.num_words, self.device)   # a step writes rows [0, N)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="structgen-mask") if overlap_mask_fill else None

    # ----- masks -----
    def _fill_masks(self, scheduled: list[ScheduledSequence]) -> tuple[int, int, dict[str, str]]:
        """Write one mask row per logits row into the host buffer. Returns (rows, constrained rows, failures)."""
        buf = self._masks.np
        r = 0
        constrained = 0
        failed: dict[str, str] = {}
        for sc in scheduled:
            n = sc.num_logits
            if not n:
                continue
            cursor = sc.seq.cursor
            if cursor is None:
                buf[r:r + n] = -1                       # all tokens allowed
                r += n
                continue
            try:
                self._fill_rows(sc, buf, r)
            except Exception as e:  # noqa: BLE001 - a constraint's failure must stay that request's failure
                failed[sc.seq.request_id] = f"{type(e).__name__}: {e}"
                buf[r:r + n] = -1
            constrained += n
            r += n
        return r, constrained, failed

    def _fill_rows(self, sc: ScheduledSequence, buf: np.ndarray, r: int) -> None:
        """Rows r .. r + num_logits of one constrained sequence: row j is the mask after the first j drafts
        (Cursor.fill_along); the cursor is back where it was afterwards."""
        n, w = sc.num_logits, sc.seq.mask_words
        rows = buf[r:r + n]                                  # (n, W) view
        filled = sc.seq.cursor.fill_along(sc.seq.draft_tokens[:n - 1], rows[:, :w]) + 1
        rows[:filled, w:] = 0
        if filled > 1 and not rows[filled - 1, :w].any():
            # The drafts so far end the output (e.g. an accepted EOS): generation stops before this row's sample
            # is used, so let it sample anything rather than from an empty distribution.
            filled -= 1
        # Past a draft token the constraint rejects: those rows' samples are never used (acceptance stops at the
        # rejected token), so any non-empty mask will do.
        rows[filled:] = -1

    # ----- the step -----
    @torch.inference_mode()
    def run(self, scheduled: list[ScheduledSequence]) -> StepResult:
        batch = build_forward_batch(
            [sc.seq.token_ids[sc.context_len:sc.context_len + sc.num_committed_new]
             + sc.seq.draft_tokens[:sc.num_drafts] for sc in scheduled],
            [sc.context_len for sc in scheduled],
            [sc.seq.block_table for sc in scheduled],
            self.kv.block_size, self.device, num_logits=[sc.num_prompt_logits + sc.num_logits for sc in scheduled])
        num_rows = sum(sc.num_logits for sc in scheduled)               # the sampled rows
        if num_rows > self.max_rows:
            raise ValueError(f"{num_rows} logits rows exceed the runner's {self.max_rows}")
        has_prompt_rows = any(sc.num_prompt_logits for sc in scheduled)

        t0 = time.perf_counter()
        fill = self._pool.submit(self._fill_masks, scheduled) if self._pool is not None else None
        logits = self.model(batch, self.kv)  # (N + prompt rows, V) float32
        if has_prompt_rows:
            logits = self._take_prompt_logprobs(logits, scheduled)     # (N, V)
        t1 = time.perf_counter()
        if fill is not None:
            _, constrained, failed = fill.result()
            tm = time.perf_counter()
            mask_s = tm - t1                            # only the part not hidden behind the forward
        else:
            tm = time.perf_counter()
            _, constrained, failed = self._fill_masks(scheduled)
            mask_s = time.perf_counter() - tm
        forward_s = t1 - t0
        if num_rows == 0:
            return StepResult([[] for _ in scheduled], forward_s, mask_s, 0, failed)

        self._process_logits(logits, scheduled)
        if constrained:
            tm = time.perf_counter()
            backends_for(self.device).apply_token_bitmask(logits, self._masks.on_device(num_rows))
            mask_s += time.perf_counter() - tm
        tokens = self._sample(logits, scheduled)
        restricted = self._guard_budget(logits, scheduled, tokens, failed) if constrained else {}
        self._record_logprobs(logits, scheduled, tokens)
        out = [tokens[r:r + sc.num_logits] for r, sc in zip(_row_starts(scheduled), scheduled)]
        return StepResult(out, forward_s, mask_s, constrained, failed, restricted)

    # ----- the budget guard (issue 13) -----
    def _guard_budget(self, logits: torch.Tensor, scheduled: list[ScheduledSequence], tokens: list[int],
                      failed: dict[str, str]) -> dict[str, int]:
        """Make every constrained sample that will be committed fit its row's budget; rewrites `tokens` in place.

        logits: (N, V) float32, masked (as sampled); tokens: the N sampled ids. Row j of a sequence (after j
        drafts) has budget `seq.token_budget(max_model_len) - j`. A sample that does not fit (`Cursor.token_fits`)
        is replaced by a sample of the same row restricted to the tokens that fit (`Cursor.fill_bitmask_within`)
        with the same argmax / uniform draw, and the restricted row is written back into `logits` (what the row was
        sampled from, for logprobs). Only rows up to the first one that disagrees with its draft are looked at: the
        rows after it are never committed. Cost when every sample fits: one `token_fits` per looked-at row (plus
        one cursor advance per matching draft). Returns request_id -> output position of the first resampled row;
        a cursor that raises fails its request (into `failed`)."""
        restricted: dict[str, int] = {}
        built: list[SamplingBatch] = []

        def step_params() -> SamplingBatch:
            # The step's SamplingBatch, built once, on the first resample of a sampled row (rare).
            if not built:
                built.append(self._sampling_batch(scheduled, logits.device))
            return built[0]

        for r, sc in zip(_row_starts(scheduled), scheduled):
            seq = sc.seq
            if sc.num_logits and seq.cursor is not None and seq.request_id not in failed:
                try:
                    first = self._guard_rows(logits, sc, tokens, r, step_params)
                except Exception as e:  # noqa: BLE001 - a constraint's failure must stay that request's failure
                    failed[seq.request_id] = f"{type(e).__name__}: {e}"
                else:
                    if first is not None:
                        restricted[seq.request_id] = first
        return restricted

    def _guard_rows(self, logits: torch.Tensor, sc: ScheduledSequence, tokens: list[int], r: int,
                    step_params) -> int | None:
        """The guard over one sequence's rows r .. r + num_logits; the cursor ends where it began.
        `step_params()`: the step's SamplingBatch (built when first needed)."""
        seq = sc.seq
        cursor, drafts = seq.cursor, seq.draft_tokens
        budget = seq.token_budget(self.max_model_len)
        first = None
        walked = 0
        try:
            for j in range(sc.num_logits):
                t = tokens[r + j]
                if not cursor.token_fits(t, budget - j):
                    t = tokens[r + j] = self._resample_within(logits, r + j, cursor, seq.mask_words,
                                                               budget - j, seq.sampling.greedy, step_params)
                    if first is None:
                        first = seq.num_output_tokens + j
                if j >= sc.num_drafts or t != drafts[j]:
                    break                   # verify.accept commits this row's token and nothing after it
                if not cursor.advance(t):
                    raise RuntimeError(f"internal error: draft token {t} fits the budget but not the constraint")
                walked += 1
                if cursor.is_terminated():
                    break                   # the output ends with this draft: later rows are never committed
        finally:
            if walked:
                cursor.rollback(walked)
        return first

    def _resample_within(self, logits: torch.Tensor, row: int, cursor, mask_words: int, budget: int, greedy: bool,
                         step_params) -> int:
        """Restrict logits[row] (of (N, V), in place) to the tokens that fit `budget` from the cursor's state and
        sample it again: argmax for greedy rows, else `kernels.sampling.sample` with the row's own SamplingBatch
        row (same seed and step, so the same uniform u: inverse-CDF sampling with the same u is an exact sample of
        the restricted distribution)."""
        words = np.zeros((1, self.num_words), dtype=np.int32)                  # (1, W)
        cursor.fill_bitmask_within(words[0, :mask_words], budget)
        if not words.any():
            raise RuntimeError(f"internal error: no token fits the budget of {budget} tokens "
                               f"(the constraint needs {cursor.min_tokens_to_finish()})")
        sub = logits[row:row + 1]                                              # (1, V) view
        backends_for(self.device).apply_token_bitmask(sub, torch.from_numpy(words).to(self.device))
        if greedy:
            return int(sub.argmax(dim=-1))
        return int(sample(sub, step_params().select([row]))[0])

    def _process_logits(self, logits: torch.Tensor, scheduled: list[ScheduledSequence]) -> None:
        """logit_bias, repetition/frequency/presence penalties and DRY on logits (N, V) float32, in place, before
        the mask. Row j of a sequence counts its drafts before j as output (they are the output if accepted).
        Builds nothing when no row uses them. (logit_bias ids were checked against the vocabulary at admission.)"""
        if not any(row_needs_processing(sc.seq.sampling) for sc in scheduled if sc.num_logits):
            return
        rows: list[RowHistory | None] = []
        for sc in scheduled:
            seq, sp, n = sc.seq, sc.seq.sampling, sc.num_logits
            if not n or not row_needs_processing(sp):
                rows.extend([None] * n)
                continue
            if not row_needs_history(sp):
                rows.extend([RowHistory(sp, (), ())] * n)
                continue
            prompt, output = seq.token_ids[:seq.prompt_len], seq.token_ids[seq.prompt_len:]
            rows.extend(RowHistory(sp, prompt, output + seq.draft_tokens[:j]) for j in range(n))
        proc = LogitsProcessing.build(rows, device=logits.device)
        if proc is not None:
            proc.apply_(logits)

    def _sampling_batch(self, scheduled: list[ScheduledSequence], device) -> SamplingBatch | None:
        """The SamplingBatch of every logits row of the step, or None when every row is greedy (argmax).
        `SamplingBatch.select(rows)` gives the parameters of a subset of rows, which then draw what they draw here."""
        temps, top_k, top_p, seeds, steps, min_p = [], [], [], [], [], []
        for sc in scheduled:
            sp, seq = sc.seq.sampling, sc.seq
            for j in range(sc.num_logits):
                temps.append(sp.temperature)
                top_k.append(sp.top_k)
                top_p.append(sp.top_p)
                min_p.append(sp.min_p)
                seeds.append(seq.seed)
                steps.append(seq.num_output_tokens + j)
        if not any(temps):
            return None
        return SamplingBatch.from_lists(temps, top_k, top_p, seeds, steps, device=device, min_p=min_p)

    def _sample(self, logits: torch.Tensor, scheduled: list[ScheduledSequence]) -> list[int]:
        """logits (N, V) float32, already processed and masked. Greedy rows take the argmax; sampling rows draw
        from a counter-based stream keyed by (request seed, output position), so a seeded request gets the same
        tokens whatever else is in the batch, and after a preemption."""
        params = self._sampling_batch(scheduled, logits.device)
        if params is None:
            return logits.argmax(dim=-1).tolist()
        return sample(logits, params).tolist()

    def _record_logprobs(self, logits: torch.Tensor, scheduled: list[ScheduledSequence], tokens: list[int]) -> None:
        """For rows of sequences that asked for logprobs: log_softmax(logits / T) (T = 1 for greedy rows) at the
        token each row chose, and its top_logprobs best entries, kept by output position (sampling_state.py).
        logits (N, V) float32: the distribution sampled from (processed, masked); a step that restricts a row
        further (budget) does it in `logits` before this call, so the record is that of the restricted row."""
        rows, temps, meta = [], [], []
        for r0, sc in zip(_row_starts(scheduled), scheduled):
            sp = sc.seq.sampling
            if not sp.logprobs:
                continue
            for j in range(sc.num_logits):
                rows.append(r0 + j)
                temps.append(sp.temperature if sp.temperature > 0 else 1.0)
                meta.append((sc.seq, sc.seq.num_output_tokens + j, sp.top_logprobs))
        if not rows:
            return
        idx = torch.tensor(rows, dtype=torch.int64, device=logits.device)
        t = torch.tensor(temps, dtype=torch.float32, device=logits.device)
        lp = torch.log_softmax(logits[idx] / t[:, None], dim=-1)  # (R', V)
        chosen = torch.tensor([tokens[r] for r in rows], dtype=torch.int64, device=logits.device)
        chosen_lp = lp.gather(1, chosen[:, None]).squeeze(1).tolist()
        k = max(m[2] for m in meta)
        top_lp, top_ids = lp.topk(k, dim=-1) if k else (None, None)  # (R', k)
        top_lp = top_lp.tolist() if k else None
        top_ids = top_ids.tolist() if k else None
        for i, (seq, pos, want) in enumerate(meta):
            top = tuple(zip(top_ids[i][:want], top_lp[i][:want])) if want else ()
            sampling_state.record(seq, pos, tokens[rows[i]], chosen_lp[i], top)

    def _take_prompt_logprobs(self, logits: torch.Tensor, scheduled: list[ScheduledSequence]) -> torch.Tensor:
        """Record the prompt logprobs of the prompt rows and return the sampled rows only.

        logits: (N + P, V) float32 raw, each sequence's num_prompt_logits rows followed by its num_logits rows.
        The row at position j gives prompt token j + 1 its logprob: log_softmax of the raw row (no processing, no
        mask), with the sampling.top_logprobs best tokens when sampling.logprobs (sampling_state.record_prompt).
        Returns (N, V): the rows the rest of the step processes, masks and samples."""
        prompt_rows, keep, meta = [], [], []
        r = 0
        for sc in scheduled:
            k = sc.num_prompt_logits
            if k:
                prompt_rows.extend(range(r, r + k))
                meta.append((sc, sc.first_prompt_logits_position, k))
            keep.extend(range(r + k, r + k + sc.num_logits))
            r += k + sc.num_logits
        dev = logits.device
        lp = torch.log_softmax(logits[torch.tensor(prompt_rows, dtype=torch.int64, device=dev)], dim=-1)  # (P, V)
        targets = [t for sc, first, k in meta for t in sc.seq.token_ids[first + 1:first + 1 + k]]
        chosen = lp.gather(1, torch.tensor(targets, dtype=torch.int64, device=dev)[:, None]).squeeze(1).tolist()
        top_k = max((sc.seq.sampling.top_logprobs for sc, _, _ in meta if sc.seq.sampling.logprobs), default=0)
        top_lp, top_ids = (t.tolist() for t in lp.topk(top_k, dim=-1)) if top_k else ((), ())  # (P, k) each
        i = 0
        for sc, first, k in meta:
            sp = sc.seq.sampling
            want = sp.top_logprobs if sp.logprobs else 0
            for j in range(k):
                top = tuple(zip(top_ids[i][:want], top_lp[i][:want])) if want else ()
                sampling_state.record_prompt(sc.seq, first + 1 + j, targets[i], chosen[i], top)
                i += 1
        return logits.index_select(0, torch.tensor(keep, dtype=torch.int64, device=dev))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
