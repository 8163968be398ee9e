"""regress/send.py's own logic, with a stand-in for the SDK client (the real gRPC path is in test_cli.py)."""

from __future__ import annotations

import asyncio

import pytest

from structgen.regress.send import GrpcSender, Sampling

from .synthetic import golden


class _CancelledCallClient:
    """Like grpc.aio: a call cancelled under it comes back as an ordinary exception (AioRpcError, CANCELLED)."""

    def __init__(self):
        self.started = asyncio.Event()

    def _deadline(self, timeout):
        return timeout

    async def _unary(self, call, timeout):
        self.started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            raise RuntimeError("StatusCode.CANCELLED") from None


def test_an_interrupt_during_a_call_cancels_the_run_instead_of_recording_a_failed_case():
    async def main():
        sender = GrpcSender.__new__(GrpcSender)
        sender.target, sender.sampling, sender.client = "x:1", Sampling(max_tokens=8), _CancelledCallClient()
        task = asyncio.ensure_future(sender.send(golden(1).cases[0]))
        await sender.client.started.wait()
        task.cancel()   # what asyncio.run does to the run on Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    assert asyncio.run(main()).cancelled()


def test_an_error_outside_an_interrupt_is_the_case_result():
    class Failing(_CancelledCallClient):
        async def _unary(self, call, timeout):
            raise RuntimeError("boom")

    async def main():
        sender = GrpcSender.__new__(GrpcSender)
        sender.target, sender.sampling, sender.client = "x:1", Sampling(max_tokens=8), Failing()
        return await sender.send(golden(1).cases[0])

    result = asyncio.run(main())
    assert result.status == "RuntimeError" and not result.valid
