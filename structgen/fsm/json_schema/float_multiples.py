"""jsonschema's float `multipleOf` test, decided exactly over a whole grid of decimals.

For a float divisor `dB` jsonschema (`_keywords.multipleOf`) computes `q = instance / dB` in doubles and
requires `int(q) == q`, so an exact decimal multiple can fail: 0.07 / 0.01 == 7.000000000000001. For
decimals with at most 15 significant digits that test is a function of the value alone (an integer instance
converts to the same double). `FloatDivisorCheck` answers "does some v = n*unit, n0 <= n <= n1 pass?" exactly,
without scanning: failing runs are long and structured (every integer multiple of 0.07 whose quotient lies in
the top 83% of a binade fails), so a bounded scan would prune numbers that are fine and, worse, disagree with
the shortest-completion closed form.

How: with K = v / m the exact quotient (m the divisor as a decimal, D the double jsonschema divides by),
F = fl(v) = g * R with g the spacing of doubles at v and R = round(v / g), and fl(F / D) is an integer iff R
lies in the window [D(K' - h) / g, D(K' + h) / g] of some integer K' (h: half the spacing of doubles at K').
|F / D - K| < K * 2**-52, so only K' = K matters (K' = K +- 1 too in [2**51, 2**52)), and above 2**52 every
double is an integer. Inside a region where the binades of v and of K are fixed, R and the window ends are
floors of linear functions of n, so the number of n that pass is a sum of floor sums (`_floor_sum`, Euclid-like,
O(log)). A few points next to powers of two, where the window is lopsided, are tested one by one.

NOTE: assumes v < 2**53 with at most 15 significant digits (numbers.py's texts: then v / g is never a
half-integer, so rounding to nearest needs no tie rule) and v / D never overflows (compiler.py refuses such a
divisor).
"""

from __future__ import annotations

import math
from fractions import Fraction

# Below this a divisor lets jsonschema's quotient of a 15-digit number overflow, and jsonschema then switches to
# an exact binary test we do not mirror: 1e15 / 5.6e-294 is past the largest double.
MIN_FLOAT_DIVISOR = 1e-290
_EXACT_PAST = (1 << 52) + 4  # from here F / D >= 2**52, where every double is an integer
_FIRST_TRIES = 4  # candidates tested one by one before the exact count: most grids pass on the first


def is_binary_exact(divisor: float) -> bool:
    """True when the double equals its decimal spelling (0.5, 0.25, 3.0): then every exact decimal multiple of
    at most 15 significant digits is a double too, the quotient is exact, and jsonschema's test cannot fail."""
    return Fraction(divisor) == Fraction(repr(divisor))


def _pow2(e: int) -> Fraction:
    return Fraction(1 << e) if e >= 0 else Fraction(1, 1 << -e)


def _floor_log2(v: Fraction) -> int:
    """e with 2**e <= v < 2**(e + 1), for v > 0."""
    e = v.numerator.bit_length() - v.denominator.bit_length()
    if v < _pow2(e):
        e -= 1
    elif v >= _pow2(e + 1):
        e += 1
    return e


def _floor_sum(n: int, m: int, a: int, b: int) -> int:
    """sum(floor((a*i + b) / m) for i in range(n)), m > 0, any integers a, b, in O(log m) steps."""
    total = 0
    if a < 0 or a >= m:
        total += n * (n - 1) // 2 * (a // m)
        a %= m
    if b < 0 or b >= m:
        total += n * (b // m)
        b %= m
    while True:
        if a >= m:
            total += n * (n - 1) // 2 * (a // m)
            a %= m
        if b >= m:
            total += n * (b // m)
            b %= m
        top = a * n + b
        if top < m:
            return total
        n, b = divmod(top, m)
        m, a = a, m


def _sum_floor(slope: Fraction, icpt: Fraction, lo: int, hi: int) -> int:
    """sum(floor(slope*n + icpt) for n in lo..hi)."""
    start = slope * lo + icpt
    den = slope.denominator * start.denominator // math.gcd(slope.denominator, start.denominator)
    return _floor_sum(hi - lo + 1, den, slope.numerator * (den // slope.denominator),
                      start.numerator * (den // start.denominator))


def _floor_runs(slope: Fraction, icpt: Fraction, lo: int, hi: int):
    """(first, last, k): the maximal runs of lo..hi on which floor(slope*n + icpt) == k."""
    n = lo
    while n <= hi:
        k = math.floor(slope * n + icpt)
        if slope > 0:
            last = math.ceil((k + 1 - icpt) / slope) - 1
        elif slope < 0:
            last = math.floor((k - icpt) / slope)
        else:
            last = hi
        last = min(last, hi)
        yield n, last, k
        n = last + 1


class FloatDivisorCheck:
    """jsonschema's test for one float divisor `divisor` whose decimal spelling is `decimal` (Fraction(repr))."""

    __slots__ = ("decimal", "divisor", "exact_divisor", "_memo")

    def __init__(self, divisor: float):
        if not (isinstance(divisor, float) and divisor >= MIN_FLOAT_DIVISOR):
            raise ValueError(f"a float divisor of at least {MIN_FLOAT_DIVISOR} is needed, not {divisor!r}")
        self.divisor = divisor
        self.decimal = Fraction(repr(divisor))
        self.exact_divisor = Fraction(divisor)
        self._memo: dict = {}

    def passes(self, value: Fraction) -> bool:
        """jsonschema's own test on the number whose text has exact value `value`."""
        f = value.numerator / value.denominator  # int / int rounds correctly, as float(text) does
        q = f / self.divisor
        try:
            return int(q) == q
        except OverflowError:  # jsonschema's fallback, kept for fidelity (MIN_FLOAT_DIVISOR keeps it away)
            return (Fraction(f) / self.exact_divisor).denominator == 1

    def any_passes(self, unit: Fraction, n0: int, n1: int) -> bool:
        """Whether some v = n * unit with n0 <= n <= n1 (n0 >= 0; unit a multiple of `decimal`) passes."""
        if n0 > n1:
            return False
        key = (unit, n0, n1)
        hit = self._memo.get(key)
        if hit is None:
            hit = any(self.passes(n * unit) for n in range(n0, min(n1, n0 + _FIRST_TRIES - 1) + 1)) or \
                any(c > 0 for c in self._counts(unit, n0, n1))
            if len(self._memo) < 1 << 14:
                self._memo[key] = hit
        return hit

    def count_passes(self, unit: Fraction, n0: int, n1: int) -> int:
        """How many v = n * unit with n0 <= n <= n1 pass (exact; what any_passes decides, for tests)."""
        return sum(self._counts(unit, n0, n1)) if n0 <= n1 else 0

    # ------------------------------------------------------------------------------------------------ internals
    def _counts(self, unit: Fraction, n0: int, n1: int):
        """Counts of passing n, region by region from n0 up (so any() stops at the first region that has one)."""
        j = unit / self.decimal
        if j.denominator != 1:
            raise ValueError("unit must be a multiple of the divisor")
        j = j.numerator
        n = n0
        while n <= n1:
            k = n * j
            if k == 0:
                yield 1  # 0 / dB == 0.0
                n += 1
                continue
            if k >= _EXACT_PAST:
                yield n1 - n + 1
                return
            c = k.bit_length() - 1
            if k < 16 or k < (1 << c) + 4 or k > (1 << (c + 1)) - 3:
                # NOTE: next to a power of two the doubles' spacing changes inside the window: test directly
                yield int(self.passes(n * unit))
                n += 1
                continue
            e = _floor_log2(n * unit)
            last = min(n1, ((1 << (c + 1)) - 3) // j, math.ceil(_pow2(e + 1) / unit) - 1)
            yield self._count_region(unit, j, c, e, n, last)
            n = last + 1

    def _count_region(self, unit: Fraction, j: int, c: int, e: int, lo: int, hi: int) -> int:
        """Passing n in lo..hi, where K = n*j stays in [2**c + 4, 2**(c+1) - 3] (c <= 51) and v = n*unit in
        [2**e, 2**(e+1))."""
        g = _pow2(e - 52)  # spacing of doubles at v
        h = _pow2(c - 53)  # half the spacing of doubles at K
        x_slope, x_icpt = unit / g, Fraction(1, 2)  # R(n) = floor(x): v / g rounded
        w_slope = j * self.exact_divisor / g
        size = hi - lo + 1
        total = 0
        for t in ((-1, 0, 1) if c == 51 else (0,)):
            low = (t - h) * self.exact_divisor / g  # window of K + t: ceil(w_slope*n + low) .. floor(... + high)
            high = (t + h) * self.exact_divisor / g
            total += self._at_least(x_slope, x_icpt, w_slope, low, lo, hi)
            total += self._at_most(x_slope, x_icpt, w_slope, high, lo, hi)
            total -= size  # [R >= L] + [R <= U] - 1 == [L <= R <= U], since L <= U + 1
        return total

    @staticmethod
    def _at_least(xs, xi, ws, wi, lo, hi) -> int:
        """#n with floor(xs*n + xi) >= ceil(ws*n + wi). The difference is floor(d) or floor(d) - 1 for
        d = (xs - ws)*n + xi - wi, so where floor(d) == 0 the indicator is linear: difference + 1."""
        count = 0
        for a, b, k in _floor_runs(xs - ws, xi - wi, lo, hi):
            if k >= 1:
                count += b - a + 1
            elif k == 0:
                count += _sum_floor(xs, xi, a, b) + _sum_floor(-ws, -wi, a, b) + (b - a + 1)
        return count

    @staticmethod
    def _at_most(xs, xi, ws, wi, lo, hi) -> int:
        """#n with floor(xs*n + xi) <= floor(ws*n + wi). The difference (right minus left) is floor(d) or
        floor(d) + 1 for d = (ws - xs)*n + wi - xi: where floor(d) == -1 the indicator is difference + 1."""
        count = 0
        for a, b, k in _floor_runs(ws - xs, wi - xi, lo, hi):
            if k >= 0:
                count += b - a + 1
            elif k == -1:
                count += _sum_floor(ws, wi, a, b) - _sum_floor(xs, xi, a, b) + (b - a + 1)
        return count
