"""The blocking Client (structgen/client/sync.py): extract / extract_many (ordering, per-item errors, retries)
against the real server (fixtures in tests/conftest.py)."""

from __future__ import annotations

import grpc
import jsonschema
import pytest

import structgen
from structgen import Client
from structgen._proto import structgen_pb2 as pb
from structgen.client.extraction import Extracted

CONTACT = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 40}, "city": {"type": ["string", "null"], "maxLength": 30}},
    "required": ["name", "city"],
    "additionalProperties": False,
}


def test_extract_many_retries_unavailable_then_reports(monkeypatch):
    calls = {}

    def flaky(self, task, text, max_tokens, sampling, timeout):
        calls[text] = calls.get(text, 0) + 1
        if text == "down":
            raise structgen.Unavailable(grpc.StatusCode.UNAVAILABLE, "shutting down")
        if text == "flaky" and calls[text] < 3:
            raise structgen.Overloaded(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        if text == "bad":
            raise structgen.InvalidRequest(grpc.StatusCode.INVALID_ARGUMENT, "too long")
        return Extracted({"name": text, "city": None})

    monkeypatch.setattr(Client, "_extract", flaky)
    monkeypatch.setattr("structgen.client.batch.backoff", lambda attempt: 0.0)
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
