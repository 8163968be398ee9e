"""The lazy token index: masks equal a brute-force walk of every token through the automaton."""

import random
import threading
import time

import numpy as np
import pytest

import structgen
from structgen.errors import ConstraintTooComplexError
from structgen.fsm import bitmask
from structgen.fsm.automaton import LiteralSetAutomaton
from structgen.fsm.index import DEAD, TokenIndex
from structgen.fsm.vocab import Vocabulary
from token_fakes import (CountingAutomaton, DigitsAutomaton, SlowAutomaton, TableAutomaton, reference_allowed,
                         regex_like, toy_tokenizer)


def make_index(automaton, tok=None, max_states=10_000, timeout_s=30.0) -> TokenIndex:
    vocab = Vocabulary.from_tokenizer(tok or toy_tokenizer())
    return TokenIndex(automaton, vocab, max_states=max_states, timeout_s=timeout_s)


AUTOMATA = {
    "choice": LiteralSetAutomaton([b"yes", b"no", b"abc", b"ab", "Zürich".encode()]),
    "digits": DigitsAutomaton(),
    "trie": regex_like({b"aaaa": True, b"aab": False, b"aabba": True, b'{"": 1}': True}),
}


@pytest.mark.parametrize("name", sorted(AUTOMATA))
def test_masks_match_brute_force_along_random_walks(name):
    auto = AUTOMATA[name]
    index = make_index(auto)
    rng = random.Random(0)
    for _ in range(10):
        sid, state = index.initial, auto.initial()
        for _ in range(12):
            allowed = bitmask.unpack(index.mask(sid)).tolist()
            assert set(allowed) == reference_allowed(auto, state, index.vocab)
            assert index.is_final(sid) == auto.is_final(state)
            steps = [t for t in allowed if t not in index.vocab.eos_token_ids]
            if not steps:
                break
            tok = rng.choice(steps)
            sid = index.next_state(sid, tok)
            assert sid != DEAD
            for b in index.vocab.token_bytes[tok]:
                state = auto.transitions(state)[b]


def test_next_state_agrees_with_mask_for_every_token():
    index = make_index(AUTOMATA["choice"])
    row = index.mask(index.initial)
    eos = set(index.vocab.eos_token_ids.tolist())
    for t in range(index.vocab.vocab_size):
        if t in eos:
            continue
        assert (index.next_state(index.initial, t) != DEAD) == bitmask.is_allowed(row, t), t
    assert index.next_state(index.initial, -1) == DEAD
    assert index.next_state(index.initial, 10**6) == DEAD


def test_tokens_holding_part_of_a_utf8_character_walk_through():
    tok = toy_tokenizer()
    index = make_index(LiteralSetAutomaton(["Zürich".encode()]), tok)
    ids = tok.encode("Zürich")
    assert [tok.token_bytes()[i] for i in ids] == [b"Z\xc3", b"\xbcr", b"ich"[:1], b"c", b"h"]
    s = index.initial
    for t in ids:
        assert bitmask.is_allowed(index.mask(s), t)
        s = index.next_state(s, t)
        assert s != DEAD
    assert index.is_final(s) and index.is_terminated(s)
    # the half-character token is allowed only where its bytes fit
    half = tok.token_bytes().index(b"\xbcr")
    assert not bitmask.is_allowed(index.mask(index.initial), half)
    assert bitmask.is_allowed(index.mask(index.walk_bytes(index.initial, b"Z\xc3")), half)


def test_eos_only_in_final_states_and_specials_never():
    tok = toy_tokenizer()
    index = make_index(DigitsAutomaton(), tok)
    assert not bitmask.is_allowed(index.mask(index.initial), tok.eos_token_id)
    s = index.next_state(index.initial, tok.encode("12")[0])
    assert bitmask.is_allowed(index.mask(s), tok.eos_token_id)
    for sid in (index.initial, s):
        assert not bitmask.is_allowed(index.mask(sid), tok.pad_token_id)


def test_real_tokenizer_digits_mask_matches_brute_force():
    tok = structgen.default_tokenizer()
    auto = DigitsAutomaton()
    index = make_index(auto, tok)
    ref = reference_allowed(auto, auto.initial(), index.vocab)
    assert set(bitmask.unpack(index.mask(index.initial)).tolist()) == ref
    assert all(tok.decode([t]).isdigit() for t in ref)


def test_forced_run_follows_single_bytes_to_a_choice_point():
    auto = LiteralSetAutomaton([b"hello world", b"hello there"])
    index = make_index(auto)
    data, end = index.forced_run(index.initial)
    assert data == b"hello "
    assert index.forced_run(end)[0] == b""
    w = index.walk_bytes(end, b"w")
    assert index.forced_run(w) == (b"orld", index.walk_bytes(index.initial, b"hello world"))


def test_state_limit_raises_too_complex():
    tok = toy_tokenizer()
    index = make_index(CountingAutomaton(), tok, max_states=20)
    s = index.initial
    with pytest.raises(ConstraintTooComplexError, match="STRUCTGEN_MAX_STATES"):
        for _ in range(40):
            s = index.next_state(s, tok.encode("a")[0])
            index.mask(s)


def test_time_limit_raises_too_complex():
    tok = toy_tokenizer()
    # `aaa` tokens need 3 fresh states each: with 0.1 s per state a 0.15 s budget runs out
    index = make_index(SlowAutomaton(0.1), tok, timeout_s=0.15)
    with pytest.raises(ConstraintTooComplexError, match="STRUCTGEN_EXPAND_TIMEOUT_S"):
        index.mask(index.initial)
    # the index stays usable: the states finished before the limit are intact
    assert index.num_states >= 1


def test_bad_limits_are_value_errors():
    with pytest.raises(ValueError):
        make_index(DigitsAutomaton(), max_states=0)
    with pytest.raises(ValueError):
        make_index(DigitsAutomaton(), timeout_s=0)
    with pytest.raises(ValueError):
        TokenIndex(DigitsAutomaton(), Vocabulary.from_tokenizer(toy_tokenizer()), max_states=10, timeout_s=1.0,
                   max_table_bytes=0)


def _index_with_bytes(automaton, max_table_bytes: int) -> TokenIndex:
    return TokenIndex(automaton, Vocabulary.from_tokenizer(toy_tokenizer()), max_states=1_000_000, timeout_s=30.0,
                      max_table_bytes=max_table_bytes)


def test_table_bytes_limit_raises_too_complex_and_keeps_what_was_built():
    tok = toy_tokenizer()
    index = _index_with_bytes(CountingAutomaton(), 300 * 1024)  # ~290 table rows
    a = tok.encode("a")[0]
    s, reached = index.initial, []
    with pytest.raises(ConstraintTooComplexError, match="bytes of the constraint's token tables.*STRUCTGEN_MAX_TABLE_MB"):
        for _ in range(1000):
            s = index.next_state(s, a)
            reached.append(s)
    assert 200 < len(reached) < 300 and index.nbytes <= 300 * 1024
    assert index.next_state(index.initial, a) == reached[0]  # the index stays usable


def test_table_bytes_limit_counts_masks():
    tok = toy_tokenizer()
    index = _index_with_bytes(CountingAutomaton(), 200 * 1024)
    a = tok.encode("a")[0]
    with pytest.raises(ConstraintTooComplexError, match="masks"):
        s = index.initial
        for _ in range(150):  # 150 states fit the table; their masks do not
            index.mask(s)
            s = index.next_state(s, a)
    assert index.nbytes <= 200 * 1024


def test_a_long_expansion_inside_the_automaton_stops_at_the_time_limit():
    from structgen.fsm.budget import TokenBounds
    from structgen.fsm.json_schema.compiler import Compiler
    from structgen.fsm.json_schema.matcher import SchemaAutomaton

    # Without its closed form, the shortest completion of an integer >= 1e8 is a search over every viable prefix
    # shorter than 9 digits: one call into the automaton that runs ~85 s. The index's deadline reaches inside it.
    root = Compiler({"type": "integer", "minimum": 10**8}, extra_properties=False, whitespace="compact",
                    max_recursion_depth=3).compile()
    index = make_index(SchemaAutomaton(root, max_states=10**6, closed_forms=False), timeout_s=0.3)
    t = time.monotonic()
    with pytest.raises(ConstraintTooComplexError, match="STRUCTGEN_EXPAND_TIMEOUT_S"):
        TokenBounds(index).bound(index.initial)
    assert time.monotonic() - t < 3.0


def test_a_state_with_many_configurations_checks_the_deadline_while_it_expands():
    from structgen.fsm.json_schema import schema_automaton

    a = schema_automaton({"anyOf": [{"type": "object", "properties": {f"k{i}": {"type": "string"}},
                                     "required": [f"k{i}"]} for i in range(1000)]})
    state = a.transitions(a.initial())[ord("{")]
    calls = []
    a.bind_deadline(lambda: calls.append(1))
    a.transitions(state)  # one state, 1000 configurations
    assert len(calls) >= 10
    a.bind_deadline(None)


def test_two_threads_building_masks_agree_with_one_thread():
    tok = structgen.default_tokenizer()
    auto = regex_like({("x" * 6).encode() + bytes([c]): True for c in range(ord("a"), ord("z"))})
    shared = make_index(auto, tok)
    prefixes = ["x" * k for k in range(1, 7)] + ["x" * 6 + "q"]
    results: dict[int, list] = {0: [], 1: []}

    def work(n):
        for text in (prefixes if n == 0 else reversed(prefixes)):
            s = shared.initial
            for t in tok.encode(text):
                s = shared.next_state(s, t)
            results[n].append((text, shared.mask(s).tobytes()))

    threads = [threading.Thread(target=work, args=(n,)) for n in (0, 1)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    fresh = make_index(auto, tok)
    for n in (0, 1):
        assert len(results[n]) == len(prefixes)
        for text, mask in results[n]:
            assert mask == fresh.mask(fresh.walk_bytes(fresh.initial, text.encode())).tobytes()


def test_snapshot_restore_keeps_masks_and_grows_on():
    tok = toy_tokenizer()
    auto = AUTOMATA["trie"]
    index = make_index(auto, tok)
    s = index.next_state(index.initial, tok.encode("aa")[0])
    m = index.mask(s).copy()
    restored = TokenIndex.restore(index.snapshot(), index.vocab, max_states=100, timeout_s=5)
    assert restored.num_states == index.num_states and restored.num_masks == index.num_masks
    assert np.array_equal(restored.mask(s), m)
    s2 = restored.next_state(s, tok.encode("b")[0])
    assert s2 != DEAD and np.array_equal(restored.mask(s2), index.mask(index.next_state(s, tok.encode("b")[0])))
    other = Vocabulary.from_tokenizer(structgen.default_tokenizer())
    with pytest.raises(ValueError):
        TokenIndex.restore(index.snapshot(), other, max_states=100, timeout_s=5)


def test_masks_are_read_only():
    index = make_index(DigitsAutomaton())
    with pytest.raises(ValueError):
        index.mask(index.initial)[0] = 0


def test_is_terminated_only_when_nothing_follows():
    tok = toy_tokenizer()
    index = make_index(LiteralSetAutomaton([b"ab", b"abc"]), tok)
    ab = index.walk_bytes(index.initial, b"ab")
    abc = index.walk_bytes(index.initial, b"abc")
    assert index.is_final(ab) and not index.is_terminated(ab)
    assert index.is_terminated(abc)
    assert index.walk_bytes(index.initial, b"abd") == DEAD
    assert TableAutomaton({}, {0}).transitions(0) == {}
