"""Helpers for the constraint-language tests: byte-level acceptance, random walks, the shared test data.

Imported as a plain module (`from automaton_helpers import ...`), like token_fakes.py."""

from __future__ import annotations

import random
from pathlib import Path



def accepts(automaton, text: str | bytes) -> bool:
    """Walk the UTF-8 bytes of `text` through `transitions`; True iff every byte is taken and the end
    state is final."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    state = automaton.initial()
    for b in data:
        state = automaton.transitions(state).get(b)
        if state is None:
            return False
    return automaton.is_final(state)


def shortest_completion(automaton, state, *, max_visited: int = 200_000) -> bytes:
    """A short byte string leading from `state` to a final state (breadth-first search; from states with
    ASCII moves only those are followed, which keeps the search away from the many partial-UTF-8 states)."""
    from collections import deque

    parents = {state: None}
    todo = deque([state])
    while todo:
        s = todo.popleft()
        if automaton.is_final(s):
            path = bytearray()
            while parents[s] is not None:
                s, b = parents[s]
                path.append(b)
            return bytes(reversed(path))
        trans = automaton.transitions(s)
        ascii_moves = [(b, t) for b, t in trans.items() if b < 0x80]
        for b, t in sorted(ascii_moves or trans.items()):
            if t not in parents:
                parents[t] = (s, b)
                todo.append(t)
        if len(parents) > max_visited:
            break
    raise AssertionError("no final state reachable (an unproductive state)")


def descend_to_final(automaton, state) -> bytes:
    """The bytes of a shortest completion found with the automaton's own `min_bytes_to_final`: from each state a byte
    whose successor is one byte closer (asserting one exists). For automata whose states branch too widely for
    `shortest_completion`'s search (free keys and values)."""
    out = bytearray()
    d = automaton.min_bytes_to_final(state)
    while not automaton.is_final(state):
        for b, t in sorted(automaton.transitions(state).items()):
            if automaton.min_bytes_to_final(t) == d - 1:
                out.append(b)
                state, d = t, d - 1
                break
        else:
            raise AssertionError(f"no byte brings {bytes(out)!r} closer to a final state than {d}")
    return bytes(out)


def random_walk(automaton, rng: random.Random, *, max_bytes: int = 400, stop_bias: float = 0.3,
                finish=shortest_completion) -> bytes:
    """A random byte path from the initial state to a final state: uniform random bytes, stopping in a
    final state with probability `stop_bias`; past `max_bytes` it finishes along `finish(automaton, state)` (a
    shortest completion). Asserts on the way that no reached state is a dead end."""
    state = automaton.initial()
    out = bytearray()
    while True:
        trans = automaton.transitions(state)
        final = automaton.is_final(state)
        if final and (not trans or rng.random() < stop_bias):
            return bytes(out)
        if not trans:
            raise AssertionError(f"dead non-final state after {bytes(out)!r}")
        if len(out) >= max_bytes:
            return bytes(out) + finish(automaton, state)
        b = rng.choice(sorted(trans))
        out.append(b)
        state = trans[b]


def number_schema(integer: bool, lo, hi, lo_exclusive: bool, hi_exclusive: bool) -> dict:
    """A number (or integer) schema with the given bounds; None leaves a bound out."""
    schema: dict = {"type": "integer" if integer else "number"}
    if lo is not None:
        schema["exclusiveMinimum" if lo_exclusive else "minimum"] = lo
    if hi is not None:
        schema["exclusiveMaximum" if hi_exclusive else "maximum"] = hi
    return schema


def data_dir() -> Path:
    """The shared test data (../shared/data from the repo root), overridable by STRUCTGEN_DATA_DIR."""
    from structgen.bench.cases import default_data_dir

    return default_data_dir()


def assert_exit_costs_agree(closed, searched, rng: random.Random, walks: int) -> None:
    """Along random walks, the closed-form shortest completion equals the searched one at every state. Mostly ASCII
    bytes: a byte-uniform walk would stay inside multi-byte characters."""
    for _ in range(walks):
        state = closed.initial()
        for _ in range(rng.randrange(40)):
            assert closed.min_bytes_to_final(state) == searched.min_bytes_to_final(state)
            moves = closed.transitions(state)
            if not moves:
                break
            ascii_ = [b for b in moves if b < 0x80]
            state = moves[rng.choice(ascii_ if ascii_ and rng.random() < 0.9 else sorted(moves))]
