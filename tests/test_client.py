"""The Python SDK: request building, status -> typed error mapping, extract / extract_many (ordering,
per-item errors, retries) against the real server (fixtures in tests/conftest.py)."""

from __future__ import annotations

import grpc
import jsonschema
import pytest

import structgen
from structgen import Client
from structgen._proto import structgen_pb2 as pb
from structgen.client import build_request
from structgen.client_errors import from_rpc_error

CONTACT = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40}, "city": {"type": ["string", "null"], "maxLength": 30}},
    "required": ["name", "city"],
    "additionalProperties": False,
}


def test_build_request_maps_arguments():
    req = build_request(messages=[{"role": "user", "content": "hi"}], system="be brief", regex="[a-z]+",
                        max_tokens=7, temperature=0.5, top_p=0.9, top_k=5, seed=3, stop="\n", request_id="r1")
    assert req.messages[0].content == "hi" and req.system == "be brief"
    assert req.constraint.WhichOneof("kind") == "regex" and req.max_tokens == 7 and req.HasField("max_tokens")
    assert req.sampling.seed == 3 and req.sampling.HasField("seed") and list(req.stop) == ["\n"]
    assert not build_request("x").HasField("max_tokens")  # unset stays unset (server default), 0 is an error
    assert build_request("x", json_schema={"type": "string"}).constraint.json_schema == '{"type": "string"}'


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "exactly one of prompt"),
    (dict(prompt="x", messages=[]), "exactly one of prompt"),
    (dict(prompt="x", regex="a", choices=["a"]), "at most one constraint"),
])
def test_build_request_rejects_misuse(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_request(**kwargs)


def test_choices_must_be_a_list():
    with pytest.raises(TypeError):
        build_request("x", choices="yes")


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code, details, metadata=()):
        self._code, self._details, self._md = code, details, metadata

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._md


@pytest.mark.parametrize("code, cls", [
    (grpc.StatusCode.RESOURCE_EXHAUSTED, structgen.Overloaded),
    (grpc.StatusCode.UNAUTHENTICATED, structgen.Unauthenticated),
    (grpc.StatusCode.DEADLINE_EXCEEDED, structgen.DeadlineExceeded),
    (grpc.StatusCode.UNAVAILABLE, structgen.Unavailable),
    (grpc.StatusCode.NOT_FOUND, structgen.NotFound),
    (grpc.StatusCode.INVALID_ARGUMENT, structgen.InvalidRequest),
    (grpc.StatusCode.INTERNAL, structgen.ServerError),
])
def test_status_codes_map_to_typed_errors(code, cls):
    err = from_rpc_error(_FakeRpcError(code, "why"))
    assert type(err) is cls and err.code == code and "why" in str(err)


def test_constraint_errors_carry_keyword_pointer_position():
    md = (("structgen-error-kind", "constraint"), ("structgen-error-keyword", "not"),
          ("structgen-error-pointer", "#/items"), ("structgen-error-position", "4"))
    err = from_rpc_error(_FakeRpcError(grpc.StatusCode.INVALID_ARGUMENT, "bad", md))
    assert isinstance(err, structgen.InvalidConstraint) and isinstance(err, structgen.ConstraintError)
    assert (err.keyword, err.pointer, err.position) == ("not", "#/items", 4)


def test_extract_many_retries_unavailable_then_reports(monkeypatch):
    calls = {}

    def flaky(self, task, text, max_tokens, timeout):
        calls[text] = calls.get(text, 0) + 1
        if text == "down":
            raise structgen.Unavailable(grpc.StatusCode.UNAVAILABLE, "shutting down")
        if text == "flaky" and calls[text] < 3:
            raise structgen.Overloaded(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        if text == "bad":
            raise structgen.InvalidRequest(grpc.StatusCode.INVALID_ARGUMENT, "too long")
        return {"name": text, "city": None}

    monkeypatch.setattr(Client, "_extract", flaky)
    monkeypatch.setattr("structgen.client._backoff", lambda attempt: 0.0)
    with Client("127.0.0.1:9") as c:
        results = list(c.extract_many(["a", "flaky", "bad", "down", "b"], CONTACT, concurrency=3, retries=3,
                                      progress=False))
    assert [r.index for r in results] == [0, 1, 2, 3, 4]
    assert [r.ok for r in results] == [True, True, False, False, True]
    assert results[1].value == {"name": "flaky", "city": None} and calls["flaky"] == 3
    assert isinstance(results[2].error, structgen.InvalidRequest) and calls["bad"] == 1  # not retried
    assert isinstance(results[3].error, structgen.Unavailable) and calls["down"] == 4  # 1 + 3 retries


def test_extract_rejects_a_non_schema():
    with Client("127.0.0.1:9") as c:
        with pytest.raises(TypeError):
            c.extract("text", int)
        with pytest.raises(Exception, match="is not valid"):
            c.extract("text", {"type": 12})


def test_extract_many_against_the_server(client, real_server):
    limit = real_server.server.engine.max_model_len
    texts = ["Call Jana Novak in Brno.", "lorem ipsum " * limit, "Omar Haddad lives in Tunis."]
    results = list(client.extract_many(texts, CONTACT, concurrency=3, max_tokens=40, progress=False))
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].ok and results[2].ok
    for r in (results[0], results[2]):
        jsonschema.Draft202012Validator(CONTACT).validate(r.value)
    assert isinstance(results[1].error, structgen.InvalidRequest) and "tokens" in str(results[1].error)


def test_server_info_is_a_message(client):
    assert isinstance(client.server_info(), pb.ServerInfo)
