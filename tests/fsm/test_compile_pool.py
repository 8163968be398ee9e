"""structgen/fsm/compile_pool.py: compiles in worker processes, killed past their limits; fairness and queue bounds.

Slow compiles here are real ones: a choice among tens of thousands of distinct words (about a second or more on this
machine, mostly the first mask's walk of the vocabulary), so a hard limit has real work to stop.
"""

from __future__ import annotations

import json
import os
import random
import time

import jsonschema
import pytest

import structgen
from structgen.errors import (CompileCancelledError, CompileDeadlineError, CompileQueueFullError,
                              ConstraintTooComplexError)
from structgen.fsm.cache import default_cache
from structgen.fsm.compile_pool import CompilePool
from structgen.fsm.limits import CompileLimits

pytestmark = pytest.mark.timeout(180)

LONG = CompileLimits(max_states=200_000, compile_timeout_s=120.0)


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTGEN_CACHE_DIR", str(tmp_path))
    default_cache().clear()
    yield
    default_cache().clear()


@pytest.fixture(scope="module")
def tok():
    return structgen.default_tokenizer()


@pytest.fixture
def pool(tok):
    p = CompilePool(tok, workers=2, max_queue=8)
    yield p
    p.close()


def slow_choices(seed: int, n: int = 40_000) -> list[str]:
    """n distinct random words: a choice constraint that takes a while to compile (its first mask is large)."""
    rng = random.Random(seed)
    return sorted({"".join(rng.choice("abcdefghijklmnop") for _ in range(14)) for _ in range(n)})


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_worker_compiles_what_this_process_would(pool, tok):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8},
                                                "n": {"type": "integer", "minimum": 0}}, "required": ["name", "n"]}
    compiled, status = pool.compile("json_schema", json.dumps(schema))
    assert status == "miss"
    pids = pool.worker_pids()
    assert pids and os.getpid() not in pids  # it really ran elsewhere
    assert compiled.accepts('{"name": "ab", "n": 3}') and not compiled.accepts('{"name": "ab", "n": -3}')
    # Decoding goes on in this process: states the worker never built are built here on demand.
    cur = compiled.cursor()
    for t in tok.encode('{"name": "abcdefgh", "n": 12}'):
        assert cur.advance(t)
    assert cur.is_final()
    jsonschema.validate({"name": "abcdefgh", "n": 12}, schema)
    again, status = pool.compile("json_schema", json.dumps(schema))
    assert again is compiled and status == "memory"


BAD = [{"properties": {"a": {"type": 5}}}, {"minimum": "x"}, {"type": "string", "pattern": "(("},
       {"properties": {"a": {"$ref": "#/$defs/missing"}}}]


@pytest.mark.parametrize("schema", BAD, ids=lambda s: json.dumps(s)[:40])
def test_errors_come_back_as_raised_in_process(pool, tok, schema):
    with pytest.raises(structgen.ConstraintError) as here:
        structgen.compile_json_schema(schema, tok)
    default_cache().clear()
    with pytest.raises(structgen.ConstraintError) as there:
        pool.compile("json_schema", json.dumps(schema))
    assert type(there.value) is type(here.value)
    assert str(there.value) == str(here.value) and vars(there.value) == vars(here.value)
    assert pool.worker_pids()  # the error came from a worker


def test_a_deadline_kills_the_worker_mid_compile_and_a_fresh_one_takes_over(pool):
    pool.compile("regex", "warm")  # start a worker, so the deadline is all compile time
    t0 = time.monotonic()
    with pytest.raises(CompileDeadlineError) as e:
        pool.compile("choice", slow_choices(1), limits=LONG, deadline=time.monotonic() + 0.4)
    elapsed = time.monotonic() - t0
    assert e.value.ran and elapsed < 2.0, elapsed
    assert pool.stats["killed_timeout"] == 1
    # The pool goes on: the killed worker was replaced.
    compiled, _ = pool.compile("regex", "[0-9]{3}")
    assert compiled.accepts("123")


def test_the_time_limit_stops_a_compile_and_the_failure_is_remembered(pool):
    choices = slow_choices(2)
    limits = CompileLimits(max_states=200_000, compile_timeout_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(ConstraintTooComplexError, match="STRUCTGEN_COMPILE_TIMEOUT_S"):
        pool.compile("choice", choices, limits=limits)
    assert time.monotonic() - t0 < 3.0
    t0 = time.monotonic()
    with pytest.raises(ConstraintTooComplexError, match="STRUCTGEN_COMPILE_TIMEOUT_S"):
        pool.compile("choice", choices, limits=limits)
    assert time.monotonic() - t0 < 0.5  # from the cache, no worker
    assert pool.stats["compiles"] == 2 and pool.stats["killed_timeout"] <= 1


def test_the_memory_limit_kills_the_worker(pool):
    tight = CompileLimits(max_states=200_000, compile_timeout_s=60.0, max_memory_bytes=32 << 20)
    with pytest.raises(ConstraintTooComplexError, match="STRUCTGEN_COMPILE_MEMORY_MB"):
        pool.compile("choice", slow_choices(3), limits=tight)
    assert pool.stats["killed_memory"] == 1
    compiled, _ = pool.compile("regex", "ok|fine")
    assert compiled.accepts("fine")


def test_cancelling_the_future_kills_the_running_compile(pool):
    fut = pool.submit("choice", slow_choices(4, 80_000), limits=LONG)
    for _ in range(300):
        busy = [w.pid for w in pool._workers if w.busy]
        if busy and pool.stats["compiles"]:
            break
        time.sleep(0.01)
    time.sleep(0.3)  # well into the compile
    (pid,) = busy
    fut.cancel()
    for _ in range(200):
        if not _alive(pid):
            break
        time.sleep(0.01)
    assert not _alive(pid)
    assert pool.stats["cancelled"] == 1
    assert fut.cancelled()


def test_one_client_cannot_hold_every_worker(tok):
    pool = CompilePool(tok, workers=2, per_client=1, max_queue=8)
    try:
        pool.compile("regex", "a")  # both workers warm
        pool.compile("regex", "b", client="x")
        done: dict[str, float] = {}
        futs = {"a1": pool.submit("choice", slow_choices(5, 20_000), limits=LONG, client="A"),
                "a2": pool.submit("choice", slow_choices(6, 20_000), limits=LONG, client="A")}
        time.sleep(0.05)
        futs["b"] = pool.submit("choice", slow_choices(7, 20_000), limits=LONG, client="B")
        for name, f in futs.items():
            f.add_done_callback(lambda _f, name=name: done.setdefault(name, time.monotonic()))
        for f in futs.values():
            f.result(timeout=120)
        assert done["b"] < done["a2"], done  # B ran beside A's first compile, not after both of A's
    finally:
        pool.close()


def test_the_queue_is_bounded_overall_and_per_client(tok):
    pool = CompilePool(tok, workers=1, max_queue=4)
    try:
        first = [pool.submit("choice", slow_choices(10 + i, 20_000), limits=LONG, client="A") for i in range(2)]
        with pytest.raises(CompileQueueFullError, match="this client's"):
            pool.submit("choice", slow_choices(20, 20_000), limits=LONG, client="A").result()
        more = [pool.submit("choice", slow_choices(30 + i, 20_000), limits=LONG, client=f"c{i}") for i in range(2)]
        with pytest.raises(CompileQueueFullError):
            pool.submit("choice", slow_choices(40, 20_000), limits=LONG, client="D").result()
        assert pool.stats["refused_queue_full"] == 2
        for f in first + more:
            f.cancel()
    finally:
        pool.close()


def test_a_compile_in_memory_never_waits_in_the_queue(tok):
    pool = CompilePool(tok, workers=1, max_queue=1)
    try:
        compiled, _ = pool.compile("regex", "[a-z]+")
        busy = pool.submit("choice", slow_choices(50, 20_000), limits=LONG)
        t0 = time.monotonic()
        hit, status = pool.compile("regex", "[a-z]+")
        assert hit is compiled and status == "memory" and time.monotonic() - t0 < 0.2
        busy.cancel()
    finally:
        pool.close()


def test_close_kills_every_worker_and_fails_waiting_compiles(tok):
    pool = CompilePool(tok, workers=1, max_queue=4)
    running = pool.submit("choice", slow_choices(60, 40_000), limits=LONG)
    waiting = pool.submit("choice", slow_choices(61, 40_000), limits=LONG, client="other")
    time.sleep(0.8)
    pids = pool.worker_pids()
    assert pids
    pool.close()
    for f in (running, waiting):
        with pytest.raises(CompileCancelledError):
            f.result(timeout=10)
    time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


class _UnpicklableTokenizer:
    """The real tokenizer behind an object that cannot be sent to a worker process."""

    def __init__(self, tok):
        self._tok = tok
        self._hook = lambda: None  # lambdas do not pickle

    def __getattr__(self, name):
        return getattr(self._tok, name)


def test_a_tokenizer_that_cannot_travel_compiles_in_threads(tok, caplog):
    pool = CompilePool(_UnpicklableTokenizer(tok), workers=1)
    try:
        compiled, status = pool.compile("regex", "[0-9]+x")
        assert status == "miss" and compiled.accepts("12x")
        assert pool.worker_pids() == []
        assert "without hard time and memory limits" in caplog.text
    finally:
        pool.close()


def test_config_errors():
    with pytest.raises(ValueError):
        CompilePool(None, workers=0)
    with pytest.raises(ValueError):
        CompilePool(None, isolation="fork")
