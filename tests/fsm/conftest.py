"""Helpers shared by the constraint-language tests (byte-level acceptance, random walks, test data)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest


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


def random_walk(automaton, rng: random.Random, *, max_bytes: int = 400, stop_bias: float = 0.3) -> bytes:
    """A random byte path from the initial state to a final state. Once past `max_bytes` (or with
    probability `stop_bias` in a final state) it steers to finish: it prefers bytes that keep the text
    short (closing punctuation first) until it reaches a final state."""
    state = automaton.initial()
    out = bytearray()
    while True:
        trans = automaton.transitions(state)
        final = automaton.is_final(state)
        if final and (not trans or rng.random() < stop_bias or len(out) > max_bytes):
            return bytes(out)
        if not trans:
            raise AssertionError(f"dead non-final state after {bytes(out)!r}")
        if len(out) > max_bytes:
            closers = [b for b in trans if b in b'"}]']
            if len(out) > 4 * max_bytes and not closers:
                closers = [b for b in trans if b in b'0123456789,aeflnrstu']
            b = rng.choice(closers or sorted(trans))
        else:
            b = rng.choice(sorted(trans))
        out.append(b)
        state = trans[b]
        if len(out) > 20 * max_bytes:
            raise AssertionError(f"random walk did not finish: {bytes(out[:200])!r}...")


def data_dir() -> Path:
    env = os.environ.get("STRUCTGEN_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    d = data_dir()
    if not d.is_dir():
        pytest.skip(f"shared test data not found at {d} (set STRUCTGEN_DATA_DIR)")
    return d
