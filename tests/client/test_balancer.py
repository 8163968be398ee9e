"""Several targets (structgen/client/balancer.py, used by sync.Client and aio.AsyncClient): the pick (rendezvous
affinity with bounded load, round robin, health ranks) and failover within the deadline, with fake replicas;
then two real gRPC servers: affinity seen in each server's metrics, and a batch that loses a replica mid-way
(a graceful stop, and a kill -9) with every item answered once and validated."""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

import structgen
from structgen import AsyncClient, Client
from structgen._proto import structgen_pb2 as pb
from structgen.client import balancer, wire
from structgen.client.balancer import Balancer, Replica, first_answer, rendezvous_order
from structgen.client.extraction import ExtractionTask

READY, CONNECTING, DOWN = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.CONNECTING,
                           grpc.ChannelConnectivity.TRANSIENT_FAILURE)
CONTACT = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 30}, "city": {"type": ["string", "null"], "maxLength": 20}},
    "required": ["name", "city"],
    "additionalProperties": False,
}


class Refusal(grpc.RpcError):
    """What grpc raises for a failed call, as much of it as the SDK reads."""

    def __init__(self, code: grpc.StatusCode, details: str = "refused"):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return ()


def fake(target: str, state=READY) -> Replica:
    return Replica(target, None, lambda: state)


# ------------------------------------------------------------------------------------------ the pick
def test_rendezvous_is_stable_spreads_keys_and_moves_only_a_removed_replicas_keys():
    targets = [f"10.0.0.{i}:50051" for i in range(5)]
    keys = [f"schema-{i}".encode() for i in range(1000)]
    first = {k: targets[rendezvous_order(k, targets)[0]] for k in keys}
    assert all(targets[rendezvous_order(k, targets)[0]] == first[k] for k in keys[:50])  # deterministic
    shares = [sum(v == t for v in first.values()) for t in targets]
    assert all(100 <= s <= 300 for s in shares), shares  # ~200 each
    gone = targets[2]
    rest = [t for t in targets if t != gone]
    moved = [k for k in keys if rest[rendezvous_order(k, rest)[0]] != first[k]]
    assert moved and all(first[k] == gone for k in moved)


def test_plan_puts_healthy_replicas_first_and_keeps_the_hash_order_within_a_rank():
    replicas = [fake("a:1", DOWN), fake("b:1", CONNECTING), fake("c:1"), fake("d:1")]
    b = Balancer(replicas, "affinity")
    plan = [r.target for r in b.plan(b"same schema")]
    assert set(plan[:2]) == {"c:1", "d:1"} and plan[2:] == ["b:1", "a:1"]
    assert [r.target for r in b.plan(b"same schema")] == plan  # same key, same plan


def test_affinity_passes_a_request_on_when_its_replica_holds_more_than_its_share():
    replicas = [fake("a:1"), fake("b:1")]
    b = Balancer(replicas, "affinity")
    home = b.plan(b"k")[0]
    other = next(r for r in replicas if r is not home)
    home.in_flight = 2  # cap = ceil(1.25 * 3 / 2) = 2: home is full
    assert b.plan(b"k")[0] is other
    home.in_flight, other.in_flight = 2, 1  # cap = ceil(1.25 * 4 / 2) = 3: home has room again
    assert b.plan(b"k")[0] is home


def test_round_robin_and_keyless_requests_take_turns():
    replicas = [fake("a:1"), fake("b:1"), fake("c:1")]
    for b, key in ((Balancer(replicas, "round_robin"), b"k"), (Balancer(replicas, "affinity"), None)):
        firsts = [b.plan(key)[0].target for _ in range(6)]
        assert firsts == ["a:1", "b:1", "c:1"] * 2


def test_balancer_refuses_misuse():
    with pytest.raises(ValueError, match="balance must be"):
        Balancer([fake("a:1"), fake("b:1")], "random")
    with pytest.raises(ValueError, match="balance must be"):
        Client(["127.0.0.1:9", "127.0.0.1:10"], balance="least")
    with pytest.raises(ValueError, match="two or more"):
        Balancer([fake("a:1")])


def test_first_answer_prefers_a_value_then_the_requests_own_fault():
    busy = structgen.Overloaded(grpc.StatusCode.RESOURCE_EXHAUSTED, "full")
    bad = structgen.InvalidConstraint(grpc.StatusCode.INVALID_ARGUMENT, "bad schema")
    assert first_answer([busy, "compiled"]) == "compiled"
    with pytest.raises(structgen.InvalidConstraint):
        first_answer([busy, bad])
    with pytest.raises(structgen.Overloaded):
        first_answer([busy, busy])


def test_failover_worthy_refusals():
    assert all(balancer.failover_worthy(Refusal(c)) for c in (
        grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED))
    assert not any(balancer.failover_worthy(Refusal(c)) for c in (
        grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAUTHENTICATED))
    assert not balancer.failover_worthy(Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "larger than max (9 vs. 4)"))


def _states_become(client, want: dict, timeout: float = 20.0):
    import time

    end = time.monotonic() + timeout
    while {s.target: s.state for s in client.replicas()} != want:
        assert time.monotonic() < end, client.replicas()
        time.sleep(0.05)


def test_unreachable_and_not_serving_replicas_are_reported_failing_and_planned_last():
    from grpc_health.v1 import health_pb2

    with socket_listening() as (live, health), Client([live, "127.0.0.1:9"]) as c:  # port 9: nothing listens
        _states_become(c, {live: "READY", "127.0.0.1:9": "TRANSIENT_FAILURE"})
        assert all(c._balancer.plan(f"k{i}".encode())[0].target == live for i in range(20))
        health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # what a server does when its drain starts
        _states_become(c, {live: "TRANSIENT_FAILURE", "127.0.0.1:9": "TRANSIENT_FAILURE"})
        assert not c.health(timeout=2)
        health.set("", health_pb2.HealthCheckResponse.SERVING)
        _states_become(c, {live: "READY", "127.0.0.1:9": "TRANSIENT_FAILURE"})
        assert c.health(timeout=2)


def socket_listening():
    """A bare grpc server (health service only) on a free loopback port: (target, its HealthServicer)."""
    import contextlib
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    @contextlib.contextmanager
    def serve():
        server = grpc.server(futures.ThreadPoolExecutor(2))
        servicer = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        try:
            yield f"127.0.0.1:{port}", servicer
        finally:
            server.stop(0)

    return serve()


# ------------------------------------------------------------------------------------------ failover (fakes)
class Script:
    """Fake stub methods on a client's listed replicas: each call pops the next outcome (an exception to raise,
    or a response) and records (target, timeout)."""

    def __init__(self, client, outcomes):
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, float | None]] = []
        for replica in client._balancer.replicas:
            replica.method = self._method_of(replica.target)
            replica.state = lambda: READY

    def _method_of(self, target):
        def method(rpc):
            def call(request, timeout=None, metadata=()):
                self.calls.append((target, timeout))
                outcome = self.outcomes.pop(0)
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome
            return call
        return method


def answer(text='{"name": "Ann", "city": null}'):
    return pb.GenerateResponse(text=text, finish_reason=pb.FINISH_REASON_STOP)


def test_a_refused_call_goes_to_the_other_replica_within_the_deadline():
    with Client(["127.0.0.1:9", "127.0.0.1:10"], timeout=30) as c:
        s = Script(c, [Refusal(grpc.StatusCode.UNAVAILABLE), answer("ok")])
        assert c.generate("hi", max_tokens=2).text == "ok"
        (first, t1), (second, t2) = s.calls
        assert first != second and 0 < t2 <= t1 <= 30  # one deadline for both attempts
        down, up = sorted(c.replicas(), key=lambda r: r.target != first)
        assert (down.calls, down.failures, up.calls, up.failures) == (1, 1, 1, 0)
        assert down.in_flight == up.in_flight == 0


def test_a_requests_own_fault_is_not_sent_on_and_every_replica_is_tried_once():
    with Client(["127.0.0.1:9", "127.0.0.1:10"]) as c:
        s = Script(c, [Refusal(grpc.StatusCode.INVALID_ARGUMENT, "max_tokens must be > 0")])
        with pytest.raises(structgen.InvalidRequest):
            c.generate("hi", max_tokens=2)
        assert len(s.calls) == 1
        s = Script(c, [Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "full"), Refusal(grpc.StatusCode.UNAVAILABLE)])
        with pytest.raises(structgen.Unavailable):
            c.generate("hi", max_tokens=2)
        assert len({t for t, _ in s.calls}) == 2


def test_no_attempt_starts_past_the_deadline(monkeypatch):
    clock = iter([100.0, 100.0, 200.0, 200.0])  # the first attempt used up the whole 5 s
    monkeypatch.setattr(balancer.time, "monotonic", lambda: next(clock))
    with Client(["127.0.0.1:9", "127.0.0.1:10"], timeout=5) as c:
        s = Script(c, [Refusal(grpc.StatusCode.UNAVAILABLE), answer("late")])
        with pytest.raises(structgen.Unavailable):
            c.generate("hi", max_tokens=2)
        assert len(s.calls) == 1


def test_extract_many_answers_every_item_when_one_replica_refuses_everything():
    with Client(["127.0.0.1:9", "127.0.0.1:10"]) as c:
        request = wire.extract_call(ExtractionTask.of(CONTACT), "any text").request
        dead = c._balancer.plan(wire.affinity_key(request))[0].target  # the schema's own replica dies
        s = Script(c, [])
        for replica in c._balancer.replicas:
            def method(rpc, target=replica.target):
                def call(request, timeout=None, metadata=()):
                    s.calls.append((target, timeout))
                    if target == dead:
                        raise Refusal(grpc.StatusCode.UNAVAILABLE, "Socket closed")
                    return answer('{"name": "%s", "city": null}' % request.messages[-1].content)
                return call
            replica.method = method
        texts = [f"n{i}" for i in range(12)]
        results = list(c.extract_many(texts, CONTACT, concurrency=4, progress=False))
    assert [r.index for r in results] == list(range(12)) and all(r.ok for r in results)
    assert [r.value["name"] for r in results] == texts
    assert [t for t, _ in s.calls].count(dead) >= 12 - 4  # most tried their home first, and were sent on


def test_stream_fails_over_before_its_first_delta_but_not_after():
    piece = pb.GenerateStreamResponse(text="a")

    class BrokenStream:
        def __init__(self, items, error):
            self.items, self.error = items, error

        def __iter__(self):
            yield from self.items
            raise self.error

        def cancel(self):
            pass

    with Client(["127.0.0.1:9", "127.0.0.1:10"]) as c:
        last = pb.GenerateStreamResponse(text="b", finish_reason=pb.FINISH_REASON_STOP)
        Script(c, [BrokenStream([], Refusal(grpc.StatusCode.UNAVAILABLE)), iter_stream([piece, last])])
        assert "".join(d.text for d in c.stream("hi", max_tokens=2)) == "ab"
        s = Script(c, [BrokenStream([piece], Refusal(grpc.StatusCode.UNAVAILABLE)), iter_stream([piece, last])])
        got = []
        with pytest.raises(structgen.Unavailable):
            for d in c.stream("hi", max_tokens=2):
                got.append(d.text)
        assert got == ["a"] and len(s.calls) == 1  # a broken stream is not replayed elsewhere
        assert all(r.in_flight == 0 for r in c.replicas())


class iter_stream:
    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)

    def cancel(self):
        pass


def test_async_client_fails_over_too():
    async def run():
        async with AsyncClient(["127.0.0.1:9", "127.0.0.1:10"], timeout=30) as c:
            s = Script(c, [])
            outcomes = [Refusal(grpc.StatusCode.CANCELLED, "server shutting down"), answer("ok")]

            def method_of(target):
                def method(rpc):
                    async def call(request, timeout=None, metadata=()):
                        s.calls.append((target, timeout))
                        outcome = outcomes.pop(0)
                        if isinstance(outcome, Exception):
                            raise outcome
                        return outcome
                    return call
                return method

            for replica in c._balancer.replicas:
                replica.method = method_of(replica.target)
            text = (await c.generate("hi", max_tokens=2)).text
            return text, s.calls, c.replicas()

    text, calls, status = asyncio.run(run())
    assert text == "ok" and len({t for t, _ in calls}) == 2 and sum(r.failures for r in status) == 1


# ------------------------------------------------------------------------------------------ two real servers
KEY = "sk-two-replicas"


def _served(server, method="Generate", status="OK") -> int:
    """Finished requests of `method` with `status` on one in-process server, from its own metrics."""
    value = server.server.metrics.registry.get_sample_value("structgen_requests_total",
                                                            {"method": method, "status": status})
    return int(value or 0)


def _cached_tokens(server) -> int:
    return int(server.server.metrics.cached_tokens_total)


def _start(drain_timeout_s: float = 1.0):
    from structgen.engine.async_engine import AsyncEngine
    from structgen.engine.config import EngineConfig
    from structgen.server.background import BackgroundServer
    from structgen.server.config import ServerConfig

    engine = AsyncEngine.from_config(EngineConfig(model="default", max_num_seqs=16, kv_cache_bytes=128 << 20))
    config = ServerConfig(host="127.0.0.1", port=0, max_queue=64, api_keys=frozenset({KEY}),
                          drain_timeout_s=drain_timeout_s)
    return BackgroundServer(engine, config).start()


@pytest.fixture(scope="module")
def pair():
    """Two real servers in this process (each its own engine and caches), stopped at the end of the module."""
    servers = [_start(), _start()]
    yield servers
    for s in servers:
        s.stop(drain_timeout_s=1.0)


def _all_ready(client, timeout: float = 30.0):
    """Wait until every replica's channel is READY (a fresh client's are still connecting: the plan prefers
    the ready ones, which would skew where the first calls land)."""
    import time

    end = time.monotonic() + timeout
    while not all(s.state == "READY" for s in client.replicas()):
        assert time.monotonic() < end, client.replicas()
        time.sleep(0.05)


def _check(results, n: int):
    import jsonschema

    assert [r.index for r in results] == list(range(n))
    failed = [(r.index, r.error) for r in results if not r.ok]
    assert not failed, failed
    for r in results:
        jsonschema.Draft202012Validator(CONTACT).validate(r.value)


TEXTS = [f"Contact card {i}: {name} lives in {city}." for i, (name, city) in enumerate(
    [("Jana Novak", "Brno"), ("Omar Haddad", "Tunis"), ("Li Wei", "Xian"), ("Ana Silva", "Porto"),
     ("Tom Berg", "Oslo"), ("Eva Kral", "Graz")] * 5)]  # 30 short documents


ASK, YES_NO = "Is the sky blue?", dict(choices=["yes", "no"], max_tokens=2)


@pytest.mark.slow
def test_requests_sharing_an_instruction_land_on_one_replica_and_others_spread(pair):
    a, b = pair
    targets = [a.target, b.target]
    with Client(targets, api_key=KEY, timeout=300) as c:
        _all_ready(c)
        # Two instructions (system texts) whose home replicas differ, found with the client's own pick.
        homes: dict[str, str] = {}
        for i in range(20):
            system = f"You answer for desk {i}. Reply with one word."
            key = wire.affinity_key(wire.build_request(ASK, system=system, **YES_NO))
            home = c._balancer.plan(key)[0].target
            homes.setdefault(home, system)
            if len(homes) == 2:
                break
        assert len(homes) == 2
        before = {s.target: (_served(s), _cached_tokens(s)) for s in pair}
        for _ in range(3):  # one after another: no load, so affinity alone decides
            for system in homes.values():
                c.generate(ASK, system=system, **YES_NO)
        for s in pair:
            served, cached = _served(s) - before[s.target][0], _cached_tokens(s) - before[s.target][1]
            assert served == 3, (s.target, served)  # its own instruction's three, none of the other's
            assert cached > 0  # the repeats hit that replica's radix cache
        before = {s.target: _served(s) for s in pair}
        for i in range(4):  # nothing shared: they take turns
            c.generate(f"Count to {i}:", max_tokens=1)
        assert [_served(s) - before[s.target] for s in pair] == [2, 2]
    # A resolver URI: one channel, grpcio's own round_robin over both addresses.
    before = {s.target: _served(s) for s in pair}
    with Client(f"ipv4:{a.target},{b.target}", api_key=KEY, timeout=300) as c:
        assert c.replicas() == ()
        for i in range(6):
            c.generate(f"Count to {i}:", max_tokens=1)
    assert all(_served(s) - before[s.target] >= 1 for s in pair)
    assert sum(_served(s) - before[s.target] for s in pair) == 6


@pytest.mark.slow
def test_extract_many_survives_a_replica_stopped_mid_batch(pair):
    a, b = pair
    before = _served(a) + _served(b)
    results, stopper = [], None
    with Client([a.target, b.target], api_key=KEY, timeout=300) as c:
        _all_ready(c)
        for r in c.extract_many(TEXTS, CONTACT, concurrency=8, max_tokens=40, progress=False):
            results.append(r)
            if len(results) == 4:  # both replicas have items in flight now (the load bound spreads one schema)
                assert all(s.in_flight > 0 for s in c.replicas()), c.replicas()
                stopper = threading.Thread(target=b.stop, kwargs={"drain_timeout_s": 1.0})
                stopper.start()
        stopper.join(60)
        status = {s.target: s for s in c.replicas()}
    _check(results, len(TEXTS))
    assert _served(a) + _served(b) - before == len(TEXTS)  # every item answered exactly once
    assert status[b.target].state != "READY" and status[a.target].calls > status[b.target].calls


@pytest.fixture
def killable(tmp_path):
    """`structgen serve` in a subprocess (so it can be killed -9) with the same key; yields (process, target)."""
    import re
    import subprocess
    import sys
    import time

    keys = tmp_path / "keys"
    keys.write_text(KEY + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "structgen.cli", "serve", "--port", "0", "--http-port", "0",
                             "--kv-cache-bytes", str(128 << 20), "--max-num-seqs", "16", "--api-key-file", str(keys),
                             "--compile-workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    port, lines, end = None, [], time.monotonic() + 300
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"listening on [\d.]+:(\d+)", line)
        port = int(m.group(1)) if m else port
        if line.strip() == "ready":
            break
    if port is None or not lines or lines[-1].strip() != "ready":
        proc.kill()
        pytest.fail(f"structgen serve did not become ready: {lines}")
    yield proc, f"127.0.0.1:{port}"
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)


@pytest.mark.slow
def test_async_extract_many_survives_a_replica_killed_mid_batch(killable):
    import os
    import signal

    proc, doomed = killable
    survivor = _start()
    try:
        async def run():
            results = []
            async with AsyncClient([survivor.target, doomed], api_key=KEY, timeout=300) as c:
                while not all(s.state == "READY" for s in c.replicas()):
                    await asyncio.sleep(0.05)
                async for r in c.extract_many(TEXTS, CONTACT, concurrency=8, max_tokens=40, progress=False):
                    results.append(r)
                    if len(results) == 4:
                        assert all(s.in_flight > 0 for s in c.replicas()), c.replicas()
                        os.kill(proc.pid, signal.SIGKILL)  # no drain, no goodbye: connections reset mid-call
                return results, {s.target: s for s in c.replicas()}

        before = _served(survivor)
        results, status = asyncio.run(run())
    finally:
        survivor.stop(drain_timeout_s=1.0)
    _check(results, len(TEXTS))
    assert proc.wait(30) == -signal.SIGKILL
    assert status[doomed].failures >= 1  # calls in flight there broke and were sent on
    assert status[doomed].state != "READY"
    # the survivor answered everything the doomed replica had not answered before it died
    assert _served(survivor) - before == len(TEXTS) - (status[doomed].calls - status[doomed].failures)
