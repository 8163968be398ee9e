"""Server logic over a real grpc.aio server and the real SDK, with a stand-in engine (conftest.FakeEngine), so
admission, auth, deadlines, cancel and drain are tested fast and deterministically. The same paths with the
real model are in test_end_to_end.py."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import structgen
from structgen import Client
from structgen._proto import structgen_pb2 as pb


@pytest.fixture(scope="module")
def tokenizer():
    return structgen.default_tokenizer()


def wait_until(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def test_generate_stream_and_info(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer)
    st = serve_fake(engine)
    with Client(st.target, timeout=10) as c:
        done = c.generate("hi", request_id="mine-1")
        assert done.text == engine.text and done.finish_reason == "stop" and done.request_id == "mine-1"
        assert done.usage.prompt_tokens == len(tokenizer.encode("hi"))
        deltas = list(c.stream("hi"))
        assert "".join(d.text for d in deltas) == done.text
        assert [d.finish_reason for d in deltas[:-1]] == [None] * (len(deltas) - 1) and deltas[-1].finish_reason
        assert deltas[-1].usage.completion_tokens == done.usage.completion_tokens
        short = c.generate("hi", max_tokens=2)
        assert short.finish_reason == "length" and short.usage.completion_tokens == 2
        info = c.server_info()
        assert info.tokenizer_fingerprint == tokenizer.fingerprint and info.limits.max_model_len == 512
        assert info.limits.max_tokens == 511 and info.version == structgen.__version__
        assert c.health()


def test_reflection_lists_the_service(serve_fake, tokenizer, fake_engine_cls):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    st = serve_fake(fake_engine_cls(tokenizer))
    with grpc.insecure_channel(st.target) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        reply = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in reply.list_services_response.service}
    assert {"structgen.v1.StructGen", "grpc.health.v1.Health"} <= names


def test_parameter_errors(serve_fake, tokenizer, fake_engine_cls):
    st = serve_fake(fake_engine_cls(tokenizer, max_model_len=64), max_tokens_limit=32, default_max_tokens=16)
    with Client(st.target, timeout=10) as c:
        with pytest.raises(structgen.InvalidRequest, match="at least 1"):
            c.generate("hi", max_tokens=0)
        with pytest.raises(structgen.InvalidRequest, match="at most 32"):
            c.generate("hi", max_tokens=10_000)
        with pytest.raises(structgen.InvalidRequest, match=r"prompt is \d+ tokens .* holds 64") as e:
            c.generate("word " * 100)
        assert not isinstance(e.value, structgen.InvalidConstraint)
        with pytest.raises(structgen.InvalidRequest, match=r"max_tokens \(30\) exceeds"):
            c.generate("word " * 40, max_tokens=30)
        with pytest.raises(structgen.InvalidConstraint, match="not valid JSON: .* line 1 column"):
            c.generate("hi", json_schema='{"type": "object",')
        with pytest.raises(structgen.InvalidConstraint) as e:
            c.generate("hi", json_schema={"not": {"type": "string"}})
        assert e.value.keyword == "not" and e.value.pointer == "/not"
        assert isinstance(e.value, structgen.ConstraintError)
        with pytest.raises(structgen.NotFound, match="call Compile again"):
            c.generate("hi", compiled_id="c-doesnotexist")
        with pytest.raises(structgen.InvalidRequest, match="role"):
            c.generate(messages=[{"role": "wizard", "content": "x"}])
        compiled = c.compile(regex="[0-9]+")
        again = c.compile(regex="[0-9]+")
        assert again.id == compiled.id and again.cached and not compiled.cached
        assert c.generate("hi", compiled_id=compiled.id, max_tokens=3).usage.completion_tokens == 3


def test_message_size_limit(serve_fake, tokenizer, fake_engine_cls):
    st = serve_fake(fake_engine_cls(tokenizer), max_request_bytes=2048)
    with Client(st.target, timeout=10) as c:
        with pytest.raises(structgen.InvalidRequest, match="larger than max"):
            c.generate("x" * 5000)
        assert c.generate("x" * 500, max_tokens=2).usage.completion_tokens == 2


def test_api_keys(serve_fake, tokenizer, fake_engine_cls):
    st = serve_fake(fake_engine_cls(tokenizer), api_keys=frozenset({"k-good"}))
    with Client(st.target, timeout=10) as anon:
        with pytest.raises(structgen.Unauthenticated, match="missing API key"):
            anon.generate("hi")
        with pytest.raises(structgen.Unauthenticated):
            list(anon.stream("hi"))
        assert anon.health()  # health stays open
    with Client(st.target, api_key="k-bad", timeout=10) as bad:
        with pytest.raises(structgen.Unauthenticated, match="invalid API key"):
            bad.server_info()
    with Client(st.target, api_key="k-good", timeout=10) as good:
        assert good.generate("hi", max_tokens=3).usage.completion_tokens == 3
        assert good.server_info().auth_required


def test_queue_bound_refuses_at_once(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer, step_s=0.05)
    st = serve_fake(engine, max_queue=3)
    with Client(st.target, timeout=30) as c, ThreadPoolExecutor(12) as pool:
        def one(_):
            t0 = time.monotonic()
            try:
                return c.generate("hi", max_tokens=10).text, time.monotonic() - t0
            except structgen.Overloaded as e:
                return e, time.monotonic() - t0
        results = list(pool.map(one, range(12)))
    refused = [dt for r, dt in results if isinstance(r, structgen.Overloaded)]
    served = [r for r, _ in results if isinstance(r, str)]
    assert refused and len(served) >= 3 and len(served) + len(refused) == 12
    assert all(r == engine.text[: len(r)] and r for r in served)
    assert max(refused) < 0.4  # refused at once, not after waiting for a slot (a full request takes ~0.5 s)
    assert wait_until(lambda: len(st.server.admission) == 0)


def test_deadline_stops_the_work(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer, step_s=0.2)
    st = serve_fake(engine)
    with Client(st.target) as c:
        with pytest.raises(structgen.DeadlineExceeded):
            c.generate("hi", max_tokens=50, timeout=0.5)
    assert wait_until(lambda: engine.aborted and not engine.running)


def test_client_cancel_mid_stream_aborts(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer, step_s=0.1)
    st = serve_fake(engine)
    with Client(st.target, timeout=30) as c:
        it = c.stream("hi", max_tokens=50)
        first = next(it)
        assert first.text and first.finish_reason is None
        assert st.call(_async_value(lambda: len(engine.running))) == 1
        it.close()  # cancels the call
    assert wait_until(lambda: len(engine.aborted) == 1 and not engine.running)
    assert wait_until(lambda: len(st.server.admission) == 0)


def test_drain_finishes_or_refuses(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer, step_s=0.1)  # ~0.5 s per request at max_tokens=5, ~4 s at 40
    st = serve_fake(engine)
    results = {}
    with Client(st.target, timeout=30) as c:
        def run(name, n):
            try:
                results[name] = c.generate("hi", max_tokens=n).finish_reason
            except structgen.RemoteError as e:
                results[name] = e
        threads = [threading.Thread(target=run, args=("short", 5)), threading.Thread(target=run, args=("long", 40))]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(engine.running) == 2)
        stopper = threading.Thread(target=st.stop, kwargs=dict(drain_timeout_s=1.5))
        stopper.start()
        assert wait_until(lambda: st.server.admission.draining)
        with pytest.raises(structgen.Unavailable, match="shutting down"):
            c.generate("hi", max_tokens=2)
        for t in threads:
            t.join(20)
        stopper.join(20)
    assert results["short"] == "length"  # finished within the drain window
    assert isinstance(results["long"], structgen.Unavailable)  # aborted at its end, told to retry
    assert engine.stopped and not engine.running


def _async_value(fn):
    async def get():
        return fn()
    return get()


def test_a_taken_port_fails_cleanly(serve_fake, tokenizer, fake_engine_cls):
    from structgen.server.background import BackgroundServer
    from structgen.server.config import ServerConfig

    st = serve_fake(fake_engine_cls(tokenizer))
    engine = fake_engine_cls(tokenizer)
    with pytest.raises(OSError, match="could not bind"):
        BackgroundServer(engine, ServerConfig(port=st.port)).start()
    assert not engine.started  # nothing was loaded for a server that could not listen


# ---- issue 13: n choices, log-probabilities, the token budget ------------------------------------------------

def test_n_choices_fan_out_with_seeds(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer)
    st = serve_fake(engine)
    with Client(st.target, timeout=10) as c:
        done = c.generate("hi", max_tokens=4, n=3, seed=40, temperature=0.7)
        assert [ch.index for ch in done.choices] == [0, 1, 2]
        assert done.text == done.choices[0].text and done.usage == done.choices[0].usage
        assert all(ch.finish_reason == "length" and ch.usage.completion_tokens == 4 for ch in done.choices)
        ids = [r.request_id for r in engine.requests]
        assert ids[1:] == [f"{ids[0]}#1", f"{ids[0]}#2"]
        assert [r.sampling.seed for r in engine.requests] == [40, 41, 42]
        assert all(r.sampling.n == 1 for r in engine.requests)  # the engine never sees n
        engine.requests.clear()
        c.generate("hi", max_tokens=2, n=2, temperature=0.7)
        assert [r.sampling.seed for r in engine.requests] == [None, None]  # the engine gives each its own seed
        single = c.generate("hi", max_tokens=2)
        assert len(single.choices) == 1 and single.choices[0].text == single.text


def test_n_choices_stream_with_indexes(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer)
    st = serve_fake(engine)
    with Client(st.target, timeout=10) as c:
        unary = c.generate("hi", max_tokens=5, n=2)
        deltas = list(c.stream("hi", max_tokens=5, n=2))
    for i in (0, 1):
        mine = [d for d in deltas if d.index == i]
        assert "".join(d.text for d in mine) == unary.choices[i].text
        assert [d.finish_reason for d in mine].count(None) == len(mine) - 1 and mine[-1].finish_reason == "length"


def test_logprobs_come_back_per_token(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer)
    st = serve_fake(engine)
    with Client(st.target, timeout=10) as c:
        done = c.generate("hi", max_tokens=4, logprobs=True, top_logprobs=2)
        assert len(done.logprobs) == 4 and all(lp.logprob <= 0 and len(lp.top) == 2 for lp in done.logprobs)
        assert "".join(lp.text for lp in done.logprobs) == done.text
        deltas = list(c.stream("hi", max_tokens=4, logprobs=True))
        assert [lp.logprob for d in deltas for lp in d.logprobs] == [lp.logprob for lp in done.logprobs]
        assert c.generate("hi", max_tokens=4).logprobs is None


def test_budget_closed_output_is_flagged_not_failed(serve_fake, tokenizer, fake_engine_cls):
    schema = {"type": "object"}
    engine = fake_engine_cls(tokenizer, text='{"a": 1}')
    engine.finish_reason = "budget"
    st = serve_fake(engine)
    with Client(st.target, timeout=10) as c:
        assert c.generate("hi", json_schema=schema).finish_reason == "budget"
        assert list(c.stream("hi", json_schema=schema))[-1].finish_reason == "budget"
        with pytest.warns(structgen.client.BudgetClosedWarning, match="budget"):
            assert c.extract("doc", schema, max_tokens=20) == {"a": 1}
        [result] = c.extract_many(["doc"], schema, max_tokens=20, progress=False)
        assert result.ok and result.closed_by_budget and result.value == {"a": 1}
        engine.finish_reason = None
        [result] = c.extract_many(["doc"], schema, max_tokens=20, progress=False)
        assert result.ok and not result.closed_by_budget


def test_a_constraint_longer_than_the_budget_is_refused(serve_fake, tokenizer, fake_engine_cls):
    engine = fake_engine_cls(tokenizer, max_model_len=64)
    engine.min_tokens = 12
    st = serve_fake(engine)
    with Client(st.target, timeout=10) as c:
        with pytest.raises(structgen.InvalidRequest, match=r"needs at least 12 tokens to complete but the budget is "
                                                            r"8 \(max_tokens=8, context room=\d+\)"):
            c.generate("hi", regex="[a-z]+", max_tokens=8)
        assert not engine.requests  # refused before the engine saw it
        assert c.generate("hi", regex="[a-z]+", max_tokens=12).usage.completion_tokens == 12
        with pytest.raises(structgen.InvalidRequest, match="but the budget is 2 .*context room=2"):
            c.generate("word " * 61, regex="[a-z]+")  # unset max_tokens shrinks to the context's room
