"""Record or compare the engine's outputs, token for token, before and after a change that must not alter them.

    .venv/bin/python scripts/output_fingerprint.py record OUT.json [--limit N] [--max-tokens 256]
    .venv/bin/python scripts/output_fingerprint.py compare BEFORE.json AFTER.json

`record` runs the extraction dev set (../shared/data/extraction/dev, or STRUCTGEN_DATA_DIR) and the ready
`schemas/` documents through `LLMEngine` with the embedded model, JSON-Schema constrained, in one batch, under
four configurations: greedy with drafting off, greedy as shipped (forced runs + prompt lookup), seeded sampling
(temperature 0.8, top-p 0.95, top-k 50) as shipped, and seeded sampling with drafting off. It writes every
output's token ids, finish reason and usage. `compare` exits 1 and names the cases when any output differs.

Why these four: greedy drafting on/off checks verification keeps plain decoding's tokens; seeded sampling checks
that the sampled tokens of a request depend on its seed and position only (a refactor of the acceptance rule or
of the sampling kernels shows up here first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STRUCTGEN_DATA_DIR") or ROOT / ".." / "shared" / "data")
INSTRUCTION = ("You are a careful data-extraction assistant. Fill in the JSON object described by the JSON Schema "
               "from the user's text. Copy values exactly. Answer with one JSON object and nothing else.")
CONFIGS = {
    "greedy-plain": ({"forced_runs": False, "speculation": "off"}, {}),
    "greedy-shipped": ({}, {}),
    "sampled-shipped": ({}, {"temperature": 0.8, "top_p": 0.95, "top_k": 50, "seed": 1234}),
    "sampled-plain": ({"forced_runs": False, "speculation": "off"},
                      {"temperature": 0.8, "top_p": 0.95, "top_k": 50, "seed": 1234}),
}


def cases(limit: int) -> list[tuple[str, dict, str]]:
    out = []
    folder = DATA / "extraction" / "dev"
    if folder.is_dir():
        for f in sorted(folder.glob("*.json"))[:limit or None]:
            d = json.loads(f.read_text())
            out.append((f"extraction/{f.stem}", d["schema"], d["text"]))
    else:
        print(f"(extraction dev set not found at {folder})", file=sys.stderr)
    for f in sorted((ROOT / "schemas").glob("*.json")):
        doc = ROOT / "schemas" / "examples" / f"{f.stem}.txt"
        if doc.is_file():
            out.append((f"schemas/{f.stem}", json.loads(f.read_text()), doc.read_text()))
    return out


def record(path: Path, limit: int, max_tokens: int) -> int:
    from structgen.engine.config import EngineConfig
    from structgen.engine.engine import LLMEngine
    from structgen.engine.requests import ConstraintSpec, GenerateRequest, SamplingParams

    items = cases(limit)
    result: dict[str, dict] = {}
    for name, (engine_opts, sampling_opts) in CONFIGS.items():
        engine = LLMEngine.from_config(EngineConfig(**engine_opts))
        tok = engine.tokenizer
        reqs = []
        for case_id, schema, text in items:
            prompt = tok.apply_chat_template([
                {"role": "system", "content": f"{INSTRUCTION}\nSchema: {json.dumps(schema)}"},
                {"role": "user", "content": text}])
            reqs.append(GenerateRequest(case_id, tok.encode(prompt),
                                        SamplingParams(max_tokens=max_tokens, **sampling_opts),
                                        ConstraintSpec("json_schema", schema)))
        outs = engine.generate(reqs)
        engine.close()
        result[name] = {r.request_id: {"token_ids": outs[r.request_id].token_ids,
                                       "finish_reason": outs[r.request_id].finish_reason,
                                       "completion_tokens": outs[r.request_id].usage.completion_tokens}
                        for r in reqs}
        done = sum(o["finish_reason"] == "stop" for o in result[name].values())
        print(f"{name}: {len(reqs)} requests, {done} finished with stop", file=sys.stderr)
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return 0


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    bad = total = unpaired = 0
    for name in sorted(set(a) | set(b)):
        ca, cb = a.get(name, {}), b.get(name, {})
        for case_id in sorted(set(ca) | set(cb)):
            if case_id not in ca or case_id not in cb:
                # A case added or removed between the runs (e.g. a new schema in schemas/): nothing to compare.
                unpaired += 1
                print(f"ONLY IN {'AFTER' if case_id in cb else 'BEFORE'} {name} {case_id}")
                continue
            total += 1
            if ca[case_id] != cb[case_id]:
                bad += 1
                print(f"DIFFERS {name} {case_id}")
    print(f"{total - bad} of {total} outputs identical ({unpaired} cases in one run only)")
    return 1 if bad or not total else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("out", type=Path)
    r.add_argument("--limit", type=int, default=0, help="extraction items (0 = all)")
    r.add_argument("--max-tokens", type=int, default=256)
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "record":
        return record(args.out, args.limit, args.max_tokens)
    return compare(args.before, args.after)


if __name__ == "__main__":
    raise SystemExit(main())
