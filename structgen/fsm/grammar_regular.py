"""The rule graph of a grammar -> one expression per rule without references, where the language is regular.

Rules are taken in groups of mutual recursion (strongly connected components, callees first). A rule outside any
cycle is its body with the rules it uses inlined. A recursive group is a system of equations X = c | k1 Y1 | k2 Y2 ...
(right-linear: every reference into the group is the very last thing of its alternative) or X = c | Y1 k1 | ...
(left-linear: the very first), solved exactly by Arden's rule (X = kX | c  ->  X = k* c; left: X = Xk | c -> X = c k*)
and eliminating the members one by one. Both give the grammar's own language (the least solution). A group that is
neither (a reference with text on both sides of it, inside a repetition, or both kinds in one group) describes nesting,
which no finite automaton can check: UnsupportedGrammarError, naming the rules.
"""

from __future__ import annotations

from ..errors import InvalidGrammarError, UnsupportedGrammarError
from .grammar import ALT, CAT, EMPTY, EPSILON, REF, REP, alt, cat, fold, rep, substitute


def solve(rules: dict, where: dict, roots: list[str]) -> dict:
    """{name: expression without references} for every rule reachable from `roots`."""
    refs = {name: _references(body) for name, body in rules.items()}
    for name, found in refs.items():
        for ref, (line, col) in found.items():
            if ref not in rules:
                raise InvalidGrammarError(f"rule {ref!r} (used by {name!r}) is not defined", line, col)
    for r in roots:
        if r not in rules:
            raise InvalidGrammarError(f"the grammar has no rule {r!r} to start from (define it, or name another "
                                      "start rule)")
    solved: dict = {}
    memo: dict = {}
    for group in _components(roots, refs):
        if len(group) == 1 and group[0] not in refs[group[0]]:
            solved[group[0]] = substitute(rules[group[0]], solved, memo)
        else:
            solved.update(_solve_group(group, rules, where, solved))
    return solved


def _references(body: tuple) -> dict:
    """{referenced name: (line, column) of its first use} (the parsers' trees are small trees, not shared DAGs)."""
    out: dict = {}
    stack = [body]
    while stack:
        n = stack.pop()
        if n[0] == REF:
            out.setdefault(n[1], (n[2], n[3]))
        elif n[0] in (CAT, ALT):
            stack.extend(n[1])
        elif n[0] == REP:
            stack.append(n[1])
    return out


def _components(roots: list[str], refs: dict) -> list[list[str]]:
    """Strongly connected components of the rules reachable from `roots`, each after every one it refers to
    (Tarjan's algorithm, iterative)."""
    index: dict = {}
    low: dict = {}
    on_stack: set = set()
    stack: list = []
    out: list = []
    for root in roots:
        if root in index:
            continue
        work = [(root, iter(refs[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(refs[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    u = work[-1][0]
                    low[u] = min(low[u], low[v])
                if low[v] == index[v]:
                    group = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        group.append(w)
                        if w == v:
                            break
                    out.append(sorted(group))
    return out


class _NotLinear(Exception):
    def __init__(self, rule: str, why: str):
        super().__init__(f"rule {rule!r} {why}")
        self.rule = rule


def _solve_group(group: list[str], rules: dict, where: dict, solved: dict) -> dict:
    members = set(group)
    memo: dict = {}
    bodies = {x: substitute(rules[x], solved, memo) for x in group}
    failures = []
    for left in (False, True):
        try:
            eqs = {x: _Linear(members, left, x).split(bodies[x]) for x in group}
        except _NotLinear as e:
            failures.append(e)
            continue
        return _eliminate(group, eqs, left)
    names = ", ".join(repr(x) for x in group)
    line, col = where.get(failures[0].rule, (None, None))
    raise UnsupportedGrammarError(
        f"the grammar is not regular: {'rules ' if len(group) > 1 else 'rule '}{names} "
        f"recurse{'' if len(group) > 1 else 's'} with text on both sides of the recursion ({failures[0]}), which "
        "takes a stack to match (nesting, such as balanced brackets or nested JSON). Only regular grammars are "
        "supported: a rule may lead back to itself (directly or through other rules) only as the very last thing of "
        "its alternatives, or only as the very first, and never inside a repetition. For JSON, use a json_schema "
        "constraint", tuple(group), line, col)


class _Linear:
    """Splits a member's body into (c, {Y: k}) with body = c | k Y | ... (right) or c | Y k | ... (left); c None =
    the empty language."""

    def __init__(self, members: set, left: bool, rule: str):
        self.members = members
        self.left = left
        self.rule = rule
        self._has: dict = {}

    def has(self, node: tuple) -> bool:
        return fold(node, lambda n: n[0] == REF and n[1] in self.members, lambda n, kids: any(kids), self._has)

    def split(self, node: tuple):
        if not self.has(node):
            return node, {}
        kind = node[0]
        if kind == REF:
            return None, {node[1]: EPSILON}
        if kind == ALT:
            consts, coeffs = [], {}
            for option in node[1]:
                c, d = self.split(option)
                if c is not None:
                    consts.append(c)
                for y, k in d.items():
                    coeffs.setdefault(y, []).append(k)
            return (alt(consts) if consts else None), {y: alt(ks) for y, ks in coeffs.items()}
        if kind == CAT:
            parts = node[1]
            recursive = [i for i, p in enumerate(parts) if self.has(p)]
            edge = 0 if self.left else len(parts) - 1
            if recursive != [edge]:
                i = next(i for i in recursive if i != edge)
                side = "before" if self.left else "after"
                raise _NotLinear(self.rule, f"refers to the recursive rule {self._first_ref(parts[i])!r} with more of "
                                            f"the rule {side} it")
            rest = cat(parts[1:]) if self.left else cat(parts[:-1])
            c, d = self.split(parts[edge])
            return self._times(rest, c), {y: self._times(rest, k) for y, k in d.items()}
        _, x, lo, hi = node
        if hi == 1:
            return self.split(alt([EPSILON, x]) if lo == 0 else x)
        raise _NotLinear(self.rule, f"refers to the recursive rule {self._first_ref(x)!r} inside a repetition")

    def _times(self, rest: tuple, x):
        """`rest` then `x` (right-linear: rest is what comes before the reference), or `x` then `rest` (left)."""
        if x is None:
            return None
        return cat([x, rest]) if self.left else cat([rest, x])

    def _first_ref(self, node: tuple) -> str:
        stack = [node]
        while stack:
            n = stack.pop()
            if n[0] == REF and n[1] in self.members:
                return n[1]
            stack.extend(reversed(n[1]) if n[0] in (CAT, ALT) else (n[1],) if n[0] == REP else ())
        return self.rule


def _eliminate(group: list[str], eqs: dict, left: bool) -> dict:
    """Solve X = c_X | sum_Y k_XY Y (right) / c_X | sum_Y Y k_XY (left) for every member X."""
    def times(a, b):  # a applied before b in the order of the text: right-linear a b, left-linear b a
        if a is None or b is None:
            return None
        return cat([b, a]) if left else cat([a, b])

    def plus(a, b):
        return b if a is None else a if b is None else alt([a, b])

    for x in group:
        c, d = eqs[x]
        loop = d.pop(x, None)
        if loop is not None:  # Arden: X = k X | rest  ->  X = k* rest
            star = rep(loop, 0, None)
            c = times(star, c)
            d = {y: times(star, k) for y, k in d.items()}
            eqs[x] = (c, d)
        for z in group:
            if z == x:
                continue
            cz, dz = eqs[z]
            k = dz.pop(x, None)
            if k is None:
                continue
            cz = plus(cz, times(k, c))
            for y, kxy in d.items():
                dz[y] = plus(dz.get(y), times(k, kxy))
            eqs[z] = (cz, dz)
    return {x: (EMPTY if eqs[x][0] is None else eqs[x][0]) for x in group}
