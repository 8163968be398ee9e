"""Tiny hand-made tokenizers and automata for the token layer's unit tests (the real tokenizer is used in the
integration tests), and the brute-force oracle of the token index. Shared by
tests/fsm/test_{vocab,index,token_trie,cursor,cache,api}.py."""

from __future__ import annotations

import hashlib
import time


class FakeTokenizer:
    """A vocabulary given as a list of byte strings; encode() is greedy longest match (like a simple BPE).

    The last ids are special: `<eos>` (EOS) and `<pad>` (never allowed).
    """

    def __init__(self, tokens: list[bytes | str], name: str = "fake"):
        self._tokens = [t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in tokens]
        self.eos_token_id = len(self._tokens)
        self.pad_token_id = len(self._tokens) + 1
        self.vocab_size = len(self._tokens) + 2
        self.eos_token_ids = frozenset([self.eos_token_id])
        self.special_token_ids = frozenset([self.eos_token_id, self.pad_token_id])
        self.fingerprint = hashlib.sha256(repr((name, self._tokens)).encode()).hexdigest()[:32]
        self._by_bytes = {b: i for i, b in enumerate(self._tokens)}
        self._max_len = max(len(t) for t in self._tokens)

    def token_bytes(self) -> list[bytes]:
        return [*self._tokens, b"<eos>", b"<pad>"]

    def encode(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        out, i = [], 0
        while i < len(data):
            for n in range(min(self._max_len, len(data) - i), 0, -1):
                tid = self._by_bytes.get(data[i:i + n])
                if tid is not None:
                    out.append(tid)
                    i += n
                    break
            else:
                raise ValueError(f"byte {data[i]:#x} has no token")
        return out

    def decode(self, ids: list[int]) -> str:
        return b"".join(self._tokens[i] for i in ids if i < len(self._tokens)).decode("utf-8", "replace")


def byte_tokens() -> list[bytes]:
    """All 256 single bytes: every string can be spelled."""
    return [bytes([b]) for b in range(256)]


def toy_tokenizer() -> FakeTokenizer:
    """Single bytes plus some merges, including tokens that hold part of a UTF-8 character."""
    merges = ["ab", "abc", "ba", "aa", "aaa", "yes", "no", "ye", "{\"", "\"}", "\":", " \"", "12", "123",
              "Z\xfc".encode("utf-8")[:2], "\xfcr".encode("utf-8")[1:], "rich"]
    return FakeTokenizer([*byte_tokens(), *merges], name="toy")


class TableAutomaton:
    """A DFA given as {state: {byte: next}} plus final states (states are anything hashable)."""

    def __init__(self, table: dict, finals: set, initial=0):
        self.table, self.finals, self._initial = table, set(finals), initial

    def initial(self):
        return self._initial

    def transitions(self, state):
        return dict(self.table.get(state, {}))

    def is_final(self, state) -> bool:
        return state in self.finals


def regex_like(words: dict[bytes, bool]) -> TableAutomaton:
    """A trie automaton: every prefix of a word is a state; `words[w]` says if w is final."""
    table: dict = {}
    for w in words:
        for i in range(len(w)):
            table.setdefault(w[:i], {})[w[i]] = w[: i + 1]
    return TableAutomaton(table, {w for w, f in words.items() if f}, initial=b"")


class CountingAutomaton:
    """`a*` with a distinct state per length: infinitely many states (for the state limit)."""

    def initial(self):
        return 0

    def transitions(self, state):
        return {ord("a"): state + 1}

    def is_final(self, state) -> bool:
        return True


class SlowAutomaton:
    """`[ab]*` whose transitions take `delay` seconds each, with a distinct state per length (for timeouts)."""

    def __init__(self, delay: float):
        self.delay = delay

    def initial(self):
        return 0

    def transitions(self, state):
        time.sleep(self.delay)
        return {ord("a"): state + 1, ord("b"): state + 1}

    def is_final(self, state) -> bool:
        return True


class DigitsAutomaton:
    """`[0-9]+` as two states."""

    def initial(self):
        return "start"

    def transitions(self, state):
        return {b: "digits" for b in range(ord("0"), ord("9") + 1)}

    def is_final(self, state) -> bool:
        return state == "digits"


def reference_allowed(automaton, state, vocab) -> set[int]:
    """Brute force: walk each token's bytes through the automaton itself (the oracle of every index walk)."""
    allowed = set()
    for i, data in enumerate(vocab.token_bytes):
        if not data:
            continue
        s = state
        for b in data:
            s = automaton.transitions(s).get(b)
            if s is None:
                break
        else:
            allowed.add(i)
    if automaton.is_final(state):
        allowed |= set(vocab.eos_token_ids.tolist())
    return allowed
