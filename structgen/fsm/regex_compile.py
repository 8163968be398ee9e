"""Syntax tree (structgen.fsm.regex_syntax) -> CharFSM: the strings a pattern matches, searched (JSON Schema's
`pattern`) or whole (a regex constraint, a format).

Three steps keep this exact without ever leaving regular languages:

- Classes: each takes the characters both ECMA-262 and Python's re accept (`Meaning.bound`). Inside a negative
  lookahead everything flips to an upper bound (characters either accepts, Python's lenient `$`), so that what is
  subtracted covers both dialects and the result stays within both.
- Anchors, anywhere (`^a|b$`, `(^|,)x`, `(a|$)*`): a subtree lowers to up to four anchor-free trees keyed by what its
  match needs, (starts at the text's start, ends at its end). Concatenation keeps a part after a `$` (before a `^`)
  only when it matches the empty string there; a star lets only its first iteration need the start and its last the
  end. The search language is then `.*L00.* | L10.* | .*L01 | L11`.
- Lookaheads and `\\b` / `\\B` at the top level of a branch (possibly inside groups and alternations, which are
  distributed): the branch is read right to left as DFAs, one per context of the position (at the text's start,
  after a word character, after another one): `(?=X)` intersects the rest with `X.*`, `(?!X)` subtracts it, a word
  boundary intersects with "starts with a word character" or its opposite depending on the context, and a segment
  before them is concatenated in front. Inside a repetition they are refused (InvalidRegexError, with position).

Word characters for `\\b` are ASCII `[A-Za-z0-9_]` in ECMA-262 and Unicode in Python: a boundary is taken only where
both agree, next to ASCII word characters or to characters neither counts as word characters (ASCII ones: rounded down
to ASCII; a non-ASCII letter next to a boundary is refused).
"""

from __future__ import annotations

from functools import lru_cache

from ..errors import ConstraintTooComplexError, InvalidRegexError
from . import regex_dfa as D
from .regex_syntax import ASCII, ASCII_WORD, CharSet, Tree

# Lookaheads inside alternations are handled by distributing the rest of the branch over them: past this many branches
# the pattern is refused rather than blown up.
MAX_BRANCHES = 64

START, WORD, NONWORD = range(3)  # what precedes a position: the text's start, a word character, another character
_S0, _S1 = (0, 0), (1, 0)


# -------------------------------------------------------------------------------------------- tree helpers
def _cat(parts) -> tuple:
    flat = []
    for p in parts:
        if p[0] == D.CAT:
            flat.extend(p[1])
        elif p[0] != D.EPS:
            flat.append(p)
    if not flat:
        return (D.EPS,)
    return flat[0] if len(flat) == 1 else (D.CAT, tuple(flat))


def _alt(options) -> tuple:
    flat = []
    for o in options:
        flat.extend(o[1] if o[0] == D.ALT else (o,))
    return flat[0] if len(flat) == 1 else (D.ALT, tuple(flat))


def _chr(s: CharSet) -> tuple:
    return (D.CHR, s.chars, s.negated)


_ANY_STAR = (D.REP, _chr(CharSet(frozenset(), True)), 0, None)
_NOTHING = _chr(CharSet(frozenset()))  # the empty language


class _Piece:
    """An anchor-free tree with what the lowering asks of it often (nullable, matches only the empty string)."""

    __slots__ = ("tree", "nullable", "only_empty")

    def __init__(self, tree, nullable: bool, only_empty: bool):
        self.tree, self.nullable, self.only_empty = tree, nullable, only_empty


_EMPTY = _Piece((D.EPS,), True, True)


def _then(a: _Piece, b: _Piece) -> _Piece:
    return _Piece(_cat((a.tree, b.tree)), a.nullable and b.nullable, a.only_empty and b.only_empty)


def _either(pieces: list) -> _Piece:
    return _Piece(_alt([p.tree for p in pieces]), any(p.nullable for p in pieces), all(p.only_empty for p in pieces))


def _repeat(x: _Piece, lo: int, hi) -> _Piece:
    return _Piece((D.REP, x.tree, lo, hi), x.nullable or lo == 0, x.only_empty or hi == 0)


# ------------------------------------------------------------------------------------------ anchors
class _Lowering:
    """Syntax tree -> {(needs start, needs end): _Piece}, a missing key being the empty language."""

    def __init__(self, pattern: str, upper: bool):
        self.pattern = pattern
        self.upper = upper
        self.last_end = None  # where the last `$` read stands (for an error about it)

    def fail(self, pos, why: str):
        raise InvalidRegexError(self.pattern, pos, why)

    def lower(self, node) -> dict:
        kind = node[0]
        if kind == "set":
            meaning = node[1]
            if self.upper and meaning.folded:
                self.fail(node[2], "case-insensitive matching inside a negative lookahead is not supported")
            s = meaning.bound(self.upper)
            return {} if s.is_empty else {_S0: _Piece(_chr(s), False, False)}
        if kind == "cat":
            return self._sequence(node[1])
        if kind == "alt":
            out: dict = {}
            for option in node[1]:
                for key, piece in self.lower(option).items():
                    out.setdefault(key, []).append(piece)
            return {key: _either(pieces) for key, pieces in out.items()}
        if kind == "rep":
            return self._repetition(self.lower(node[1]), node[2], node[3])
        if kind == "eps":
            return {_S0: _EMPTY}
        if kind == "bol":
            return {_S1: _EMPTY}
        if kind == "eol":
            self.last_end = node[2]
            return {(0, 1): _EMPTY}
        pos = node[3] if kind == "look" else node[2]
        self.fail(pos, ("lookaheads" if kind == "look" else "word boundaries") +
                  " are supported only outside repetitions")

    def _sequence(self, items) -> dict:
        acc = {_S0: _EMPTY}
        run: list = []  # anchor-free parts not yet joined to acc (joined at once: long literals stay flat)
        for item in items:
            f = self.lower(item)
            if not f:
                return {}
            if len(f) == 1 and _S0 in f:
                run.append(f[_S0])
                continue
            if run:
                acc = self.concat(acc, {_S0: _Piece(_cat([p.tree for p in run]), all(p.nullable for p in run),
                                                    all(p.only_empty for p in run))})
                run = []
            acc = self.concat(acc, f)
            if not acc:
                return {}
        if run:
            acc = self.concat(acc, {_S0: _Piece(_cat([p.tree for p in run]), all(p.nullable for p in run),
                                                all(p.only_empty for p in run))})
        return acc

    def concat(self, a: dict, b: dict) -> dict:
        out: dict = {}
        for (s1, e1), x in a.items():
            for (s2, e2), y in b.items():
                if s2 and not x.nullable:  # a `^` after characters: no match in either dialect
                    continue
                if e1 and self.upper and not y.only_empty:
                    self._lenient_end_followed()
                if e1 and not y.nullable:
                    continue
                left = _EMPTY if s2 else x
                right = _EMPTY if e1 else y
                out.setdefault((s1 | s2, e1 | e2), []).append(_then(left, right))
        return {key: _either(pieces) for key, pieces in out.items()}

    def _lenient_end_followed(self):
        # Python's `$` also matches before a final newline, which a later part may then read: an upper bound of that
        # is not worth its complexity here (and no real pattern needs it)
        raise InvalidRegexError(self.pattern, self.last_end, "a '$' followed by more of the pattern inside a "
                                                             "negative lookahead is not supported")

    def _repetition(self, x: dict, lo: int, hi) -> dict:
        if not x:
            return {_S0: _EMPTY} if lo == 0 else {}
        if len(x) == 1 and _S0 in x:
            return {_S0: _repeat(x[_S0], lo, hi)}
        if max(lo, (hi or lo) - lo) > D.MAX_POSITIONS:  # unrolled below: `(^){0,99999999}` has no positions to count
            raise ConstraintTooComplexError(f"regex {self.pattern[:40]!r}: repetition count of a group with anchors",
                                            D.MAX_POSITIONS)
        acc = {_S0: _EMPTY}
        for _ in range(lo):
            acc = self.concat(acc, x)
        if hi is None:
            return self.concat(acc, self._star(x))
        optional = self._alternatives(x, {_S0: _EMPTY})
        for _ in range(hi - lo):
            acc = self.concat(acc, optional)
        return acc

    def _alternatives(self, a: dict, b: dict) -> dict:
        out = {}
        for key in set(a) | set(b):
            out[key] = _either([d[key] for d in (a, b) if key in d])
        return out

    def _star(self, x: dict) -> dict:
        """x*: only the first iteration may need the start, only the last the end (an empty one needing either
        adds nothing the zero-iteration match lacks)."""
        if self.upper and ((0, 1) in x or (1, 1) in x) and not all(p.only_empty for p in x.values()):
            self._lenient_end_followed()
        middle = _repeat(x[_S0], 0, None) if _S0 in x else _EMPTY
        out = {_S0: middle}
        if _S1 in x:
            out[_S1] = _then(x[_S1], middle)
        if (0, 1) in x:
            out[(0, 1)] = _then(middle, x[(0, 1)])
        both = []
        if _S1 in x and (0, 1) in x:
            both.append(_then(_then(x[_S1], middle), x[(0, 1)]))
        if (1, 1) in x:
            both.append(x[(1, 1)])
        if both:
            out[(1, 1)] = _either(both)
        return out


# ------------------------------------------------------------------------------------------- entry point
def compile_tree(tree: Tree, pattern: str, *, search: bool, budget: D.Budget) -> D.CharFSM:
    """The DFA of the strings `pattern` (parsed as `tree`) matches: anywhere in them (search, `re.search`) or as a
    whole (full match). Characters: what both ECMA-262 and Python accept (see the module docstring)."""
    if not tree.has_assertions:
        parts = []
        for (start, end), piece in sorted(_Lowering(pattern, upper=False).lower(tree.root).items()):
            pad_start = [] if start or not search else [_ANY_STAR]
            pad_end = [] if end or not search else [_ANY_STAR]
            parts.append(_cat(pad_start + [piece.tree] + pad_end))
        return D.from_ast(_alt(parts) if parts else _NOTHING, budget)
    return _Assertions(pattern, budget).compile(tree.root, search)


# ------------------------------------------------------------------------------------ lookaheads and \b
@lru_cache(maxsize=None)
def _constant(name: str, upper: bool) -> D.CharFSM:
    """Small fixed languages (immutable, shared): `any`, `any+`, `empty` (the empty string), `end` (what may follow
    `$`: nothing; Python, as an upper bound: also one newline), and the word-character tests."""
    # upper: the characters either dialect may call word (other) characters; lower: those both do, cut to ASCII
    word = ~(ASCII & ~ASCII_WORD) if upper else ASCII_WORD
    other = ~ASCII_WORD if upper else ASCII & ~ASCII_WORD
    anything = CharSet(frozenset(), True)
    trees = {
        "any": _ANY_STAR,
        "any+": (D.REP, _chr(anything), 1, None),
        "empty": (D.EPS,),
        "end": (D.REP, _chr(CharSet(frozenset("\n"))), 0, 1 if upper else 0),
        "ends-word": _cat([_ANY_STAR, _chr(word)]),
        "ends-other": _cat([_ANY_STAR, _chr(other)]),
        "starts-word": _cat([_chr(word), _ANY_STAR]),
        "starts-other": _cat([_chr(other), _ANY_STAR]),
        "starts-other-or-empty": (D.REP, _cat([_chr(other), _ANY_STAR]), 0, 1),
    }
    return D.from_ast(trees[name], D.Budget(f"the regex language {name!r}"))


class _Assertions:
    """Branches with lookaheads or word boundaries, composed right to left as families {context: CharFSM or None}."""

    def __init__(self, pattern: str, budget: D.Budget):
        self.pattern = pattern
        self.budget = budget

    def fail(self, pos, why: str):
        raise InvalidRegexError(self.pattern, pos, why)

    # ---- DFA operations on possibly-empty (None) languages
    def fsm(self, tree) -> D.CharFSM:
        return D.from_ast(tree, self.budget)

    def concat(self, a, b) -> D.CharFSM | None:
        if a is None or b is None:
            return None
        if not any(a.map):  # a accepts the empty string alone (a non-None language is never empty)
            return b
        return _nonempty(D.concat(a, b, self.budget))

    def union(self, parts) -> D.CharFSM | None:
        out = None
        for p in parts:
            if p is not None and p is not out:
                out = p if out is None else D.union(out, p, self.budget)
        return out

    def meet(self, a, b):
        return None if a is None or b is None else _nonempty(D.intersect(a, b, self.budget))

    def minus(self, a, b):
        return a if a is None or b is None else _nonempty(D.difference(a, b, self.budget))

    @staticmethod
    def combine(op, *fams) -> dict:
        """{ctx: op(fam1[ctx], fam2[ctx], ...)}, computed once for contexts whose languages are the same objects."""
        out, done = {}, {}
        for ctx in (START, WORD, NONWORD):
            args = tuple(f[ctx] for f in fams)
            key = tuple(map(id, args))
            if key not in done:
                done[key] = op(*args)
            out[ctx] = done[key]
        return out

    # ---- structure
    def compile(self, root, search: bool) -> D.CharFSM:
        end = _constant("any" if search else "empty", False)
        fam = self.family(root, {c: end for c in (START, WORD, NONWORD)}, upper=False)
        if not search:
            result = fam[START]
        elif fam[WORD] is fam[NONWORD]:
            result = self.union([fam[START], self.concat(_constant("any+", False), fam[WORD])])
        else:
            result = self.union([fam[START], self.concat(_constant("ends-word", False), fam[WORD]),
                                 self.concat(_constant("ends-other", False), fam[NONWORD])])
        return result if result is not None else self.fsm(_NOTHING)

    def family(self, node, after: dict, upper: bool) -> dict:
        """For each context of a position: the strings from there on that match `node` and then `after`."""
        fams = [self.branch(items, after, upper) for items in self.branches(node)]
        return fams[0] if len(fams) == 1 else self.combine(lambda *langs: self.union(langs), *fams)

    def branch(self, items: list, after: dict, upper: bool) -> dict:
        fam = after
        segment: list = []
        for item in reversed(items):
            if item[0] in ("look", "wordb"):
                if segment:
                    fam = self.prepend(segment[::-1], fam, upper)
                    segment = []
                fam = self.lookahead(item, fam, upper) if item[0] == "look" else self.boundary(item[1], fam, upper)
            else:
                segment.append(item)
        if segment:
            fam = self.prepend(segment[::-1], fam, upper)
        return fam

    def branches(self, node) -> list[list]:
        """`node` as alternatives of flat sequences whose lookaheads / boundaries are all at their top level."""
        kind = node[0]
        if not _has_assertion(node):
            return [[node]]
        if kind in ("look", "wordb"):
            return [[node]]
        if kind == "alt":
            out = [b for option in node[1] for b in self.branches(option)]
        elif kind == "cat":
            out = [[]]
            for item in node[1]:
                subs = self.branches(item)
                out = [a + b for a in out for b in subs]
                if len(out) > MAX_BRANCHES:
                    break
        else:  # a repetition
            self.fail(_assertion_position(node),
                      "lookaheads and word boundaries are supported only outside repetitions")
        if len(out) > MAX_BRANCHES:
            self.fail(None, f"more than {MAX_BRANCHES} branches once alternations around lookaheads are distributed")
        return out

    def prepend(self, items: list, after: dict, upper: bool) -> dict:
        """Segment `items` (no assertions at its top level) in front of the family `after`."""
        pieces = _Lowering(self.pattern, upper).lower(("cat", tuple(items)))
        end = _constant("end", upper)
        at_end = self.combine(lambda f: self.meet(f, end), after)
        compiled = {key: self.fsm(p.tree) for key, p in pieces.items()}
        nonempty: dict = {}

        def nonempty_part(key):
            if key not in nonempty:
                nonempty[key] = self.meet(compiled[key], _constant("any+", False))
            return nonempty[key]

        def lang(ctx: int) -> D.CharFSM | None:
            parts = []
            for key, piece in pieces.items():
                if key[0] and ctx != START:
                    continue
                rest = at_end if key[1] else after
                if rest[WORD] is rest[NONWORD]:
                    # the whole piece where its empty match leads on to the same language, else its nonempty part
                    if not piece.nullable or rest[ctx] is rest[WORD]:
                        parts.append(self.concat(compiled[key], rest[WORD]))
                        continue
                    parts.append(self.concat(nonempty_part(key), rest[WORD]))
                else:  # what follows depends on the segment's last character (a word boundary comes later)
                    ne = nonempty_part(key)
                    parts.append(self.concat(self.meet(ne, _constant("ends-word", upper)), rest[WORD]))
                    parts.append(self.concat(self.meet(ne, _constant("ends-other", upper)), rest[NONWORD]))
                if piece.nullable:
                    parts.append(rest[ctx])
            return self.union(parts)

        def depends_on(ctx: int) -> tuple:
            """What of the context lang(ctx) reads: equal tuples, equal languages."""
            return tuple("-" if key[0] and ctx != START else id((at_end if key[1] else after)[ctx])
                         if piece.nullable else "n" for key, piece in pieces.items())

        out, done = {}, {}
        for ctx in (START, WORD, NONWORD):
            sig = depends_on(ctx)
            if sig not in done:
                done[sig] = lang(ctx)
            out[ctx] = done[sig]
        return out

    def lookahead(self, node, after: dict, upper: bool) -> dict:
        negated, body = node[1], node[2]
        anything = _constant("any", False)
        inner = self.family(body, {c: anything for c in (START, WORD, NONWORD)}, upper != negated)
        return self.combine(self.minus if negated else self.meet, after, inner)

    def boundary(self, negated: bool, after: dict, upper: bool) -> dict:
        """`\\b` (`\\B`): the next character is a word character exactly when (unless) the previous one is not."""
        word = _constant("starts-word", upper)
        other = _constant("starts-other-or-empty", upper)
        after_word, after_other = (word, other) if negated else (other, word)
        at_start = after_other
        if negated and not upper:
            # NOTE: Python's \B never matches in an empty text (ECMA's does): at the start, something must follow
            at_start = _constant("starts-other", upper)
        return {START: self.meet(after[START], at_start), WORD: self.meet(after[WORD], after_word),
                NONWORD: self.meet(after[NONWORD], after_other)}


def _nonempty(fsm: D.CharFSM) -> D.CharFSM | None:
    """None for a DFA that accepts nothing (its initial state has no way to a final one: minimized, it has no
    final state at all)."""
    return fsm if fsm.finals else None


def _has_assertion(node) -> bool:
    return _assertion_position(node) is not None


def _assertion_position(node) -> int | None:
    """Where the first lookahead or word boundary in `node` starts (None: it has none)."""
    kind = node[0]
    if kind == "look":
        return node[3]
    if kind == "wordb":
        return node[2]
    if kind in ("cat", "alt"):
        for n in node[1]:
            pos = _assertion_position(n)
            if pos is not None:
                return pos
    if kind == "rep":
        return _assertion_position(node[1])
    return None
