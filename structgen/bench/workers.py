"""Engine worker processes with a per-task time limit: a hang or a crash becomes a counted outcome.

Each engine runs in child processes of its own (spawned, so no engine state or threads are inherited). The
supervisor feeds tasks through pipes to up to `jobs` workers; a worker that exceeds the limit is killed and
replaced, one that dies is replaced, and the run goes on. Worker start-up (loading the tokenizer, building the
engine's vocabulary tables) is never inside a task's time.
"""

from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Callable, Iterable, Iterator

# How long a worker may take to start (tokenizer + engine tables; xgrammar's takes seconds on a busy machine).
STARTUP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Outcome:
    """What became of one task: kind is "result" (payload = the worker's dict), "timeout", or "crash"."""

    kind: str
    payload: dict | None = None
    detail: str = ""


def _worker_main(conn: Connection, setup: Callable, setup_args: tuple, handler: Callable) -> None:
    """Child process: build the engine state once, then answer tasks until told to stop (None)."""
    try:
        state = setup(*setup_args)
    except BaseException as e:  # reported to the parent as "unavailable", whatever went wrong
        conn.send(("unavailable", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            conn.send(("result", handler(state, task)))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"))


class EngineUnavailableError(RuntimeError):
    """The engine could not start in a worker (package missing, adapter broken)."""


class _Worker:
    def __init__(self, ctx, setup, setup_args, handler):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, setup, setup_args, handler), daemon=True)
        self.proc.start()
        child.close()
        self.started_at = time.monotonic()
        self.ready = False
        self.task_index: int | None = None
        self.deadline = 0.0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


def run_tasks(tasks: list, *, setup: Callable, setup_args: tuple, handler: Callable, timeout_s: float,
              jobs: int = 1, startup_timeout_s: float = STARTUP_TIMEOUT_S,
              mp_context: str = "spawn") -> Iterator[tuple[int, Outcome]]:
    """Run `handler(state, task)` for every task in worker processes; yield (task index, Outcome) as they end.

    `setup(*setup_args)` builds a worker's state (must be importable by name: spawned children re-import it).
    Each task gets `timeout_s` seconds from the moment it is handed to an idle worker. Raises
    EngineUnavailableError if the first worker cannot start (nothing has run then); a replacement that cannot
    start ends the remaining tasks as "crash" outcomes with the reason.
    """
    if timeout_s <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout_s}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    ctx = mp.get_context(mp_context)
    pending = deque(range(len(tasks)))
    workers: list[_Worker] = []
    ever_ready = False

    def spawn() -> None:
        workers.append(_Worker(ctx, setup, setup_args, handler))

    for _ in range(min(jobs, len(tasks))):
        spawn()
    try:
        while pending or any(w.task_index is not None for w in workers):
            now = time.monotonic()
            for w in workers:  # hand out work
                if w.ready and w.task_index is None and pending:
                    w.task_index = pending.popleft()
                    w.conn.send(tasks[w.task_index])
                    w.deadline = time.monotonic() + timeout_s
            deadlines = [w.deadline for w in workers if w.task_index is not None]
            deadlines += [w.started_at + startup_timeout_s for w in workers if not w.ready]
            wait_s = max(0.0, min(deadlines) - now) if deadlines else 0.05
            ready_conns = wait([w.conn for w in workers], timeout=wait_s)
            for w in list(workers):
                if w.conn in ready_conns:
                    try:
                        kind, payload = w.conn.recv()
                    except (EOFError, OSError):
                        kind, payload = "died", None
                    if kind == "ready":
                        w.ready = ever_ready = True
                        continue
                    if kind == "unavailable" or (kind == "died" and not w.ready):
                        reason = payload or f"worker exited with code {w.proc.exitcode} while starting"
                        workers.remove(w)
                        w.kill()
                        if not ever_ready:
                            raise EngineUnavailableError(reason)
                        yield from _fail_pending(pending, workers, reason)
                        return
                    index, w.task_index = w.task_index, None
                    if kind == "result":
                        yield index, Outcome("result", payload)
                    elif kind == "error":
                        yield index, Outcome("crash", None, str(payload))
                    else:  # the process died mid-task: a crash of the engine, counted, and the worker replaced
                        w.proc.join(timeout=5)
                        yield index, Outcome("crash", None, f"worker died (exit code {w.proc.exitcode})")
                        workers.remove(w)
                        w.kill()
                        spawn()
            now = time.monotonic()
            for w in list(workers):
                if w.task_index is not None and now > w.deadline and not w.conn.poll(0):
                    index = w.task_index
                    workers.remove(w)
                    w.kill()
                    yield index, Outcome("timeout", None, f"no result within {timeout_s:g} s")
                    if pending:
                        spawn()
                elif not w.ready and now > w.started_at + startup_timeout_s:
                    workers.remove(w)
                    w.kill()
                    if not ever_ready:
                        raise EngineUnavailableError(f"worker did not start within {startup_timeout_s:g} s")
                    yield from _fail_pending(pending, workers, "replacement worker did not start")
                    return
            if pending and not workers:
                spawn()
    finally:
        for w in workers:
            if w.task_index is None and w.ready:
                w.stop()
            else:
                w.kill()


def _fail_pending(pending: deque, workers: list, reason: str) -> Iterable[tuple[int, Outcome]]:
    while pending:
        yield pending.popleft(), Outcome("crash", None, reason)
    for w in workers:  # tasks still running on the other workers are abandoned the same way
        if w.task_index is not None:
            yield w.task_index, Outcome("crash", None, reason)
            w.task_index = None
