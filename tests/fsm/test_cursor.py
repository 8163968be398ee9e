"""The per-request cursor: advance, EOS, rollback, masks into numpy/torch rows, forced tokens."""

import numpy as np
import pytest
import torch

from structgen.fsm import bitmask
from structgen.fsm.api import CompiledConstraint
from structgen.fsm.automaton import LiteralSetAutomaton
from structgen.fsm.index import TokenIndex
from structgen.fsm.vocab import Vocabulary
from token_fakes import DigitsAutomaton, FakeTokenizer, toy_tokenizer


def compiled(automaton, tok=None) -> CompiledConstraint:
    tok = tok or toy_tokenizer()
    index = TokenIndex(automaton, Vocabulary.from_tokenizer(tok), max_states=1000, timeout_s=10)
    return CompiledConstraint("test", "k" * 64, index, tok)


def test_advance_accepts_allowed_and_refuses_the_rest():
    tok = toy_tokenizer()
    c = compiled(LiteralSetAutomaton([b"yes", b"no"]), tok)
    cur = c.cursor()
    before = cur.state
    assert not cur.advance(tok.encode("x")[0])
    assert cur.state == before and cur.num_advanced == 0
    assert cur.advance(tok.encode("ye")[0])
    assert not cur.is_final()
    assert cur.allowed_token_ids().tolist() == [ord("s")]
    assert cur.advance(ord("s")) and cur.is_final()


def test_eos_only_in_final_states_then_nothing():
    tok = toy_tokenizer()
    c = compiled(DigitsAutomaton(), tok)
    cur = c.cursor()
    assert not cur.is_allowed(tok.eos_token_id) and not cur.advance(tok.eos_token_id)
    assert cur.advance(tok.encode("1")[0])
    assert cur.is_allowed(tok.eos_token_id)
    assert tok.eos_token_id in cur.allowed_token_ids()
    assert not cur.is_terminated()  # more digits may follow
    assert cur.advance(tok.eos_token_id)
    assert cur.is_final() and cur.is_terminated()
    assert cur.allowed_token_ids().size == 0 and cur.forced_tokens() == []
    assert not cur.advance(tok.encode("2")[0])
    cur.rollback(1)
    assert cur.advance(tok.encode("2")[0])


def test_special_tokens_never_allowed():
    tok = toy_tokenizer()
    cur = compiled(DigitsAutomaton(), tok).cursor()
    cur.advance(tok.encode("1")[0])
    assert not cur.advance(tok.pad_token_id) and not cur.is_allowed(tok.pad_token_id)


def test_rollback_restores_earlier_states():
    tok = toy_tokenizer()
    c = compiled(LiteralSetAutomaton([b"abcab", b"abd"]), tok)
    cur = c.cursor()
    states = [cur.state]
    for t in tok.encode("abca"):
        assert cur.advance(t)
        states.append(cur.state)
    masks = [c.cursor().mask()]
    cur.rollback(2)
    assert cur.state == states[-3] and cur.num_advanced == len(states) - 3
    cur.rollback(0)
    assert cur.state == states[-3]
    cur.rollback(cur.num_advanced)
    assert cur.state == states[0] and np.array_equal(cur.mask(), masks[0])
    with pytest.raises(ValueError):
        cur.rollback(1)
    with pytest.raises(ValueError):
        cur.rollback(-1)


def test_fill_bitmask_bits_match_allowed_ids_in_numpy_and_torch():
    tok = toy_tokenizer()
    c = compiled(LiteralSetAutomaton([b"abc", b"ab", b"b", "Zürich".encode()]), tok)
    cur = c.cursor()
    ids = cur.allowed_token_ids()
    assert np.all(np.diff(ids) > 0)
    rows = bitmask.allocate(2, c.vocab_size)
    cur.fill_bitmask(rows[1])
    assert not rows[0].any()
    on = [i for i in range(c.vocab_size) if (int(rows[1][i // 32]) >> (i % 32)) & 1]
    assert on == ids.tolist()
    t = torch.full((3, c.num_words), -1, dtype=torch.int32)
    cur.fill_bitmask(t[2])
    assert t[2].tolist() == rows[1].tolist() and t[0].eq(-1).all()
    with pytest.raises(ValueError):
        cur.fill_bitmask(np.zeros(c.num_words + 1, dtype=np.int32))


def test_forced_tokens_stop_before_a_choice_point():
    tok = FakeTokenizer(["he", "llo", " ", "w", "orld", "there", "h", "e", "l", "o", "r", "d", "t"])
    c = compiled(LiteralSetAutomaton([b"hello world", b"hello there"]), tok)
    cur = c.cursor()
    forced = cur.forced_tokens()
    # "hello " is forced, canonically ["he", "llo", " "]; the last token is held back (it could merge)
    assert forced == tok.encode("hello")
    for t in forced:
        assert cur.advance(t)
    assert cur.forced_tokens() == []  # " " then a choice: a single forced token is held back
    assert cur.advance(tok.encode(" ")[0])
    assert cur.forced_tokens() == []  # choice between w and t
    assert cur.advance(tok.encode("w")[0])
    # the rest is forced up to a state where nothing but EOS follows: every token is returned
    assert cur.forced_tokens() == tok.encode("orld")
    for t in cur.forced_tokens():
        assert cur.advance(t)
    assert cur.is_terminated()


class DummyPrefixTokenizer(FakeTokenizer):
    """Like SentencePiece's add_dummy_prefix: encode() puts a space in front of the text."""

    def encode(self, text):
        return super().encode(" " + text)


def test_forced_tokens_only_returns_tokens_allowed_in_sequence():
    tok = DummyPrefixTokenizer(["a", "b", "ab", "c", " ", " a"])
    c = compiled(LiteralSetAutomaton([b"abc"]), tok)
    cur = c.cursor()
    assert tok.encode("abc")[0] == tok.token_bytes().index(b" a")
    assert cur.forced_tokens() == []  # " a" does not fit: nothing is offered rather than a wrong token
    plain = compiled(LiteralSetAutomaton([b"abc"]), FakeTokenizer(["a", "b", "ab", "c"]))
    assert plain.cursor().forced_tokens() == [2, 3]  # "ab", "c": the whole run, nothing can follow it


def test_forced_tokens_cut_at_utf8_boundaries():
    tok = toy_tokenizer()
    c = compiled(LiteralSetAutomaton(["é1".encode(), "è2".encode()]), tok)
    cur = c.cursor()
    assert cur.forced_tokens() == []  # only the shared first byte of é/è is forced: not a whole character


def test_copy_is_independent():
    tok = toy_tokenizer()
    cur = compiled(DigitsAutomaton(), tok).cursor()
    cur.advance(tok.encode("1")[0])
    other = cur.copy()
    other.advance(tok.encode("2")[0])
    assert cur.num_advanced == 1 and other.num_advanced == 2
    other.rollback(2)
    assert cur.num_advanced == 1


# ----- walks along a token list (drafts, forced runs): fill_along / admitted / forced_bytes ------------------------

@pytest.fixture(scope="module")
def real_tok():
    import structgen

    return structgen.default_tokenizer()


def test_fill_along_cuts_at_the_first_rejected_token_and_fills_rows(real_tok):
    import structgen

    tok = real_tok
    compiled = structgen.compile_regex(r"[0-9]{2,4}-[a-z]+")
    cur = compiled.cursor()
    draft = tok.encode("12") + tok.encode("-") + tok.encode("abc") + tok.encode("X!")
    rows = bitmask.allocate(len(draft) + 1, tok.vocab_size)
    n = cur.fill_along(draft, rows)
    assert n == len(tok.encode("12") + tok.encode("-") + tok.encode("abc"))
    assert cur.num_advanced == 0, "the cursor must be rolled back"
    # Row i is the mask at draft position i: replay with a fresh cursor and compare.
    ref = compiled.cursor()
    for i in range(n + 1):
        assert np.array_equal(rows[i], ref.mask()), f"row {i}"
        if i < n:
            assert ref.advance(draft[i])
    assert not bitmask.is_allowed(rows[n], draft[n])
    # `start` fills only the rows from that position on; `admitted` counts without rows.
    last = bitmask.allocate(1, tok.vocab_size)
    assert cur.fill_along(draft[:n], last, start=n) == n and np.array_equal(last[0], rows[n])
    assert cur.admitted(draft) == n and cur.num_advanced == 0


def test_fill_along_stops_after_eos(real_tok):
    import structgen

    tok = real_tok
    eos = next(iter(tok.eos_token_ids))
    compiled = structgen.compile_regex(r"ab")
    draft = tok.encode("ab") + [eos] + tok.encode("cd")
    rows = bitmask.allocate(len(draft) + 1, tok.vocab_size)
    assert compiled.cursor().fill_along(draft, rows) == len(tok.encode("ab")) + 1
    assert bitmask.count_allowed(rows[len(tok.encode("ab")) + 1]) == 0      # nothing after EOS


class _Exploding(Exception):
    pass


def test_fill_along_restores_the_cursor_when_a_row_raises():
    c = compiled(LiteralSetAutomaton([b"yes", b"no"]))
    cur = c.cursor()

    class Rows:
        def __getitem__(self, i):
            if i == 2:
                raise _Exploding()
            return np.zeros(c.num_words, dtype=np.int32)

    with pytest.raises(_Exploding):
        cur.fill_along([ord("y"), ord("e"), ord("s")], Rows())    # single-byte tokens: three steps
    assert cur.num_advanced == 0


def test_forced_bytes_is_the_whole_forced_text():
    tok = toy_tokenizer()
    c = compiled(LiteralSetAutomaton([b"hello world", b"hello there"]), tok)
    cur = c.cursor()
    assert cur.forced_bytes() == b"hello "          # nothing held back, unlike forced_tokens()
    assert cur.advance(tok.encode("h")[0])
    assert cur.forced_bytes() == b"ello "
    for t in tok.encode("ello w"):
        assert cur.advance(t)
    assert cur.forced_bytes() == b"orld"
    assert cur.num_advanced == len(tok.encode("hello w"))


# ----- the budget: min_tokens_to_finish / token_fits / fill_bitmask_within (details in test_budget.py) -----------

def test_budget_methods_close_a_table_automaton_in_time_and_leave_the_cursor_alone():
    tok = toy_tokenizer()
    c = compiled(LiteralSetAutomaton([b"yes", b"no", b"abcab"]), tok)
    cur = c.cursor()
    assert cur.min_tokens_to_finish() == 1  # "no" is one token of the toy vocabulary
    row = torch.zeros(cur.num_words, dtype=torch.int32)
    assert cur.fill_bitmask_within(row, 1) is True
    ids = set(bitmask.unpack(row.numpy()).tolist())
    assert ids == {tok.encode("no")[0], tok.encode("yes")[0]}  # one token each: nothing else fits one token
    assert cur.token_fits(tok.encode("ab")[0], 3) and not cur.token_fits(tok.encode("ab")[0], 2)
    assert cur.fill_bitmask_within(row, 50) is False and np.array_equal(row.numpy(), cur.mask())
    assert cur.num_advanced == 0 and cur.state == c.index.initial
    assert cur.advance(tok.encode("no")[0]) and cur.min_tokens_to_finish() == 0
    assert cur.token_fits(tok.eos_token_id, 1) and not cur.token_fits(tok.eos_token_id, 0)
