"""`structgen bench speculative`: plain decoding vs forced runs vs forced runs + prompt lookup (vs forced runs + a
draft model), same model, same prompts, one run (issue 6's measurement).

Datasets: the extraction dev set (`<data>/extraction/dev`, see `cases.default_data_dir`) and the ready schemas
with their example documents (`schemas/`, `schemas/examples/`). Each request is greedy, JSON-Schema constrained,
behind one shared instruction. Requests go in waves of `c` (the concurrency, kept in flight as a closed loop); each
wave runs under every configuration back to back (same warm model), in a rotating order, so that load drift on a
shared machine falls on every column alike.

Columns: forwards per output token counts, per request, the target-model forwards it took part in (prefill
chunks included) divided by its output tokens (draft-model forwards are reported below the table); tok/s is
output tokens over wall time; latency is per request, submit to finish.
Every output is validated with jsonschema, and greedy outputs are compared token for token with the baseline.
`--draft-model PATH|self` adds the "forced+draft" row: PATH is a smaller model of the same tokenizer; `self` drafts
with the target's own weights (a check of the path: acceptance ~100%, but every draft token costs a full forward).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .cases import default_data_dir, default_schemas_dir, load_extraction
from .report import header_markdown, run_header, write_jsonl
from .stats import nearest_rank

INSTRUCTION = (
    "You are a careful data-extraction assistant. Read the user's text and fill in the JSON object described by "
    "the JSON Schema. Copy values from the text exactly when they appear there; use the formats the schema's "
    "descriptions ask for. Answer with one JSON object and nothing else."
)
# Every config names both switches: the engine's defaults (forced runs + prompt lookup on) must not leak into base.
CONFIGS = {
    "base": {"forced_runs": False, "speculation": "off"},
    "forced": {"forced_runs": True, "speculation": "off"},
    "forced+lookup": {"forced_runs": True, "speculation": "prompt_lookup"},
    "forced+draft": {"forced_runs": True, "speculation": "draft_model"},   # needs --draft-model
}
TABLE_HEADER = ("| dataset | conc | config | reqs | out tok | fwd/out tok | tok/s | p50 s | p95 s | forced % | "
                "draft-acc % | tok/s vs base | p50 vs base | valid | same as base |")


@dataclass(frozen=True)
class Case:
    case_id: str
    schema: dict
    text: str           # the user message (schema + request or document); the instruction is the system message


def extraction_cases(data_dir: Path, n: int) -> list[Case]:
    folder = Path(data_dir) / "extraction" / "dev"
    if n <= 0:
        return []
    if not folder.is_dir():
        print(f"(extraction dev set not found at {folder}; set STRUCTGEN_DATA_DIR)", file=sys.stderr)
        return []
    return [Case(it.item_id, it.schema, f"Schema: {json.dumps(it.schema)}\n\nRequest: {it.text}")
            for it in load_extraction(folder)[:n]]


def schema_cases(schemas_dir: Path, n: int) -> list[Case]:
    out = []
    for f in sorted(Path(schemas_dir).glob("*.json"))[:n]:
        doc = Path(schemas_dir) / "examples" / (f.stem + ".txt")
        if not doc.is_file():
            continue
        schema = json.loads(f.read_text())
        out.append(Case(f.stem, schema, f"Schema: {json.dumps(schema)}\n\nDocument:\n{doc.read_text()}"))
    return out


def choose_configs(configs: list[str] | None, draft_model: str | None) -> list[str]:
    """The configurations to run, in table order (the first is the baseline). ValueError for a bad choice."""
    if configs is None:
        return [c for c in CONFIGS if c != "forced+draft" or draft_model]
    for c in configs:
        if c not in CONFIGS:
            raise ValueError(f"unknown config {c!r}; choose from {list(CONFIGS)}")
    if "forced+draft" in configs and not draft_model:
        raise ValueError("the forced+draft config needs --draft-model PATH|self")
    if not configs:
        raise ValueError("--configs names no configuration")
    return configs


@contextlib.contextmanager
def count_forwards(engine):
    """Counts, per request id, the target-model forwards a request takes part in (prefill chunks included).

    NOTE: the engine reports steps only in total (`stats().steps`), so this wraps the runner's `run(scheduled)`
    for the duration; the engine does not know it is measured.
    """
    forwards: dict[str, int] = {}
    real_run = engine.runner.run

    def counting_run(scheduled):
        for sc in scheduled:
            forwards[sc.seq.request_id] = forwards.get(sc.seq.request_id, 0) + 1
        return real_run(scheduled)

    engine.runner.run = counting_run
    try:
        yield forwards
    finally:
        engine.runner.run = real_run


def run_closed_loop(engine, requests, concurrency: int) -> dict:
    """Keep `concurrency` requests in flight until all finish.

    Returns {"done": {request_id: {"latency", "out" (the last GenerateOutput), "tokens", "text", "forwards"}},
    "wall": seconds, "steps": engine steps}.
    """
    with count_forwards(engine) as forwards:
        pending = list(requests)
        submitted: dict[str, float] = {}
        done: dict[str, dict] = {}
        tokens: dict[str, list[int]] = {}
        texts: dict[str, str] = {}
        t0 = time.perf_counter()
        steps0 = engine.stats().steps
        while pending or len(done) < len(requests):
            while pending and len(submitted) - len(done) < concurrency:
                r = pending.pop(0)
                submitted[r.request_id] = time.perf_counter()
                engine.add_request(r)
            if not engine.has_work():
                time.sleep(0.001)
                continue
            for o in engine.step():
                tokens.setdefault(o.request_id, []).extend(o.token_ids)
                texts[o.request_id] = texts.get(o.request_id, "") + o.text
                if o.finished:
                    done[o.request_id] = {"latency": time.perf_counter() - submitted[o.request_id], "out": o}
        wall = time.perf_counter() - t0
        steps = engine.stats().steps - steps0
    for rid, d in done.items():
        d["tokens"] = tokens.get(rid, [])
        d["text"] = texts.get(rid, "")
        d["forwards"] = forwards.get(rid, 0)
    return {"done": done, "wall": wall, "steps": steps}


def _valid(schema: dict, out, text: str) -> bool:
    """Finished with "stop" and valid under the schema."""
    import jsonschema

    if out.finish_reason != "stop":
        return False
    try:
        jsonschema.Draft202012Validator(schema).validate(json.loads(text))
        return True
    except (jsonschema.ValidationError, json.JSONDecodeError):
        return False


def config_row(dataset: str, concurrency: int, config: str, done: list[dict], wall: float,
               base: dict | None) -> dict:
    """One table row from the finished requests of one (dataset, level, config); `base` is the baseline's row
    (None: this row is the baseline). Each item of `done` has "tokens", "text", "forwards", "latency", "out",
    "schema"."""
    out_tok = sum(len(d["tokens"]) for d in done)
    fwd = sum(d["forwards"] for d in done)
    lat = [d["latency"] for d in done]
    forced = sum(d["out"].usage.forced_tokens for d in done)
    drafted = sum(d["out"].usage.draft_accepted_tokens for d in done)
    toks = [d["tokens"] for d in done]
    tps = out_tok / wall
    # NOTE: nearest-rank p95 (not interpolated), as in every speculation table of RESULTS.md.
    p50, p95 = statistics.median(lat), nearest_rank(lat, 0.95)
    base_tps, base_p50, base_toks = (tps, p50, toks) if base is None else (
        base["tokens_per_s"], base["p50_s"], base["token_ids"])
    return dict(dataset=dataset, concurrency=concurrency, config=config, requests=len(done), out_tokens=out_tok,
                forwards_per_token=fwd / max(out_tok, 1), tokens_per_s=tps, p50_s=p50, p95_s=p95,
                forced_pct=100 * forced / max(out_tok, 1), draft_pct=100 * drafted / max(out_tok, 1),
                speedup=tps / base_tps, p50_ratio=p50 / base_p50,
                valid=sum(_valid(d["schema"], d["out"], d["text"]) for d in done),
                same=sum(a == b for a, b in zip(toks, base_toks)), token_ids=toks)


def format_row(row: dict) -> str:
    n = row["requests"]
    return (f"| {row['dataset']} | {row['concurrency']} | {row['config']} | {n} | {row['out_tokens']} | "
            f"{row['forwards_per_token']:.3f} | {row['tokens_per_s']:.1f} | {row['p50_s']:.2f} | "
            f"{row['p95_s']:.2f} | {row['forced_pct']:.0f} | {row['draft_pct']:.0f} | {row['speedup']:.2f}x | "
            f"{row['p50_ratio']:.2f} | {row['valid']}/{n} | {row['same']}/{n} |")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_common, csv_list, int_list

    p.add_argument("--extraction", type=int, default=12, help="extraction dev requests (0 = skip)")
    p.add_argument("--schemas", type=int, default=6, help="schemas/ examples (0 = skip)")
    p.add_argument("--concurrency", type=int_list, default=[1, 8], help="comma-separated levels (default 1,8)")
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--threads", type=int, default=1, help="torch threads on cpu (0 = torch's default)")
    p.add_argument("--configs", type=csv_list, default=None,
                   help="comma list of " + ", ".join(CONFIGS) + " (default: all; forced+draft with --draft-model)")
    p.add_argument("--draft-model", default=None,
                   help="PATH of a draft model of the same tokenizer, or 'self' (the target's weights)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="default")
    p.add_argument("--lookup-k", type=int, default=8, help="EngineConfig.num_speculative_tokens")
    add_common(p, "speculative")


def run(args: argparse.Namespace) -> int:
    try:
        configs = choose_configs(args.configs, args.draft_model)
    except ValueError as e:
        print(f"structgen bench speculative: {e}", file=sys.stderr)
        return 2
    datasets = [("extraction", extraction_cases(default_data_dir(), args.extraction)),
                ("schemas/", schema_cases(default_schemas_dir(), args.schemas))]
    datasets = [(n, cases) for n, cases in datasets if cases]
    if not datasets:
        print("structgen bench speculative: no requests (--extraction and --schemas found nothing)", file=sys.stderr)
        return 2

    import torch

    from ..engine.config import EngineConfig
    from ..engine.engine import LLMEngine
    from ..engine.loader import check_draft_tokenizer, load_tokenizer
    from ..engine.requests import ConstraintSpec, GenerateRequest, SamplingParams
    from ..engine.weights import load_model

    if args.threads and args.device == "cpu":
        torch.set_num_threads(args.threads)
    tok = load_tokenizer(args.model)
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    model = load_model(args.model, args.device, dtype)

    def prompt_ids(text: str) -> list[int]:
        return tok.encode(tok.apply_chat_template([{"role": "system", "content": INSTRUCTION},
                                                   {"role": "user", "content": text}]))

    draft = None
    if "forced+draft" in configs:
        if args.draft_model == "self":
            draft = model
        else:
            check_draft_tokenizer(args.draft_model, tok)
            draft = load_model(args.draft_model, args.device, dtype)

    def make_engine(c: str) -> LLMEngine:
        extra = {"draft_model": args.draft_model} if c == "forced+draft" else {}
        cfg = EngineConfig(model=args.model, device=args.device, kv_cache_bytes=256 << 20,
                           num_speculative_tokens=args.lookup_k, **CONFIGS[c], **extra)
        return LLMEngine(cfg, model, tok, draft_model=draft if c == "forced+draft" else None)

    engines = {c: make_engine(c) for c in configs}
    # Warm up every engine (first-call allocations, compile caches) outside the timed runs.
    warm = datasets[0][1][0]
    for c, eng in engines.items():
        eng.generate([GenerateRequest(f"warm-{c}", prompt_ids(warm.text), SamplingParams(max_tokens=8),
                                      ConstraintSpec("json_schema", warm.schema))])

    lines = [f"# bench speculative: device={args.device} threads={torch.get_num_threads()} "
             f"max_tokens={args.max_tokens} lookup_k={args.lookup_k} model={args.model}"
             + (f" draft_model={args.draft_model}" if draft is not None else ""),
             TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count("|") - 1)]
    for line in lines:
        print(line)
    rows = []
    for dname, cases in datasets:
        prompts = [(c.case_id, c.schema, prompt_ids(c.text)) for c in cases]
        for conc in args.concurrency:
            # Waves of `conc` requests; within a wave every configuration runs the same requests back to back, in
            # an order that rotates from wave to wave, so that a busy machine's drift hits every column alike.
            results: dict[str, list[dict]] = {c: [] for c in configs}
            walls: dict[str, float] = {c: 0.0 for c in configs}
            for w, start in enumerate(range(0, len(prompts), conc)):
                wave = prompts[start:start + conc]
                order = configs[w % len(configs):] + configs[:w % len(configs)]
                for c in order:
                    reqs = [GenerateRequest(f"{dname}-{cid}-{c}-{conc}", p, SamplingParams(max_tokens=args.max_tokens),
                                            ConstraintSpec("json_schema", schema)) for cid, schema, p in wave]
                    res = run_closed_loop(engines[c], reqs, conc)
                    walls[c] += res["wall"]
                    for (_, schema, _), r in zip(wave, reqs):
                        d = res["done"][r.request_id]
                        d["schema"] = schema
                        results[c].append(d)
            base = None
            for c in configs:
                row = config_row(dname, conc, c, results[c], walls[c], base)
                base = base or row
                rows.append(row)
                lines.append(format_row(row))
                print(lines[-1], flush=True)
    for c, eng in engines.items():
        prop = eng.drafter.draft_model      # the DraftModelProposer; None without --draft-model
        if prop is not None:
            lines.append(f"# {c}: {prop.num_forwards} draft-model forwards (warm-up included), "
                         f"{eng.drafter.accepted_proposed_tokens}/{eng.drafter.proposed_tokens} proposed tokens "
                         f"accepted")
            print(lines[-1])
        eng.close()
    if args.out:
        header = run_header()
        write_jsonl(args.out / "results.jsonl",
                    [{"type": "header", **header}]
                    + [{"type": "row", **{k: v for k, v in r.items() if k != "token_ids"}} for r in rows])
        (args.out / "summary.md").write_text(header_markdown(header) + "\n\n" + "\n".join(lines) + "\n")
        print(f"wrote {args.out / 'results.jsonl'}, {args.out / 'summary.md'}", file=sys.stderr)
    return 0
