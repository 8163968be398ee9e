"""The JSON number leaf, exact for bounds and integer `multipleOf`.

Frame = (node, text): the number's text so far. Each byte is kept only if the new prefix can still be
completed to an in-range value (`_viable`), decided with exact rational arithmetic over the values the
prefix can still reach. Texts are limited to 15 significant digits: then distinct decimals round to
distinct doubles in order, so comparisons Python makes on the parsed float agree with ours.
Exponents are offered only for numbers with no bounds; unconstrained texts are reduced to their shape so
the number of states stays small.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from .nodes import NEVER, POP, Node

MAX_DIGITS = 15  # significant digits; 15 decimal digits always survive a round trip through a double
MAX_EXPONENT_DIGITS = 2
_TEXT = re.compile(r"(-?)(\d*)(?:(\.)(\d*))?(?:([eE])([+-]?)(\d*))?")
_CHARS = b"-0123456789.eE+"


def _lcm(a: Fraction, b: Fraction) -> Fraction:
    return Fraction(math.lcm(a.numerator * b.denominator, b.numerator * a.denominator), a.denominator * b.denominator)


class JsonNumber(Node):
    """A JSON number (or integer) in [minimum, maximum] (either end exclusive or open), a multiple of
    `multiple_of` if given."""

    __slots__ = ("integer", "lo", "lo_excl", "hi", "hi_excl", "mult", "constrained", "allow_exp")

    def __init__(self, integer: bool, lo=None, lo_excl=False, hi=None, hi_excl=False, mult=None):
        self.integer = integer
        self.lo, self.lo_excl, self.hi, self.hi_excl, self.mult = lo, lo_excl, hi, hi_excl, mult
        self.constrained = lo is not None or hi is not None or mult is not None
        self.allow_exp = not self.constrained and not integer

    @classmethod
    def build(cls, integer: bool, lo=None, lo_excl=False, hi=None, hi_excl=False, mult=None) -> Node:
        node = cls(integer, lo, lo_excl, hi, hi_excl, mult)
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
        unit = step if self.mult is None else _lcm(step, self.mult)
        start = first if lo is None else max(first, lo)
        end = last if hi is None else min(last, hi)
        x = math.ceil(start / unit) * unit
        if lo is not None and lo_excl and x == lo:
            x += unit
        if x > end:
            return False
        return not (hi is not None and hi_excl and x == hi)

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
        return self.mult is None or (value / self.mult).denominator == 1

    # ------------------------------------------------------------------------------- shortest way out
    def exit_bytes(self, frame, child_exit) -> float | None:
        """The fewest characters that complete the text `frame[1]` to an in-range number, in closed form.

        NOTE: searching texts frame by frame visits every viable prefix shorter than the answer: 10**8 of them for
        `minimum: 1e8` (it ran 85 s into MAX_EXIT_SEARCH). Here each way to complete the text -- k more integer
        digits, f fraction digits (after a dot if none yet), a sign if none yet -- reaches a grid of values, and
        _grid_hits decides each grid exactly; they are tried cheapest first."""
        parts = self._parts(frame[1])
        if parts is None:
            return math.inf
        if not self.constrained:
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

    def _canonical(self, text: str) -> str:
        # NOTE: without bounds only the shape matters (which digits are leading zeros, counts), so texts of
        # the same shape share one state.
        if self.constrained:
            return text
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
        text = frame[1]
        out = {}
        for b in _CHARS:
            t = text + chr(b)
            if self._viable(t):
                out[b] = (self, self._canonical(t))
        return out

    def epsilon(self, frame):
        text = frame[1]
        parts = self._parts(text)
        if parts is None or not self._complete(parts):
            return ()
        if self.constrained and not self._in_range(Fraction(text)):
            return ()
        return ((POP,),)
