"""structgen/fsm/json_schema/numbers.py and float_multiples.py: any positive `multipleOf` (0.01, 0.5, 1e-8, 1e308),
exactly. A number is accepted iff our number language writes it (at most 15 significant digits, no exponent
once constrained), it is an exact decimal multiple, and jsonschema's own float test passes (0.07 fails for
multipleOf 0.01: 0.07 / 0.01 == 7.000000000000001)."""

from __future__ import annotations

import json
import math
import random
import re
import time
from decimal import Decimal
from fractions import Fraction

import jsonschema
import pytest
from automaton_helpers import accepts, data_dir, number_schema, random_walk, shortest_completion
from hypothesis import given, settings
from hypothesis import strategies as st

from structgen.errors import InvalidSchemaError, UnsupportedSchemaError
from structgen.fsm.json_schema import schema_automaton
from structgen.fsm.json_schema.float_multiples import FloatDivisorCheck

FRACTIONAL = [0.01, 0.07, 0.1, 0.3, 0.0001, 1e-8, 1e-5, 0.05, 0.123456789, 1.1, 7.77, 0.33, 2.2, 1e-13, 123.456]
BINARY = [0.5, 0.25, 1.5, 0.125, 3.0]
DIVISORS = st.one_of(st.sampled_from(FRACTIONAL + BINARY + [7, 1e308]),
                     st.builds(lambda mant, exp: float(f"{mant}e{exp}"), st.integers(1, 999), st.integers(-9, 2)))
BOUNDS = st.one_of(st.none(), st.integers(-1000, 1000), st.decimals(-50, 50, places=3).map(float))


def valid(schema, value) -> bool:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER) \
        .is_valid(value)


_WRITABLE = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")


def writable(text: str, integer: bool) -> bool:
    """Whether the text is one a constrained number of ours writes: no exponent, at most 15 digits (counted
    after "0." for a number below one), no dot for an integer."""
    m = _WRITABLE.fullmatch(text)
    if m is None or (integer and m.group(2)):
        return False
    ip, fp = m.group(1), (m.group(2) or ".")[1:]
    return (len(fp) if ip == "0" else len(ip) + len(fp)) <= 15


def exact_multiple(text: str, divisor) -> bool:
    value = Fraction(text)
    return (value / Fraction(repr(divisor) if isinstance(divisor, float) else divisor)).denominator == 1


def decimal_text(value: Fraction) -> str:
    """The plain decimal spelling of a decimal fraction (no exponent)."""
    text = format(Decimal(value.numerator) / Decimal(value.denominator), "f") if value.denominator != 1 \
        else str(value.numerator)
    return text.rstrip("0").rstrip(".") if "." in text else text


def compile_or_none(schema):
    try:
        return schema_automaton(schema)
    except InvalidSchemaError as e:
        assert "admits no value" in str(e), (schema, e)
        return None


# ------------------------------------------------------------------------------- jsonschema's float test, counted
@settings(max_examples=150, deadline=None, derandomize=True)
@given(divisor=st.sampled_from(FRACTIONAL + [1e308, 0.9, 1e-290]), frac_digits=st.integers(0, 15),
       magnitude=st.floats(-15, 14.5), size=st.sampled_from([1, 3, 40, 400, 1500]), near_two=st.booleans())
def test_float_check_counts_equal_a_brute_force_scan(divisor, frac_digits, magnitude, size, near_two):
    """count_passes (floor sums per binade region) == testing every candidate one by one, over grids that cross
    binades of the value and of the quotient (where the doubles' spacing changes)."""
    check = FloatDivisorCheck(divisor)
    step = Fraction(1, 10 ** frac_digits)
    unit = Fraction(math.lcm(step.numerator * check.decimal.denominator, check.decimal.numerator * step.denominator),
                    step.denominator * check.decimal.denominator)
    start = math.ceil(Fraction(10 ** magnitude) / unit)
    if near_two:  # the quotient k = v / m crossing a power of two
        j = (unit / check.decimal).numerator
        start = max(0, (1 << max(0, (start * j).bit_length())) // j - size // 2)
    limit = math.floor(Fraction(10 ** 15) / unit)  # past it no number of ours has the magnitude
    start = min(start, max(0, limit - size + 1))
    last = min(start + size - 1, limit)
    brute = sum(check.passes(n * unit) for n in range(start, last + 1))
    assert check.count_passes(unit, start, last) == brute
    assert check.any_passes(unit, start, last) == (brute > 0)


def test_float_check_agrees_with_jsonschema():
    for divisor in FRACTIONAL:
        check = FloatDivisorCheck(divisor)
        for k in range(1, 300):
            text = decimal_text(k * check.decimal)
            assert check.passes(Fraction(text)) == valid({"multipleOf": divisor}, json.loads(text)), (divisor, text)


# ------------------------------------------------------------------------------------------------- fixed cases
def test_money():
    schema = {"type": "number", "multipleOf": 0.01, "minimum": 0}
    a = schema_automaton(schema)
    for text in ["0", "0.01", "19.99", "1234567.89", "0.10", "100", "0.07", "0.001", "1.234", "-1", "0.29"]:
        expected = exact_multiple(text, 0.01) and valid(schema, json.loads(text))
        assert accepts(a, text) == expected, text
    assert not accepts(a, "0.07") and not valid(schema, 0.07)  # 0.07 / 0.01 == 7.000000000000001
    assert accepts(a, "12.34") and not accepts(a, "19.99")  # 19.99 / 0.01 == 1998.9999999999998
    cents = [decimal_text(Fraction(k, 100)) for k in range(2000)]
    assert [t for t in cents if accepts(a, t)] == [t for t in cents if valid(schema, json.loads(t))]


def test_integers_with_a_fractional_multiple_of():
    a = schema_automaton({"type": "integer", "multipleOf": 0.5})
    assert all(accepts(a, str(i)) for i in range(-50, 50)) and not accepts(a, "1.5")
    schema = {"type": "integer", "multipleOf": 0.07, "minimum": -400, "maximum": 400}
    a = schema_automaton(schema)
    for i in range(-410, 410):
        assert accepts(a, str(i)) == (i % 7 == 0 and -400 <= i <= 400 and valid(schema, i)), i
    check_walks({"type": "integer", "multipleOf": 0.07})


def test_exclusive_bounds_and_negative_numbers():
    schema = {"type": "number", "multipleOf": 0.1, "exclusiveMinimum": -0.3, "exclusiveMaximum": 0.3}
    a = schema_automaton(schema)
    texts = [decimal_text(Fraction(k, 100)) for k in range(-40, 41)]
    got = [t for t in texts if accepts(a, t)]
    assert got == [t for t in texts if exact_multiple(t, 0.1) and valid(schema, json.loads(t))]
    assert "-0.2" in got and "0.2" in got and "0.3" not in got and "-0.3" not in got


def test_tiny_and_huge_multiple_of():
    a = schema_automaton({"type": "number", "multipleOf": 1e308})
    assert accepts(a, "0") and accepts(a, "-0.0") and not accepts(a, "1") and not accepts(a, "1e308")
    schema = {"type": "number", "multipleOf": 1e-8, "minimum": 0, "maximum": 1}
    a = schema_automaton(schema)
    for text in ["0.00000001", "0.12345678", "0.00000007", "0.5", "1", "0.123456789", "0.000000001"]:
        assert accepts(a, text) == (exact_multiple(text, 1e-8) and valid(schema, json.loads(text))), text
    assert not accepts(a, "0.123456789")
    check_walks({"type": "number", "multipleOf": 1e-8, "minimum": -1, "maximum": 1})
    check_walks({"type": "number", "multipleOf": 0.0001})
    with pytest.raises(UnsupportedSchemaError) as e:  # jsonschema's quotient of a 15-digit number overflows
        schema_automaton({"type": "number", "multipleOf": 1e-300})
    assert e.value.keyword == "multipleOf"


def test_a_range_whose_only_multiples_fail_jsonschema_is_unsatisfiable():
    assert not valid({"multipleOf": 0.01}, 0.07)
    with pytest.raises(InvalidSchemaError, match="admits no value"):
        schema_automaton({"type": "number", "multipleOf": 0.01, "minimum": 0.07, "maximum": 0.075})


def test_all_of_two_multiple_of():
    schema = {"allOf": [{"type": "number", "multipleOf": 0.01}, {"multipleOf": 0.25}]}
    a = schema_automaton(schema)
    for text in ["0.25", "0.5", "1.75", "0.1", "0.05", "3", "0.2"]:
        assert accepts(a, text) == (exact_multiple(text, 0.25) and valid(schema, json.loads(text))), text
    schema = {"allOf": [{"type": "number", "multipleOf": 0.5}, {"multipleOf": 0.3}]}
    a = schema_automaton(schema)
    texts = [decimal_text(Fraction(k, 10)) for k in range(0, 200)]
    got = [t for t in texts if accepts(a, t)]
    assert got == [t for t in texts if exact_multiple(t, 1.5) and valid(schema, json.loads(t))] and len(got) > 5
    a = schema_automaton({"allOf": [{"type": "integer", "multipleOf": 4}, {"multipleOf": 6}]})
    assert [i for i in range(30) if accepts(a, str(i))] == [0, 12, 24]
    with pytest.raises(UnsupportedSchemaError) as e:  # two float tests at once are not counted exactly
        schema_automaton({"allOf": [{"type": "number", "multipleOf": 0.01}, {"multipleOf": 0.07}]})
    assert e.value.keyword == "multipleOf"


@pytest.mark.skipif(not (data_dir() / "json-schema-test-suite").is_dir(), reason="JSON-Schema-Test-Suite not found "
                    "under ../shared/data (set STRUCTGEN_DATA_DIR)")
def test_official_suite_multiple_of_groups_all_pass():
    path = data_dir() / "json-schema-test-suite" / "draft2020-12" / "multipleOf.json"
    for group in json.loads(path.read_text()):
        a = schema_automaton(group["schema"], extra_properties=True)
        for case in group["tests"]:
            assert accepts(a, json.dumps(case["data"])) == case["valid"], (group["description"], case["description"])


# ---------------------------------------------------------------------------------------------- property tests
def check_walks(schema, n=30, seed=0):
    """Random walks end in numbers jsonschema accepts; along the way the closed-form distance is the real one."""
    a = schema_automaton(schema)
    rng = random.Random(seed)
    for _ in range(n):
        text = random_walk(a, rng, max_bytes=30).decode()
        assert valid(schema, json.loads(text)), (schema, text)
    return a


@settings(max_examples=30, deadline=None, derandomize=True)
@given(integer=st.booleans(), lo=BOUNDS, hi=BOUNDS, lo_x=st.booleans(), hi_x=st.booleans(), divisor=DIVISORS,
       seed=st.integers(0, 999))
def test_random_walks_give_numbers_jsonschema_accepts(integer, lo, hi, lo_x, hi_x, divisor, seed):
    schema = number_schema(integer, lo, hi, lo_x, hi_x)
    schema["multipleOf"] = divisor
    try:
        a = schema_automaton(schema)
    except InvalidSchemaError as e:
        # refused as empty: then no multiple in the range passes jsonschema (checked on up to 2000 of them)
        assert "admits no value" in str(e)
        m = Fraction(repr(divisor)) if isinstance(divisor, float) else Fraction(divisor)
        if integer:
            m = Fraction(m.numerator)  # lcm(p/q, 1) == p for p/q in lowest terms
        first = math.ceil(Fraction(repr(lo) if lo is not None else -10 ** 15) / m)
        last = math.floor(Fraction(repr(hi) if hi is not None else 10 ** 15) / m)
        for n in range(first, min(last, first + 2000) + 1):
            text = decimal_text(n * m)
            if writable(text, integer):
                assert not valid(schema, json.loads(text)), (schema, text)
        return
    except UnsupportedSchemaError as e:
        assert e.keyword == "multipleOf" and isinstance(divisor, float) and divisor < 1e-290
        return
    rng = random.Random(seed)
    for _ in range(8):
        state, text = a.initial(), b""
        out = random_walk(a, rng, max_bytes=24)
        assert valid(schema, json.loads(out)), (schema, out)
        for b in out[:6]:  # the closed-form distance is the byte-level shortest completion's length
            assert a.min_bytes_to_final(state) == len(shortest_completion(a, state)), (schema, text)
            state = a.transitions(state)[b]
            text += bytes([b])


def _texts_near_multiples(rng: random.Random, divisor, integer: bool) -> list[str]:
    """Multiples (plain and with trailing zeros, signed), near misses, float products' repr (0.1 * 3 ->
    0.30000000000000004), and integers."""
    m = Fraction(repr(divisor)) if isinstance(divisor, float) else Fraction(divisor)
    texts = []
    for _ in range(40):
        k = rng.choice([rng.randint(0, 20), rng.randint(0, 10 ** rng.randint(1, 15))])
        exact = decimal_text(k * m)
        sign = rng.choice(["", "-"])
        texts.append(sign + exact)
        if "." in exact:
            texts.append(sign + exact + "0" * rng.randint(1, 3))
        tweak = Fraction(rng.choice([1, -1]), 10 ** rng.randint(1, 15))
        texts.append(decimal_text(abs(k * m + tweak)))
        product = k * float(divisor)
        if math.isfinite(product):
            texts.append(repr(product))
        texts.append(str(rng.randint(-10 ** 6, 10 ** 6)))
    return texts


@settings(max_examples=60, deadline=None, derandomize=True)
@given(divisor=DIVISORS, integer=st.booleans(), lo=BOUNDS, hi=BOUNDS, seed=st.integers(0, 999))
def test_accepted_iff_an_exact_multiple_that_jsonschema_accepts(divisor, integer, lo, hi, seed):
    """Differential: over texts our number language writes, accepted == (exact decimal multiple and jsonschema
    accepts). jsonschema alone also accepts some non-multiples (a quotient past 2**53 rounds to an integer:
    270000000000001 for 0.03), which we refuse: they fail for an exact validator."""
    schema = number_schema(integer, lo, hi, False, False)
    schema["multipleOf"] = divisor
    try:
        a = schema_automaton(schema)
    except (InvalidSchemaError, UnsupportedSchemaError):
        return  # refusals are checked by the walk test
    for text in _texts_near_multiples(random.Random(seed), divisor, integer):
        ok = accepts(a, text)
        value = json.loads(text)
        if ok:
            assert valid(schema, value), (schema, text)
        if writable(text, integer):
            assert ok == (exact_multiple(text, divisor) and valid(schema, value)), (schema, text)
        else:
            assert not ok, (schema, text)


def test_jsonschema_accepts_a_non_multiple_that_we_refuse():
    assert valid({"multipleOf": 0.03}, 270000000000001)  # 270000000000001 / 0.03 rounds to an integral double
    assert not accepts(schema_automaton({"type": "integer", "multipleOf": 0.03}), "270000000000001")


def test_first_states_are_quick():
    """Building the first states of fractional multipleOf numbers stays in the milliseconds."""
    for schema in [{"type": "number", "multipleOf": 0.01}, {"type": "integer", "multipleOf": 0.07},
                   {"type": "number", "multipleOf": 1e-8, "minimum": -5, "maximum": 5e6},
                   {"type": "number", "multipleOf": 0.1, "exclusiveMinimum": -5, "exclusiveMaximum": 5}]:
        t = time.perf_counter()
        a = schema_automaton(schema)
        seen, todo = {a.initial()}, [a.initial()]
        while todo and len(seen) < 60:
            s = todo.pop(0)
            a.min_bytes_to_final(s)
            for nxt in a.transitions(s).values():
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert time.perf_counter() - t < 2.0, schema
