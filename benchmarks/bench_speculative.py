"""Issue 6's measurement: baseline vs forced runs vs forced runs + prompt lookup (vs forced runs + a draft model),
same model, same prompts, one run.

    .venv/bin/python benchmarks/bench_speculative.py [--extraction 12] [--schemas 6] [--concurrency 1,8]
        [--max-tokens 160] [--threads 1] [--configs base,forced,forced+lookup] [--device cpu]
        [--draft-model PATH|self]

--draft-model adds the "forced+draft" row: PATH is a smaller model of the same tokenizer; `self` drafts with the
target's own weights (a check of the path: acceptance ~100%, but every draft token costs a full forward).

Datasets: the extraction dev set (../shared/data/extraction/dev, or STRUCTGEN_DATA_DIR) and the ready schemas
with their example documents (schemas/, schemas/examples/). Each request is greedy, JSON-Schema constrained, behind
one shared instruction. Requests go in waves of `c` (the concurrency, kept in flight as a closed loop); each wave
runs under every configuration back to back (same warm model), in a rotating order, so that load drift on a shared
machine falls on every column alike.

Columns: forwards per output token counts, per request, the target-model forwards it took part in (prefill
chunks included) divided by its output tokens (draft-model forwards are reported below the table); tok/s is
output tokens over wall time; latency is per request, submit to finish.
Every output is validated with jsonschema, and greedy outputs are compared token for token with the baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jsonschema

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STRUCTGEN_DATA_DIR") or ROOT / ".." / "shared" / "data")
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


def extraction_cases(n: int) -> list[tuple[str, dict, str]]:
    folder = DATA / "extraction" / "dev"
    if not folder.is_dir():
        print(f"(extraction dev set not found at {folder}; set STRUCTGEN_DATA_DIR)", file=sys.stderr)
        return []
    out = []
    for f in sorted(folder.glob("*.json"))[:n]:
        d = json.loads(f.read_text())
        out.append((f.stem, d["schema"], f"Schema: {json.dumps(d['schema'])}\n\nRequest: {d['text']}"))
    return out


def schema_cases(n: int) -> list[tuple[str, dict, str]]:
    out = []
    for f in sorted((ROOT / "schemas").glob("*.json"))[:n]:
        doc = ROOT / "schemas" / "examples" / (f.stem + ".txt")
        if not doc.is_file():
            continue
        schema = json.loads(f.read_text())
        out.append((f.stem, schema, f"Schema: {json.dumps(schema)}\n\nDocument:\n{doc.read_text()}"))
    return out


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))
    return xs[i]


def run_closed_loop(engine, requests, concurrency: int) -> dict:
    """Keep `concurrency` requests in flight until all finish. Returns per-request results and totals."""
    forwards: dict[str, int] = {}
    real_run = engine.runner.run

    def counting_run(scheduled):
        for sc in scheduled:
            forwards[sc.seq.request_id] = forwards.get(sc.seq.request_id, 0) + 1
        return real_run(scheduled)

    engine.runner.run = counting_run
    try:
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
    finally:
        engine.runner.run = real_run
    for rid, d in done.items():
        d["tokens"] = tokens.get(rid, [])
        d["text"] = texts.get(rid, "")
        d["forwards"] = forwards.get(rid, 0)
    return {"done": done, "wall": wall, "steps": steps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extraction", type=int, default=12, help="extraction dev requests (0 = skip)")
    ap.add_argument("--schemas", type=int, default=6, help="schemas/ examples (0 = skip)")
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--threads", type=int, default=1, help="torch threads on cpu (0 = torch's default)")
    ap.add_argument("--configs", default=None,
                    help="comma list of " + ", ".join(CONFIGS) + " (default: all; forced+draft with --draft-model)")
    ap.add_argument("--draft-model", default=None,
                    help="PATH of a draft model of the same tokenizer, or 'self' (the target's weights)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="default")
    ap.add_argument("--lookup-k", type=int, default=8, help="EngineConfig.num_speculative_tokens")
    args = ap.parse_args(argv)

    import torch

    from structgen.engine.config import EngineConfig
    from structgen.engine.engine import LLMEngine, load_tokenizer
    from structgen.engine.requests import ConstraintSpec, GenerateRequest, SamplingParams
    from structgen.engine.weights import load_model

    if args.threads and args.device == "cpu":
        torch.set_num_threads(args.threads)
    if args.configs is None:
        configs = [c for c in CONFIGS if c != "forced+draft" or args.draft_model]
    else:
        configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown config {c!r}; choose from {list(CONFIGS)}")
    if "forced+draft" in configs and not args.draft_model:
        ap.error("the forced+draft config needs --draft-model PATH|self")
    levels = [int(x) for x in args.concurrency.split(",")]
    tok = load_tokenizer(args.model)
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    model = load_model(args.model, args.device, dtype)
    datasets = [("extraction", extraction_cases(args.extraction)), ("schemas/", schema_cases(args.schemas))]
    datasets = [(n, cases) for n, cases in datasets if cases]

    def prompt_ids(text: str) -> list[int]:
        return tok.encode(tok.apply_chat_template([{"role": "system", "content": INSTRUCTION},
                                                   {"role": "user", "content": text}]))

    draft = None
    if "forced+draft" in configs:
        if args.draft_model == "self":
            draft = model
        else:
            from structgen.engine.engine import check_draft_tokenizer

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
        eng.generate([GenerateRequest(f"warm-{c}", prompt_ids(warm[2]), SamplingParams(max_tokens=8),
                                      ConstraintSpec("json_schema", warm[1]))])

    print(f"# bench_speculative: device={args.device} threads={torch.get_num_threads()} "
          f"max_tokens={args.max_tokens} lookup_k={args.lookup_k} model={args.model}"
          + (f" draft_model={args.draft_model}" if draft is not None else ""))
    header = ("| dataset | conc | config | reqs | out tok | fwd/out tok | tok/s | p50 s | p95 s | forced % | "
              "draft-acc % | tok/s vs base | p50 vs base | valid | same as base |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = []
    for dname, cases in datasets:
        prompts = [(cid, schema, prompt_ids(text)) for cid, schema, text in cases]
        for conc in levels:
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
                    for (cid, schema, _), r in zip(wave, reqs):
                        d = res["done"][r.request_id]
                        d["schema"] = schema
                        results[c].append(d)
            base_stats = base_tokens = None
            for c in configs:
                done = results[c]
                out_tok = sum(len(d["tokens"]) for d in done)
                fwd = sum(d["forwards"] for d in done)
                lat = [d["latency"] for d in done]
                forced = sum(d["out"].usage.forced_tokens for d in done)
                drafted = sum(d["out"].usage.draft_accepted_tokens for d in done)
                valid = 0  # finished with "stop" and valid under the schema
                for d in done:
                    if d["out"].finish_reason != "stop":
                        continue
                    try:
                        jsonschema.Draft202012Validator(d["schema"]).validate(json.loads(d["text"]))
                        valid += 1
                    except (jsonschema.ValidationError, json.JSONDecodeError):
                        pass
                toks = [d["tokens"] for d in done]
                tps = out_tok / walls[c]
                p50, p95 = statistics.median(lat), percentile(lat, 0.95)
                if base_stats is None:
                    base_stats, base_tokens = (tps, p50), toks
                same = sum(a == b for a, b in zip(toks, base_tokens))
                n = len(done)
                row = dict(dataset=dname, concurrency=conc, config=c, requests=n, out_tokens=out_tok,
                           forwards_per_token=fwd / max(out_tok, 1), tokens_per_s=tps, p50_s=p50, p95_s=p95,
                           forced_pct=100 * forced / max(out_tok, 1), draft_pct=100 * drafted / max(out_tok, 1),
                           speedup=tps / base_stats[0], p50_ratio=p50 / base_stats[1], valid=valid, same=same)
                rows.append(row)
                print(f"| {dname} | {conc} | {c} | {n} | {out_tok} | {row['forwards_per_token']:.3f} | "
                      f"{tps:.1f} | {p50:.2f} | {p95:.2f} | {row['forced_pct']:.0f} | {row['draft_pct']:.0f} | "
                      f"{row['speedup']:.2f}x | {row['p50_ratio']:.2f} | {valid}/{n} | {same}/{n} |", flush=True)
    for c, eng in engines.items():
        prop = eng.drafter.proposer
        if prop is not None:
            print(f"# {c}: {prop.num_forwards} draft-model forwards (warm-up included), "
                  f"{eng.drafter.accepted_proposed_tokens}/{eng.drafter.proposed_tokens} proposed tokens accepted")
        eng.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
