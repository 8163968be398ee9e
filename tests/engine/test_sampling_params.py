"""The sampling parameters of issue 13 through the engine (runner._process_logits, sampling_state, output_builder),
with a tiny random-weight model of the real vocabulary: greedy outputs with penalties are the same with drafting
(forced runs, a self-drafting draft model) on or off, seeded sampling is the same alone and in a batch, logprobs
describe the processed and masked distribution, a bad logit_bias fails only its request, DRY breaks loops, and
SamplingParams rejects bad values."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

import jsonschema
import pytest

from structgen.engine.config import EngineConfig
from structgen.engine.engine import LLMEngine
from structgen.engine.requests import ConstraintSpec, GenerateRequest, SamplingParams


SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                           "tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                                                    "maxItems": 4}},
          "required": ["name", "tags"], "additionalProperties": False}
PENALTIES = dict(frequency_penalty=0.4, presence_penalty=0.3, repetition_penalty=1.3, dry_multiplier=0.8,
                 dry_allowed_length=2, logit_bias={11: 3.0, 28: -5.0})


def _engine(tiny, tok, **cfg) -> LLMEngine:
    cfg.setdefault("forced_runs", False)
    cfg.setdefault("speculation", "off")
    draft = tiny if cfg.get("speculation") == "draft_model" else None
    if draft is not None:
        cfg["draft_model"] = "tiny"
    return LLMEngine(EngineConfig(kv_cache_bytes=8 << 20, **cfg), tiny, tok, draft_model=draft)


def _requests(tok, tag: str, **sp) -> list[GenerateRequest]:
    p = SamplingParams(max_tokens=40, **sp)
    return [
        GenerateRequest(f"{tag}-0", tok.encode("Tell me about a person"), p, ConstraintSpec("json_schema", SCHEMA)),
        GenerateRequest(f"{tag}-1", tok.encode("Free text, free text, free text"), p),
        GenerateRequest(f"{tag}-2", tok.encode("A date"), p, ConstraintSpec("regex", r"[0-9]{4}-[0-9]{2}-[0-9]{2}")),
        GenerateRequest(f"{tag}-3", tok.encode("No penalties here"), SamplingParams(max_tokens=40)),
    ]


def _run(engine, reqs):
    """Every request to completion through LLMEngine.generate (which joins token ids, text and logprobs of all the
    deltas of a request)."""
    outs = engine.generate(reqs)
    engine.close()
    return [outs[r.request_id] for r in reqs]


def _check_valid(out):
    assert out.finish_reason in ("stop", "budget", "length"), out.error
    if out.request_id.endswith("-0") and out.finish_reason != "length":
        jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(out.text))


def test_greedy_with_penalties_is_the_same_with_drafting_on_or_off(tok, tiny):
    """Row j of a draft counts drafts[:j] as output: otherwise the penalties differ from plain decoding's and so
    do the tokens (the self-drafting draft model proposes the unpenalized argmax, so many rows hinge on this)."""
    want = _run(_engine(tiny, tok), _requests(tok, "plain", **PENALTIES))
    for o in want:
        _check_valid(o)
    assert want[1].token_ids != _run(_engine(tiny, tok), _requests(tok, "neutral"))[1].token_ids, \
        "the penalties change nothing here: the test would prove nothing"
    for cfg in (dict(forced_runs=True), dict(forced_runs=True, speculation="prompt_lookup"),
                dict(forced_runs=True, speculation="draft_model")):
        got = _run(_engine(tiny, tok, **cfg), _requests(tok, "spec", **PENALTIES))
        assert [o.token_ids for o in got] == [o.token_ids for o in want], cfg
        assert [o.finish_reason for o in got] == [o.finish_reason for o in want]
        if cfg.get("speculation") == "draft_model":
            assert sum(o.usage.draft_accepted_tokens for o in got) > 0


def test_seeded_sampling_with_penalties_is_the_same_alone_and_in_a_batch(tok, tiny):
    sp = dict(PENALTIES, temperature=0.9, top_p=0.95, min_p=0.02, seed=1234)
    target = _requests(tok, "t", **sp)[0]
    alone = _run(_engine(tiny, tok), [target])[0]
    others = [GenerateRequest(f"o-{i}", tok.encode(f"Other request {i} " * (i + 1)),
                              SamplingParams(max_tokens=30, temperature=0.7 * i, seed=i, frequency_penalty=0.1 * i,
                                             dry_multiplier=0.5 if i % 2 else 0.0))
              for i in range(5)]
    batch = _run(_engine(tiny, tok, forced_runs=True, speculation="prompt_lookup"), others[:3] + [target] + others[3:])
    assert batch[3].token_ids == alone.token_ids
    _check_valid(alone)


def test_logprobs_describe_the_processed_masked_distribution(tok, tiny):
    reqs = _requests(tok, "lp", logprobs=True, top_logprobs=5, **PENALTIES)
    outs = _run(_engine(tiny, tok, forced_runs=True), reqs)
    for o in outs[:3]:
        assert o.logprobs is not None and len(o.logprobs) == len(o.token_ids)
        for t, lp in zip(o.token_ids, o.logprobs):
            assert lp.token_id == t and lp.logprob <= 1e-6 and len(lp.top) == 5
            # greedy: the chosen token is the most likely one of the distribution it was chosen from
            assert lp.top[0][0] == t and lp.top[0][2] == pytest.approx(lp.logprob, abs=1e-5)
            assert [e[2] for e in lp.top] == sorted((e[2] for e in lp.top), reverse=True)
            assert lp.text == tok.decode([t])
    assert outs[3].logprobs is None
    # constrained: the mask is part of the distribution, so forced tokens (one allowed token) have logprob 0 and
    # every alternative with a finite logprob is allowed by the constraint
    date = outs[2]
    assert any(math.isclose(lp.logprob, 0.0, abs_tol=1e-6) for lp in outs[0].logprobs)
    for lp in date.logprobs:
        assert all(alt_lp == -math.inf or tok.decode([a]).strip("0123456789-") == "" for a, _, alt_lp in lp.top)


def test_logprobs_are_the_same_with_drafting_on_or_off(tok, tiny):
    sp = dict(PENALTIES, logprobs=True, top_logprobs=2)
    want = _run(_engine(tiny, tok), _requests(tok, "a", **sp))
    got = _run(_engine(tiny, tok, forced_runs=True, speculation="draft_model"), _requests(tok, "b", **sp))
    for w, g in zip(want, got):
        assert (w.logprobs is None) == (g.logprobs is None)
        if w.logprobs is not None:
            assert [x.token_id for x in g.logprobs] == [x.token_id for x in w.logprobs]
            assert [x.logprob for x in g.logprobs] == pytest.approx([x.logprob for x in w.logprobs], abs=1e-4)


def test_a_logit_bias_outside_the_vocabulary_fails_only_its_request(tok, tiny):
    bad = GenerateRequest("bad", tok.encode("hello"), SamplingParams(max_tokens=5, logit_bias={10 ** 6: 1.0}))
    good = GenerateRequest("good", tok.encode("hello"), SamplingParams(max_tokens=5, logit_bias={5: 1.0}))
    outs = _run(_engine(tiny, tok), [bad, good])
    assert outs[0].finish_reason == "error" and "logit_bias" in outs[0].error
    assert outs[1].finish_reason == "length" and len(outs[1].token_ids) == 5


def _repeated_trigrams(ids: list[int]) -> int:
    return sum(c - 1 for c in Counter(zip(ids, ids[1:], ids[2:])).values() if c > 1)


def test_dry_breaks_the_loops_of_greedy_decoding(tok, tiny):
    """Inside a small alphabet the random model's greedy decoding loops on one token; DRY breaks the loop and the
    output still matches the constraint."""
    prompt, spec = tok.encode("Loop: a b c a b c a b c"), ConstraintSpec("regex", r"[abc ]{1,200}")
    plain = _run(_engine(tiny, tok), [GenerateRequest("p", prompt, SamplingParams(max_tokens=60), spec)])[0]
    dry = _run(_engine(tiny, tok), [GenerateRequest("d", prompt, SamplingParams(
        max_tokens=60, dry_multiplier=5.0, dry_base=2.0, dry_allowed_length=2), spec)])[0]
    assert _repeated_trigrams(plain.token_ids) > 20, "the tiny model does not loop: nothing to break"
    assert _repeated_trigrams(dry.token_ids) < _repeated_trigrams(plain.token_ids) / 4
    assert re.fullmatch(r"[abc ]{1,200}", dry.text), dry.text


@pytest.mark.parametrize("bad", [dict(frequency_penalty=3.0), dict(presence_penalty=float("nan")),
                                 dict(repetition_penalty=0.0), dict(min_p=-0.1), dict(logit_bias={-1: 1.0}),
                                 dict(logit_bias={1: 101.0}), dict(dry_base=0.5), dict(dry_allowed_length=0),
                                 dict(dry_range=-1), dict(top_logprobs=21, logprobs=True), dict(top_logprobs=2),
                                 dict(n=17), dict(n=0), dict(logprobs=1)])
def test_bad_sampling_parameters_are_value_errors(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_sampling_params_defaults_are_neutral_and_logit_bias_accepts_a_dict():
    from structgen.kernels.logits_processing import row_needs_processing

    assert not row_needs_processing(SamplingParams())
    sp = SamplingParams(logit_bias={7: 1.5, 3: -2.0})
    assert sp.logit_bias == ((3, -2.0), (7, 1.5)) and hash(sp)
