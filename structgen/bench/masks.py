"""`structgen bench masks`: MaskBench-style correctness and mask speed, no model, every engine side by side.

Per schema and engine (in a worker process, under a time limit): compile and fill the first mask (TTFM), then
walk each labelled instance token by token with the same token ids for every engine: before each token the
engine fills the mask for its current state (the timed part, TBM), the token must be allowed and accepted; at
the end the mask must allow EOS. A valid instance must get through; an invalid one must be stopped somewhere.

Schema outcome (first that applies): compile_error, timeout, error (crash / exception while walking),
validation_error (a valid instance rejected), invalidation_error (an invalid instance accepted), passing.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import stats
from .cases import SchemaCase, instance_text
from .peers import EngineUnavailable, create_engine, mask_words, token_allowed
from .report import header_markdown, markdown_table, plot_distributions, write_jsonl
from .workers import EngineUnavailableError, run_tasks

OUTCOMES = ("passing", "compile_error", "validation_error", "invalidation_error", "timeout", "error")
TTFM_QUANTILES = (50, 90, 99)
TBM_QUANTILES = (50, 99, 99.9)


# --- worker side -------------------------------------------------------------------------------------------

@dataclass
class _WorkerState:
    engine: object
    row: np.ndarray        # (ceil(V/32),) int32, reused for every mask
    eos_ids: tuple[int, ...]


def setup_worker(spec: str, structgen_options: dict, tokenizer_factory=None) -> _WorkerState:
    """Build one engine for the default tokenizer (or `tokenizer_factory()`); runs once per worker process."""
    if tokenizer_factory is None:
        from structgen import default_tokenizer as tokenizer_factory
    tokenizer = tokenizer_factory()
    engine = create_engine(spec, tokenizer, structgen_options)
    row = np.zeros(mask_words(tokenizer.vocab_size), dtype=np.int32)
    return _WorkerState(engine, row, tuple(sorted(tokenizer.eos_token_ids)))


def _timed_fill(matcher, row: np.ndarray, times: list[float], firsts: list[bool] | None = None) -> None:
    row.fill(0)  # an engine that writes nothing must show as "nothing allowed", not as the previous mask
    t0 = time.perf_counter()
    matcher.fill_mask(row)
    times.append(time.perf_counter() - t0)
    if firsts is not None:
        firsts.append(matcher.first_visit())


def walk_instance(compiled, token_ids: list[int], row: np.ndarray, eos_ids: tuple[int, ...],
                  mask_times: list[float], firsts: list[bool] | None = None) -> tuple[bool, int | None]:
    """(accepted, index of the first refused token or len(tokens) when EOS was refused at the end). With `firsts`
    (engines whose matcher has first_visit), whether each fill met a new state goes there beside its time."""
    matcher = compiled.matcher()
    for i, token in enumerate(token_ids):
        _timed_fill(matcher, row, mask_times, firsts)
        if not token_allowed(row, token) or not matcher.advance(token):
            return False, i
    _timed_fill(matcher, row, mask_times, firsts)
    if any(token_allowed(row, e) for e in eos_ids):
        return True, None
    return False, len(token_ids)


def run_schema(state: _WorkerState, task: dict) -> dict:
    """The worker's handler: compile, time the first mask, walk every instance. Never raises for engine errors."""
    t0 = time.perf_counter()
    try:
        compiled = state.engine.compile(task["schema"])
        compiled.matcher().fill_mask(state.row)
    except Exception as e:  # any failure to compile is the engine's verdict on this schema
        return {"status": "compile_error", "error": f"{type(e).__name__}: {e}"[:500],
                "ttfm_s": None, "mask_times": []}
    ttfm = time.perf_counter() - t0
    mask_times: list[float] = []
    firsts: list[bool] | None = [] if hasattr(compiled.matcher(), "first_visit") else None
    walks = []
    try:
        for token_ids, valid in zip(task["tokens"], task["valid"]):
            accepted, refused_at = walk_instance(compiled, token_ids, state.row, state.eos_ids, mask_times, firsts)
            walks.append({"valid": valid, "accepted": accepted, "refused_at": refused_at})
    except Exception as e:
        return {"status": "error", "error": f"{type(e).__name__} while walking: {e}"[:500], "ttfm_s": ttfm,
                "mask_times": mask_times, "mask_first": firsts, "walks": walks}
    return {"status": classify(walks), "ttfm_s": ttfm, "mask_times": mask_times, "mask_first": firsts,
            "walks": walks}


def classify(walks: list[dict]) -> str:
    """Schema outcome from its instance walks (validation errors outrank invalidation errors)."""
    if any(w["valid"] and not w["accepted"] for w in walks):
        return "validation_error"
    if any(not w["valid"] and w["accepted"] for w in walks):
        return "invalidation_error"
    return "passing"


# --- supervisor side ---------------------------------------------------------------------------------------

@dataclass
class EngineRun:
    """Everything measured for one engine: per-schema rows plus the raw timings for percentiles and plots."""

    engine: str
    unavailable: str | None = None
    rows: list[dict] = field(default_factory=list)
    mask_times: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))  # split -> arrays
    # all fills' first-visit flags in the order of mask_times, or None for an engine that does not report them
    mask_first: list[np.ndarray] | None = field(default_factory=list)


def make_tasks(cases: list[SchemaCase], tokenizer) -> list[dict]:
    """One task per schema, instances pre-tokenized once so every engine walks exactly the same token ids."""
    tasks = []
    for case in cases:
        texts = [instance_text(inst.data) for inst in case.instances]
        tasks.append({"case_id": case.case_id, "split": case.split, "schema": case.schema,
                      "tokens": [tokenizer.encode(t) for t in texts],
                      "valid": [inst.valid for inst in case.instances]})
    return tasks


def run_engine(spec: str, tasks: list[dict], *, timeout_s: float, jobs: int = 1, structgen_options=None,
               tokenizer_factory=None, progress: bool = True) -> EngineRun:
    """Run every task on one engine in worker processes; a hang, crash or missing package is recorded."""
    run = EngineRun(spec)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(tasks), desc=f"masks {spec}", unit="schema", leave=False)
    try:
        outcomes = run_tasks(tasks, setup=setup_worker, setup_args=(spec, structgen_options or {}, tokenizer_factory),
                             handler=run_schema, timeout_s=timeout_s, jobs=jobs)
        for index, outcome in outcomes:
            task = tasks[index]
            run.rows.append(_row(spec, task, outcome))
            if outcome.kind == "result" and outcome.payload["mask_times"]:
                times = np.asarray(outcome.payload["mask_times"], dtype=np.float64)
                run.mask_times[task["split"]].append(times)
                firsts = outcome.payload.get("mask_first")
                if firsts is None:
                    run.mask_first = None
                elif run.mask_first is not None:
                    run.mask_first.append(np.stack([times, np.asarray(firsts, dtype=np.float64)]))  # (2, n)
            if bar:
                bar.update(1)
    except EngineUnavailableError as e:
        run.unavailable = str(e)
    finally:
        if bar:
            bar.close()
    order = {t["case_id"]: i for i, t in enumerate(tasks)}
    run.rows.sort(key=lambda r: order[r["case_id"]])
    return run


def _row(engine: str, task: dict, outcome) -> dict:
    row = {"engine": engine, "split": task["split"], "case_id": task["case_id"],
           "n_valid": sum(task["valid"]), "n_invalid": len(task["valid"]) - sum(task["valid"])}
    if outcome.kind == "timeout":
        return {**row, "status": "timeout", "error": outcome.detail, "ttfm_s": None, "n_masks": 0}
    if outcome.kind == "crash":
        return {**row, "status": "error", "error": outcome.detail[:500], "ttfm_s": None, "n_masks": 0}
    p = outcome.payload
    walks = p.get("walks", [])
    times = p["mask_times"]
    return {**row, "status": p["status"], "error": p.get("error"), "ttfm_s": p["ttfm_s"], "n_masks": len(times),
            "mask_s_total": float(sum(times)), "mask_s_max": float(max(times)) if times else None,
            "valid_rejected": sum(1 for w in walks if w["valid"] and not w["accepted"]),
            "invalid_accepted": sum(1 for w in walks if not w["valid"] and w["accepted"])}


# --- summary -----------------------------------------------------------------------------------------------

def summarize_rows(rows: list[dict], mask_arrays: list[np.ndarray]) -> dict:
    """Counts per outcome, TTFM percentiles over the schemas that compiled in time, TBM over every mask."""
    counts = {k: 0 for k in OUTCOMES}
    for r in rows:
        counts[r["status"]] += 1
    ttfm = [r["ttfm_s"] for r in rows if r["ttfm_s"] is not None]
    masks = np.concatenate(mask_arrays) if mask_arrays else np.zeros(0)
    return {"schemas": len(rows), **counts,
            "ttfm": stats.summarize(ttfm, TTFM_QUANTILES),
            "tbm": stats.summarize(masks, TBM_QUANTILES)}


def summarize_run(run: EngineRun) -> tuple[dict, dict[str, dict]]:
    """(overall summary, {split: summary})."""
    by_split_rows: dict[str, list[dict]] = defaultdict(list)
    for r in run.rows:
        by_split_rows[r["split"]].append(r)
    overall = summarize_rows(run.rows, [a for arrays in run.mask_times.values() for a in arrays])
    per_split = {s: summarize_rows(rs, run.mask_times.get(s, [])) for s, rs in by_split_rows.items()}
    return overall, per_split


def first_visit_split(run: EngineRun) -> dict | None:
    """{"first": summary, "cached": summary} of the fills that met a new state and of the rest (None: the engine
    does not say which is which)."""
    if not run.mask_first:
        return None
    both = np.concatenate(run.mask_first, axis=1)  # (2, n): times, first-visit flags
    first = both[1] > 0
    return {"first": stats.summarize(both[0][first], TBM_QUANTILES),
            "cached": stats.summarize(both[0][~first], TBM_QUANTILES)}


def render_markdown(runs: list[EngineRun], header: dict) -> str:
    reference = next((r for r in runs if r.engine == "structgen" and not r.unavailable), None)
    ref_summary = summarize_run(reference)[0] if reference else None
    ms, us = 1e3, 1e6
    headers = ["engine", "schemas", "passing", "compile err", "validation err", "invalidation err", "timeout",
               "error", "TTFM p50 ms", "TTFM p90 ms", "TTFM p99 ms", "TBM avg µs", "TBM p50 µs", "TBM p99 µs",
               "TBM p99.9 µs", "TTFM p50 vs structgen", "TBM avg vs structgen"]
    lines, split_rows, notes = [], [], []
    for run in runs:
        if run.unavailable:
            # EngineUnavailable is the adapters' "package missing"; anything else is a broken engine
            label = "not installed" if run.unavailable.startswith("EngineUnavailable") else "unavailable"
            lines.append([run.engine, label] + ["-"] * (len(headers) - 2))
            notes.append(f"- {run.engine}: {label}: {run.unavailable.splitlines()[0][:200]}")
            continue
        s, per_split = summarize_run(run)
        ttfm, tbm = s["ttfm"], s["tbm"]
        r_ttfm = stats.ratio(ttfm["p50"], ref_summary["ttfm"]["p50"]) if ref_summary else float("nan")
        r_tbm = stats.ratio(tbm["avg"], ref_summary["tbm"]["avg"]) if ref_summary else float("nan")
        lines.append([run.engine, s["schemas"], f"{s['passing']} ({stats.fmt_pct(s['passing'], s['schemas'])})",
                      s["compile_error"], s["validation_error"], s["invalidation_error"], s["timeout"], s["error"],
                      stats.fmt(ttfm["p50"], ms), stats.fmt(ttfm["p90"], ms), stats.fmt(ttfm["p99"], ms),
                      stats.fmt(tbm["avg"], us), stats.fmt(tbm["p50"], us), stats.fmt(tbm["p99"], us),
                      stats.fmt(tbm["p99.9"], us), stats.fmt_ratio(r_ttfm), stats.fmt_ratio(r_tbm)])
        for split in sorted(per_split):
            p = per_split[split]
            split_rows.append([split, run.engine, p["schemas"], p["passing"], p["compile_error"],
                               p["validation_error"], p["invalidation_error"], p["timeout"], p["error"],
                               stats.fmt(p["ttfm"]["p50"], ms), stats.fmt(p["ttfm"]["p90"], ms),
                               stats.fmt(p["tbm"]["avg"], us), stats.fmt(p["tbm"]["p99"], us)])
    split_rows.sort(key=lambda r: r[0])
    split_headers = ["split", "engine", "schemas", "passing", "compile err", "validation err", "invalidation err",
                     "timeout", "error", "TTFM p50 ms", "TTFM p90 ms", "TBM avg µs", "TBM p99 µs"]
    split_lines = []
    for run in runs:
        fv = None if run.unavailable else first_visit_split(run)
        if fv is None:
            continue
        total = fv["first"]["n"] + fv["cached"]["n"]
        split_lines += [[run.engine, kind, part["n"], stats.fmt_pct(part["n"], total),
                         stats.fmt(part["avg"] * part["n"] / max(total, 1), us), stats.fmt(part["avg"], us),
                         stats.fmt(part["p50"], us), stats.fmt(part["p99"], us), stats.fmt(part["p99.9"], us)]
                        for kind, part in (("first visit", fv["first"]), ("cached", fv["cached"]))]
    first_visits = ["", "### First visits and cached masks", "",
                    "A first visit is a fill that meets a state with no mask yet (it is built then, or shared with an "
                    "equivalent state's); cached, one already built. \"share of avg\" is each kind's part of the "
                    "TBM avg above. Only engines that keep masks per state say which is which.", "",
                    markdown_table(["engine", "fills", "n", "share", "share of avg µs", "avg µs", "p50 µs", "p99 µs",
                                    "p99.9 µs"], split_lines)] if split_lines else []
    parts = ["## Mask benchmark", header_markdown(header), "",
             "TTFM: compile + first mask, over schemas that compiled in time. TBM: one mask fill, over every "
             "token of every instance walk of the schemas that finished (a timed-out schema's masks go with its "
             "worker). Ratios: engine / structgen (lower is faster).", "",
             markdown_table(headers, lines), *(["", *notes] if notes else []), *first_visits,
             "", "### Per split", "", markdown_table(split_headers, split_rows)]
    return "\n".join(parts) + "\n"


def write_outputs(runs: list[EngineRun], header: dict, out_dir: Path) -> dict[str, Path]:
    """results.jsonl (one line per engine x schema), summary.md, summary.json-able header line, masks.png."""
    out_dir = Path(out_dir)
    records = [{"type": "header", **header}]
    for run in runs:
        if run.unavailable:
            records.append({"type": "engine", "engine": run.engine, "unavailable": run.unavailable})
            continue
        overall, per_split = summarize_run(run)
        records.append({"type": "engine", "engine": run.engine, **overall,
                        "tbm_by_visit": first_visit_split(run),
                        "per_split": {k: v for k, v in sorted(per_split.items())}})
        records += [{"type": "schema", **r} for r in run.rows]
    paths = {"jsonl": out_dir / "results.jsonl", "markdown": out_dir / "summary.md"}
    write_jsonl(paths["jsonl"], records)
    markdown = render_markdown(runs, header)
    paths["markdown"].write_text(markdown)
    ok = [r for r in runs if not r.unavailable]
    ttfm = {r.engine: np.array([x["ttfm_s"] * 1e3 for x in r.rows if x["ttfm_s"] is not None]) for r in ok}
    tbm = {r.engine: np.concatenate([a for arrays in r.mask_times.values() for a in arrays] or [np.zeros(0)]) * 1e6
           for r in ok}
    png = plot_distributions(out_dir / "masks.png", [("time to first mask", "ms", ttfm),
                                                     ("time per mask", "µs", tbm)])
    if png:
        paths["png"] = png
    return paths
