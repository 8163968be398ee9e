"""`structgen bench engine`'s own logic (no model): system order, the matched-work ratio, the recorded command."""

import sys

import pytest

from structgen.bench import engine as E
from structgen.bench.report import command_line


def _level(system, wall, lengths, c=2, mask_s=0.0, steps=10):
    return E.LevelResult(system, c, wall, sum(lengths), ttft_s=[0.1] * c, tpot_s=[0.01] * c, steps=steps,
                         mask_s=mask_s, lengths=list(lengths))


def test_matched_runs_right_after_the_run_it_copies():
    assert E._order(["ours-matched", "ours", "ours-constrained-nodraft", "hf"]) == \
        ["ours", "ours-constrained-nodraft", "ours-matched", "hf"]
    with pytest.raises(SystemExit, match="needs ours-constrained-nodraft"):
        E._order(["ours", "ours-matched"])


def _table_rows(md):
    rows = [line.split("|")[1:-1] for line in md.splitlines()[2:]]
    return {r[0].strip(): [c.strip() for c in r] for r in rows}


def test_matched_ratio_only_where_the_work_is_the_same():
    results = [_level("ours-constrained-nodraft", 5.0, [10, 20], mask_s=0.2),
               _level("ours-matched", 4.5, [10, 20]),
               _level("ours-constrained", 3.0, [10, 21])]       # a different token count: no same-work ratio
    rows = _table_rows(E.render(results, [2]))
    headers = [h.strip() for h in E.render(results, [2]).splitlines()[0].split("|")[1:-1]]
    col = headers.index("matched wall / wall")
    assert rows["ours-constrained-nodraft"][col] == "0.900x"    # 4.5 / 5.0: 10% slower than unconstrained
    assert rows["ours-constrained"][col] == "-"
    assert rows["ours-matched"][col] == "-"
    assert rows["ours-constrained-nodraft"][headers.index("mask ms/step")] == "20.0"


def test_the_recorded_command_is_the_structgen_command(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/x/bin/structgen", "bench", "engine"])
    assert command_line() == "structgen bench engine"
    import structgen.cli

    monkeypatch.setattr(sys, "argv", [structgen.cli.__file__, "bench", "engine"])     # python -m structgen.cli
    assert command_line() == "structgen bench engine"
