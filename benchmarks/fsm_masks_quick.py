"""Quick token-layer benchmark: time to first mask and time per mask on a sample of jsonschemabench dev schemas,
with the real SmolLM2 tokenizer. (The full MaskBench with peers side by side is `structgen bench masks`.)

    .venv/bin/python benchmarks/fsm_masks_quick.py [--per-category 2] [--limit-s 20]

For each sampled schema: compile with every cache off (= automaton + the initial state's mask: "time to first
mask"), then walk the first valid test instance token by token. At each step it times:
- first visit: fill_bitmask when the state's mask does not exist yet (mask built from the vocabulary walk);
  split into the automaton's own time (transitions()) and the token layer's (the rest);
- cached fill: fill_bitmask once the mask exists (one row copy), and advance().
A schema stops at --limit-s seconds of walking (counted as "cut").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np


class TimedAutomaton:
    """Wraps a ByteAutomaton and adds up the seconds spent in transitions()."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def initial(self):
        return self.inner.initial()

    def is_final(self, state):
        return self.inner.is_final(state)

    def transitions(self, state):
        t0 = time.perf_counter()
        try:
            return self.inner.transitions(state)
        finally:
            self.seconds += time.perf_counter() - t0


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def data_dir() -> Path:
    env = os.environ.get("STRUCTGEN_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-category", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-s", type=float, default=20.0, help="walking budget per schema")
    args = ap.parse_args()

    os.environ["STRUCTGEN_DISABLE_DISK_CACHE"] = "1"
    # One compile or one mask build past the limit is a clean ConstraintTooComplexError ("cut" below).
    os.environ.setdefault("STRUCTGEN_COMPILE_TIMEOUT_S", str(args.limit_s))
    import structgen
    from structgen.errors import ConstraintError, ConstraintTooComplexError
    from structgen.fsm import bitmask
    from structgen.fsm.api import compile_with_status
    from structgen.fsm.cache import default_cache

    root = data_dir() / "jsonschemabench" / "dev"
    if not root.is_dir():
        print(f"no test data at {root} (set STRUCTGEN_DATA_DIR)", file=sys.stderr)
        return 2
    tok = structgen.default_tokenizer()
    structgen.compile_regex("warm up", tok)  # vocabulary + imports, outside the timings
    rng = random.Random(args.seed)
    files = []
    for cat in sorted(p for p in root.iterdir() if p.is_dir()):
        names = sorted(cat.glob("*.json"))
        files += rng.sample(names, min(args.per_category, len(names)))

    ttfm, first_visit, first_auto, fills, advances = [], [], [], [], []
    errors, cut, walked = 0, 0, 0
    row = bitmask.allocate(1, tok.vocab_size)[0]
    for path in files:
        case = json.loads(path.read_text())
        default_cache().clear()
        t0 = time.perf_counter()
        try:
            c, _ = compile_with_status("json_schema", case["schema"], tok)
        except ConstraintTooComplexError:
            cut += 1
            print(f"{path.parent.name}/{path.name}: compile past the limit", file=sys.stderr)
            continue
        except ConstraintError:
            errors += 1
            continue
        ttfm.append(time.perf_counter() - t0)
        print(f"{path.parent.name}/{path.name}: first mask {ttfm[-1] * 1e3:.1f} ms", file=sys.stderr, flush=True)
        valid = [t["data"] for t in case["tests"] if t["valid"]]
        if not valid:
            continue
        timed = TimedAutomaton(c._index.automaton)
        c._index.automaton = timed
        cur = c.cursor()
        start = time.perf_counter()
        walked += 1
        for tid in c.encode(json.dumps(valid[0])):
            if time.perf_counter() - start > args.limit_s:
                cut += 1
                break
            fresh = cur.state not in c._index._masks
            before = timed.seconds
            t0 = time.perf_counter()
            try:
                cur.fill_bitmask(row)
            except ConstraintError:
                cut += 1
                print(f"  walk cut: a mask build ran past the limit", file=sys.stderr)
                break
            dt = time.perf_counter() - t0
            if fresh:
                first_visit.append(dt)
                first_auto.append(timed.seconds - before)
            t0 = time.perf_counter()
            cur.fill_bitmask(row)
            fills.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ok = cur.advance(tid)
            advances.append(time.perf_counter() - t0)
            if not ok:
                break  # valid instance rejected (whitespace style, unsupported format): not a timing concern

    ms = 1e3
    us = 1e6
    token_layer = np.array(first_visit) - np.array(first_auto)
    print(f"schemas: {len(files)} sampled, {len(ttfm)} compiled, {errors} compile errors (unsupported), "
          f"{walked} walked, {cut} cut at the limit ({args.limit_s:g} s)")
    print()
    print("| measure | n | p50 | p90 | p99 | max | mean |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, vals, scale, unit in [
        ("time to first mask (compile)", ttfm, ms, "ms"),
        ("first-visit mask, total", first_visit, ms, "ms"),
        ("first-visit mask, automaton transitions()", first_auto, ms, "ms"),
        ("first-visit mask, token layer (rest)", token_layer, ms, "ms"),
        ("fill_bitmask, mask cached", fills, us, "us"),
        ("advance", advances, us, "us"),
    ]:
        v = np.asarray(vals) * scale
        print(f"| {name} ({unit}) | {len(v)} | {pct(v, 50):.2f} | {pct(v, 90):.2f} | {pct(v, 99):.2f} | "
              f"{(v.max() if len(v) else float('nan')):.2f} | {(v.mean() if len(v) else float('nan')):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
