"""The vocabulary's prefix trie, and the index's three walks over it (dense levels, sparse levels, the
Python tail), each checked against a brute-force walk of every token."""

import random

import numpy as np
import pytest

from structgen.fsm import bitmask, index as index_module, token_trie
from structgen.fsm.automaton import LiteralSetAutomaton
from structgen.fsm.index import TokenIndex
from structgen.fsm.regex import regex_automaton
from structgen.fsm.token_trie import TokenTrie, expand_ranges
from structgen.fsm.vocab import Vocabulary
from token_fakes import DigitsAutomaton, reference_allowed


def random_vocab(seed: int) -> Vocabulary:
    """Byte strings with shared prefixes, duplicates, partial UTF-8 and a few long runs (deep trie levels)."""
    rng = random.Random(seed)
    alphabet = b'ab{}":, 0123456789' + "ü€".encode()
    tokens = [bytes([b]) for b in range(256)]
    for _ in range(400):
        stem = tokens[rng.randrange(len(tokens))]
        tokens.append(stem + bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 4))))
    tokens += [b" " * n for n in (8, 16, 31)] + [b"-" * 40, b"ab", b"ab"]  # duplicates share a node
    eos = len(tokens)
    return Vocabulary.from_token_bytes([*tokens, b"<eos>"], [eos], f"trie-test-{seed}")


def test_expand_ranges_concatenates_aranges():
    starts, ends = np.array([3, 7, 7, 0]), np.array([5, 7, 10, 2])
    assert expand_ranges(starts, ends).tolist() == [3, 4, 7, 8, 9, 0, 1]
    assert expand_ranges(np.array([4]), np.array([4])).size == 0


def test_trie_spells_every_token_once():
    vocab = random_vocab(0)
    trie = TokenTrie.from_vocabulary(vocab)
    spelled = {}
    for level in range(trie.depth):
        for node, tid in zip(trie.end_node[level].tolist(), trie.end_ids[level].tolist()):
            data, n = [], node
            for d in range(level, -1, -1):  # climb to the root
                data.append(int(trie.byte[d][n]))
                n = int(trie.parent[d][n])
            spelled[tid] = bytes(reversed(data))
        # children ranges and parents describe the same tree
        if level + 1 < trie.depth:
            starts = trie.child_start[level]
            for k in range(trie.byte[level].size):
                assert set(trie.parent[level + 1][starts[k]:starts[k + 1]].tolist()) <= {k}
    expected = {int(t): vocab.token_bytes[t] for t in vocab.walk_ids}
    assert spelled == expected
    assert np.isclose(trie.top_share.sum(), 1.0)


AUTOMATA = {
    "choice": LiteralSetAutomaton([b"ab", b"ab{", "ü€".encode(), b"-" * 40, b" " * 31 + b"x"]),
    "digits": DigitsAutomaton(),
    "regex": regex_automaton(r'[ab0-9 ü-]{0,45}\"?'),
}


@pytest.mark.parametrize("tail_size", [0, 1 << 30])  # no Python tail / everything past level 1 in the tail
@pytest.mark.parametrize("dense_share", [-1.0, 2.0])  # always dense / always sparse
@pytest.mark.parametrize("name", sorted(AUTOMATA))
def test_every_walk_matches_brute_force(monkeypatch, name, dense_share, tail_size):
    monkeypatch.setattr(index_module, "_DENSE_SHARE", dense_share)
    monkeypatch.setattr(token_trie, "TAIL_LEVEL_SIZE", tail_size)
    vocab = random_vocab(1)  # a new object: its trie is built under the patched tail size
    auto = AUTOMATA[name]
    index = TokenIndex(auto, vocab, max_states=10_000, timeout_s=30.0)
    rng = random.Random(2)
    for _ in range(4):
        sid, state = index.initial, auto.initial()
        for _ in range(6):
            allowed = bitmask.unpack(index.mask(sid)).tolist()
            assert set(allowed) == reference_allowed(auto, state, vocab)
            steps = [t for t in allowed if t not in vocab.eos_token_ids]
            if not steps:
                break
            tok = rng.choice(steps)
            sid = index.next_state(sid, tok)
            for b in vocab.token_bytes[tok]:
                state = auto.transitions(state)[b]
