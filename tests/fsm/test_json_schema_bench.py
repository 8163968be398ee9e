"""JSONSchemaBench dev schemas at byte level: zero invalid instances accepted (asserted), with the valid
acceptance and compile-error rates per split printed. A deterministic sample keeps this under ~2 minutes;
every schema runs under a time limit, so a slow one is a failure, not a hang."""

from __future__ import annotations

import json
import random
import signal
import time
from collections import Counter

import pytest
from automaton_helpers import accepts, data_dir

from structgen.errors import ConstraintError
from structgen.fsm.json_schema import schema_automaton

BENCH = data_dir() / "jsonschemabench" / "dev"
PER_SPLIT = 10
SCHEMA_TIME_LIMIT_S = 10


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout


def _sample():
    rng = random.Random(2024)
    out = []
    for split in sorted(p for p in BENCH.iterdir() if p.is_dir()):
        files = sorted(split.glob("*.json"))
        out.extend((split.name, f) for f in sorted(rng.sample(files, min(PER_SPLIT, len(files)))))
    return out


@pytest.mark.skipif(not BENCH.is_dir(), reason=f"jsonschemabench not found at {BENCH} (set STRUCTGEN_DATA_DIR)")
def test_jsonschemabench_zero_invalid_accepted():
    stats: dict[str, Counter] = {}
    invalid_accepted, timeouts = [], []
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for split, path in _sample():
            c = stats.setdefault(split, Counter())
            doc = json.loads(path.read_text())
            c["schemas"] += 1
            signal.alarm(SCHEMA_TIME_LIMIT_S)
            try:
                a = schema_automaton(doc["schema"])
                c["compiled"] += 1
                for case in doc["tests"]:
                    ok = accepts(a, json.dumps(case["data"]))
                    if case["valid"]:
                        c["valid"] += 1
                        c["valid_accepted"] += ok
                    elif ok:
                        invalid_accepted.append(f"{split}/{path.name}: {json.dumps(case['data'])[:120]}")
            except ConstraintError:
                c["compile_error"] += 1
            except _Timeout:
                timeouts.append(f"{split}/{path.name}")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    print(f"\n{'split':24s} {'schemas':>7s} {'compiled':>8s} {'cerr%':>6s} {'valid acc%':>10s}")
    for split, c in stats.items():
        cerr = 100 * c["compile_error"] / c["schemas"]
        vacc = 100 * c["valid_accepted"] / c["valid"] if c["valid"] else float("nan")
        print(f"{split:24s} {c['schemas']:7d} {c['compiled']:8d} {cerr:6.1f} {vacc:10.1f}")
    assert invalid_accepted == [], invalid_accepted
    assert timeouts == [], f"schemas over the {SCHEMA_TIME_LIMIT_S}s limit: {timeouts}"
