"""Fuzzing the compiler (issue 14): whatever the schema, regex or choice list, compile_* returns a CompiledConstraint
or raises a ConstraintError -- never another exception -- within a few seconds under small limits. What compiles is
walked with the real SmolLM2 tokenizer: random allowed tokens, then budget-aware closing from the bound
(Cursor.min_tokens_to_finish / fill_bitmask_within), and the text must end final and satisfy its constraint
(jsonschema Draft 2020-12 with format checks, re.fullmatch, membership).

Strategies: random nesting of types and keywords, extreme numbers (1e308, -0.0, 2**64, 1e-300), huge lengths and
counts, nesting up to and past the 128-level limit, enums of thousands of values, anyOf/oneOf/allOf, $ref loops, bad
keyword values ("type": 5); regexes with nested quantifiers, huge counts, unbalanced parentheses, random text.
Derandomized: the same examples on every run."""

from __future__ import annotations

import json
import random
import re
import time

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import structgen
from structgen.errors import ConstraintError
from structgen.fsm import api, bitmask
from structgen.fsm.cache import default_cache
from structgen.fsm.limits import CompileLimits

pytestmark = pytest.mark.timeout(300)

LIMITS = CompileLimits(max_states=20_000, compile_timeout_s=2.0, max_table_bytes=64 << 20, expand_timeout_s=2.0)
# Wall time one example may take (compile, walks and checks): the limits above and a margin for a loaded machine.
EXAMPLE_S = 8.0
FUZZ = dict(derandomize=True, deadline=None, database=None, print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

_TOK = None


def tok():
    global _TOK
    if _TOK is None:
        _TOK = structgen.default_tokenizer()
    return _TOK


@pytest.fixture(scope="module", autouse=True)
def no_disk_cache():
    tok()  # loaded from the real asset folder first
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STRUCTGEN_DISABLE_DISK_CACHE", "1")
        default_cache().clear()
        yield
        default_cache().clear()


# ---- strategies: JSON Schema ----------------------------------------------------------------------------------------

EXTREME_NUMBERS = st.sampled_from([0, -0.0, 1, -1, 0.5, 1e308, -1e308, 1e-300, 2**64, -(2**63), 2**53 + 1, 1e15,
                                   123456789.123, 3, 7, 0.1])
COUNTS = st.one_of(st.integers(0, 6), st.sampled_from([10**9, 2**62, 2**64, 1e308, 2**48 + 1, 1.5, -1, True, "3"]))
NAMES = st.sampled_from(["a", "b", "name", "é", "", "a b", "$ref", "x" * 40])
FORMATS = st.sampled_from(["date", "date-time", "email", "uuid", "ipv4", "uri", "time", "hostname", "unknown-x",
                           "duration", "regex"])
JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), EXTREME_NUMBERS, st.text(max_size=6)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=3),
                           max_leaves=6)


def regex_texts():
    atoms = st.sampled_from(["a", "b", ".", "\\d", "\\w", "\\s", "\\D", "[a-z]", "[^ab]", "é", "😀", "\\.", "\\u00e9",
                             "(", ")", "|", "[", "]", "\\", "^", "$", "(?i)", "(?=a)", "\\1", "\\b", "[\\s\\S]"])
    quants = st.sampled_from(["", "", "", "*", "+", "?", "*?", "{2}", "{0,3}", "{3,}", "{1000}", "{1,100000}",
                              "{0,4294967295}", "{99999999999}", "{,5}"])
    pieces = st.lists(st.tuples(atoms, quants).map("".join), min_size=0, max_size=8).map("".join)
    nested = st.integers(1, 6).flatmap(lambda n: st.tuples(pieces, st.sampled_from(["*", "+", "{2,30}", "?"])).map(
        lambda pq: "(" * n + pq[0] + (")" + pq[1]) * n))
    return st.one_of(pieces, nested, st.text(max_size=12),
                     st.sampled_from(["a?" * 300 + "a" * 300, "(a|aa)+$", "(x+x+)+y", "(a*)*b", "((a{1,50}){1,50})",
                                      "(" * 300 + ")" * 300, "[\x00-\U0010ffff]", "(a|b)*a(a|b){18}"]))


def leaves():
    string = st.fixed_dictionaries({"type": st.just("string")}, optional={
        "minLength": COUNTS, "maxLength": COUNTS, "pattern": regex_texts(), "format": FORMATS})
    number = st.fixed_dictionaries({"type": st.sampled_from(["number", "integer"])}, optional={
        "minimum": EXTREME_NUMBERS, "maximum": EXTREME_NUMBERS, "exclusiveMinimum": EXTREME_NUMBERS,
        "exclusiveMaximum": EXTREME_NUMBERS, "multipleOf": EXTREME_NUMBERS})
    return st.one_of(
        string, number, st.booleans(),
        st.sampled_from([{"type": "null"}, {"type": "boolean"}, {}, {"type": ["string", "null"]}, {"type": 5},
                         {"type": "nope"}, {"minLength": "x"}, {"enum": []}, {"enum": 3}, {"required": "a"},
                         {"properties": 5}, {"items": 3}, {"$ref": 5}, {"$ref": "#/nowhere"},
                         {"$ref": "http://example.com/s.json"}, {"not": {}}, {"allOf": []}, {"anyOf": "x"},
                         {"multipleOf": 0}, {"multipleOf": -2}, {"minimum": "1"}, {"const": 1e308}]),
        st.builds(lambda v: {"const": v}, JSON_VALUES),
        st.builds(lambda vs: {"enum": vs}, st.lists(JSON_VALUES, min_size=1, max_size=6)),
        st.sampled_from([{"enum": list(range(3000))}, {"enum": [f"v{i}" for i in range(2500)]},
                         {"enum": [i * 0.5 for i in range(2000)]}]),
    )


def containers(inner):
    obj = st.fixed_dictionaries({"type": st.just("object")}, optional={
        "properties": st.dictionaries(NAMES, inner, max_size=3), "required": st.lists(NAMES, max_size=2),
        "additionalProperties": st.one_of(st.booleans(), inner), "minProperties": COUNTS, "maxProperties": COUNTS,
        "patternProperties": st.dictionaries(st.sampled_from(["^a", "b$", "("]), inner, max_size=1)})
    arr = st.fixed_dictionaries({"type": st.just("array")}, optional={
        "items": st.one_of(st.booleans(), inner), "prefixItems": st.lists(inner, max_size=2),
        "minItems": COUNTS, "maxItems": COUNTS})
    combos = st.builds(lambda k, xs: {k: xs}, st.sampled_from(["anyOf", "oneOf", "allOf"]),
                       st.lists(inner, min_size=1, max_size=3))
    negation = st.builds(lambda x: {"not": x}, inner)
    return st.one_of(obj, arr, combos, negation)


def with_refs(schema):
    """Wrap a schema in $defs that point at each other and at the root (loops through $ref)."""
    return st.sampled_from([
        {"$defs": {"s": schema}, "$ref": "#/$defs/s"},
        {"$defs": {"s": schema, "t": {"anyOf": [{"$ref": "#/$defs/s"}, {"$ref": "#/$defs/t"}]}}, "$ref": "#/$defs/t"},
        {"type": "object", "properties": {"self": {"$ref": "#"}, "v": schema}},
        {"$defs": {"u": {"$ref": "#/$defs/u"}}, "anyOf": [schema, {"$ref": "#/$defs/u"}]},
        {"allOf": [schema, {"$ref": "#"}]},
    ])


def deep(n: int, kind: str):
    value: object = {"type": "string"}
    for i in range(n):
        value = {"type": "array", "items": value} if kind == "array" else \
            {"type": "object", "properties": {"k": value}, "required": ["k"]} if kind == "object" else \
            {"anyOf": [value, {"type": "null"}]}
    return value


SCHEMAS = st.one_of(
    st.recursive(leaves(), containers, max_leaves=8),
    st.recursive(leaves(), containers, max_leaves=5).flatmap(with_refs),
    st.builds(deep, st.sampled_from([20, 60, 127, 128, 129, 200, 1000]), st.sampled_from(["array", "object", "anyOf"])),
)


# ---- walking what compiled --------------------------------------------------------------------------------------

def walk(compiled, rng: random.Random, steps: int, close_limit: int = 48) -> str | None:
    """Random allowed tokens, then close within the bound; the decoded text, or None when the bound is too far to
    close here (nothing to check) or the walk hit a limit (a ConstraintError: allowed). Asserts that closing within
    the bound always ends in a final state."""
    cur = compiled.cursor()
    eos = compiled.eos_token_ids
    row = np.zeros(compiled.num_words, dtype=np.int32)
    out: list[int] = []
    try:
        for _ in range(rng.randrange(steps + 1)):
            ids = [t for t in cur.allowed_token_ids().tolist() if t not in eos]
            if not ids or (cur.is_final() and rng.random() < 0.25):
                break
            t = rng.choice(ids)
            assert cur.advance(t)
            out.append(t)
        budget = cur.min_tokens_to_finish()
        if budget > close_limit:
            event("walk: bound too far to close here")
            return None
        while not cur.is_final():
            assert budget >= 1, "the bound ran out before a final state"
            cur.fill_bitmask_within(row, budget)
            ids = [t for t in bitmask.unpack(row).tolist() if t not in eos]
            assert ids, f"nothing fits a budget of {budget} although the bound said it would"
            t = rng.choice(ids)
            assert cur.advance(t)
            out.append(t)
            budget -= 1
    except ConstraintError as e:
        event(f"walk: {type(e).__name__}")
        return None
    event("walk: closed and checked")
    return tok().decode(out)


def compile_or_refuse(kind: str, value):
    """compile_constraint's result, or None for a ConstraintError; any other exception fails the test."""
    try:
        compiled = api.compile_constraint(kind, value, tok(), limits=LIMITS)
    except ConstraintError as e:
        event(f"refused: {type(e).__name__}")  # --hypothesis-show-statistics tells how the examples went
        return None
    event("compiled")
    return compiled


def _validator(schema):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


# ---- properties -------------------------------------------------------------------------------------------------

@settings(max_examples=500, **FUZZ)
@given(schema=SCHEMAS, seed=st.integers(0, 2**16))
def test_any_schema_compiles_or_is_a_constraint_error_and_its_walks_validate(schema, seed):
    t = time.monotonic()
    compiled = compile_or_refuse("json_schema", schema)
    if compiled is not None:
        rng = random.Random(seed)
        validator = None
        for _ in range(2):
            text = walk(compiled, rng, steps=12)
            if text is None:
                continue
            if validator is None:
                try:
                    validator = _validator(schema)
                except (jsonschema.exceptions.SchemaError, RecursionError):
                    break  # our compile accepted a schema jsonschema cannot evaluate: nothing to compare with
            value = json.loads(text)
            try:
                errors = [e.message for e in validator.iter_errors(value)]
            except RecursionError:  # a $ref loop jsonschema follows forever: nothing to compare with
                break
            assert not errors, (text, errors)
    assert time.monotonic() - t < EXAMPLE_S


@settings(max_examples=400, **FUZZ)
@given(pattern=regex_texts(), seed=st.integers(0, 2**16))
def test_any_regex_compiles_or_is_a_constraint_error_and_its_walks_match(pattern, seed):
    t = time.monotonic()
    compiled = compile_or_refuse("regex", pattern)
    if compiled is not None:
        rng = random.Random(seed)
        for _ in range(2):
            text = walk(compiled, rng, steps=10)
            if text is not None:
                assert re.fullmatch(pattern, text) is not None, (pattern, text)
    assert time.monotonic() - t < EXAMPLE_S


@settings(max_examples=80, **FUZZ)
@given(choices=st.one_of(st.lists(st.text(max_size=8), max_size=6), st.just([f"c{i}" for i in range(3000)]),
                         st.just(["\ud800"]), st.just([""]), st.just(["x" * 10_000])), seed=st.integers(0, 2**16))
def test_any_choice_list_compiles_or_is_a_constraint_error(choices, seed):
    t = time.monotonic()
    compiled = compile_or_refuse("choice", choices)
    if compiled is not None:
        text = walk(compiled, random.Random(seed), steps=6)
        if text is not None:
            assert text in choices
    assert time.monotonic() - t < EXAMPLE_S
