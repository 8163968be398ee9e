"""`structgen bench cluster`: sglang-router's routing policies side by side on a real local cluster.

The workload is the one structgen is for: several schemas, each with its own long shared instruction (the
schema's field guide), many documents per schema, interleaved across schemas. Each (policy, repetition) gets a
fresh cluster (`structgen.cluster.Supervisor`: N replicas + the router), so every run starts with cold prefix
caches; every schema is compiled on every replica first (gRPC Compile), so compile time counts in no run.

Measured per run: the cluster's prefix-cache hit rate (prompt tokens served from the radix cache / prompt tokens,
summed over every replica's /metrics), output tok/s of the whole cluster (completion tokens / wall time), the
request split over replicas, and whether every output validates against its schema.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import jsonschema

from ..cluster.metrics import answered, cache_counters, scrape
from ..cluster.supervisor import POLICIES, ClusterConfig, Supervisor, free_port, log_to_file
from .cli import add_common, csv_list
from .report import command_line, header_markdown, markdown_table, run_header, write_jsonl

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def add_arguments(p):
    add_common(p, "cluster")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--policies", type=csv_list, default=["cache_aware", "round_robin"],
                   help=f"comma-separated, of {', '.join(POLICIES)} (default: cache_aware,round_robin)")
    # the ready schemas that need the fewest tokens (31-43 at least), so a short budget fits every one
    p.add_argument("--schemas", type=csv_list, default=["contact_card", "resume", "support_ticket", "receipt"],
                   help="names from schemas/, each with its own shared instruction")
    p.add_argument("--requests-per-schema", type=int, default=12)
    p.add_argument("--concurrency", type=int, default=12, help="requests in flight at once")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2, help="runs per policy (alternating policies); medians")
    p.add_argument("--serve-arg", action="append", default=[], help="an extra structgen serve argument (repeatable)")


def _instruction(name: str, schema: dict) -> str:
    """A long instruction shared by every request of one schema: what an extraction pipeline sends."""
    lines = [f"You extract {name.replace('_', ' ')} records from documents. Answer with one JSON object that "
             f"follows this JSON Schema exactly, with no text before or after it:",
             json.dumps(schema, indent=2), "Field guide:"]
    for key, sub in (schema.get("properties") or {}).items():
        kind = sub.get("type", "value") if isinstance(sub, dict) else "value"
        lines.append(f"- {key} ({kind}): copy it from the document as written; if the document does not state "
                     f"it, use null where the schema allows null, else the closest value the document supports.")
    lines.append("Do not invent values. Keep numbers as numbers and dates as written.")
    return "\n".join(lines)


def workload(names: list[str], per_schema: int) -> list[dict]:
    """Requests interleaved across schemas: s0 d0, s1 d0, ..., s0 d1, ... Each document is the schema's example
    with a distinct reference line, so only the instruction (and the example's opening) is shared."""
    files = [SCHEMAS / f"{n}.json" for n in names]
    missing = [f.stem for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"no such schema in {SCHEMAS}: {', '.join(missing)}")
    kinds = []
    for f in files:
        schema = json.loads(f.read_text())
        example = (SCHEMAS / "examples" / (f.stem + ".txt")).read_text()
        kinds.append((f.stem, schema, _instruction(f.stem, schema), example))
    out = []
    for d in range(per_schema):
        for name, schema, instruction, example in kinds:
            doc = f"Reference: {name.upper()}-{1000 + 37 * d}\n{example}"
            out.append({"schema_name": name, "schema": schema,
                        "text": f"{instruction}\n\nDocument:\n{doc}\n\nJSON:"})
    return out


async def _drive(url: str, reqs: list[dict], concurrency: int, max_tokens: int) -> list[dict]:
    sem = asyncio.Semaphore(concurrency)

    async def one(c, req):
        async with sem:
            body = {"text": req["text"], "sampling_params": {"max_new_tokens": max_tokens, "temperature": 0,
                                                             "json_schema": json.dumps(req["schema"])}}
            try:
                r = await c.post(url + "/generate", json=body, timeout=600)
            except httpx.HTTPError as e:
                return {"status": "transport", "error": repr(e)}
            if r.status_code != 200:
                return {"status": r.status_code, "error": r.text[:300]}
            text = r.json()["text"]
            try:
                jsonschema.Draft202012Validator(req["schema"]).validate(json.loads(text))
                return {"status": 200, "valid": True}
            except (ValueError, jsonschema.ValidationError) as e:
                return {"status": 200, "valid": False, "error": str(e)[:200]}

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency + 4)) as c:
        return await asyncio.gather(*(one(c, r) for r in reqs))


def _precompile(sup: Supervisor, schemas: list[dict]):
    from ..client import Client

    for r in sup.replicas:
        with Client(f"{sup.cfg.host}:{r.grpc_port}", timeout=300) as c:
            for s in schemas:
                c.compile(json_schema=s)


def run_one(policy: str, args, reqs: list[dict], log) -> dict:
    cfg = ClusterConfig(replicas=args.replicas, port=free_port(), policy=policy, ready_timeout_s=600,
                        serve_args=("--compile-workers", "1", *args.serve_arg))
    with Supervisor(cfg, log=log) as sup:
        _precompile(sup, list({r["schema_name"]: r["schema"] for r in reqs}.values()))
        urls = [r.url(cfg.host) + "/metrics" for r in sup.replicas]
        before = [scrape(u) for u in urls]
        t0 = time.perf_counter()
        results = asyncio.run(_drive(sup.url, reqs, args.concurrency, args.max_tokens))
        wall = time.perf_counter() - t0
        after = [scrape(u) for u in urls]
    prompt = cached = completion = 0.0
    split = []
    for b, a in zip(before, after):
        (p0, c0, o0), (p1, c1, o1) = cache_counters(b), cache_counters(a)
        prompt, cached, completion = prompt + p1 - p0, cached + c1 - c0, completion + o1 - o0
        split.append(int(answered(a) - answered(b)))
    return {"policy": policy, "requests": len(reqs), "ok": sum(r["status"] == 200 for r in results),
            "valid": sum(bool(r.get("valid")) for r in results),
            "errors": [r for r in results if r["status"] != 200][:5],
            "prompt_tokens": int(prompt), "cached_tokens": int(cached),
            "hit_rate": cached / prompt if prompt else 0.0, "completion_tokens": int(completion),
            "wall_s": wall, "tok_s": completion / wall, "split": split}


def run(args) -> int:
    bad = [p for p in args.policies if p not in POLICIES]
    if bad or args.replicas < 1 or not args.schemas or args.requests_per_schema < 1 or args.repeats < 1:
        print(f"structgen bench cluster: bad arguments (policies must be of {', '.join(POLICIES)}; counts >= 1)",
              file=sys.stderr)
        return 2
    import importlib.util

    if importlib.util.find_spec("sglang_router") is None:
        print("structgen bench cluster: sglang-router is not installed (pip install 'structgen[clients]')",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    header = run_header(command_line())
    try:
        reqs = workload(args.schemas, args.requests_per_schema)
    except ValueError as e:
        print(f"structgen bench cluster: {e}", file=sys.stderr)
        return 2
    log = log_to_file(args.out / "cluster.log")
    records = []
    for rep in range(args.repeats):
        order = args.policies if rep % 2 == 0 else list(reversed(args.policies))
        for policy in order:
            rec = {**run_one(policy, args, reqs, log), "repeat": rep}
            records.append(rec)
            print(f"{policy} #{rep}: hit rate {rec['hit_rate']:.1%}, {rec['tok_s']:.1f} tok/s, "
                  f"{rec['ok']}/{rec['requests']} ok, {rec['valid']} valid, split {rec['split']}", flush=True)
    write_jsonl(args.out / "results.jsonl", records)

    rows = [(r["policy"], r["repeat"], f"{r['ok']}/{r['requests']}", r["valid"], f"{r['hit_rate']:.1%}",
             r["prompt_tokens"], r["cached_tokens"], r["completion_tokens"], f"{r['wall_s']:.1f}",
             f"{r['tok_s']:.1f}", "/".join(map(str, r["split"]))) for r in records]
    runs = markdown_table(["policy", "run", "answered", "valid", "prefix hit rate", "prompt tok", "cached tok",
                           "output tok", "wall s", "output tok/s", "requests per replica"], rows)
    med = {p: (statistics.median(r["hit_rate"] for r in records if r["policy"] == p),
               statistics.median(r["tok_s"] for r in records if r["policy"] == p)) for p in args.policies}
    base = args.policies[-1]
    summary = markdown_table(
        ["policy", "median hit rate", "median output tok/s", f"tok/s vs {base}"],
        [(p, f"{h:.1%}", f"{t:.1f}", f"{t / med[base][1]:.2f}x") for p, (h, t) in med.items()])
    text = "\n\n".join([f"# bench cluster: {args.replicas} replicas, {len(args.schemas)} schemas x "
                        f"{args.requests_per_schema} requests, {args.concurrency} in flight, max_tokens "
                        f"{args.max_tokens}", header_markdown(header), runs, summary])
    (args.out / "summary.md").write_text(text + "\n")
    print(text)
    failed = sum(r["requests"] - r["valid"] for r in records)
    if failed:
        print(f"structgen bench cluster: {failed} requests not answered with a valid value", file=sys.stderr)
    return 1 if failed else 0
