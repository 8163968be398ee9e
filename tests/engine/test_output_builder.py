"""What ends an output, as the final GenerateOutput reports it (output_builder.consume / build_output), with the
tiny random-weight model of the real vocabulary: `stop_string` names the stop string that ended the text, and is
None when EOS, the constraint or the length ended it."""

from __future__ import annotations

import pytest

from structgen.engine.config import EngineConfig
from structgen.engine.engine import LLMEngine
from structgen.engine.requests import ConstraintSpec, GenerateRequest, SamplingParams

PROMPT = "Once upon a time there was"


@pytest.fixture
def engine(tiny, tok):
    e = LLMEngine(EngineConfig(kv_cache_bytes=8 << 20, forced_runs=False, speculation="off",
                               compile_isolation="thread"), tiny, tok)
    yield e
    e.close()


def _final(engine, tok, rid, sp, constraint=None):
    req = GenerateRequest(rid, tok.encode(PROMPT), sp, constraint)
    return engine.generate([req])[rid]


def test_the_stop_string_that_ended_the_text_is_named(engine, tok):
    free = _final(engine, tok, "free", SamplingParams(max_tokens=24))
    assert free.finish_reason == "length" and free.stop_string is None
    assert len(free.text) > 12
    stop = free.text[6:10]                              # a piece of the text it writes anyway
    out = _final(engine, tok, "stopped", SamplingParams(max_tokens=24, stop=("never-in-there", stop)))
    assert out.finish_reason == "stop"
    assert out.stop_string == stop
    assert out.text == free.text[:free.text.index(stop)]


def test_only_the_final_output_names_it(engine, tok):
    free = _final(engine, tok, "free", SamplingParams(max_tokens=24))
    stop = free.text[8:12]
    engine.add_request(GenerateRequest("s", tok.encode(PROMPT), SamplingParams(max_tokens=24, stop=(stop,))))
    outs = []
    while engine.has_unfinished():
        outs.extend(engine.step())
    assert outs[-1].finished and outs[-1].stop_string == stop
    assert all(o.stop_string is None for o in outs[:-1]) and len(outs) > 1


def test_no_stop_string_when_eos_or_the_constraint_ends_it(engine, tok):
    eos = min(tok.eos_token_ids)
    # EOS first (logit_bias makes it the argmax), with stop strings that never came up.
    out = _final(engine, tok, "eos", SamplingParams(max_tokens=8, stop=("zzz",), logit_bias={eos: 100.0}))
    assert out.finish_reason == "stop" and out.usage.completion_tokens == 1 and out.stop_string is None
    out = _final(engine, tok, "choice", SamplingParams(max_tokens=8, stop=("zzz",)),
                 ConstraintSpec("choice", ["yes", "no"]))
    assert out.finish_reason == "stop" and out.text in ("yes", "no") and out.stop_string is None
