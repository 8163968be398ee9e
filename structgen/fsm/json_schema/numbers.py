"""The JSON number leaf, exact for bounds and any `multipleOf` (0.01, 0.5, 1e-8, 7, 1e308).

Frame = (node, text): the number's text so far. Each byte is kept only if the new prefix can still be
completed to an accepted number (`_viable`), decided with exact rational arithmetic over the values the
prefix can still reach: per way to go on, a grid of multiples of one unit (`_grids`, `_grid_hits`). Texts are
limited to 15 significant digits: then distinct decimals round to distinct doubles in order, so comparisons
Python makes on the parsed float agree with ours.

`multipleOf` is the lcm of the schema's divisors as decimals (0.01 is 1/100), so an accepted number is an exact
decimal multiple. For a float divisor jsonschema also needs its own float test to pass (`instance / dB` must be
an integral double; 0.07 / 0.01 is not): the number must pass that too, and a grid is kept only if one of its
multiples passes, which float_multiples.py decides exactly (no scan, no heuristic), so every state stays
productive and `exit_bytes` stays exact. A divisor that is a binary fraction (0.5, 0.25, 3.0) needs no test.
Exponents are offered only for numbers with no bounds; unconstrained texts are reduced to their shape so
the number of states stays small.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from ...errors import InvalidSchemaError, UnsupportedSchemaError
from .float_multiples import MIN_FLOAT_DIVISOR, FloatDivisorCheck, is_binary_exact
from .nodes import NEVER, POP, Node
from .normalize import _number

MAX_RESIDUE_DIVISOR = 10_000  # integer multipleOf up to this: decided prefixes collapse to (residue, shape) states
MAX_DIGITS = 15  # significant digits; 15 decimal digits always survive a round trip through a double
MAX_EXPONENT_DIGITS = 2
_TEXT = re.compile(r"(-?)(\d*)(?:(\.)(\d*))?(?:([eE])([+-]?)(\d*))?")
_CHARS = b"-0123456789.eE+"


def _lcm(a: Fraction, b: Fraction) -> Fraction:
    return Fraction(math.lcm(a.numerator * b.denominator, b.numerator * a.denominator), a.denominator * b.denominator)


def multiple_of(values: list, where: str) -> tuple[Fraction, float | None]:
    """(mult, float_divisor) for JsonNumber from a schema's `multipleOf` values (several after an allOf merge):
    mult = their lcm as decimals; float_divisor = the one float among them that jsonschema's float test can fail
    for (not a binary fraction), or None."""
    mult, floats = None, []
    for v in values:
        f = _number(v, "multipleOf", where)
        if f <= 0:
            raise InvalidSchemaError("'multipleOf' must be > 0", where)
        mult = f if mult is None else _lcm(mult, f)
        if isinstance(v, float) and not is_binary_exact(v) and v not in floats:
            floats.append(v)
    if len(floats) > 1:
        # NOTE: jsonschema tests each divisor in floating point; the exact count (float_multiples.py) is for one
        raise UnsupportedSchemaError("multipleOf", where, f"several fractional multipleOf together ({floats})")
    if floats and floats[0] < MIN_FLOAT_DIVISOR:
        raise UnsupportedSchemaError("multipleOf", where, f"a fractional multipleOf below {MIN_FLOAT_DIVISOR} "
                                     "(jsonschema's float quotient overflows)")
    return mult, (floats[0] if floats else None)


class JsonNumber(Node):
    """A JSON number (or integer) in [minimum, maximum] (either end exclusive or open), an exact multiple of
    `mult` (a Fraction) if given, and passing jsonschema's float test for `float_divisor` (a float whose
    decimal spelling divides `mult`) if given."""

    __slots__ = ("integer", "lo", "lo_excl", "hi", "hi_excl", "mult", "check", "constrained", "allow_exp")

    def __init__(self, integer: bool, lo=None, lo_excl=False, hi=None, hi_excl=False, mult=None,
                 float_divisor: float | None = None):
        self.integer = integer
        self.lo, self.lo_excl, self.hi, self.hi_excl, self.mult = lo, lo_excl, hi, hi_excl, mult
        self.check = None if float_divisor is None else FloatDivisorCheck(float_divisor)
        if self.check is not None and (mult is None or (mult / self.check.decimal).denominator != 1):
            raise ValueError("mult must be a multiple of float_divisor")
        self.constrained = lo is not None or hi is not None or mult is not None
        self.allow_exp = not self.constrained and not integer

    @classmethod
    def build(cls, integer: bool, lo=None, lo_excl=False, hi=None, hi_excl=False, mult=None,
              float_divisor: float | None = None) -> Node:
        node = cls(integer, lo, lo_excl, hi, hi_excl, mult, float_divisor)
        return node if node._viable("") else NEVER

    # ------------------------------------------------------------------------------------- syntax
    def _parts(self, text: str):
        """(sign, int digits, dot, frac digits, e, exp sign, exp digits) if text is a prefix of an
        allowed number text, else None."""
        m = _TEXT.fullmatch(text)
        if m is None:
            return None
        sign, ip, dot, fp, e, es, ed = m.groups()
        fp = fp or ""
        if ip == "" and (dot or e):
            return None
        if len(ip) > 1 and ip[0] == "0":
            return None
        if dot and self.integer:
            return None
        if e:
            if not self.allow_exp or (dot and fp == "") or len(ed) > MAX_EXPONENT_DIGITS:
                return None
        digits = len(fp) if ip == "0" else len(ip) + len(fp)
        if digits > MAX_DIGITS or (dot and fp == "" and digits >= MAX_DIGITS):
            return None
        return sign, ip, dot, fp, e, es, ed

    @staticmethod
    def _complete(parts) -> bool:
        sign, ip, dot, fp, e, es, ed = parts
        return ip != "" and (not dot or fp != "") and (not e or ed != "")

    # ---------------------------------------------------------------------------------- viability
    def _grids(self, ip: str, dot, fp: str):
        """Magnitudes a prefix can still reach, as (first, last, step): the multiples of step in between."""
        if ip == "":
            for d in "0123456789":
                yield from self._grids(d, None, "")
            return
        if not dot:
            if ip == "0":
                yield (Fraction(0), Fraction(0), Fraction(1))
                if not self.integer:
                    step = Fraction(1, 10**MAX_DIGITS)
                    yield (Fraction(0), 1 - step, step)
                return
            d = int(ip)
            for k in range(0, MAX_DIGITS - len(ip) + 1):
                frac_digits = MAX_DIGITS - len(ip) - k
                step = Fraction(1) if self.integer or frac_digits == 0 else Fraction(1, 10**frac_digits)
                yield (Fraction(d * 10**k), Fraction((d + 1) * 10**k) - step, step)
            return
        max_frac = MAX_DIGITS if ip == "0" else MAX_DIGITS - len(ip)
        step = Fraction(1, 10**max_frac)
        base = Fraction(ip + ("." + fp if fp else ""))
        yield (base, base + Fraction(1, 10 ** len(fp)) - step, step)

    def _bounds(self, negative: bool):
        """(lo, lo_excl, hi, hi_excl) on the magnitude when the sign is fixed."""
        if not negative:
            return self.lo, self.lo_excl, self.hi, self.hi_excl
        lo = None if self.hi is None else -self.hi
        hi = None if self.lo is None else -self.lo
        return lo, self.hi_excl, hi, self.lo_excl

    def _grid_hits(self, first, last, step, lo, lo_excl, hi, hi_excl) -> bool:
        """Whether a multiple of `step` (and of mult) in [first, last] is in the magnitude bounds and passes
        jsonschema's float test."""
        unit = step if self.mult is None else _lcm(step, self.mult)
        start = first if lo is None else max(first, lo)
        end = last if hi is None else min(last, hi)
        n0, n1 = math.ceil(start / unit), math.floor(end / unit)
        if lo_excl and n0 * unit == lo:
            n0 += 1
        if hi_excl and n1 * unit == hi:
            n1 -= 1
        if n0 > n1:
            return False
        return self.check is None or self.check.any_passes(unit, n0, n1)

    def _viable(self, text: str) -> bool:
        parts = self._parts(text)
        if parts is None:
            return False
        if not self.constrained:
            return True
        sign, ip, dot, fp = parts[:4]
        signs = [True] if sign else ([False, True] if ip == "" else [False])
        for negative in signs:
            bounds = self._bounds(negative)
            if any(self._grid_hits(a, b, s, *bounds) for a, b, s in self._grids(ip, dot, fp)):
                return True
        return False

    def _in_range(self, value: Fraction) -> bool:
        if self.lo is not None and (value < self.lo or (self.lo_excl and value == self.lo)):
            return False
        if self.hi is not None and (value > self.hi or (self.hi_excl and value == self.hi)):
            return False
        if self.mult is not None and (value / self.mult).denominator != 1:
            return False
        return self.check is None or self.check.passes(abs(value))

    # ------------------------------------------------------------------------------- shortest way out
    def exit_bytes(self, frame, child_exit) -> float | None:
        """The fewest characters that complete the text `frame[1]` to an in-range number, in closed form.

        NOTE: searching texts frame by frame visits every viable prefix shorter than the answer: 10**8 of them for
        `minimum: 1e8` (it ran 85 s into MAX_EXIT_SEARCH). Here each way to complete the text -- k more integer
        digits, f fraction digits (after a dot if none yet), a sign if none yet -- reaches a grid of values, and
        _grid_hits decides each grid exactly; they are tried cheapest first."""
        if frame[1].startswith("%"):
            return self._residue_exit(frame[1])
        decided = frame[1].startswith("#")
        parts = self._parts(frame[1][1:] if decided else frame[1])
        if parts is None:
            return math.inf
        if not self.constrained or decided:
            # NOTE: an unbounded number's prefix that is not complete yet is completed by one "0" ("-0", "1.0",
            # "1e0"; the digit caps leave room for it, see _parts)
            return 0 if self._complete(parts) else 1
        sign, ip, dot, fp = parts[:4]
        signs = [(sign == "-", 0)] if (sign or ip) else [(False, 0), (True, 1)]
        ks = [0] if (dot or ip == "0") else range(0 if ip else 1, MAX_DIGITS + 1)
        fs = [0] if self.integer else range(MAX_DIGITS + 1)
        options = []
        for negative, sign_cost in signs:
            for k in ks:
                for f in fs:
                    for zero in ((False, True) if not ip and k == 1 else (False,)):
                        cost = sign_cost + k + (f + 1 if f and not dot else f)
                        options.append((cost, negative, k, f, zero))
        options.sort(key=lambda o: o[0])
        for cost, negative, k, f, zero in options:
            if self._completes(negative, ip, dot, fp, k, f, zero):
                return cost
        return math.inf

    def _completes(self, negative: bool, ip: str, dot, fp: str, k: int, f: int, zero: bool) -> bool:
        """Whether some k integer digits and f fraction digits appended to the text (ip, dot, fp; a dot added when
        f > 0 and there is none) give an in-range number; `zero`: the one new integer digit is a 0."""
        frac = len(fp) + f
        if (dot and frac == 0) or (self.integer and frac):
            return False
        span = 10 ** (k + f)
        if ip:
            int_zero = ip == "0"
            lo_n = int(ip + fp) * span
            hi_n = lo_n + span - 1
        elif zero:
            int_zero, lo_n, hi_n = True, 0, 10 ** f - 1
        else:
            int_zero, lo_n, hi_n = False, 10 ** (k - 1 + f), span - 1  # no leading zero before more digits
        digits = frac if int_zero else len(ip) + k + frac
        if digits > MAX_DIGITS:
            return False
        scale = 10 ** frac
        return self._grid_hits(Fraction(lo_n, scale), Fraction(hi_n, scale), Fraction(1, scale),
                               *self._bounds(negative))

    # ----------------------------------------------------------------------------- frame protocol
    def entry(self):
        return (self, "")

    @staticmethod
    def _shape(text: str) -> str:
        """What of a number text still matters once its value does not (which digits are leading zeros, counts): texts
        of one shape share one state."""
        out, in_int, first = [], True, True
        for ch in text:
            if ch.isdigit():
                if in_int and first:
                    out.append("0" if ch == "0" else "1")
                else:
                    out.append("1")
                first = False
            else:
                if ch in ".eE":
                    in_int = False
                out.append(ch)
        return "".join(out)

    def moves(self, frame) -> dict:
        return self._moves(frame[1])

    def _decided(self, text: str) -> bool:
        """Whether every number text that extends `text` is in range (bounds only: no multipleOf, no exponents), so the
        exact digits no longer matter. NOTE: such texts collapse to their shape (`#` + _shape, see _collapse): `119` and
        `151` under `minimum: 2` become one state, which keeps Combine's product searches and the token index small."""
        if self.check is not None or self.allow_exp or (self.mult is not None and not self._residue_mode()):
            return False
        parts = self._parts(text)
        if parts is None:
            return False
        sign, ip, dot, fp = parts[:4]
        if ip == "" or (dot and self.integer):
            return False
        lo, lo_excl, hi, _ = self._bounds(sign == "-")
        if dot:
            least = Fraction(ip + ("." + fp if fp else ""))
            most = least + Fraction(1, 10 ** len(fp))  # every extension is below this
        else:
            least, most = Fraction(int(ip)), None  # more digits: unbounded above
        if lo is not None and (least < lo or (lo_excl and least == lo)):
            return False
        if hi is not None and (most is None or most > hi):
            return False
        return True

    def _residue_mode(self) -> bool:
        """An integer multipleOf small enough that, once the bounds are decided, a prefix is its shape plus its value
        modulo mult (divisibility of a decimal numeral is finite-state)."""
        return self.mult is not None and self.mult.denominator == 1 and self.mult <= MAX_RESIDUE_DIVISOR

    def _collapse(self, text: str) -> str:
        """The state of a viable text: exact, or once decided its shape (`#shape`), with mult its residue too
        (`%r:shape`)."""
        if not self.constrained:
            return self._shape(text)
        if not self._decided(text):
            return text
        if self.mult is None:
            return "#" + self._shape(text)
        ip = self._parts(text)[1]
        return f"%{int(ip) % int(self.mult)}:{self._shape(text)}"

    def _residue_moves(self, text: str) -> dict:
        r_text, shape = text[1:].split(":", 1)
        r, m = int(r_text), int(self.mult)
        dot = "." in shape
        out = {}
        for b in _CHARS:
            ch = chr(b)
            t = shape + ch
            parts = self._parts(t)
            if parts is None or parts[4]:
                continue
            if ch.isdigit():
                if dot:
                    if ch != "0":
                        continue  # a non-zero fraction digit: no multiple of an integer any more
                    nr = r
                else:
                    nr = (r * 10 + int(ch)) % m
            else:
                nr = r
            nxt = f"%{nr}:{self._shape(t)}"
            if self._residue_exit(nxt) != math.inf:  # every state offered can still end on a multiple
                out[b] = (self, nxt)
        return out

    def _residue_exit(self, text: str) -> float:
        r_text, shape = text[1:].split(":", 1)
        r, m = int(r_text), int(self.mult)
        parts = self._parts(shape)
        sign, ip, dot, fp = parts[:4]
        if dot:
            return (0 if fp else 1) if r == 0 else math.inf
        if r == 0:
            return 0
        if ip == "0":
            return math.inf
        room = MAX_DIGITS - len(ip)
        frontier, seen = {r}, {r}
        for k in range(1, room + 1):  # breadth first over residues: the fewest more digits to a multiple
            nxt = set()
            for x in frontier:
                for d in range(10):
                    y = (x * 10 + d) % m
                    if y == 0:
                        return k
                    if y not in seen:
                        seen.add(y)
                        nxt.add(y)
            frontier = nxt
            if not frontier:
                break
        return math.inf

    def _moves(self, text: str) -> dict:
        if text.startswith("%"):
            return self._residue_moves(text)
        if text.startswith("#"):  # decided: only the shape is left to check
            out = {}
            shape = text[1:]
            for b in _CHARS:
                t = shape + chr(b)
                if self._parts(t) is not None:
                    out[b] = (self, "#" + self._shape(t))
            return out
        out = {}
        for b in _CHARS:
            t = text + chr(b)
            if self._viable(t):
                out[b] = (self, self._collapse(t))
        return out

    def epsilon(self, frame):
        text = frame[1]
        if text.startswith("%"):
            r_text, shape = text[1:].split(":", 1)
            parts = self._parts(shape)
            return ((POP,),) if parts is not None and self._complete(parts) and r_text == "0" else ()
        decided = text.startswith("#")
        if decided:
            text = text[1:]
        parts = self._parts(text)
        if parts is None or not self._complete(parts):
            return ()
        if self.constrained and not decided and not self._in_range(Fraction(text)):
            return ()
        return ((POP,),)
