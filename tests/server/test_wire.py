"""The server's protobuf edge (structgen/server/wire.py): every sampling field from the wire to the engine's
SamplingParams and back out as the SDK reads it, bad values refused INVALID_ARGUMENT naming the field, finish
reasons and log-probabilities out."""

from __future__ import annotations

import math

import grpc
import pytest

from structgen._proto import structgen_pb2 as pb
from structgen.client import build_request
from structgen.client import wire as client_wire
from structgen.engine.outputs import TokenLogprob
from structgen.engine.requests import SamplingParams
from structgen.server import wire
from structgen.server.wire import RequestError

LIMITS = dict(prompt_len=10, max_model_len=512, default_max_tokens=64, max_tokens_limit=256, vocab_size=1000)

# Every SDK sampling keyword, a non-default value exactly representable as float32.
EVERY_FIELD = dict(temperature=0.5, top_p=0.75, top_k=7, seed=11, frequency_penalty=0.5, presence_penalty=-0.25,
                   repetition_penalty=1.25, min_p=0.125, logit_bias={5: -100.0, 17: 2.5}, dry_multiplier=0.75,
                   dry_base=2.0, dry_allowed_length=3, dry_range=64, logprobs=True, top_logprobs=4, n=3)


def sampling(**kwargs) -> SamplingParams:
    return wire.sampling_from_pb(build_request("x", **kwargs), **LIMITS)


def test_every_field_round_trips_sdk_to_engine():
    got = sampling(max_tokens=20, stop=["\n"], **EVERY_FIELD)
    expected = dict(EVERY_FIELD, logit_bias=((5, -100.0), (17, 2.5)))
    for name, value in expected.items():
        assert getattr(got, name) == value, name
    assert got.max_tokens == 20 and got.stop == ("\n",)


def test_unset_fields_are_the_engine_defaults():
    # NOTE: proto3 optionals (repetition_penalty, dry_base, dry_allowed_length, seed) must not arrive as 0.
    got = sampling()
    assert got == SamplingParams(max_tokens=LIMITS["default_max_tokens"])
    assert got.repetition_penalty == 1.0 and got.dry_base == 1.75 and got.dry_allowed_length == 2 and got.n == 1


def test_set_zero_differs_from_unset():
    assert sampling(seed=0).seed == 0
    with pytest.raises(RequestError, match="sampling.repetition_penalty"):
        sampling(repetition_penalty=0.0)


@pytest.mark.parametrize("kwargs, field", [
    (dict(frequency_penalty=2.5), "frequency_penalty"),
    (dict(presence_penalty=-3.0), "presence_penalty"),
    (dict(frequency_penalty=math.nan), "frequency_penalty"),
    (dict(repetition_penalty=-1.0), "repetition_penalty"),
    (dict(min_p=1.5), "min_p"),
    (dict(logit_bias={3: 101.0}), "logit_bias"),
    (dict(logit_bias={3: math.inf}), "logit_bias"),
    (dict(logit_bias={1000: 1.0}), "logit_bias"),        # outside the vocabulary (1000 ids)
    (dict(dry_multiplier=-0.5), "dry_multiplier"),
    (dict(dry_base=0.5), "dry_base"),
    (dict(dry_allowed_length=0), "dry_allowed_length"),
    (dict(top_logprobs=21, logprobs=True), "top_logprobs"),
    (dict(top_logprobs=2), "top_logprobs"),              # without logprobs
    (dict(n=17), "n"),
    (dict(temperature=-1.0), "temperature"),
])
def test_bad_values_are_invalid_argument_naming_the_field(kwargs, field):
    with pytest.raises(RequestError) as e:
        sampling(**kwargs)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"sampling.{field}" in e.value.message, e.value.message


def test_finish_reasons_out_and_back():
    for reason in ("stop", "length", "budget"):
        code = wire.finish_reason_pb(reason)
        assert code != pb.FINISH_REASON_UNSPECIFIED
        done = client_wire.completion(pb.GenerateResponse(text="{}", finish_reason=code))
        assert done.finish_reason == reason
    assert wire.finish_reason_pb("budget") == pb.FINISH_REASON_BUDGET
    assert wire.finish_reason_pb(None) == pb.FINISH_REASON_UNSPECIFIED


def test_logprobs_out():
    lps = [TokenLogprob(7, "ab", -0.5, ((7, "ab", -0.5), (9, "c", -1.25))), TokenLogprob(8, "\ud800", -2.0)]
    msgs = wire.logprobs_pb(lps)
    assert [(m.token_id, m.logprob) for m in msgs] == [(7, -0.5), (8, -2.0)]
    assert msgs[1].text == "?"  # a lone surrogate cannot travel as a protobuf string
    sdk = client_wire.completion(pb.GenerateResponse(text="ab", logprobs=msgs), logprobs=True).logprobs
    assert sdk[0].top == ((7, "ab", -0.5), (9, "c", -1.25)) and sdk[1].top == ()
    assert client_wire.completion(pb.GenerateResponse(text="ab")).logprobs is None  # not asked
    assert wire.logprobs_pb(None) == []


def test_budget_error_is_invalid_argument_naming_both_numbers():
    from structgen.fsm.budget import budget_refusal

    e = wire.budget_error(budget_refusal(need=40, max_tokens=8, room=500))
    assert e.code == grpc.StatusCode.INVALID_ARGUMENT
    assert e.message == ("the constraint needs at least 40 tokens to complete but the budget is 8 "
                         "(max_tokens=8, context room=500)")


def test_a_schema_too_deep_for_json_is_invalid_argument_not_a_crash():
    from structgen.fsm.json_schema.normalize import MAX_SCHEMA_NESTING

    c = pb.Constraint(json_schema="[" * 100_000 + "]" * 100_000)
    with pytest.raises(wire.RequestError) as e:
        wire.constraint_from_pb(c)
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {MAX_SCHEMA_NESTING}" in e.value.message


def test_property_order_reaches_the_compiler_options_and_bad_values_are_refused():
    def options(**kwargs):
        ref = wire.constraint_from_pb(build_request("x", json_schema={"type": "object"}, **kwargs).constraint)
        return ref.spec.options

    assert "property_order" not in options()  # the default, left out so both spellings share one cache entry
    assert "property_order" not in options(property_order="schema")
    assert options(property_order="any")["property_order"] == "any"
    with pytest.raises(RequestError) as e:
        options(property_order="random")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "property_order" in e.value.message
