"""The native trie walker: the same masks and successor maps as the numpy walk, with the real tokenizer."""

import random

import numpy as np
import pytest

import structgen
from structgen.fsm import bitmask, native
from structgen.fsm.index import DEAD, TokenIndex
from structgen.fsm.json_schema import schema_automaton
from structgen.fsm.token_trie import trie_of
from structgen.fsm.vocab import Vocabulary

pytestmark = pytest.mark.skipif(native.library() is None, reason=f"native walker unavailable: "
                                                                  f"{native.unavailable_reason()}")

SCHEMAS = {
    "free string": {"type": "string"},
    "counted string": {"type": "string", "minLength": 2, "maxLength": 12},
    "pattern": {"type": "string", "pattern": r"^[A-Z]{2}-\d{3,5}(\.[a-z]+)?$"},
    "object": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                                 "age": {"type": "integer", "minimum": 0},
                                                 "tags": {"type": "array", "items": {"enum": ["a", "b c", "ü"]}}},
               "required": ["name"]},
}


@pytest.fixture(scope="module")
def vocab():
    return Vocabulary.from_tokenizer(structgen.default_tokenizer())


def index_pair(schema, vocab, monkeypatch):
    """Two fresh indices over one automaton (so their states compare equal): the first walks natively, the second
    with numpy."""
    automaton = schema_automaton(schema, extra_properties=True)

    def fresh():
        return TokenIndex(automaton, vocab, max_states=100_000, timeout_s=60)
    a = fresh()
    monkeypatch.setattr(native, "walker_for", lambda trie: None)
    b = fresh()
    b.mask(b.initial)  # numbered now, while the numpy walk is in force; the monkeypatch is undone below
    return a, b


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_masks_and_successors_match_the_numpy_walk(name, vocab, monkeypatch):
    real = native.walker_for
    rng = random.Random(7)
    for walk in range(4):
        monkeypatch.setattr(native, "walker_for", real)
        a, b = index_pair(SCHEMAS[name], vocab, monkeypatch)
        sa, sb = a.initial, b.initial
        for _ in range(25):
            monkeypatch.setattr(native, "walker_for", real)
            ma = a.mask(sa)
            ids_a, to_a = a.successors(sa)
            monkeypatch.setattr(native, "walker_for", lambda trie: None)
            mb = b.mask(sb)
            ids_b, to_b = b.successors(sb)
            assert np.array_equal(ma, mb), (name, walk)
            assert sorted(ids_a.tolist()) == sorted(ids_b.tolist())
            # state numbers differ between the two indices (built in another order): compare what they mean
            pairs_a = {t: a.automaton_state(int(s)) for t, s in zip(ids_a.tolist(), to_a.tolist())}
            pairs_b = {t: b.automaton_state(int(s)) for t, s in zip(ids_b.tolist(), to_b.tolist())}
            assert pairs_a == pairs_b
            steps = ids_a.tolist()
            if not steps:
                break
            tok = rng.choice(steps)
            sa, sb = a.next_state(sa, tok), b.next_state(sb, tok)
            assert sa != DEAD and sb != DEAD


def test_every_token_of_a_mask_walks_to_a_live_state(vocab):
    c = structgen.compile_json_schema(SCHEMAS["object"], structgen.default_tokenizer())
    cur = c.cursor()
    for tok in structgen.default_tokenizer().encode('{"name": "Ada Lovelace", "age": 3'):
        row = cur.mask()
        for t in bitmask.unpack(row).tolist()[:3000]:
            if t not in c.eos_token_ids:
                assert c.index.next_state(cur.state, t) != DEAD
        assert cur.advance(tok)


def test_loop_mask_is_exactly_the_tokens_made_of_loop_bytes(vocab):
    walker = native.walker_for(trie_of(vocab))
    loops = np.zeros(256, dtype=bool)
    loops[[*range(ord("a"), ord("z") + 1), ord(" ")]] = True
    row = walker._loop_mask(walker._loop_bits(loops), vocab.num_words)
    expect = [t for t, data in enumerate(vocab.token_bytes) if data and all(loops[b] for b in data)]
    assert bitmask.unpack(row).tolist() == expect
    assert len(expect) > 1000


def test_few_loop_bytes_take_the_full_walk(vocab):
    walker = native.walker_for(trie_of(vocab))
    loops = np.zeros(256, dtype=bool)
    loops[:native.TrieWalker.MIN_LOOP_BYTES - 1] = True
    assert walker._loop_bits(loops) is None


def test_switched_off_the_index_walks_with_numpy(vocab, monkeypatch):
    on = TokenIndex(schema_automaton(SCHEMAS["pattern"]), vocab, max_states=10_000, timeout_s=60)
    expect = on.mask(on.initial)
    monkeypatch.setenv("STRUCTGEN_NATIVE_MASKS", "0")
    native._LIBRARY.reset()
    try:
        assert native.library() is None and native.walker_for(trie_of(vocab)) is None
        assert "STRUCTGEN_NATIVE_MASKS=0" in native.unavailable_reason()
        off = TokenIndex(schema_automaton(SCHEMAS["pattern"]), vocab, max_states=10_000, timeout_s=60)
        assert np.array_equal(off.mask(off.initial), expect)
    finally:
        monkeypatch.undo()
        native._LIBRARY.reset()  # the next test loads the real library again
    assert native.library() is not None
