"""Which replica a call goes to, and where it goes next when that one refuses: the SDK's side of several targets.

One channel per listed replica, each health-checked by grpcio (the server's grpc.health.v1 service: a draining
or stopped replica turns its channel TRANSIENT_FAILURE within a moment, and calls on it fail fast). A call gets a
*plan*, the replicas in the order to try them, and is sent to the next one on UNAVAILABLE (also CANCELLED, the
last phase of a shutdown) or RESOURCE_EXHAUSTED, while its deadline lasts; each replica is tried once per call.

    balance="affinity"     (default) requests sharing an instruction (same system text, same constraint: what the
                           server's radix cache and compile cache reuse) go to the same replica, by rendezvous
                           hashing, so its cache hits; a replica already holding more than its share of this
                           client's in-flight calls (AFFINITY_LOAD_FACTOR) passes the request down the hash order,
                           so one schema's batch still uses every replica. Requests with no instruction rotate.
    balance="round_robin"  every call goes to the next replica in turn, whatever it shares.

Retrying a generation is safe here: one that never ran costs nothing; one that ran on a replica that then died
costs that replica's compute, and the caller still gets exactly one answer (the call that succeeded).

Both clients use this module; they only differ in how they wait (`Client` threads, `AsyncClient` asyncio).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

import grpc

from . import wire
from .errors import Overloaded, Unavailable, from_rpc_error

BALANCES = ("affinity", "round_robin")

# A replica may hold up to this many times its fair share of the client's in-flight calls before an affine
# request passes to the next replica in hash order (consistent hashing with bounded loads, Mirrokni et al. 2018:
# 1.25 keeps most requests on their preferred replica while no replica idles behind a one-schema batch).
AFFINITY_LOAD_FACTOR = 1.25

# Order of preference among channel states. A channel never used is IDLE and connects on first use. CONNECTING is
# tried after the ready ones: a call waits there until the connection attempt settles (up to the connect timeout
# for a host that does not answer). TRANSIENT_FAILURE (unreachable, or health NOT_SERVING) fails fast, so it
# comes last and is still tried: if every replica is down, the caller gets UNAVAILABLE, not a silent nothing.
_RANK = {grpc.ChannelConnectivity.READY: 0, grpc.ChannelConnectivity.IDLE: 0,
         grpc.ChannelConnectivity.CONNECTING: 1, grpc.ChannelConnectivity.TRANSIENT_FAILURE: 2,
         grpc.ChannelConnectivity.SHUTDOWN: 3}


def _service_config(retries: bool) -> str:
    """grpcio service config: round_robin with client-side health checking (which round_robin implements and
    pick_first does not); with `retries`, grpcio's own retry policy for the StructGen calls (a URI target, where
    grpcio alone knows the addresses; on a listed replica the SDK chooses where the retry goes instead)."""
    config: dict = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
    if retries:
        config["methodConfig"] = [{
            "name": [{"service": "structgen.v1.StructGen"}],
            # maxAttempts 5 is grpcio's cap; each retry is a new pick, under round_robin the next healthy address.
            "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.1s", "maxBackoff": "2s", "backoffMultiplier": 2,
                            "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"]},
        }]
    return json.dumps(config)


def channel_options(max_message_bytes: int, *, balanced: bool = False, health_checked: bool = False) -> list:
    """Channel options of a URI target grpcio balances (`balanced`) or of one listed replica (`health_checked`);
    neither: a single target's, as before several targets existed."""
    options = wire.channel_options(max_message_bytes)
    if balanced or health_checked:
        # NOTE: a DNS TXT record must not replace the policy the SDK's failover relies on.
        options += [("grpc.service_config", _service_config(retries=balanced)),
                    ("grpc.service_config_disable_resolution", 1)]
    return options


@dataclass(frozen=True)
class ReplicaStatus:
    """What `Client.replicas()` reports of one listed replica: its channel state ("READY", "TRANSIENT_FAILURE",
    ...), this client's calls in flight there, calls sent, and calls it refused or dropped (each sent on)."""

    target: str
    state: str
    in_flight: int
    calls: int
    failures: int


class Replica:
    """One listed server: its channel, stubs made on first use, a way to read the channel's state, and this
    client's counts. `state` is a callable because the two grpc flavours expose it differently (see
    Client._replica, AsyncClient._replica). Counts change under the Balancer's lock only."""

    def __init__(self, target: str, channel, state: Callable[[], grpc.ChannelConnectivity]):
        self.target = target
        self.channel = channel
        self.state = state
        self.in_flight = 0
        self.calls = 0
        self.failures = 0
        self._stubs: dict[str, object] = {}

    def method(self, rpc: str):
        """The stub method of `rpc` ("SERVICE/Method") on this replica's channel."""
        service, name = rpc.split("/")
        stub = self._stubs.get(service)
        if stub is None:
            stub = self._stubs[service] = wire.stubs(self.channel, service)
        return getattr(stub, name)

    def rank(self) -> int:
        return _RANK.get(self.state(), 3)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def rendezvous_order(key: bytes, targets: list[str]) -> list[int]:
    """Indexes of `targets`, best first, by rendezvous (highest-random-weight) hashing of `key`: the same key
    always orders the same targets the same way, and removing a target moves only the keys it was first for."""
    k = _digest(key)
    scores = [hashlib.blake2b(k + t.encode(), digest_size=8).digest() for t in targets]
    return sorted(range(len(targets)), key=lambda i: scores[i], reverse=True)


def failover_worthy(error: grpc.RpcError) -> bool:
    """A refusal another replica may not give: UNAVAILABLE / CANCELLED (down, draining, unreachable, the
    connection dropped mid-call) or RESOURCE_EXHAUSTED (its queue is full; not gRPC's message-size limit)."""
    return isinstance(from_rpc_error(error), (Unavailable, Overloaded))


def first_answer(outcomes: list):
    """What one call sent to every replica returns (`compile`): the first value; with none, the first error that
    is the request's fault (every replica would say it), else the first error."""
    for outcome in outcomes:
        if not isinstance(outcome, Exception):
            return outcome
    for outcome in outcomes:
        if not isinstance(outcome, (Unavailable, Overloaded)):
            raise outcome
    raise outcomes[0]


class Balancer:
    """The listed replicas and the pick. Thread-safe (`Client` calls it from many threads)."""

    def __init__(self, replicas: list[Replica], balance: str = "affinity"):
        if balance not in BALANCES:
            raise ValueError(f"balance must be one of {', '.join(BALANCES)}, got {balance!r}")
        if len(replicas) < 2:
            raise ValueError("a Balancer needs two or more replicas (one target is one channel)")
        self.replicas = replicas
        self.balance = balance
        self._targets = [r.target for r in replicas]
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def plan(self, key: bytes | None) -> list[Replica]:
        """The replicas in the order a call with affinity `key` tries them: healthiest rank first; within a
        rank the hash order of `key` (affinity) or the next turn (round_robin, or no key)."""
        n = len(self.replicas)
        if key is None or self.balance == "round_robin":
            start = next(self._turn) % n
            order = [(start + i) % n for i in range(n)]
        else:
            order = rendezvous_order(key, self._targets)
        ranks = [self.replicas[i].rank() for i in range(n)]
        order.sort(key=lambda i: ranks[i])  # stable: keeps the hash (or turn) order within a rank
        if key is not None and self.balance == "affinity":
            order = self._bounded(order, ranks)
        return [self.replicas[i] for i in order]

    def _bounded(self, order: list[int], ranks: list[int]) -> list[int]:
        """`order` with its first healthy replica under the load bound moved to the front."""
        best = ranks[order[0]]
        healthy = [i for i in order if ranks[i] == best]
        with self._lock:
            load = [self.replicas[i].in_flight for i in range(len(self.replicas))]
        cap = math.ceil(AFFINITY_LOAD_FACTOR * (sum(load[i] for i in healthy) + 1) / len(healthy))
        for i in healthy:
            if load[i] < cap:
                if i != order[0]:
                    order = [i] + [j for j in order if j != i]
                break
        return order

    def attempts(self, key: bytes | None, timeout: float | None) -> "Attempts":
        return Attempts(self, self.plan(key), timeout)

    def started(self, replica: Replica):
        with self._lock:
            replica.in_flight += 1
            replica.calls += 1

    def finished(self, replica: Replica, failed: bool):
        with self._lock:
            replica.in_flight -= 1
            replica.failures += failed

    def status(self) -> tuple[ReplicaStatus, ...]:
        with self._lock:
            return tuple(ReplicaStatus(r.target, r.state().name, r.in_flight, r.calls, r.failures)
                         for r in self.replicas)


class Attempts:
    """One call's way through its plan: iterate for (replica, timeout left); after a failed attempt,
    `retry(error)` says whether to go on to the next replica (a failover-worthy error, a replica left and time
    left). The deadline is the call's: `timeout` seconds from the first attempt, shared by all of them."""

    def __init__(self, balancer: Balancer, plan: list[Replica], timeout: float | None):
        self._balancer = balancer
        self._plan = plan
        self._next = 0
        self._end = None if timeout is None else time.monotonic() + timeout

    def __iter__(self):
        return self

    def __next__(self) -> tuple[Replica, float | None]:
        if self._next >= len(self._plan):
            raise StopIteration
        replica = self._plan[self._next]
        self._next += 1
        return replica, self.left()

    def left(self) -> float | None:
        return None if self._end is None else self._end - time.monotonic()

    def retry(self, error: grpc.RpcError) -> bool:
        left = self.left()
        return self._next < len(self._plan) and (left is None or left > 0) and failover_worthy(error)

    def started(self, replica: Replica):
        self._balancer.started(replica)

    def finished(self, replica: Replica, error: grpc.RpcError | None = None):
        self._balancer.finished(replica, error is not None and failover_worthy(error))
