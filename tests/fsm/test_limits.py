"""structgen/fsm/limits.py: one frozen CompileLimits, read from the environment once by the caller and passed down
to the compile API, the cache and the JSON Schema compiler."""

from __future__ import annotations

import dataclasses

import pytest

import structgen
from structgen import settings
from structgen.errors import ConstraintTooComplexError
from structgen.fsm import api
from structgen.fsm.cache import MISS, CompileCache, default_cache
from structgen.fsm.json_schema import schema_automaton
from structgen.fsm.limits import CompileLimits

WIDE = {"type": "object", "properties": {f"k{i}": {"type": "integer"} for i in range(30)}}


@pytest.fixture
def tok():
    return structgen.default_tokenizer()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    structgen.default_tokenizer()  # loaded from the real cache folder before it moves
    monkeypatch.setenv("STRUCTGEN_CACHE_DIR", str(tmp_path))
    default_cache().clear()
    yield
    default_cache().clear()


def test_from_env_takes_the_registry_defaults_and_the_environment(monkeypatch):
    monkeypatch.delenv("STRUCTGEN_MAX_STATES", raising=False)
    monkeypatch.delenv("STRUCTGEN_COMPILE_TIMEOUT_S", raising=False)
    assert CompileLimits.from_env() == CompileLimits(
        int(settings.REGISTRY["STRUCTGEN_MAX_STATES"].default),
        float(settings.REGISTRY["STRUCTGEN_COMPILE_TIMEOUT_S"].default))
    monkeypatch.setenv("STRUCTGEN_MAX_STATES", "7")
    monkeypatch.setenv("STRUCTGEN_COMPILE_TIMEOUT_S", "2.5")
    assert CompileLimits.from_env() == CompileLimits(max_states=7, compile_timeout_s=2.5)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        CompileLimits(10, 1.0).max_states = 11


def test_limits_passed_in_win_over_the_environment(tok, monkeypatch):
    monkeypatch.setenv("STRUCTGEN_MAX_STATES", "3")  # would fail if anything below read the environment
    c = structgen.compile_json_schema(WIDE, tok, limits=CompileLimits(200_000, 30.0))
    assert c.accepts('{"k0": 1, "k29": 2}')
    default_cache().clear(disk=True)
    monkeypatch.setenv("STRUCTGEN_MAX_STATES", "200000")
    with pytest.raises(ConstraintTooComplexError, match="STRUCTGEN_MAX_STATES"):
        structgen.compile_json_schema(WIDE, tok, limits=CompileLimits(3, 30.0))


def test_the_time_limit_reaches_regex_and_schema_compiles(tok):
    tiny = CompileLimits(200_000, 0.000001)
    with pytest.raises(ConstraintTooComplexError, match="STRUCTGEN_COMPILE_TIMEOUT_S"):
        structgen.compile_regex("[a-z]{1,40}@[a-z]{1,40}", tok, limits=tiny)
    with pytest.raises(ConstraintTooComplexError):
        api.compile_constraint("json_schema", WIDE, tok, limits=tiny)


def test_schema_automaton_takes_its_limits_and_an_explicit_max_states_overrides_them():
    text = b'{"k0":1,"k1":2,"k2":3}'
    with pytest.raises(ConstraintTooComplexError):
        _walk(schema_automaton(WIDE, limits=CompileLimits(3, 30.0)), text)
    assert _walk(schema_automaton(WIDE, limits=CompileLimits(3, 30.0), max_states=200_000), text) is not None
    with pytest.raises(ConstraintTooComplexError):  # the compiler's own deadline comes from the limits too
        schema_automaton({"type": "object", "properties": {f"k{i}": {"type": "integer"} for i in range(200)}},
                         limits=CompileLimits(200_000, 0.0))


def _walk(automaton, data: bytes):
    """The state after `data` (None if rejected); materializes every state on the way."""
    state = automaton.initial()
    for b in data:
        state = automaton.transitions(state).get(b)
        if state is None:
            return None
    return state


def test_the_key_ignores_limits_and_a_limit_failure_is_retried_under_other_limits(tok):
    regex = "[a-z]{1,40}@[a-z]{1,40}"
    c, status = api.compile_with_status("regex", regex, tok, limits=CompileLimits(200_000, 30.0))
    assert status == MISS
    again, status = api.compile_with_status("regex", regex, tok, limits=CompileLimits(100_000, 10.0))
    assert again is c and status == "memory"  # same compiled result: limits are not part of the key

    cache = CompileCache(disk_dir=None)
    calls = []

    def failing():
        calls.append(1)
        raise ConstraintTooComplexError("automaton states", 10)

    low = CompileLimits(10, 30.0)
    for _ in range(2):
        with pytest.raises(ConstraintTooComplexError):
            cache.get_or_compile("k", failing, lambda p: None, low)
    assert len(calls) == 1  # remembered under the same limits
    with pytest.raises(ConstraintTooComplexError):
        cache.lookup_memory("k", low)
    assert cache.lookup_memory("k", CompileLimits(1000, 30.0)) is None  # other limits: forgotten, compile again
