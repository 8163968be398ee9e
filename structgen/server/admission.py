"""Admission: the bounded set of requests a server holds, and the reason any of them was stopped early.

One asyncio loop owns it (no locks): `admit` refuses at once when full or draining, so overload is a fast
RESOURCE_EXHAUSTED and shutdown a fast UNAVAILABLE instead of a growing wait.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import grpc

from .wire import RequestError


@dataclass
class Ticket:
    """One admitted request. `stop_reason` says why the server aborted it (None: it was not)."""

    engine_id: str
    stop_reason: grpc.StatusCode | None = None
    stop_message: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Admission:
    def __init__(self, max_in_flight: int):
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.draining = False
        self._tickets: dict[str, Ticket] = {}

    def __len__(self) -> int:
        return len(self._tickets)

    def admit(self, engine_id: str) -> Ticket:
        if self.draining:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another replica")
        if len(self._tickets) >= self.max_in_flight:
            raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"the server's queue is full ({self.max_in_flight} requests); retry with backoff")
        if engine_id in self._tickets:
            raise ValueError(f"engine id {engine_id!r} already admitted")
        ticket = Ticket(engine_id)
        self._tickets[engine_id] = ticket
        return ticket

    def release(self, ticket: Ticket):
        self._tickets.pop(ticket.engine_id, None)
        ticket.done.set()

    def stop_all(self, code: grpc.StatusCode, message: str) -> list[Ticket]:
        """Mark every held request as stopped by the server; returns them (the caller aborts their work)."""
        tickets = list(self._tickets.values())
        for t in tickets:
            if t.stop_reason is None:
                t.stop_reason, t.stop_message = code, message
        return tickets

    async def wait_empty(self, timeout: float) -> bool:
        """Wait until no request is held (True) or `timeout` seconds pass (False)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._tickets:
            left = end - loop.time()
            if left <= 0:
                return False
            ticket = next(iter(self._tickets.values()))
            try:
                await asyncio.wait_for(ticket.done.wait(), left)
            except TimeoutError:
                return False
        return True
