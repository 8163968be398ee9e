"""structgen/bench/serve.py: levels keep their concurrency, count errors by status, and compute latencies."""

import asyncio
import time

import pytest

from structgen.bench.cases import ExtractionItem
from structgen.bench.serve import RequestResult, render_markdown, run_level, summarize_level

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


class _Code:
    name = "RESOURCE_EXHAUSTED"


class Overloaded(Exception):
    code = _Code()


class FakeDelta:
    def __init__(self, text, usage=None, finish_reason=None):
        self.text, self.usage, self.finish_reason = text, usage, finish_reason


class FakeUsage:
    completion_tokens = 5


class FakeClient:
    """Streams '{"city":"Oslo"}' in pieces; every 4th request is refused; tracks the most in flight at once."""

    def __init__(self, delay=0.02):
        self.delay = delay
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def stream(self, *, messages, json_schema, max_tokens, timeout):
        self.calls += 1
        n = self.calls
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if n % 4 == 0:
                raise Overloaded()
            for piece in ['{"city":', '"Oslo"', "}"]:
                await asyncio.sleep(self.delay)
                yield FakeDelta(piece)
            yield FakeDelta("", FakeUsage(), "stop")
        finally:
            self.in_flight -= 1


def test_level_runs_at_its_concurrency_and_counts_errors():
    client = FakeClient()
    items = [ExtractionItem("a", SCHEMA, "I live in Oslo")]
    results, wall = asyncio.run(run_level(client, items, 4, requests=8, duration=None, max_tokens=16,
                                          timeout=5, progress=False))
    assert len(results) == 8 and client.max_in_flight == 4
    s = summarize_level(results, wall)
    assert (s["requests"], s["ok"]) == (8, 6)
    assert s["errors"] == {"RESOURCE_EXHAUSTED": 2}
    assert s["valid"] == 6 and s["checked"] == 6
    assert s["output_tokens"] == 30
    assert s["ttft"]["p50"] >= 0.02 and s["e2e"]["p50"] >= 0.06
    assert s["tpot"]["n"] == 6


def test_duration_mode_stops_issuing_after_the_time():
    client = FakeClient(delay=0.01)
    items = [ExtractionItem("a", SCHEMA, "x")]
    t0 = time.monotonic()
    results, wall = asyncio.run(run_level(client, items, 2, requests=None, duration=0.3, max_tokens=16,
                                          timeout=5, progress=False))
    assert 0.3 <= wall < 2 and time.monotonic() - t0 < 3
    assert len(results) >= 4


def test_summary_math_and_table():
    rs = [RequestResult(True, "OK", 1.0, 0.2, 9, True, "stop"), RequestResult(True, "OK", 2.0, 0.4, 17, False, "length"),
          RequestResult(False, "DEADLINE_EXCEEDED", 5.0)]
    s = summarize_level(rs, 4.0)
    assert s["req_per_s"] == pytest.approx(0.5) and s["out_tok_per_s"] == pytest.approx(6.5)
    assert s["tpot"]["p50"] == pytest.approx(0.1)
    md = render_markdown([("structgen", 8, s)], {"command": "c", "date": "d", "commit": "x", "cpu": "c", "cores": 2,
                                                 "gpu": "none"}, "note")
    row = next(x for x in md.splitlines() if x.startswith("| structgen |"))
    assert "| 1/2 (50.0%) | 1 | 0 | DEADLINE_EXCEEDED: 1 |" in row   # the invalid one was cut by max_tokens
    s2 = summarize_level([RequestResult(True, "OK", 1.0, 0.2, 9, False, "stop")], 1.0)
    assert (s2["length"], s2["invalid_finished"]) == (0, 1)
