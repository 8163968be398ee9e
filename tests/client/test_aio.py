"""The asyncio client (structgen/client/aio.py): extract_many keeps input order, reports per-item errors and
retries transient refusals, as the blocking client does."""

from __future__ import annotations

import asyncio

import grpc

import structgen
from structgen import AsyncClient
from structgen.client.extraction import Extracted

CONTACT = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def test_extract_many_retries_and_reports_in_order(monkeypatch):
    calls = {}

    async def flaky(self, task, text, max_tokens, sampling, timeout):
        calls[text] = calls.get(text, 0) + 1
        await asyncio.sleep(0.01 if text == "a" else 0)  # finishes last, still yielded first
        if text == "flaky" and calls[text] < 3:
            raise structgen.Overloaded(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        if text == "bad":
            raise structgen.InvalidRequest(grpc.StatusCode.INVALID_ARGUMENT, "too long")
        return Extracted({"name": text}, closed_by_budget=text == "a")

    monkeypatch.setattr(AsyncClient, "_extract", flaky)
    monkeypatch.setattr("structgen.client.batch.backoff", lambda attempt: 0.0)

    async def run():
        async with AsyncClient("127.0.0.1:9") as c:
            return [r async for r in c.extract_many(["a", "flaky", "bad"], CONTACT, concurrency=2, retries=3,
                                                    progress=False)]

    results = asyncio.run(run())
    assert [r.index for r in results] == [0, 1, 2] and [r.ok for r in results] == [True, True, False]
    assert results[1].value == {"name": "flaky"} and calls["flaky"] == 3
    assert [r.closed_by_budget for r in results] == [True, False, False]
    assert isinstance(results[2].error, structgen.InvalidRequest) and calls["bad"] == 1
