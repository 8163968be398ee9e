"""Prompt log-probabilities through the engine (GenerateRequest.prompt_logprobs_from -> GenerateOutput.
prompt_logprobs: scheduler prompt rows, runner._take_prompt_logprobs, sampling_state), with the tiny random-weight
model of the real vocabulary: the values equal log_softmax of one plain forward over the whole prompt, with a cached
prefix, chunked prefill and a small per-step row bound; the first sampled token is the same with the field or
without; an out-of-range start is refused."""

from __future__ import annotations

import pytest
import torch

from structgen.engine.config import EngineConfig
from structgen.engine.engine import LLMEngine
from structgen.engine.forward_batch import build_forward_batch
from structgen.engine.kv_cache import KVCache
from structgen.engine.requests import GenerateRequest, SamplingParams

TEXT = ("The quick brown fox jumps over the lazy dog, and then it runs far, far away into the woods where "
        "nobody can find it again.")


@pytest.fixture(scope="module")
def prompt(tok) -> list[int]:
    ids = tok.encode(TEXT)
    assert len(ids) > 24
    return ids


@pytest.fixture(scope="module")
def reference(tiny, prompt) -> torch.Tensor:
    """(L, V) float32: log_softmax of the logits at every prompt position, from one forward over the whole prompt
    (no cache, no chunks)."""
    n = len(prompt)
    kv = KVCache.from_budget(tiny.config, KVCache.bytes_per_block(tiny.config, 16, torch.float32) * 16, 16, "cpu",
                             torch.float32)
    batch = build_forward_batch([prompt], [0], [list(range(-(-n // 16)))], 16, "cpu", num_logits=[n])
    with torch.inference_mode():
        return torch.log_softmax(tiny(batch, kv), dim=-1)


def _engine(tiny, tok, rows: int | None = None, **cfg) -> LLMEngine:
    cfg.setdefault("forced_runs", False)
    cfg.setdefault("speculation", "off")
    engine = LLMEngine(EngineConfig(kv_cache_bytes=8 << 20, **cfg), tiny, tok)
    if rows is not None:
        engine.scheduler.max_prompt_logprob_rows = rows
    return engine


def _one(engine, req: GenerateRequest):
    return engine.generate([req])[req.request_id]


def _check(entries, prompt, start, reference, top: int = 0):
    """`entries` are the prompt logprobs of prompt[start:] under `reference`."""
    assert entries is not None and len(entries) == len(prompt) - start
    for pos, e in zip(range(start, len(prompt)), entries):
        if pos == 0:
            assert e is None
            continue
        assert e is not None, f"position {pos} has no logprob"
        assert e.token_id == prompt[pos]
        assert e.logprob == pytest.approx(reference[pos - 1, prompt[pos]].item(), abs=1e-4)
        assert len(e.top) == top
        if top:
            want_lp, want_ids = reference[pos - 1].topk(top)
            assert [t[0] for t in e.top] == want_ids.tolist()
            assert [t[2] for t in e.top] == pytest.approx(want_lp.tolist(), abs=1e-4)


@pytest.mark.parametrize("start", [0, 1, 7])
@pytest.mark.parametrize("cfg", [
    dict(),                                                        # the whole prompt in one chunk
    dict(max_num_batched_tokens=8, max_num_seqs=4),                # chunked prefill
    dict(rows=3),                                                  # at most 3 prompt rows a step
    dict(block_size=4, max_num_batched_tokens=12, max_num_seqs=2, rows=5),
], ids=["one-chunk", "chunked", "rows-3", "mixed"])
def test_prompt_logprobs_equal_one_plain_forward(tiny, tok, prompt, reference, start, cfg):
    engine = _engine(tiny, tok, **cfg)
    out = _one(engine, GenerateRequest("r", prompt, SamplingParams(max_tokens=3), prompt_logprobs_from=start))
    engine.close()
    assert out.finish_reason == "length"
    _check(out.prompt_logprobs, prompt, start, reference)


def test_top_alternatives_come_with_logprobs(tiny, tok, prompt, reference):
    engine = _engine(tiny, tok, max_num_batched_tokens=8, max_num_seqs=4)
    sp = SamplingParams(max_tokens=2, logprobs=True, top_logprobs=3)
    out = _one(engine, GenerateRequest("r", prompt, sp, prompt_logprobs_from=2))
    engine.close()
    _check(out.prompt_logprobs, prompt, 2, reference, top=3)
    assert all(e.text == tok.decode([e.token_id]) for e in out.prompt_logprobs)
    assert out.prompt_logprobs[0].top[0][1] == tok.decode([out.prompt_logprobs[0].top[0][0]])


def test_raw_logits_not_the_processed_ones(tiny, tok, prompt, reference):
    """Penalties, logit_bias and temperature shape the samples, never the prompt logprobs."""
    engine = _engine(tiny, tok)
    sp = SamplingParams(max_tokens=2, temperature=0.7, seed=3, repetition_penalty=2.0,
                        logit_bias={prompt[5]: -50.0})
    out = _one(engine, GenerateRequest("r", prompt, sp, prompt_logprobs_from=0))
    engine.close()
    _check(out.prompt_logprobs, prompt, 0, reference)


@pytest.mark.parametrize("block_size", [4, 16])
def test_a_cached_prefix_still_gives_every_position(tiny, tok, prompt, reference, block_size):
    engine = _engine(tiny, tok, block_size=block_size)
    req = lambda rid, start: GenerateRequest(rid, prompt, SamplingParams(max_tokens=2), prompt_logprobs_from=start)
    first = _one(engine, req("first", 0))
    again = _one(engine, req("again", 0))                  # the same prompt: all of it is in the cache now
    _check(first.prompt_logprobs, prompt, 0, reference)
    _check(again.prompt_logprobs, prompt, 0, reference)
    assert [e and e.logprob for e in again.prompt_logprobs] == [e and e.logprob for e in first.prompt_logprobs]
    later = _one(engine, req("later", 20))                 # the pages before position 19 come from the cache
    _check(later.prompt_logprobs, prompt, 20, reference)
    assert later.usage.cached_tokens == 19 - 19 % block_size > 0
    plain = _one(engine, GenerateRequest("plain", prompt, SamplingParams(max_tokens=2)))
    engine.close()
    assert plain.prompt_logprobs is None
    assert plain.usage.cached_tokens == (len(prompt) - 1) // block_size * block_size   # unchanged without it


@pytest.mark.parametrize("sp", [SamplingParams(max_tokens=6), SamplingParams(max_tokens=6, temperature=1.0, seed=11)],
                         ids=["greedy", "seeded"])
@pytest.mark.parametrize("cfg", [dict(), dict(max_num_batched_tokens=8, max_num_seqs=4), dict(rows=2)],
                         ids=["one-chunk", "chunked", "rows-2"])
def test_the_sampled_tokens_are_the_same_with_or_without_the_field(tiny, tok, prompt, sp, cfg):
    def tokens(start, warm):
        engine = _engine(tiny, tok, **cfg)
        if warm:                                            # a cached prefix the field must not use
            _one(engine, GenerateRequest("warm", prompt, SamplingParams(max_tokens=1)))
        out = _one(engine, GenerateRequest("r", prompt, sp, prompt_logprobs_from=start))
        engine.close()
        assert (out.prompt_logprobs is None) == (start is None)
        return out.token_ids

    want = tokens(None, False)
    assert len(want) == 6
    for start in (0, 10):
        for warm in (False, True):
            assert tokens(start, warm) == want, (start, warm)


def test_only_the_first_output_carries_them(tiny, tok, prompt):
    engine = _engine(tiny, tok)
    engine.add_request(GenerateRequest("a", prompt, SamplingParams(max_tokens=4), prompt_logprobs_from=3))
    engine.add_request(GenerateRequest("b", prompt[:10], SamplingParams(max_tokens=4)))
    seen = {"a": [], "b": []}
    while engine.has_unfinished():
        for o in engine.step():
            seen[o.request_id].append(o)
    engine.close()
    a = seen["a"]
    assert a[0].token_ids and a[0].prompt_logprobs is not None and len(a[0].prompt_logprobs) == len(prompt) - 3
    assert all(o.prompt_logprobs is None for o in a[1:]) and len(a) > 1
    assert all(o.prompt_logprobs is None for o in seen["b"])


@pytest.mark.parametrize("bad", [-1, 25, 100, True, 2.0, "3"])
def test_a_start_outside_the_prompt_is_refused(bad):
    with pytest.raises(ValueError, match=r"prompt_logprobs_from must be None or a prompt position in \[0, 25\)"):
        GenerateRequest("r", list(range(1, 26)), prompt_logprobs_from=bad)
    GenerateRequest("r", list(range(1, 26)), prompt_logprobs_from=24)   # the last position is fine
