"""Mask keys: states of a counted string far from its bounds share one mask, and it is the mask a walk would build."""

import json
import random

import jsonschema
import numpy as np
import pytest

import structgen
from structgen.fsm import bitmask
from structgen.fsm.index import DEAD, TokenIndex
from structgen.fsm.json_schema import schema_automaton
from structgen.fsm.vocab import Vocabulary

SCHEMA = {"type": "object", "required": ["s", "p"],
          "properties": {"s": {"type": "string", "minLength": 3, "maxLength": 300},
                         "p": {"type": "string", "pattern": "^[a-z ]+$", "maxLength": 150}}}


class WithoutKeys:
    """The same automaton, minus mask_key: its index builds every state's mask by a walk."""

    def __init__(self, automaton):
        self._a = automaton

    def __getattr__(self, name):
        if name == "mask_key":
            raise AttributeError(name)
        return getattr(self._a, name)


@pytest.fixture(scope="module")
def tokenizer():
    return structgen.default_tokenizer()


@pytest.fixture(scope="module")
def vocab(tokenizer):
    return Vocabulary.from_tokenizer(tokenizer)


def masks_along(index, token_ids):
    out, s = [], index.initial
    for t in token_ids:
        out.append(index.mask(s))
        s = index.next_state(s, t)
        assert s != DEAD
    return out


def test_shared_masks_equal_walked_masks_to_the_last_character(tokenizer, vocab):
    rng = random.Random(3)
    text = json.dumps({"s": "".join(rng.choice('abc de-,.ü\\"\n') for _ in range(296)), "p": "ab cd " * 24})
    ids = tokenizer.encode(text)
    automaton = schema_automaton(SCHEMA, extra_properties=True)
    keyed = TokenIndex(automaton, vocab, max_states=200_000, timeout_s=60)
    plain = TokenIndex(WithoutKeys(automaton), vocab, max_states=200_000, timeout_s=60)
    got, expect = masks_along(keyed, ids), masks_along(plain, ids)
    assert len(got) == len(expect) == len(ids)
    for i, (a, b) in enumerate(zip(got, expect)):
        assert np.array_equal(a, b), (i, tokenizer.decode(ids[:i]))
    assert keyed._mask_arrays < plain._mask_arrays / 2  # the point of the keys: far fewer walks
    assert keyed.nbytes < plain.nbytes


def test_near_the_bound_long_tokens_are_masked_out(tokenizer, vocab):
    automaton = schema_automaton({"type": "string", "maxLength": 120}, extra_properties=True)
    index = TokenIndex(automaton, vocab, max_states=200_000, timeout_s=60)
    far = index.walk_bytes(index.initial, b'"' + b"a" * 10)
    near = index.walk_bytes(index.initial, b'"' + b"a" * 118)
    long_token = max((t for t, b in enumerate(vocab.token_bytes) if b and set(b) == {ord("-")}),
                     key=lambda t: len(vocab.token_bytes[t]))
    assert len(vocab.token_bytes[long_token]) > 3
    assert bitmask.is_allowed(index.mask(far), long_token)
    assert not bitmask.is_allowed(index.mask(near), long_token)


def test_random_walks_under_shared_masks_validate(tokenizer):
    compiled = structgen.compile_json_schema(SCHEMA, tokenizer)
    rng = random.Random(5)
    eos = set(compiled.eos_token_ids)
    for _ in range(3):
        cur, out = compiled.cursor(), []
        for _ in range(2000):
            allowed = bitmask.unpack(cur.mask()).tolist()
            if eos & set(allowed) and (rng.random() < 0.3 or len(allowed) == len(eos & set(allowed))):
                break
            # lean towards long tokens, so the walk crosses counts far and near the bounds
            steps = [t for t in allowed if t not in eos]
            tok = max(rng.sample(steps, min(4, len(steps))), key=lambda t: len(tokenizer.decode([t])))
            assert cur.advance(tok)
            out.append(tok)
        assert cur.is_final()
        jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(tokenizer.decode(out)))
