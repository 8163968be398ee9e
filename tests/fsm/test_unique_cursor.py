"""uniqueItems, enforced at run time by the cursor (structgen/fsm/unique_cursor.py) with the real default tokenizer:
random token walks end in arrays jsonschema accepts (no two equal items, every item type, 1 == 1.0 and escapes
compared by value), a duplicate can never be closed, and token walks of given texts are accepted exactly when
jsonschema accepts them."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

import structgen

SCHEMAS = {
    "emails": {"type": "array", "items": {"type": "string", "format": "email"}, "uniqueItems": True, "maxItems": 6},
    "small_ints": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 3}, "uniqueItems": True},
    "numbers": {"type": "array", "items": {"type": "number"}, "uniqueItems": True, "maxItems": 5},
    "attendees": {"type": "object", "required": ["attendees"], "properties": {"attendees": {
        "type": "array", "uniqueItems": True, "minItems": 1, "items": {
            "type": "object", "required": ["name"], "properties": {"name": {"type": "string", "maxLength": 12},
                                                                   "role": {"enum": ["host", "guest"]}}}}}},
    "enum_items": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "uniqueItems": True},
}


def valid(schema, value) -> bool:
    v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return v.is_valid(value)


@pytest.fixture(scope="module")
def compiled():
    return {name: structgen.compile_json_schema(s) for name, s in SCHEMAS.items()}


def token_walk(c, rng: random.Random, max_tokens: int = 60) -> str:
    """Random allowed tokens until final (or the step limit, then the shortest way out the budget bound offers)."""
    cur = c.cursor()
    eos = set(c.eos_token_ids)
    out: list[int] = []
    for step in range(max_tokens * 2):
        ids = [t for t in cur.allowed_token_ids().tolist() if t not in eos]
        if cur.is_final() and (not ids or rng.random() < 0.3 or step >= max_tokens):
            break
        assert ids, "a non-final state with no allowed token"
        if step >= max_tokens:  # head for the end: the token that lowers the bound most
            best = min(ids[:2000], key=lambda t: _after(cur, t))
            t = best
        else:
            t = rng.choice(ids)
        assert cur.advance(t)
        out.append(t)
    assert cur.is_final()
    return c.tokenizer.decode(out)


def _after(cur, t) -> int:
    other = cur.copy()
    assert other.advance(t)
    return other.min_tokens_to_finish()


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_random_token_walks_validate(compiled, name):
    rng = random.Random(7)
    for _ in range(8):
        text = token_walk(compiled[name], rng)
        value = json.loads(text)
        assert valid(SCHEMAS[name], value), (name, text)


def walk_text(c, text: str) -> bool:
    cur = c.cursor()
    for t in c.tokenizer.encode(text):
        if not cur.advance(t):
            return False
    return cur.is_final()


@pytest.mark.parametrize("name, text", [
    ("emails", '["a@x.io", "b@x.io"]'),
    ("emails", '["a@x.io", "a@x.io"]'),
    ("emails", '["a@x.io","b@x.io","a@x.io"]'),
    ("small_ints", "[0, 1, 2, 3]"),
    ("small_ints", "[3, 1, 3]"),
    ("numbers", "[1, 1.0]"),
    ("numbers", "[1, 1.5, 10]"),
    ("numbers", "[2.50, 2.5]"),
    ("attendees", '{"attendees": [{"name": "Ann"}, {"name": "Bo"}]}'),
    ("attendees", '{"attendees": [{"name": "Ann"}, {"name": "Ann"}]}'),
    ("attendees", '{"attendees": [{"name": "Ann", "role": "host"}, {"name": "Ann"}]}'),
    ("enum_items", '["a", "b", "c"]'),
    ("enum_items", '["a", "b", "a"]'),
])
def test_texts_accepted_exactly_when_jsonschema_accepts(compiled, name, text):
    assert walk_text(compiled[name], text) == valid(SCHEMAS[name], json.loads(text)), text


def test_a_duplicate_cannot_be_closed(compiled):
    """After `["a@x.io", "a@x.io` the closing quote is masked out, and so is every token that would close the item."""
    c = compiled["emails"]
    cur = c.cursor()
    for t in c.tokenizer.encode('["a@x.io", "a@x.io'):
        assert cur.advance(t)
    allowed = set(cur.allowed_token_ids().tolist())
    closing = [t for t in range(c.tokenizer.vocab_size) if c.tokenizer.decode([t]).startswith('"')]
    assert closing and not (allowed & set(closing))
    assert allowed  # the item can still become another address
