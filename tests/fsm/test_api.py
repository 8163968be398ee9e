"""The public compile API with the real SmolLM2 tokenizer and the real languages (JSON Schema, regex, choice)."""

import json
import random
import re
import threading

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

import structgen
from structgen.errors import (ConstraintError, ConstraintTooComplexError, InvalidRegexError, InvalidSchemaError,
                              UnsupportedSchemaError)
from structgen.fsm import api, bitmask
from structgen.fsm.cache import default_cache
from structgen.fsm.json_schema.normalize import MAX_SCHEMA_NESTING
from token_fakes import toy_tokenizer

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "city": {"enum": ["Zürich", "Paris", "東京"]},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age"],
}


@pytest.fixture(scope="module")
def tok():
    return structgen.default_tokenizer()


@pytest.fixture(autouse=True)
def isolated_cache(tok, tmp_path, monkeypatch):
    # The real tokenizer is loaded (above) before the cache folder moves to tmp_path.
    monkeypatch.setenv("STRUCTGEN_CACHE_DIR", str(tmp_path))
    default_cache().clear()
    yield
    default_cache().clear()


def test_public_names(tok):
    c = structgen.compile_choice(["yes", "no"])
    assert isinstance(c, structgen.CompiledConstraint) and isinstance(c, api.CompiledConstraint)
    assert c.vocab_size == tok.vocab_size and c.num_words == bitmask.num_words(tok.vocab_size)
    assert len(c.key) == 64 and c.num_states >= 1
    assert structgen.fsm.compile_constraint("choice", ["yes", "no"]) is c  # same key: the cached object


def test_choice_accepts_exactly_the_choices(tok):
    c = structgen.compile_choice(["yes", "no", "maybe not", "Zürich 😀"], tok)
    for s in ["yes", "no", "maybe not", "Zürich 😀"]:
        assert c.accepts(s), s
    for s in ["ye", "yes ", "maybe", "", "Zürich", "no no"]:
        assert not c.accepts(s), s
    cur = c.cursor()
    eos = next(iter(tok.eos_token_ids))
    assert eos not in cur.allowed_token_ids()
    for t in c.encode("maybe"):
        assert cur.advance(t)
    assert eos not in cur.allowed_token_ids()
    assert cur.forced_tokens()  # " not" is the only way on


def test_regex_agrees_with_python_re(tok):
    pattern = r"[a-c]{1,3}(-\d+)?|x+é"
    c = structgen.compile_regex(pattern, tok)
    rng = random.Random(1)
    alphabet = "abcx-0123é "
    for _ in range(300):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7)))
        assert c.accepts(s) == bool(re.fullmatch(pattern, s)), s


@pytest.mark.parametrize("instance", [
    {"name": "Ann", "age": 31},
    {"name": "Zoë 😀", "age": 0, "city": "Zürich", "tags": ["a", "b"], "ok": True},
    {"name": "x\"y\\z\n", "age": 150, "city": "東京", "tags": []},
])
def test_json_schema_accepts_dumps_of_valid_instances(tok, instance):
    jsonschema.Draft202012Validator(PERSON).validate(instance)
    c = structgen.compile_json_schema(PERSON, tok)
    assert c.accepts(json.dumps(instance))
    assert c.accepts(json.dumps(instance, ensure_ascii=False))
    assert c.accepts(json.dumps(instance, separators=(",", ":")))


@pytest.mark.parametrize("instance", [
    {"name": "Ann"},  # missing required
    {"name": "Ann", "age": -1},
    {"name": "Ann", "age": 1.5},
    {"name": "a much too long name", "age": 3},
    {"name": "Ann", "age": 3, "city": "Rome"},
    {"name": "Ann", "age": 3, "tags": ["a", "b", "a", "b"]},
    {"name": "Ann", "age": 3, "extra": 1},  # no undeclared keys by default
])
def test_json_schema_rejects_invalid_instances(tok, instance):
    c = structgen.compile_json_schema(PERSON, tok)
    assert not c.accepts(json.dumps(instance))


def test_extra_properties_option_follows_the_spec(tok):
    strict = structgen.compile_json_schema(PERSON, tok)
    loose = structgen.compile_json_schema(PERSON, tok, extra_properties=True)
    assert strict.key != loose.key
    text = json.dumps({"name": "Ann", "age": 3, "extra": [1, {"a": None}]})
    assert not strict.accepts(text) and loose.accepts(text)


def test_schema_as_json_text_is_the_same_constraint(tok):
    text = json.dumps(PERSON)
    c = structgen.compile_json_schema(text, tok)
    assert c is structgen.compile_json_schema(PERSON, tok)
    assert api.compile_with_status("json_schema", text, tok, extra_properties=False) == (c, "memory")
    assert structgen.compile_json_schema(text, tok, extra_properties=True) is not c


CLOSERS = set(b'"{}[],:0123456789')


def random_walk(c, rng: random.Random, max_tokens: int = 200) -> list[int]:
    """Random tokens from the masks, biased to finish: EOS when allowed, tokens made of JSON punctuation
    and digits half of the time (so strings close and numbers end)."""
    cur = c.cursor()
    eos = next(iter(c.tokenizer.eos_token_ids))
    vocab_bytes = api.Vocabulary.from_tokenizer(c.tokenizer).token_bytes
    out = []
    for _ in range(max_tokens):
        allowed = cur.allowed_token_ids()
        assert allowed.size, "a reachable state allows nothing"
        if eos in allowed and (rng.random() < 0.7 or allowed.size == 1):
            assert cur.advance(eos)
            return out
        allowed = allowed[allowed != eos]
        short = [int(t) for t in allowed if set(vocab_bytes[t]) <= CLOSERS]
        t = rng.choice(short) if short and rng.random() < 0.5 else int(rng.choice(allowed))
        assert cur.advance(t)
        out.append(t)
    pytest.fail(f"random walk did not finish: {c.tokenizer.decode(out)!r}")


@pytest.mark.parametrize("schema", [
    pytest.param(PERSON, marks=pytest.mark.slow),  # string masks: seconds while the string leaf is slow
    {"type": "array", "items": {"type": "number"}, "maxItems": 4},
    {"anyOf": [{"type": "integer"}, {"type": "boolean"}, {"const": "N/A"}]},
])
def test_random_walks_through_real_masks_give_valid_json(tok, schema):
    c = structgen.compile_json_schema(schema, tok)
    rng = random.Random(7)
    validator = jsonschema.Draft202012Validator(schema)
    for _ in range(4):
        ids = random_walk(c, rng)
        text = tok.decode(ids)
        validator.validate(json.loads(text))
        assert c.accepts_tokens(ids)


def test_utf8_split_tokens_walk_a_string_schema(tok):
    c = structgen.compile_json_schema({"type": "string"}, tok)
    for text in ['"Zürich 😀"', '"Máximarca"', '"\\u00fc\\ud83d\\ude00"', '"日本語"']:
        ids = c.encode(text)
        cur = c.cursor()
        for t in ids:
            assert bitmask.is_allowed(cur.mask(), t)
            assert cur.advance(t)
        assert cur.is_final()
        assert tok.decode(ids) == text


def test_bad_constraints_raise_constraint_errors(tok):
    with pytest.raises(InvalidSchemaError):
        structgen.compile_json_schema("{not json", tok)
    with pytest.raises(InvalidSchemaError):
        structgen.compile_json_schema("[1, 2]", tok)
    with pytest.raises(InvalidRegexError):
        structgen.compile_regex("(ab", tok)
    with pytest.raises(UnsupportedSchemaError):
        structgen.compile_json_schema({"type": "object", "unevaluatedProperties": False}, tok)
    with pytest.raises(ConstraintError):
        structgen.compile_choice([], tok)


def test_api_misuse_raises_type_and_value_errors(tok):
    with pytest.raises(ValueError, match="unknown constraint kind"):
        structgen.fsm.compile_constraint("lua", "x", tok)
    with pytest.raises(TypeError):
        structgen.compile_choice("yes", tok)
    with pytest.raises(TypeError):
        structgen.compile_choice(["yes", 3], tok)
    with pytest.raises(TypeError):
        structgen.compile_regex(b"abc", tok)
    with pytest.raises(TypeError):
        structgen.compile_json_schema({"type": "string"}, tok, no_such_option=1)
    with pytest.raises(TypeError):
        structgen.compile_regex("a", object())


def test_failures_are_cached_and_fail_fast(tok, monkeypatch):
    calls = []
    real = api._automaton_builder

    def counting(kind, value, options):
        canonical, opts, build = real(kind, value, options)

        def counted(limits):
            calls.append(1)
            return build(limits)
        return canonical, opts, counted

    monkeypatch.setattr(api, "_automaton_builder", counting)
    for _ in range(3):
        with pytest.raises(InvalidRegexError):
            structgen.compile_regex("a(b", tok)
    assert len(calls) == 1


def test_state_limit_raises_too_complex_and_is_retried_when_raised(tok, monkeypatch):
    schema = {"type": "object", "properties": {f"k{i}": {"type": "integer"} for i in range(30)}}
    monkeypatch.setenv("STRUCTGEN_MAX_STATES", "3")
    with pytest.raises(ConstraintTooComplexError):
        structgen.compile_json_schema(schema, tok)
    monkeypatch.setenv("STRUCTGEN_MAX_STATES", "200000")
    c = structgen.compile_json_schema(schema, tok)
    assert c.accepts('{"k0": 1, "k29": 2}')


def test_compile_time_limit_raises_too_complex(tok, monkeypatch):
    monkeypatch.setenv("STRUCTGEN_COMPILE_TIMEOUT_S", "0.000001")
    with pytest.raises(ConstraintTooComplexError, match="STRUCTGEN_COMPILE_TIMEOUT_S"):
        structgen.compile_regex("[a-z]{1,40}@[a-z]{1,40}", tok)


def test_two_threads_walking_one_constraint_see_the_same_masks(tok):
    schema = {"type": "array", "items": {"type": "integer"}, "maxItems": 6}
    texts = ["[1, 22, 333]", "[4444,5,-6]", "[]", "[7, 88888, 9, 10, 11, 12]"]
    shared = structgen.compile_json_schema(schema, tok)
    seen: dict[str, list[bytes]] = {}
    errors = []

    def work(order):
        try:
            for text in order:
                cur = shared.cursor()
                masks = []
                for t in shared.encode(text):
                    masks.append(cur.mask().tobytes())
                    assert cur.advance(t)
                assert cur.is_final()
                seen.setdefault(text, masks)
                assert seen[text] == masks
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(o,)) for o in (texts, texts[::-1])]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    default_cache().clear()
    fresh = structgen.compile_json_schema(schema, tok)
    assert fresh is not shared
    for text in texts:
        cur = fresh.cursor()
        for t, m in zip(fresh.encode(text), seen[text]):
            assert cur.mask().tobytes() == m
            cur.advance(t)


def test_fake_tokenizer_compiles_too():
    tok = toy_tokenizer()
    c = structgen.compile_choice(["yes", "no"], tok)
    assert c.vocab_size == tok.vocab_size
    assert set(c.cursor().allowed_token_ids().tolist()) == {ord("y"), ord("n"), *tok.encode("yes"),
                                                           *tok.encode("ye"), *tok.encode("no")}


@pytest.mark.parametrize("category", ["Github_easy", "Kubernetes", "Glaiveai2K"])
def test_jsonschemabench_sample_never_accepts_invalid(tok, shared_data, category):
    folder = shared_data / "jsonschemabench" / "dev" / category
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    checked = 0
    for path in sorted(folder.glob("*.json"))[:4]:
        case = json.loads(path.read_text())
        try:
            c = structgen.compile_json_schema(case["schema"], tok)
        except ConstraintError:
            continue
        validator = jsonschema.Draft202012Validator(case["schema"])
        for test in case["tests"]:
            text = json.dumps(test["data"])
            if c.accepts(text):
                assert validator.is_valid(test["data"]), (path.name, text)
                checked += 1
    assert checked > 0


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="ab1-", max_size=6))
def test_regex_hypothesis_agrees_with_re(s):
    c = structgen.compile_regex(r"a+b?(1|-)*", structgen.default_tokenizer())
    assert c.accepts(s) == bool(re.fullmatch(r"a+b?(1|-)*", s))


def _nested(levels: int) -> dict:
    schema: dict = {"type": "object"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.parametrize("text,where", [
    ('{"type": "string", "maxLength": 1e400}', "#/maxLength"),
    ('{"type": "object", "properties": {"age": {"type": "number", "minimum": 1e400}}}', "#/properties/age/minimum"),
    ('{"type": "number", "multipleOf": -1e400}', "#/multipleOf"),
    ('{"enum": [1, 1e400]}', "#/enum/1"),
])
def test_out_of_range_numbers_are_invalid_schemas_naming_where(tok, text, where):
    """json.loads reads 1e400 as inf: that is the user's schema, so InvalidSchemaError with the pointer (it escaped as
    TypeError / ValueError before, a traceback in the CLI and UNKNOWN on the wire)."""
    from structgen.fsm.json_schema import schema_automaton

    for schema in (text, json.loads(text)):
        # the compile API, and the automaton builder called alone (as `structgen extract` checks a schema)
        for compile_it in (lambda x: structgen.compile_json_schema(x, tok), schema_automaton):
            with pytest.raises(InvalidSchemaError, match="not a JSON number") as e:
                compile_it(schema)
            assert e.value.pointer == where


def test_too_deep_schemas_are_refused_up_front_and_deep_real_ones_compile(tok):
    limit_levels = MAX_SCHEMA_NESTING // 2 - 1     # two JSON levels per schema level (properties)
    c = structgen.compile_json_schema(_nested(limit_levels), tok)
    assert c.accepts(json.dumps(_instance(limit_levels), separators=(",", ":")))
    from structgen.fsm.json_schema import schema_automaton

    for schema in (_nested(400), json.dumps(_nested(400)), "[" * 100_000 + "]" * 100_000):
        for compile_it in (lambda x: structgen.compile_json_schema(x, tok), schema_automaton):
            with pytest.raises(InvalidSchemaError, match="nests deeper than"):
                compile_it(schema)


def _instance(levels: int):
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


@pytest.mark.parametrize("kind, value, error", [
    ("json_schema", '{"enum": ["\\ud800"]}', structgen.InvalidSchemaError),
    ("json_schema", {"const": "a\udfff"}, structgen.InvalidSchemaError),
    ("regex", "ab\ud800", structgen.InvalidRegexError),
    ("choice", ["ok", "x\udc00"], structgen.ConstraintError),
])
def test_lone_surrogates_are_refused_before_any_work(kind, value, error):
    from structgen.fsm import compile_constraint

    with pytest.raises(error, match="lone surrogate"):
        compile_constraint(kind, value)
