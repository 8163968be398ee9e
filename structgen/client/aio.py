"""`AsyncClient`: the asyncio SDK over a grpc.aio channel; the same methods as `Client`, as coroutines and async
iterators. Requests and responses are built and read by `wire`; batch semantics live in `batch`."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Iterable

import grpc

from .._proto import structgen_pb2 as pb
from . import batch, wire
from .balancer import Replica, failover_worthy, first_answer
from .base import BaseClient
from .batch import ExtractResult
from .errors import from_rpc_error
from .extraction import Extracted, ExtractionTask
from .wire import Compiled, Completion, Delta


class AsyncClient(BaseClient):
    """asyncio client (grpc.aio). Arguments as BaseClient: `AsyncClient("host:port", api_key=None, timeout=None)`;
    several replicas: `AsyncClient(["h1:p1", "h2:p2"], balance="affinity")`."""

    _grpc = grpc.aio

    def _replica(self, target: str, channel) -> Replica:
        # NOTE: try_to_connect, so a channel left IDLE (never used, or idle past grpc's timeout) reconnects.
        channel.get_state(try_to_connect=True)
        return Replica(target, channel, lambda: channel.get_state(try_to_connect=True))

    async def close(self):
        if self._balancer is None:
            await self._channel.close()
            return
        await asyncio.gather(*(r.channel.close() for r in self._balancer.replicas))

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def _unary(self, call: wire.Call, timeout: float | None):
        if self._balancer is not None:
            return await self._failover(call, timeout)
        try:
            response = await self._method(call.rpc)(call.request, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            return call.failed(e)
        return call.parse(response)

    async def _failover(self, call: wire.Call, timeout: float | None):
        """As Client._failover."""
        attempts = self._balancer.attempts(wire.affinity_key(call.request), timeout)
        for replica, left in attempts:
            error = None
            attempts.started(replica)
            try:
                response = await replica.method(call.rpc)(call.request, timeout=left, metadata=self._metadata)
            except grpc.RpcError as e:
                error = e
            finally:  # also when the caller is interrupted or cancelled: the call is no longer in flight there
                attempts.finished(replica, error)
            if error is None:
                return call.parse(response)
            if not attempts.retry(error):
                return call.failed(error)
        raise AssertionError("unreachable: Attempts.retry is False on the plan's last replica")  # pragma: no cover

    async def generate(self, prompt: str | None = None, *, timeout: float | None = None, **kwargs) -> Completion:
        """As Client.generate."""
        return await self._unary(wire.generate_call(prompt, **kwargs), self._deadline(timeout))

    async def stream(self, prompt: str | None = None, *, timeout: float | None = None,
                     **kwargs) -> AsyncIterator[Delta]:
        """As Client.stream (failover only before the first delta); closing the iterator early cancels the
        request on the server."""
        request = wire.build_request(prompt, **kwargs)
        if self._balancer is None:
            call = self._method(wire.GENERATE_STREAM)(request, metadata=self._metadata,
                                                      timeout=self._deadline(timeout))
            try:
                async for r in call:
                    yield wire.delta(r, request.sampling.logprobs)
            except grpc.RpcError as e:
                raise from_rpc_error(e) from None
            finally:
                call.cancel()
            return
        attempts = self._balancer.attempts(wire.affinity_key(request), self._deadline(timeout))
        for replica, left in attempts:
            call = replica.method(wire.GENERATE_STREAM)(request, metadata=self._metadata, timeout=left)
            attempts.started(replica)
            error, answered = None, False
            try:
                async for r in call:
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

    async def compile(self, *, json_schema=None, regex=None, choices=None, allow_extra_properties=False,
                      property_order: str | None = None, timeout: float | None = None) -> Compiled:
        """As Client.compile (on every reachable replica when there are several)."""
        call = wire.compile_call(json_schema, regex, choices, allow_extra_properties, property_order)
        if self._balancer is None:
            return await self._unary(call, self._deadline(timeout))
        replicas = self._balancer.plan(wire.affinity_key(call.request))
        outcomes = await asyncio.gather(*(self._outcome(r, call, self._deadline(timeout)) for r in replicas))
        return first_answer(list(outcomes))

    async def _outcome(self, replica, call: wire.Call, timeout: float | None):
        """`call` on one replica: its value, or the exception it raised."""
        error = None
        self._balancer.started(replica)
        try:
            response = await replica.method(call.rpc)(call.request, timeout=timeout, metadata=self._metadata)
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

    async def server_info(self, timeout: float | None = None) -> pb.ServerInfo:
        """As Client.server_info."""
        return await self._unary(wire.server_info_call(), self._deadline(timeout))

    async def health(self, service: str = "", timeout: float | None = 5.0) -> bool:
        """As Client.health (with several replicas: True if one of them serves)."""
        if self._balancer is None:
            return await self._unary(wire.health_call(service), timeout)
        for replica in self._balancer.plan(None):
            if await self._outcome(replica, wire.health_call(service), timeout) is True:
                return True
        return False

    async def extract(self, text: str, schema, instructions: str | None = None, *, max_tokens: int | None = None,
                      timeout: float | None = None, **sampling):
        """As Client.extract (a BudgetClosedWarning when the token budget closed the value)."""
        extracted = await self._extract(ExtractionTask.of(schema, instructions), text, max_tokens, sampling, timeout)
        return batch.single_value(extracted)

    async def _extract(self, task: ExtractionTask, text: str, max_tokens, sampling, timeout) -> Extracted:
        return await self._unary(wire.extract_call(task, text, max_tokens, **sampling), self._deadline(timeout))

    async def extract_many(self, texts: Iterable[str], schema, *, concurrency: int = 16, progress: bool = True,
                           instructions: str | None = None, max_tokens: int | None = None, retries: int = 5,
                           timeout: float | None = None, **sampling) -> AsyncIterator[ExtractResult]:
        """As Client.extract_many, as an async iterator (results in input order)."""
        batch.check_concurrency(concurrency)
        task = ExtractionTask.of(schema, instructions)
        texts = list(texts)
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> ExtractResult:
            async with gate:
                attempt = 0
                while True:
                    try:
                        extracted = await self._extract(task, texts[i], max_tokens, sampling, timeout)
                        return ExtractResult.of(i, extracted)
                    except Exception as e:  # per-item: report it (or retry it), keep the batch going
                        delay = batch.retry_delay(e, attempt, retries)
                        if delay is None:
                            return ExtractResult(i, error=e)
                    await asyncio.sleep(delay)
                    attempt += 1

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(texts))]
        try:
            with batch.progress(len(texts), progress) as bar:
                for t in tasks:
                    t.add_done_callback(lambda _t: bar.update(1))
                for t in tasks:
                    yield await t
        finally:
            for t in tasks:
                t.cancel()
