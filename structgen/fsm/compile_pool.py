"""Compiles that can be stopped: worker processes with a hard time and memory limit (issue 14).

A constraint compiles in a worker process; the caller's thread waits for the worker's snapshot and restores it (the
payload the disk cache stores), so the compiled constraint lives in the caller's process as if compiled there. A
worker is killed (SIGKILL) and replaced when it
- runs past its time: CompileLimits.compile_timeout_s, or less where the request's deadline comes first,
- grows past CompileLimits.max_memory_bytes of resident memory (polled while it works; an address-space rlimit of the
  worker backs the poll up),
- or every request waiting for it went away (its future was cancelled) or the pool is closing.
The compile then fails with a ConstraintError the compile cache remembers (ConstraintTooComplexError,
CompileDeadlineError, CompileCrashedError), so the same input fails fast the next time; a cancelled compile is not
remembered. Python code and C extensions (the regex library) cannot be interrupted inside a thread: a process can.

Fairness: at most `per_client` compiles of one client (an API key or a connection, as the caller names it) hold
workers at once, its others wait; at most `max_queue` compiles are in the pool at once (running or waiting), and one
client may hold at most half of them: past either, CompileQueueFullError at once. A constraint already in the compile
cache is answered without entering the queue.

isolation="thread" compiles in the caller's thread (cooperative time limits only: for tests and library use). A
tokenizer that cannot be sent to a worker process (it does not pickle or cannot be rebuilt there) makes the pool fall
back to threads, with a warning.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from ..errors import (CompileCancelledError, CompileCrashedError, CompileDeadlineError, CompileQueueFullError,
                      ConstraintTooComplexError)
from . import api
from .compile_worker import rebuild_error, resident_bytes
from .limits import CompileLimits

log = logging.getLogger(__name__)

ISOLATIONS = ("process", "thread")
# How often a waiting caller looks at its worker: the most a limit can be overshot by, in time.
_POLL_S = 0.01
# Seconds a new worker may take to load the tokenizer and its vocabulary before it counts as broken.
_START_TIMEOUT_S = 60.0
# A worker that served this many compiles, or that holds this much more memory once idle than when it started, is
# replaced: Python rarely hands freed memory back to the system, so a long-lived worker would keep its largest
# compile's peak (up to the memory limit, in every worker).
_MAX_JOBS_PER_WORKER = 500
_IDLE_GROWTH_BYTES = 256 << 20


class CompileFuture(Future):
    """A Future of (CompiledConstraint, cache status). `cancel()` also stops the compile if it already runs."""

    def __init__(self):
        super().__init__()
        self.stop = threading.Event()

    def cancel(self) -> bool:
        self.stop.set()
        return super().cancel()


class CompilePool:
    """Compiles constraints for one tokenizer, each in a worker process that is killed past its limits.

    Args:
        tokenizer: the structgen Tokenizer every constraint compiles against (pickled once for the workers).
        workers: worker processes (each holds the tokenizer and its vocabulary: ~100-200 MB resident when idle).
        per_client: most compiles of one client holding workers at once (None: workers - 1, at least 1).
        max_queue: most compiles in the pool at once, running or waiting.
        isolation: "process" (hard limits) or "thread" (in the caller's thread; cooperative limits only).
        limits: the default CompileLimits (None = CompileLimits.from_env() at each compile).
    """

    def __init__(self, tokenizer, *, workers: int = 2, per_client: int | None = None, max_queue: int = 64,
                 isolation: str = "process", limits: CompileLimits | None = None):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        self.tokenizer = tokenizer
        self.workers = workers
        self.per_client = max(1, workers - 1) if per_client is None else int(per_client)
        if self.per_client < 1:
            raise ValueError(f"per_client must be >= 1, got {per_client}")
        self.max_queue = max_queue
        self.isolation = isolation
        self.limits = limits
        self._blob: bytes | None = None
        self._fell_back = False
        if isolation == "process":
            try:
                self._blob = pickle.dumps(tokenizer, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as e:  # noqa: BLE001 - any tokenizer that does not pickle runs in threads
                self._fall_back(f"the tokenizer does not pickle ({type(e).__name__}: {e})")
        self._cond = threading.Condition()
        self._workers: list[_Worker] = []  # every live worker: starting, idle or busy
        self._tickets: collections.OrderedDict[int, str] = collections.OrderedDict()  # waiting: ticket -> client
        self._ticket_ids = itertools.count()
        self._running = collections.Counter()  # client -> compiles holding a worker
        self._pending = collections.Counter()  # client -> compiles in the pool (running or waiting)
        self._closed = False
        # One thread per admitted compile, so a compile waiting for a worker never holds up a cache hit.
        self._executor = ThreadPoolExecutor(max_queue + 1, thread_name_prefix="structgen-compile")
        self.stats = collections.Counter()  # compiles, killed_timeout, killed_memory, cancelled, crashed, ...

    # ---- the caller's side ------------------------------------------------------------------------------------

    def submit(self, kind: str, value: Any, options: dict | None = None, *, limits: CompileLimits | None = None,
               deadline: float | None = None, client: str | None = None) -> CompileFuture:
        """Compile in the background; a CompileFuture of (CompiledConstraint, "memory" | "disk" | "miss").

        deadline: time.monotonic() by which the caller gives up (None: only the limits). client: whose compile this
        is, for the per-client bound (None: one anonymous client). Cancelling the future stops the compile.
        Errors arrive through the future: ConstraintError subclasses, CompileQueueFullError, CompileCancelledError.
        """
        fut = CompileFuture()
        options = dict(options or {})
        client = client or ""
        try:
            hit = api.lookup_compiled(kind, value, self.tokenizer, limits=self._limits(limits), deadline=deadline,
                                      **options)
        except Exception as e:  # noqa: BLE001 - a remembered failure (or a bad request) goes to the future
            fut.set_exception(e)
            return fut
        if hit is not None:
            fut.set_result((hit, "memory"))
            return fut
        with self._cond:
            if self._closed:
                fut.set_exception(CompileCancelledError("the compile pool is shut down"))
                return fut
            total = sum(self._pending.values())
            if total >= self.max_queue or self._pending[client] >= max(self.per_client, self.max_queue // 2):
                self.stats["refused_queue_full"] += 1
                mine = self._pending[client]
                fut.set_exception(CompileQueueFullError(
                    f"too many constraints are compiling ({total} in the pool, {mine} of them this client's; the pool "
                    f"holds {self.max_queue}, at most {max(self.per_client, self.max_queue // 2)} of one client): "
                    f"retry later, or Compile a constraint once and reuse its id"))
                return fut
            self._pending[client] += 1
        self._executor.submit(self._compile_into, fut, kind, value, options, limits, deadline, client)
        return fut

    def compile(self, kind: str, value: Any, options: dict | None = None, **kw):
        """submit(...).result(): (CompiledConstraint, status), or the compile's error raised."""
        return self.submit(kind, value, options, **kw).result()

    def close(self) -> None:
        """Stop every compile (their futures fail with CompileCancelledError) and kill every worker."""
        with self._cond:
            self._closed = True
            workers, self._workers = self._workers, []
            self._cond.notify_all()
        for w in workers:
            w.kill()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def snapshot_stats(self) -> dict:
        """Counters (compiles, killed_timeout, killed_memory, cancelled, crashed, refused_queue_full), compiles in the
        pool now (`pending`) and the workers' resident bytes (`worker_memory_bytes`), for metrics."""
        with self._cond:
            out = dict(self.stats)
            out["pending"] = sum(self._pending.values())
        out["worker_memory_bytes"] = self.worker_memory_bytes()
        return out

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for tests and metrics)."""
        with self._cond:
            return [w.pid for w in self._workers if w.pid is not None]

    def worker_memory_bytes(self) -> int:
        """Resident bytes of every live worker together."""
        with self._cond:
            workers = list(self._workers)
        return sum(w.rss() for w in workers)

    # ---- one compile, in a pool thread ------------------------------------------------------------------------

    def _limits(self, limits: CompileLimits | None) -> CompileLimits:
        if limits is not None:
            return limits
        return self.limits if self.limits is not None else CompileLimits.from_env()

    def _compile_into(self, fut: CompileFuture, kind, value, options, limits, deadline, client) -> None:
        try:
            if fut.stop.is_set():
                raise CompileCancelledError("the request went away before its compile started")
            self.stats["compiles"] += 1
            builder = None
            if self._blob is not None:
                def builder(job):
                    return self._run_in_worker(job, deadline, fut.stop, client)
            result = api.compile_with_status(kind, value, self.tokenizer, limits=self._limits(limits),
                                             deadline=deadline, builder=builder, **options)
        except BaseException as e:  # noqa: BLE001 - every outcome goes to the future
            if not fut.cancelled():
                fut.set_exception(e)
        else:
            if not fut.cancelled():
                fut.set_result(result)
        finally:
            with self._cond:
                self._pending[client] -= 1
                if self._pending[client] <= 0:
                    del self._pending[client]

    def _run_in_worker(self, job: api.CompileJob, deadline: float | None, stop: threading.Event,
                       client: str) -> dict:
        """The snapshot of `job` compiled in a worker; kills the worker past a limit (see the module docstring)."""
        worker = self._acquire(client, deadline, stop)
        if worker is None:  # isolation fell back to threads while this compile waited
            return api.build_snapshot(job, self.tokenizer)
        limit_s = job.limits.compile_timeout_s
        started = time.monotonic()
        ends = started + limit_s
        deadline_bound = deadline is not None and deadline < ends
        if deadline_bound:
            ends = deadline
        healthy = False
        try:
            worker.send(job)
            while not worker.conn.poll(_POLL_S):
                now = time.monotonic()
                if stop.is_set() or self._closed:
                    self.stats["cancelled"] += 1
                    raise CompileCancelledError("the compile was stopped: the request went away or the server is "
                                                "shutting down")
                if now > ends:
                    self.stats["killed_timeout"] += 1
                    if deadline_bound:
                        raise CompileDeadlineError(ends - started)
                    raise ConstraintTooComplexError("compile time (s)", limit_s, "STRUCTGEN_COMPILE_TIMEOUT_S")
                if worker.rss() > job.limits.max_memory_bytes:
                    self.stats["killed_memory"] += 1
                    raise ConstraintTooComplexError("compile memory (MiB)", job.limits.max_memory_bytes >> 20,
                                                    "STRUCTGEN_COMPILE_MEMORY_MB")
            try:
                status, body = worker.conn.recv()
            except (EOFError, OSError, pickle.UnpicklingError) as e:
                if stop.is_set() or self._closed:
                    # NOTE: close() kills the workers with SIGKILL; a compile polling at that moment sees the dead
                    # pipe before it sees _closed, and must not report the kill as an out-of-memory one.
                    self.stats["cancelled"] += 1
                    raise CompileCancelledError("the compile was stopped: the request went away or the server is "
                                                "shutting down") from None
                code = worker.exitcode()
                self.stats["crashed"] += 1
                if code == -signal.SIGKILL:  # the system's OOM killer, most likely
                    raise ConstraintTooComplexError("compile memory (MiB)", job.limits.max_memory_bytes >> 20,
                                                    "STRUCTGEN_COMPILE_MEMORY_MB") from None
                raise CompileCrashedError(f"the compile worker died while compiling this constraint (exit code "
                                          f"{code}, {type(e).__name__}); this is a bug in structgen") from None
            healthy = True
            if status == "ok":
                return body
            if status == "memory":
                self.stats["killed_memory"] += 1
                healthy = False  # a MemoryError leaves the worker's heap in an unknown state
                raise ConstraintTooComplexError("compile memory (MiB)", job.limits.max_memory_bytes >> 20,
                                                "STRUCTGEN_COMPILE_MEMORY_MB")
            if status == "error":
                raise rebuild_error(body)
            self.stats["crashed"] += 1
            raise CompileCrashedError(f"the compiler failed on this constraint: {body}; this is a bug in structgen")
        finally:
            self._release(worker, client, healthy, job.limits)

    # ---- workers ---------------------------------------------------------------------------------------------

    def _acquire(self, client: str, deadline: float | None, stop: threading.Event) -> _Worker | None:
        """A ready worker for `client`, in arrival order among clients under their bound; None when the pool fell
        back to threads. Waiting ends at the deadline (CompileDeadlineError, not remembered: nothing ran) or
        when the request goes away."""
        with self._cond:
            ticket = next(self._ticket_ids)
            self._tickets[ticket] = client
            try:
                while True:
                    if self._blob is None:
                        return None
                    if self._closed or stop.is_set():
                        raise CompileCancelledError("the compile was stopped before it started: the request went "
                                                    "away or the server is shutting down")
                    if deadline is not None and time.monotonic() > deadline:
                        raise CompileDeadlineError(0.0, ran=False)
                    if self._first_eligible() == ticket:
                        worker = self._take_worker()
                        if worker is not None:
                            self._running[client] += 1
                            break
                    self._cond.wait(0.05)
            finally:
                del self._tickets[ticket]
                self._cond.notify_all()
        try:
            worker.wait_ready(_START_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - a worker that cannot start means processes cannot work here
            worker.kill()
            with self._cond:
                self._running[client] -= 1
                if worker in self._workers:
                    self._workers.remove(worker)
                self._fall_back(str(e))
                self._cond.notify_all()
            return None
        return worker

    def _first_eligible(self) -> int | None:
        for ticket, client in self._tickets.items():
            if self._running[client] < self.per_client:
                return ticket
        return None

    def _take_worker(self) -> _Worker | None:
        """An idle worker, marked busy (a new one started if there is room), or None. Holds the lock."""
        for w in self._workers:
            if not w.busy:
                w.busy = True
                return w
        if len(self._workers) < self.workers:
            w = _Worker(self._blob)
            w.busy = True
            self._workers.append(w)
            return w
        return None

    def _release(self, worker: _Worker, client: str, healthy: bool, limits: CompileLimits) -> None:
        retire = (not healthy or worker.jobs >= _MAX_JOBS_PER_WORKER
                  or worker.rss() > worker.ready_rss + min(_IDLE_GROWTH_BYTES, limits.max_memory_bytes // 2))
        if retire:
            worker.kill()
        with self._cond:
            self._running[client] -= 1
            if self._running[client] <= 0:
                del self._running[client]
            if retire:
                if worker in self._workers:
                    self._workers.remove(worker)
                if not self._closed and self._blob is not None:
                    # The replacement loads the tokenizer while nobody waits for it (~0.6 s).
                    self._workers.append(_Worker(self._blob))
            else:
                worker.busy = False
            self._cond.notify_all()

    def _fall_back(self, why: str) -> None:
        if not self._fell_back:
            log.warning("compiles run in threads, without hard time and memory limits: %s", why)
        self._fell_back = True
        self._blob = None


class _Worker:
    """One worker process and the parent's ends of its two pipes. `busy` is guarded by the pool's lock.

    NOTE: a fresh interpreter (~0.6 s to start), never a fork of this process: its threads (gRPC, torch) make fork
    unsafe, and multiprocessing's spawn would re-run the caller's __main__ in every worker.
    """

    def __init__(self, blob: bytes):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        # A compile needs no BLAS threads; each would reserve memory in every worker.
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "structgen.fsm.compile_worker", str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w), env=env, stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.conn_out = Connection(to_child_w, readable=False)
        self.conn = Connection(from_child_r, writable=False)
        self.pid = self.process.pid
        self.busy = False
        self.jobs = 0
        self.ready_rss = 0  # resident bytes once it loaded the tokenizer (what it grows from)
        self._ready = False
        try:
            self.conn_out.send_bytes(blob)
        except OSError:
            pass  # it died at once: wait_ready reports it

    def send(self, job) -> None:
        self.conn_out.send(job)

    def wait_ready(self, timeout_s: float) -> None:
        if not self._ready:
            if not self.conn.poll(timeout_s):
                raise RuntimeError(f"a compile worker did not start within {timeout_s:.0f} s")
            try:
                status, body = self.conn.recv()
            except (EOFError, OSError) as e:
                raise RuntimeError(f"a compile worker died while starting (exit code {self.exitcode()})") from e
            if status != "ready":
                raise RuntimeError(f"a compile worker could not load the tokenizer: {body}")
            self._ready = True
            self.ready_rss = self.rss()
        self.jobs += 1

    def rss(self) -> int:
        """Resident bytes of the worker process (0 once it is gone)."""
        return resident_bytes(self.pid)

    def exitcode(self) -> int | None:
        try:
            return self.process.wait(0.5)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(5.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        for c in (self.conn, self.conn_out):
            try:
                c.close()
            except OSError:
                pass
