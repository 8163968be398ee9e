"""Running a golden set through a server into a run folder, resumable.

A run folder holds:
- `run.json`: the format, the golden set (path, hash, case count), the fingerprint (fingerprint.py), the options,
  and whether the run is complete; written before the first case, so an interrupted run still says what it is.
- `results.jsonl`: one CaseResult per finished case, appended and flushed as each finishes (in finishing order).
  One `write` per line, so Ctrl-C leaves whole lines; a process killed mid-write can leave one partial last
  line, which the next run drops (and reruns that case).

Rerunning into the same folder resumes: the golden hash and the fingerprint must equal run.json's (else
RunDirError, exit 2: mixing two configurations in one run would make its figures meaningless; `--fresh` starts
over), and the cases already in results.jsonl are skipped.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
from pathlib import Path

from .fingerprint import differences
from .golden import GoldenCase, GoldenSet
from .outcome import CaseResult

RUN_FORMAT = "structgen-regress-run/1"
RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"


class RunDirError(ValueError):
    """A run folder that cannot be used as asked (exit 2): missing, malformed, or another set/configuration."""


# ------------------------------------------------------------------------------------------ reading
def read_meta(folder: Path) -> dict:
    path = Path(folder) / RUN_FILE
    if not Path(folder).is_dir():
        raise RunDirError(f"run folder not found: {folder}")
    if not path.is_file():
        raise RunDirError(f"{folder} is not a regress run folder (no {RUN_FILE}); make one with "
                          f"`structgen regress run --out {folder} ...`")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != RUN_FORMAT:
        raise RunDirError(f"{path}: not a {RUN_FORMAT} file")
    return meta


def read_results(folder: Path) -> tuple[dict[str, CaseResult], bool]:
    """({case id: result}, whether the last line was partial). A malformed line other than a partial last one
    is a RunDirError naming its line; a repeated id keeps the last."""
    path = Path(folder) / RESULTS_FILE
    if not path.is_file():
        return {}, False
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    partial = bool(lines[-1])   # NOTE: every complete line ends with "\n", so a non-empty tail was cut short
    out: dict[str, CaseResult] = {}
    for number, line in enumerate(lines[:-1], 1):
        if not line.strip():
            continue
        try:
            result = CaseResult.from_json(json.loads(line))
        except (ValueError, TypeError) as e:
            raise RunDirError(f"{path}:{number}: not a result line ({e})") from None
        out[result.id] = result
    return out, partial


def _drop_partial_line(folder: Path) -> None:
    path = Path(folder) / RESULTS_FILE
    raw = path.read_bytes()
    keep = raw[: raw.rfind(b"\n") + 1]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_bytes(keep)
    os.replace(tmp, path)


def _write_meta(folder: Path, meta: dict) -> None:
    path = Path(folder) / RUN_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)   # atomic: an interrupted write leaves the old run.json


# ------------------------------------------------------------------------------------------ preparing
def check_golden_matches(folder: Path, golden: GoldenSet) -> None:
    """Before any server starts: a folder holding a run of another golden set cannot be resumed."""
    if not (Path(folder) / RUN_FILE).is_file():
        return
    meta = read_meta(folder)
    if meta.get("golden", {}).get("hash") != golden.digest:
        raise RunDirError(f"{folder} holds a run of another golden set ({meta.get('golden', {}).get('path')}, "
                          f"hash {str(meta.get('golden', {}).get('hash'))[:12]} vs {golden.digest[:12]}); "
                          f"use another --out, or --fresh to start over there")


def prepare(folder: Path, golden: GoldenSet, fingerprint: dict, options: dict, *, fresh: bool) -> set[str]:
    """Make `folder` ready for this run; returns the ids already finished (empty unless resuming)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fresh:
        for name in (RUN_FILE, RESULTS_FILE):
            (folder / name).unlink(missing_ok=True)
    done: set[str] = set()
    if (folder / RUN_FILE).is_file():
        meta = read_meta(folder)
        check_golden_matches(folder, golden)
        diff = differences(meta.get("fingerprint", {}), fingerprint) + \
            differences({"options": meta.get("options", {})}, {"options": options})
        if diff:
            lines = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:8])
            raise RunDirError(f"{folder} holds a run of another configuration ({lines}); resuming would mix the "
                              f"two. Use another --out, or --fresh to start over there")
        results, partial = read_results(folder)
        if partial:
            _drop_partial_line(folder)
        known = golden.by_id()
        stray = sorted(set(results) - set(known))
        if stray:
            raise RunDirError(f"{folder / RESULTS_FILE} has results for ids not in the golden set: {stray[:5]}")
        done = set(results)
        meta["complete"] = len(done) == len(golden.cases)
    elif (folder / RESULTS_FILE).is_file():
        raise RunDirError(f"{folder} has a {RESULTS_FILE} but no {RUN_FILE}: results of an unknown run; use "
                          "another --out, or --fresh to start over there")
    else:
        meta = {"format": RUN_FORMAT, "created": _now(), "complete": False}
    meta.update({"golden": {"path": golden.path, "hash": golden.digest, "cases": len(golden.cases)},
                 "fingerprint": fingerprint, "options": options})
    _write_meta(folder, meta)
    return done


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------ running
async def warm_up(sender, cases: list[GoldenCase]) -> None:
    """Pay the model's first forward and (gRPC) every distinct constraint's compile before any case is timed:
    otherwise the first run of a set pays compiles the second finds in the disk cache, and latency ratios
    would favour whichever run came later. Failures are ignored here; the case itself records its error."""
    compile_ = getattr(getattr(sender, "client", None), "compile", None)
    if sender.api == "grpc" and compile_ is not None:
        from structgen.client.extraction import ExtractionTask

        seen: set[str] = set()
        for case in cases:
            constraint = (ExtractionTask.of(case.constraint).schema if case.input_kind == "text"
                          else case.constraint)
            key = json.dumps([case.constraint_kind, constraint], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            kwargs = {{"schema": "json_schema", "regex": "regex", "choices": "choices"}[case.constraint_kind]:
                      constraint}
            try:
                await compile_(**kwargs, timeout=120)
            except Exception:  # noqa: BLE001 - the case reports it
                pass
    if cases:
        await sender.send(cases[0])


async def run_cases(sender, cases: list[GoldenCase], folder: Path, *, concurrency: int, progress: bool,
                    done_before: int = 0, total: int | None = None) -> int:
    """Send `cases` (at most `concurrency` in flight), appending each result to results.jsonl as it finishes;
    returns how many were recorded. Raises ServerUnreachable (with the finished ones kept)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total or len(cases), initial=done_before, desc="regress", unit="case", dynamic_ncols=True)
    queue: asyncio.Queue = asyncio.Queue()
    for case in cases:
        queue.put_nowait(case)
    recorded = 0
    path = Path(folder) / RESULTS_FILE
    with open(path, "a", encoding="utf-8") as fh:
        async def worker():
            nonlocal recorded
            while True:
                try:
                    case = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                result: CaseResult = await sender.send(case)
                # NOTE: one write + flush per line, so an interruption leaves whole lines behind
                fh.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
                fh.flush()
                recorded += 1
                if bar is not None:
                    bar.update(1)

        tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, len(cases))))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if bar is not None:
                bar.close()
    return recorded


def finish(folder: Path, golden: GoldenSet, wall_s: float) -> dict:
    """Mark the run complete when every case has a result; returns the updated run.json."""
    meta = read_meta(folder)
    results, _ = read_results(folder)
    meta["complete"] = set(results) >= {c.case_id for c in golden.cases}
    meta["finished"] = _now()
    meta["wall_s"] = round(float(meta.get("wall_s", 0.0)) + wall_s, 3)  # summed over resumed parts
    _write_meta(folder, meta)
    return meta

