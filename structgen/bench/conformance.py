"""`structgen bench conformance`: which schemas structgen compiles and gets exactly right, per keyword and per split.

Two sets, no model and no masks (what `structgen bench masks` adds on a sample):
- the official JSON-Schema-Test-Suite (draft 2020-12): per file (one keyword each), groups compiled and groups passing;
- jsonschemabench dev: per split, schemas with labelled instances, compiled, passing.

Each labelled instance is written as compact JSON (`cases.instance_text`), tokenized with the default model's
tokenizer and walked through a `Cursor` token by token, then EOS: the same path decoding takes, so checks made at run
time (uniqueItems) count. Passing = compiled, every valid instance accepted, every invalid one rejected. Refusals are
counted by the keyword `UnsupportedSchemaError` names. Every schema runs under a time limit (a slow one counts as a
timeout, not a hang).

NOTE: the suite's `format` tests hold only where formats assert, which 2020-12 leaves optional; structgen enforces
the formats it knows, so that file is reported but not part of any bar. Remote `$ref`s are refused by design.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from .report import header_markdown, markdown_table, run_header, write_jsonl

def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_common, csv_list, json_object

    p.add_argument("--data", type=Path, default=None,
                   help="test data folder holding json-schema-test-suite/ and jsonschemabench/dev/ "
                        "(default: ../shared/data or $STRUCTGEN_DATA_DIR)")
    p.add_argument("--sets", type=csv_list, default=["suite", "dev"], help="suite, dev or both (default both)")
    p.add_argument("--splits", type=csv_list, default=None, help="jsonschemabench splits (default: all)")
    p.add_argument("--sample", type=int, default=0, help="schemas per split (0 = every schema; default 0)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per schema (default 10)")
    p.add_argument("--options", type=json_object, default={"extra_properties": True},
                   help='JSON options for structgen.compile_json_schema (default {"extra_properties": true}: '
                        "JSON Schema's own meaning, which the labelled instances assume)")
    add_common(p, "conformance")


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout


def walk(compiled, tokenizer, text: str) -> bool:
    """Whether the constraint admits `text`, token by token through a fresh cursor, then EOS."""
    cur = compiled.cursor()
    for tok in tokenizer.encode(text):
        if not cur.advance(tok):
            return False
    return any(cur.is_allowed(e) for e in compiled.eos_token_ids)


def check_schema(schema, instances, tokenizer, options: dict, timeout_s: float) -> dict:
    """{outcome, keyword (of a refusal), detail, valid, valid_ok, invalid, invalid_accepted, seconds}."""
    from structgen import compile_json_schema
    from structgen.errors import ConstraintError

    from .cases import instance_text

    row = {"outcome": None, "keyword": None, "detail": None, "valid": 0, "valid_ok": 0, "invalid": 0,
           "invalid_accepted": 0}
    t0 = time.perf_counter()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        compiled = compile_json_schema(schema, tokenizer, **options)
        for data, valid in instances:
            ok = walk(compiled, tokenizer, instance_text(data))
            if valid:
                row["valid"] += 1
                row["valid_ok"] += ok
            else:
                row["invalid"] += 1
                row["invalid_accepted"] += ok
    except _Timeout:
        row["outcome"] = "timeout"
    except ConstraintError as e:
        row["outcome"] = "compile_error"
        row["keyword"] = getattr(e, "keyword", None) or type(e).__name__
        row["detail"] = str(e)[:300]
    except Exception as e:  # noqa: BLE001 - a crash is an outcome to report, not a reason to stop the run
        row["outcome"] = "error"
        row["detail"] = f"{type(e).__name__}: {e}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    if row["outcome"] is None:
        if row["invalid_accepted"]:
            row["outcome"] = "invalidation_error"
        elif row["valid_ok"] < row["valid"]:
            row["outcome"] = "validation_error"
        else:
            row["outcome"] = "passing"
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


def suite_rows(data_dir: Path, tokenizer, options: dict, timeout_s: float, progress: bool):
    suite = data_dir / "json-schema-test-suite" / "draft2020-12"
    if not suite.is_dir():
        raise FileNotFoundError(f"JSON-Schema-Test-Suite not found at {suite}")
    files = sorted(suite.glob("*.json"))
    for i, path in enumerate(files):
        if progress:
            print(f"\rsuite {i + 1}/{len(files)} {path.stem:32s}", end="", file=sys.stderr, flush=True)
        for g, group in enumerate(json.loads(path.read_text())):
            instances = [(t["data"], t["valid"]) for t in group["tests"]]
            row = check_schema(group["schema"], instances, tokenizer, options, timeout_s)
            yield {"set": "suite", "file": path.stem, "group": g, "description": group["description"], **row}
    if progress:
        print(file=sys.stderr)


def dev_rows(data_dir: Path, tokenizer, options: dict, timeout_s: float, splits, sample: int, progress: bool):
    from .cases import load_schema_cases

    cases = load_schema_cases(data_dir / "jsonschemabench" / "dev", splits, sample=sample)
    for i, case in enumerate(cases):
        if progress and i % 20 == 0:
            print(f"\rdev {i}/{len(cases)} {case.split:24s}", end="", file=sys.stderr, flush=True)
        instances = [(x.data, x.valid) for x in case.instances]
        row = check_schema(case.schema, instances, tokenizer, options, timeout_s)
        yield {"set": "dev", "split": case.split, "case_id": case.case_id, "tested": bool(instances), **row}
    if progress:
        print(file=sys.stderr)


def _table(rows: list[dict], by: str) -> tuple[list[str], list[list]]:
    groups: dict[str, Counter] = {}
    for r in rows:
        c = groups.setdefault(r[by], Counter())
        c["n"] += 1
        c[r["outcome"]] += 1
        c["invalid_accepted_instances"] += r["invalid_accepted"]
    total = Counter()
    out = []
    for name in sorted(groups):
        c = groups[name]
        total.update(c)
        out.append(_line(name, c))
    out.append(_line("**all**", total))
    return [by, "n", "compiled", "passing", "pass %", "refused", "valid rejected", "invalid accepted (instances)",
            "timeout", "error"], out


def _line(name: str, c: Counter) -> list:
    compiled = c["n"] - c["compile_error"] - c["timeout"]
    return [name, c["n"], compiled, c["passing"], f"{100 * c['passing'] / c['n']:.1f}" if c["n"] else "-",
            c["compile_error"], c["validation_error"], f"{c['invalidation_error']} ({c['invalid_accepted_instances']})",
            c["timeout"], c["error"]]


def refusals(rows: list[dict]) -> list[list]:
    c = Counter(r["keyword"] for r in rows if r["outcome"] == "compile_error")
    return [[k, n] for k, n in c.most_common()]


def render(rows: list[dict], header: dict) -> str:
    parts = [header_markdown(header)]
    suite = [r for r in rows if r["set"] == "suite"]
    dev = [r for r in rows if r["set"] == "dev" and r["tested"]]
    if suite:
        h, t = _table(suite, "file")
        parts += ["## JSON-Schema-Test-Suite draft 2020-12, groups per keyword file", markdown_table(h, t),
                  "Refusals by keyword: " + (", ".join(f"`{k}` {n}" for k, n in refusals(suite)) or "none")]
    if dev:
        h, t = _table(dev, "split")
        parts += ["## jsonschemabench dev, schemas with labelled instances, per split", markdown_table(h, t),
                  "Refusals by keyword: " + (", ".join(f"`{k}` {n}" for k, n in refusals(dev)) or "none")]
    return "\n\n".join(parts) + "\n"


def run(args: argparse.Namespace) -> int:
    from structgen import default_tokenizer

    from .cases import default_data_dir

    data_dir = args.data or default_data_dir()
    if args.timeout <= 0 or args.sample < 0:
        print("structgen bench conformance: --timeout must be > 0 and --sample >= 0", file=sys.stderr)
        return 2
    unknown = set(args.sets) - {"suite", "dev"}
    if unknown or not args.sets:
        print(f"structgen bench conformance: --sets takes suite and/or dev, not {sorted(unknown)}", file=sys.stderr)
        return 2
    header = run_header()
    tokenizer = default_tokenizer()
    rows: list[dict] = []
    try:
        if "suite" in args.sets:
            rows += suite_rows(data_dir, tokenizer, args.options, args.timeout, not args.no_progress)
        if "dev" in args.sets:
            rows += dev_rows(data_dir, tokenizer, args.options, args.timeout, args.splits, args.sample,
                             not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"structgen bench conformance: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "results.jsonl", rows)
    text = render(rows, header)
    (args.out / "summary.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'results.jsonl'}, {args.out / 'summary.md'}", file=sys.stderr)
    return 0
