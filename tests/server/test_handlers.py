"""structgen/server/handlers.py (bytes that are no request message) and the request limits of issue 14, over a real
grpc.aio server with the stand-in engine (conftest.FakeEngine)."""

from __future__ import annotations

import random

import grpc
import pytest

import structgen
from structgen._proto import structgen_pb2 as pb
from structgen.bench.hostile import _method_call


@pytest.fixture(scope="module")
def tokenizer():
    return structgen.default_tokenizer()


@pytest.fixture
def target(serve_fake, tokenizer, fake_engine_cls):
    return serve_fake(fake_engine_cls(tokenizer)).target


def _raw(channel, method: str, data: bytes, timeout=10):
    call = _method_call(channel, method, raw=True)
    result = call(data, timeout=timeout)
    if method == "GenerateStream":
        result = list(result)
    return result


@pytest.mark.parametrize("method", ["Generate", "GenerateStream", "Compile"])
def test_bytes_that_are_no_message_get_invalid_argument(target, method):
    rng = random.Random(method)
    cases = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400))) for _ in range(5)]
    cases.append(pb.GenerateRequest(prompt="hello" * 9).SerializeToString()[:-5])  # truncated mid-field
    with grpc.insecure_channel(target) as ch:
        for data in cases:
            try:
                pb.GenerateRequest.FromString(data) if method != "Compile" else pb.CompileRequest.FromString(data)
                continue  # random bytes that happen to parse are a valid request: not this test's case
            except Exception:  # noqa: BLE001 - DecodeError
                pass
            with pytest.raises(grpc.RpcError) as e:
                _raw(ch, method, data)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
            assert "is not a valid structgen.v1." in e.value.details()
        # The same channel still works: a well-formed request right after.
        ok = _raw(ch, "Generate", pb.GenerateRequest(prompt="hi", max_tokens=2).SerializeToString())
        assert ok.text


def test_well_formed_requests_still_reach_the_servicer(target):
    with grpc.insecure_channel(target) as ch:
        msgs = _raw(ch, "GenerateStream", pb.GenerateRequest(prompt="hi", max_tokens=3).SerializeToString())
        assert msgs and msgs[-1].finish_reason == pb.FINISH_REASON_LENGTH


@pytest.mark.parametrize("request_kw, needle", [
    (dict(prompt="x", stop=["s"] * 33), "at most 32 stop strings"),
    (dict(prompt="x", stop=["s" * 1025]), "at most 1024 characters"),
    (dict(prompt="x", request_id="r" * 257), "request_id has 257 characters"),
])
def test_oversized_parts_of_a_request_are_refused_by_name(target, request_kw, needle):
    with grpc.insecure_channel(target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            _raw(ch, "Generate", pb.GenerateRequest(max_tokens=2, **request_kw).SerializeToString())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in e.value.details()


@pytest.mark.parametrize("error, code", [
    ("ConstraintTooComplexError: constraint too complex: time to build one state reached while decoding (s) "
     "exceeded the limit of 5.0", grpc.StatusCode.INVALID_ARGUMENT),
    ("RuntimeError: a bug", grpc.StatusCode.INTERNAL),
])
def test_a_constraint_failing_while_decoding_is_the_requests_fault_not_the_servers(serve_fake, tokenizer,
                                                                                     fake_engine_cls, error, code):
    engine = fake_engine_cls(tokenizer)
    engine.finish_reason, engine.error_text = "error", error
    target = serve_fake(engine).target
    with grpc.insecure_channel(target) as ch:
        with pytest.raises(grpc.RpcError) as e:
            _raw(ch, "Generate", pb.GenerateRequest(prompt="hi", max_tokens=2).SerializeToString())
    assert e.value.code() == code and error.split(": ", 1)[1][:30] in e.value.details()
