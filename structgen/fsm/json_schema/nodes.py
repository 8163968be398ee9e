"""The node graph a schema compiles to, and the frame protocol the matcher runs.

A *node* is an immutable piece of the compiled grammar (a literal, a sequence, a choice, a JSON string,
number, object or array). A *frame* is a node's progress: a hashable tuple whose first item is the node.
Nodes answer two questions about a frame of theirs:

- `moves(frame) -> {byte: frame}`: the bytes the frame consumes itself (leaves only; deterministic), each
  successor at the same stack level. Every successor is viable: some continuation completes it.
- `epsilon(frame) -> actions`: moves that read nothing: `(POP,)` the frame is complete and its caller
  resumes; `(GOTO, frame)` replace the frame; `(PUSH, child_frame, resume_frame)` run the child, then resume.

NOTE: node constructors never build an unsatisfiable node: they return `NEVER` instead, and callers drop
it (an optional property, an anyOf branch) or become `NEVER` themselves (a required property). That is what
keeps every automaton state productive.
"""

from __future__ import annotations

import math

from ...errors import ConstraintTooComplexError

POP, GOTO, PUSH = 0, 1, 2


class Node:
    """Base of compiled grammar nodes. Identity-hashed: frames hold nodes and compare them by identity."""

    __slots__ = ()

    def entry(self) -> tuple:
        return (self,)

    def moves(self, frame: tuple) -> dict:
        return {}

    def epsilon(self, frame: tuple) -> tuple:
        return ()

    def mask_key(self, frame: tuple, horizon: int):
        """A stand-in for `frame` that is equal for frames with the same next `horizon` bytes (the same byte strings
        of up to `horizon` bytes live from them, through the same frames once they pop): the token layer shares one
        mask between such states. The frame itself unless a node knows better (a counter far from its bounds)."""
        return frame


class _Never(Node):
    """The unsatisfiable node (never placed into a graph)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEVER"


NEVER = _Never()


class Done(Node):
    """A completed leaf: it only pops."""

    __slots__ = ()

    def epsilon(self, frame):
        return ((POP,),)


DONE_FRAME = (Done(),)

MAX_LITERAL_BYTES = 1_000_000


class Literal(Node):
    """One of a finite set of byte strings (keywords, punctuation, property keys, enum values)."""

    __slots__ = ("options", "_trie", "_rest")

    def __init__(self, options):
        self.options = frozenset(options)
        if sum(len(o) for o in self.options) > MAX_LITERAL_BYTES:
            raise ConstraintTooComplexError("total bytes of literal alternatives (enum/const)", MAX_LITERAL_BYTES)
        trie: dict[bytes, dict[int, bytes]] = {}
        for opt in self.options:
            for i in range(len(opt)):
                trie.setdefault(opt[:i], {})[opt[i]] = opt[: i + 1]
        self._trie = trie
        self._rest: dict[bytes, int] | None = None  # prefix -> fewest bytes to an option (built on first need)

    def exit_bytes(self, frame, child_exit):
        """The fewest bytes that finish one of the options from the prefix read (the matcher's search, memoized once
        for the whole trie: keys and enums are asked for by the thousand)."""
        rest = self._rest
        if rest is None:
            rest = {}
            for p in sorted(self._trie.keys() | self.options, key=len, reverse=True):  # children before parents
                rest[p] = 0 if p in self.options else 1 + min(rest[c] for c in self._trie[p].values())
            self._rest = rest
        return rest.get(frame[1], math.inf)

    def entry(self):
        return (self, b"")

    def moves(self, frame):
        row = self._trie.get(frame[1])
        return {b: (self, p) for b, p in row.items()} if row else {}

    def epsilon(self, frame):
        return ((POP,),) if frame[1] in self.options else ()

    def __repr__(self) -> str:
        return f"Literal({sorted(self.options)[:4]}...)"


def literal(*options: bytes | str) -> Node:
    opts = [o.encode("utf-8") if isinstance(o, str) else o for o in options]
    return Literal(opts) if opts else NEVER


class Seq(Node):
    """The parts one after another."""

    __slots__ = ("parts",)

    def __init__(self, parts):
        self.parts = tuple(parts)

    def entry(self):
        return (self, 0)

    def epsilon(self, frame):
        i = frame[1]
        if i == len(self.parts):
            return ((POP,),)
        return ((PUSH, self.parts[i].entry(), (self, i + 1)),)


def seq(*parts: Node) -> Node:
    parts = tuple(p for p in parts if p is not None)
    if any(p is NEVER for p in parts):
        return NEVER
    return parts[0] if len(parts) == 1 else Seq(parts)


class Alt(Node):
    """Any one of the branches (the matcher runs them side by side: subset construction)."""

    __slots__ = ("branches",)

    def __init__(self, branches):
        self.branches = tuple(branches)

    def epsilon(self, frame):
        return tuple((GOTO, b.entry()) for b in self.branches)


def alt(branches) -> Node:
    # NOTE: `seen` holds the nodes themselves (hashed by identity), not their id()s: `branches` is often a generator,
    # and an Alt it yields is dropped once its branches are copied out; a later node may then be allocated at the
    # same address, and an id() set took it for a repeat and silently lost that branch.
    out, seen = [], set()
    for b in branches:
        if b is NEVER or b in seen:
            continue
        seen.add(b)
        out.extend(b.branches if isinstance(b, Alt) else (b,))
    if not out:
        return NEVER
    return out[0] if len(out) == 1 else Alt(out)


class Whitespace(Node):
    """Bounded free whitespace: up to `max_newlines` newlines and `max_spaces` spaces, in any order."""

    __slots__ = ("max_newlines", "max_spaces")

    def __init__(self, max_newlines: int, max_spaces: int):
        self.max_newlines = max_newlines
        self.max_spaces = max_spaces

    def entry(self):
        return (self, 0, 0)

    def moves(self, frame):
        _, nl, sp = frame
        out = {}
        if nl < self.max_newlines:
            out[0x0A] = (self, nl + 1, sp)
        if sp < self.max_spaces:
            out[0x20] = (self, nl, sp + 1)
        return out

    def epsilon(self, frame):
        return ((POP,),)
