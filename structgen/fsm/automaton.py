"""The contract between the constraint languages (JSON Schema, regex, choice) and the token layer.

A `ByteAutomaton` is a deterministic automaton over UTF-8 *bytes* whose states are opaque, hashable and
immutable values built lazily: nothing is enumerated up front. The token layer (structgen/fsm/index.py)
numbers the states it reaches, materializes their byte transitions on first visit and walks the vocabulary
through them to build each state's token bitmask.

NOTE (invariants every implementation keeps):
- Every state it returns is *productive*: some byte sequence leads from it to a final state. A token that
  ends in a state is then never a dead end for decoding.
- `transitions(state)` is a pure function of `state`; the same state always yields the same dict.
- Bytes that can never occur in well-formed UTF-8 (0xC0, 0xC1, 0xF5..0xFF) are never accepted, and a
  multi-byte character is accepted only when its bytes form a valid UTF-8 sequence.
"""

from __future__ import annotations

from typing import Hashable, Mapping, Protocol, runtime_checkable

State = Hashable


@runtime_checkable
class ByteAutomaton(Protocol):
    def initial(self) -> State:
        """The start state."""
        ...

    def transitions(self, state: State) -> Mapping[int, State]:
        """Every accepted byte (0..255) from `state` mapped to its successor. Missing byte = rejected."""
        ...

    def is_final(self, state: State) -> bool:
        """True iff the bytes read so far form a complete match (EOS is allowed here)."""
        ...


class LiteralSetAutomaton:
    """A finite set of byte strings (the `choice` constraint and small tests). State = matched prefix."""

    def __init__(self, options: list[bytes]):
        if not options:
            raise ValueError("LiteralSetAutomaton needs at least one option")
        self._options = frozenset(options)
        self._prefixes = frozenset(o[:i] for o in self._options for i in range(len(o) + 1))

    def initial(self) -> State:
        return b""

    def transitions(self, state: State) -> dict[int, State]:
        out = {}
        for opt in self._options:
            if len(opt) > len(state) and opt.startswith(state):
                out[opt[len(state)]] = opt[: len(state) + 1]
        return out

    def is_final(self, state: State) -> bool:
        return state in self._options
