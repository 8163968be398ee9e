"""`Client`: the blocking SDK over a grpc channel (thread-safe).

    client = structgen.Client("localhost:50051")
    invoice = client.extract(text, Invoice)                       # a validated pydantic instance
    for r in client.extract_many(texts, Invoice): print(r.value)  # in input order, with a progress bar

Requests and responses are built and read by `wire`; batch semantics live in `batch`. Failed calls raise the
typed errors of structgen.client.errors (InvalidConstraint, Overloaded, ...).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import grpc

from .._proto import structgen_pb2 as pb
from . import batch, wire
from .balancer import Replica, failover_worthy, first_answer
from .base import BaseClient
from .batch import ExtractResult
from .errors import from_rpc_error
from .extraction import Extracted, ExtractionTask
from .wire import Compiled, Completion, Delta


class Client(BaseClient):
    """Blocking client; thread-safe. Arguments as BaseClient: `Client("host:port", api_key=None, timeout=None)`;
    several replicas: `Client(["h1:p1", "h2:p2"], balance="affinity")` (a failed call is sent on to the next)."""

    _grpc = grpc

    def _replica(self, target: str, channel) -> Replica:
        # NOTE: grpc's sync Channel has no public get_state, and its subscribe() polls in a thread that races
        # close() ("Cannot monitor channel state: Channel closed!", grpc issue 3064's poller): the cygrpc
        # channel's own check (what that poller calls, and grpc.aio's get_state) reads the state without a thread.
        check = channel._channel.check_connectivity_state
        names = grpc._common.CYGRPC_CONNECTIVITY_STATE_TO_CHANNEL_CONNECTIVITY
        check(True)  # start connecting now, not on the first call
        return Replica(target, channel, lambda: names[check(True)])

    def close(self):
        if self._balancer is None:
            self._channel.close()
            return
        for replica in self._balancer.replicas:
            replica.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _unary(self, call: wire.Call, timeout: float | None):
        if self._balancer is not None:
            return self._failover(call, timeout)
        try:
            response = self._method(call.rpc)(call.request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            return call.failed(e)
        return call.parse(response)

    def _failover(self, call: wire.Call, timeout: float | None):
        """`call` on the replicas of its plan in turn, until one answers or refuses for good (balancer.py)."""
        attempts = self._balancer.attempts(wire.affinity_key(call.request), timeout)
        for replica, left in attempts:
            error = None
            attempts.started(replica)
            try:
                response = replica.method(call.rpc)(call.request, timeout=left, metadata=self._metadata)
            except grpc.RpcError as e:
                error = e
            finally:  # also when the caller is interrupted or cancelled: the call is no longer in flight there
                attempts.finished(replica, error)
            if error is None:
                return call.parse(response)
            if not attempts.retry(error):
                return call.failed(error)
        raise AssertionError("unreachable: Attempts.retry is False on the plan's last replica")  # pragma: no cover

    def generate(self, prompt: str | None = None, *, timeout: float | None = None, **kwargs) -> Completion:
        """One completion (`.choices` holds all `n`). kwargs: messages, system, json_schema | regex | choices |
        compiled_id, max_tokens, temperature, top_p, top_k, seed, stop, request_id, speculation, and the sampling
        parameters frequency_penalty, presence_penalty, repetition_penalty, min_p, logit_bias, dry_multiplier,
        dry_base, dry_allowed_length, dry_range, logprobs, top_logprobs, n (see `wire.build_request`)."""
        return self._unary(wire.generate_call(prompt, **kwargs), self._deadline(timeout))

    def stream(self, prompt: str | None = None, *, timeout: float | None = None, **kwargs) -> Iterator[Delta]:
        """Text deltas as they are generated (with n > 1, of every choice interleaved: `Delta.index`); closing
        the iterator early cancels the request on the server. With several replicas, a stream refused before its
        first delta goes to the next replica; one that breaks after it raises (its deltas cannot be taken back)."""
        request = wire.build_request(prompt, **kwargs)
        if self._balancer is None:
            yield from self._stream_on(self._method(wire.GENERATE_STREAM), request, self._deadline(timeout))
            return
        attempts = self._balancer.attempts(wire.affinity_key(request), self._deadline(timeout))
        for replica, left in attempts:
            call = replica.method(wire.GENERATE_STREAM)(request, metadata=self._metadata, timeout=left)
            attempts.started(replica)
            error, answered = None, False
            try:
                for r in call:
                    answered = True
                    yield wire.delta(r, request.sampling.logprobs)
                return
            except grpc.RpcError as e:
                error = e
                if answered or not attempts.retry(e):
                    raise from_rpc_error(e) from None
            finally:
                attempts.finished(replica, error)
                call.cancel()

    def _stream_on(self, method, request, timeout: float | None) -> Iterator[Delta]:
        call = method(request, metadata=self._metadata, timeout=timeout)
        try:
            for r in call:
                yield wire.delta(r, request.sampling.logprobs)
        except grpc.RpcError as e:
            raise from_rpc_error(e) from None
        finally:
            call.cancel()  # no-op once finished; frees the server's work when the caller stops early

    def compile(self, *, json_schema=None, regex=None, choices=None, allow_extra_properties=False,
                property_order: str | None = None, timeout: float | None = None) -> Compiled:
        """Compile a constraint on the server: pass `.id` as `compiled_id=` later. With several replicas it is
        compiled on each one reachable (in parallel), so the id works on whichever replica a later call picks
        (the id is the same everywhere); a replica down now answers NOT_FOUND for it later."""
        call = wire.compile_call(json_schema, regex, choices, allow_extra_properties, property_order)
        if self._balancer is None:
            return self._unary(call, self._deadline(timeout))
        replicas = self._balancer.plan(wire.affinity_key(call.request))
        with ThreadPoolExecutor(max_workers=len(replicas)) as pool:
            outcomes = list(pool.map(lambda r: self._outcome(r, call, self._deadline(timeout)), replicas))
        return first_answer(outcomes)

    def _outcome(self, replica, call: wire.Call, timeout: float | None):
        """`call` on one replica: its value, or the exception it raised."""
        error = None
        self._balancer.started(replica)
        try:
            response = replica.method(call.rpc)(call.request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            error = e
        finally:
            self._balancer.finished(replica, error is not None and failover_worthy(error))
        if error is not None:
            try:
                return call.failed(error)
            except Exception as typed:
                return typed
        return call.parse(response)

    def server_info(self, timeout: float | None = None) -> pb.ServerInfo:
        """Model, tokenizer, limits and current load (a structgen.v1.ServerInfo message)."""
        return self._unary(wire.server_info_call(), self._deadline(timeout))

    def health(self, service: str = "", timeout: float | None = 5.0) -> bool:
        """True if the server reports SERVING (the standard grpc.health.v1 check; needs no API key). With several
        replicas: True if one of them does."""
        if self._balancer is None:
            return self._unary(wire.health_call(service), timeout)
        return any(self._outcome(r, wire.health_call(service), timeout) is True for r in self._balancer.plan(None))

    def extract(self, text: str, schema, instructions: str | None = None, *, max_tokens: int | None = None,
                timeout: float | None = None, **sampling):
        """Extract `schema` (pydantic model class or JSON Schema dict) from `text`: a validated model
        instance, or the JSON value for a dict schema. `sampling`: the names of `wire.EXTRACT_SAMPLING`
        (temperature, seed, frequency_penalty, repetition_penalty, dry_multiplier, ...).

        A value the token budget closed (finish reason "budget") is returned after a BudgetClosedWarning.
        """
        extracted = self._extract(ExtractionTask.of(schema, instructions), text, max_tokens, sampling, timeout)
        return batch.single_value(extracted)

    def _extract(self, task: ExtractionTask, text: str, max_tokens, sampling, timeout) -> Extracted:
        return self._unary(wire.extract_call(task, text, max_tokens, **sampling), self._deadline(timeout))

    def extract_many(self, texts: Iterable[str], schema, *, concurrency: int = 16, progress: bool = True,
                     instructions: str | None = None, max_tokens: int | None = None, retries: int = 5,
                     timeout: float | None = None, **sampling) -> Iterator[ExtractResult]:
        """Extract from many documents, `concurrency` at a time; yields one ExtractResult per text, in input
        order. A failed item is reported in its result and never stops the batch; UNAVAILABLE and
        RESOURCE_EXHAUSTED are retried up to `retries` times with backoff. A value the token budget closed is
        a result with `closed_by_budget` set (no warning). `sampling` as for `extract`."""
        batch.check_concurrency(concurrency)
        task = ExtractionTask.of(schema, instructions)
        texts = list(texts)

        def one(i: int) -> ExtractResult:
            attempt = 0
            while True:
                try:
                    return ExtractResult.of(i, self._extract(task, texts[i], max_tokens, sampling, timeout))
                except Exception as e:  # per-item: report it (or retry it), keep the batch going
                    delay = batch.retry_delay(e, attempt, retries)
                    if delay is None:
                        return ExtractResult(i, error=e)
                time.sleep(delay)
                attempt += 1

        with ThreadPoolExecutor(max_workers=concurrency) as pool, batch.progress(len(texts), progress) as bar:
            futures = [pool.submit(one, i) for i in range(len(texts))]
            for f in futures:
                f.add_done_callback(lambda _f: bar.update(1))  # progress as items finish, not in order
            for f in futures:
                yield f.result()
