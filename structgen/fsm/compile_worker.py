"""The worker process of structgen.fsm.compile_pool: `python -m structgen.fsm.compile_worker READ_FD WRITE_FD`.

It reads the pickled tokenizer, answers ("ready", pid), then compiles one CompileJob at a time and answers
("ok", snapshot) | ("error", error parts) | ("memory", None) | ("crash", text). The parent kills it past a limit;
nothing here needs to stop itself. Messages travel as multiprocessing Connections over two inherited pipes (not
stdin/stdout, which stray prints would corrupt).
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

from ..errors import CompileCrashedError, ConstraintError, ConstraintTooComplexError

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes(pid: int | str = "self") -> int:
    """Resident bytes of a process, from /proc (0 once it is gone, or where /proc is not there)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return 0


def main(read_fd: int, write_fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it kills its workers itself
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    try:
        tokenizer = pickle.loads(inbox.recv_bytes())
        from . import api
        from .vocab import Vocabulary

        Vocabulary.from_tokenizer(tokenizer)
        importlib.import_module("structgen.fsm.json_schema")
        importlib.import_module("structgen.fsm.regex")
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which falls back to threads
        outbox.send(("init_failed", f"{type(e).__name__}: {e}"))
        return
    outbox.send(("ready", os.getpid()))
    limited = False
    while True:
        try:
            job = inbox.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        if not limited:
            _limit_address_space(job.limits.max_memory_bytes)
            limited = True
        outbox.send(_run_job(api, job, tokenizer))


def _run_job(api, job, tokenizer) -> tuple[str, Any]:
    try:
        return "ok", api.build_snapshot(job, tokenizer)
    except MemoryError:
        return "memory", None
    except ConstraintError as e:
        return "error", error_state(e)
    except RecursionError:
        return "error", error_state(ConstraintTooComplexError("compiler recursion depth", sys.getrecursionlimit()))
    except Exception as e:  # noqa: BLE001 - a compiler bug: reported as one, the worker lives on
        where = traceback.format_exc(limit=-2).strip().splitlines()[-3:]
        return "crash", f"{type(e).__name__}: {e} [{' | '.join(s.strip() for s in where)}]"


def _limit_address_space(max_memory_bytes: int) -> None:
    """A backstop under the parent's resident-memory poll: past twice the memory limit of address space beyond what
    the worker maps when idle, allocations fail (MemoryError) instead of the machine running out."""
    try:
        import resource

        with open("/proc/self/statm", "rb") as fh:
            mapped = int(fh.read().split()[0]) * PAGE_BYTES
        cap = mapped + 2 * max_memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    except (ImportError, OSError, ValueError):
        pass


def error_state(e: ConstraintError) -> tuple[str, str, tuple, dict]:
    """An exception as plain parts: our error classes take custom __init__ arguments, which pickle cannot redo."""
    return type(e).__module__, type(e).__qualname__, e.args, dict(vars(e))


def rebuild_error(state: tuple[str, str, tuple, dict]) -> ConstraintError:
    """The ConstraintError `error_state` took apart (a CompileCrashedError if the class is not one of ours)."""
    module, name, args, attrs = state
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, ConstraintError)):
        return CompileCrashedError(f"{name}: {args[0] if args else ''}")
    e = cls.__new__(cls)
    Exception.__init__(e, *args)
    e.__dict__.update(attrs)
    return e


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
