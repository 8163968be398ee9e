"""Issue 14's hostile constraints, each as a named regression: it ends fast, in bounded memory, with the ConstraintError
a person can act on (naming the keyword and where it is) -- or, where the constraint is fine but long, compiles and is
refused by the budget rule at admission. The real SmolLM2 tokenizer; small compile limits."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest

import structgen
from structgen.errors import ConstraintTooComplexError, InvalidRegexError, InvalidSchemaError, UnsupportedSchemaError
from structgen.fsm import api
from structgen.fsm.budget import budget_refusal
from structgen.fsm.cache import default_cache
from structgen.fsm.limits import CompileLimits

pytestmark = pytest.mark.timeout(120)

LIMITS = CompileLimits(max_states=50_000, compile_timeout_s=10.0, expand_timeout_s=5.0)
FAST_S = 5.0  # every case here ended after > 60 s (or escaped as another exception) before issue 14
A_OPT_A = "a?" * 3000 + "a" * 3000


@pytest.fixture(scope="module")
def tok():
    return structgen.default_tokenizer()


@pytest.fixture(autouse=True)
def no_disk_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("STRUCTGEN_DISABLE_DISK_CACHE", "1")
    default_cache().clear()
    yield
    default_cache().clear()


class Clock:
    def __enter__(self):
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.seconds = time.monotonic() - self.start
        return False


def schema(value, tok):
    return structgen.compile_json_schema(value, tok, limits=LIMITS)


def test_min_length_1e9_compiles_at_once_and_the_budget_rule_refuses_it(tok):
    # was: > 60 s and 4.7 GB (a reachability table with 1e9 levels)
    tracemalloc.start()
    try:
        with Clock() as clock:
            c = schema({"type": "string", "minLength": 1_000_000_000}, tok)
            need = c.cursor().min_tokens_to_finish()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert clock.seconds < FAST_S and peak < 200 << 20
    assert need >= 1_000_000_000 // 81  # SmolLM2's longest token has 81 bytes
    refusal = budget_refusal(need, max_tokens=8192, room=8192)
    assert refusal is not None and "needs at least" in refusal
    assert c.accepts('"' + "x" * 5 + '"') is False  # still the exact language: 5 characters are too few


def test_huge_counts_compile_at_once(tok):
    with Clock() as clock:
        for value in ({"type": "array", "minItems": 10**9}, {"type": "array", "maxItems": 2**62, "minItems": 2**40},
                      {"type": "object", "properties": {f"p{i}": {"type": "null"} for i in range(3)},
                       "maxProperties": 10**18}, {"type": "string", "maxLength": 2**62},
                      {"type": "string", "minLength": 10**12, "pattern": "^(ab|c)+$"}):
            c = schema(value, tok)
            c.cursor().min_tokens_to_finish()
    assert clock.seconds < FAST_S


def test_a_length_no_output_could_reach_names_the_keyword_and_where(tok):
    with Clock() as clock, pytest.raises(UnsupportedSchemaError) as e:
        schema({"properties": {"name": {"type": "string", "minLength": 2**60}}}, tok)
    assert clock.seconds < FAST_S
    assert e.value.keyword == "minLength" and e.value.pointer == "#/properties/name"


def test_min_properties_no_distinct_keys_can_reach_is_refused(tok):
    # extra keys may repeat (a parser keeps one), so only declared ones and one extra count towards the minimum
    with Clock() as clock, pytest.raises(InvalidSchemaError, match="admits no value"):
        schema({"type": "object", "minProperties": 10**9, "additionalProperties": True}, tok)
    assert clock.seconds < FAST_S


@pytest.mark.parametrize("where", ["#", "#/properties/code"])
def test_pattern_a_opt_3000_a_3000_is_too_complex_naming_pattern_and_where(tok, where):
    # was: interegular's determinization, uninterruptible, past 60 s
    value = {"type": "string", "pattern": A_OPT_A}
    if where != "#":
        value = {"type": "object", "properties": {"code": value}}
    with Clock() as clock, pytest.raises(ConstraintTooComplexError) as e:
        schema(value, tok)
    assert clock.seconds < FAST_S
    assert f"'pattern' at {where}" in str(e.value)


def test_regex_a_opt_3000_a_3000_is_too_complex(tok):
    with Clock() as clock, pytest.raises(ConstraintTooComplexError, match="regex 'a\\?a\\?"):
        structgen.compile_regex(A_OPT_A, tok, limits=LIMITS)
    assert clock.seconds < FAST_S


@pytest.mark.parametrize("pattern", ["a{1000000}", "(a|b)*a(a|b){25}", "((a{1,200}){1,200})", "(" * 500 + ")" * 500,
                                     "[\x00-\U0010ffff]{2}"])
def test_other_pathological_regexes_end_fast(tok, pattern):
    with Clock() as clock, pytest.raises(ConstraintTooComplexError):
        structgen.compile_regex(pattern, tok, limits=LIMITS)
    assert clock.seconds < FAST_S


def test_a_repetition_count_past_re_s_own_limit_is_an_invalid_regex(tok):
    with pytest.raises(InvalidRegexError, match="too large"):  # re raises OverflowError
        structgen.compile_regex("a{99999999999}", tok, limits=LIMITS)


def test_max_length_1e400_is_an_invalid_schema_naming_where(tok):
    # was: TypeError (json reads 1e400 as inf)
    with Clock() as clock, pytest.raises(InvalidSchemaError) as e:
        schema('{"type": "string", "maxLength": 1e400}', tok)
    assert clock.seconds < FAST_S
    assert e.value.pointer == "#/maxLength" and "#/maxLength" in str(e.value)


@pytest.mark.parametrize("as_text", [False, True])
def test_a_schema_nested_400_objects_deep_is_an_invalid_schema(tok, as_text):
    # was: RecursionError
    value: object = {"type": "string"}
    for _ in range(400):
        value = {"type": "object", "properties": {"a": value}}
    with Clock() as clock, pytest.raises(InvalidSchemaError, match="nests deeper than 128") as e:
        schema(json.dumps(value) if as_text else value, tok)
    assert clock.seconds < FAST_S
    assert e.value.pointer.startswith("#/properties/a/properties/a")


def test_an_integer_with_a_far_minimum_bounds_at_once(tok):
    # was: 85 s of searching every shorter prefix in the budget bound, then ConstraintTooComplexError
    with Clock() as clock:
        c = schema({"type": "integer", "minimum": 10**14}, tok)
        assert c.cursor().min_tokens_to_finish() >= 1
    assert clock.seconds < FAST_S


def test_an_enum_of_ten_thousand_values_compiles(tok):
    # was: 27 s (each value validated against a schema holding all of them) and then the compile time limit
    with Clock() as clock:
        c = schema({"enum": list(range(10_000))}, tok)
        assert c.accepts("9999") and not c.accepts("10000")
    assert clock.seconds < FAST_S
    with pytest.raises(ConstraintTooComplexError, match="enum values"):
        schema({"enum": list(range(10_001))}, tok)


def test_a_state_reached_while_decoding_has_a_table_byte_limit(tok):
    small = CompileLimits(max_states=50_000, compile_timeout_s=10.0)
    c = api.compile_json_schema({"type": "string", "maxLength": 5000}, tok, limits=small)
    from structgen.fsm.index import TokenIndex

    index = TokenIndex(c.index.automaton, c.index.vocab, max_states=50_000, timeout_s=5.0,
                       max_table_bytes=2 << 20)
    s = index.initial
    x = tok.encode("x")[0]
    quote = tok.encode('"')[0]
    s = index.next_state(s, quote)
    with pytest.raises(ConstraintTooComplexError, match="STRUCTGEN_MAX_TABLE_MB"):
        for _ in range(5000):  # a new state per character, each with its mask
            index.mask(s)
            s = index.next_state(s, x)
