"""`structgen bench coverage`: JSONSchemaBench-style coverage and compliance with the default model.

For a seeded sample of schemas, every engine gets the same prompt (a short instruction showing the schema) and
decodes greedily. Per engine:
- declared coverage: schemas it compiles (the unconstrained LM declares everything),
- empirical coverage: schemas whose output validates (jsonschema, the schema's own draft, formats checked),
- compliance: empirical / declared,
- tokens forced vs sampled, and time per output token (generation wall time / output tokens, compile excluded).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from . import stats
from .cases import SchemaCase, default_data_dir, load_schema_cases
from .peers import EngineUnavailable
from .report import header_markdown, markdown_table, run_header, write_jsonl

DEFAULT_ENGINES = ("structgen", "hf", "hf+llguidance")
INSTRUCTION = ("Write one JSON value that is valid against the JSON Schema below. "
               "Answer with the JSON only, no explanation.\n\nSchema:\n{schema}")
SYSTEM = "You are a careful assistant that answers only with JSON."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .cli import add_common, csv_list, json_object

    p.add_argument("--data", type=Path, default=None,
                   help="jsonschemabench dev folder (default: ../shared/data/jsonschemabench/dev)")
    p.add_argument("--splits", type=csv_list, default=None, help="comma-separated splits (default: all)")
    p.add_argument("--n", type=int, default=12, help="schemas in the sample, spread over the splits (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engines", type=csv_list, default=list(DEFAULT_ENGINES),
                   help="structgen, hf (unconstrained), hf+llguidance | hf+outlines | hf+xgrammar")
    p.add_argument("--max-tokens", type=int, default=192, help="output token limit per generation (default 192)")
    p.add_argument("--max-schema-chars", type=int, default=2000,
                   help="longest schema text shown in the prompt (longer ones are cut; default 2000)")
    p.add_argument("--structgen-options", type=json_object, default={},
                   help="JSON options for structgen.compile_json_schema")
    p.add_argument("--engine-config", type=json_object, default={"forced_runs": True},
                   help='JSON overrides for structgen EngineConfig (default {"forced_runs": true})')
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads for every engine in this process (0 = torch's default)")
    add_common(p, "coverage")


def build_prompt(tokenizer, schema, max_schema_chars: int) -> list[int]:
    """Chat-formatted prompt ids; the same ids go to every engine."""
    text = json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
    if len(text) > max_schema_chars:
        text = text[:max_schema_chars] + " …(schema cut for length)"
    messages = [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": INSTRUCTION.format(schema=text)}]
    return tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


def parse_output(text: str):
    """The JSON value in an output; unconstrained models may wrap it in a ``` fence. Raises ValueError."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    return json.loads(body)


def check_output(schema, text: str) -> tuple[bool, str | None]:
    """(valid, reason if not): parse, then validate with the schema's own draft and formats checked."""
    import jsonschema

    try:
        value = parse_output(text)
    except ValueError as e:
        return False, f"not JSON: {e}"[:200]
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        error = jsonschema.exceptions.best_match(
            cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(value))
    except Exception as e:  # an unresolvable $ref or a broken schema: the output cannot be shown valid
        return False, f"validator failed: {type(e).__name__}: {e}"[:200]
    return (error is None), (None if error is None else f"invalid: {error.message}"[:200])


def make_generator(spec: str, tokenizer, args, shared_model=None):
    from .generators import HFGenerator, StructgenGenerator

    if spec == "structgen":
        return StructgenGenerator(tokenizer, args.engine_config, args.structgen_options)
    if spec == "hf":
        return HFGenerator(tokenizer, None, model=shared_model)
    if spec.startswith("hf+"):
        return HFGenerator(tokenizer, spec[3:], model=shared_model)
    raise ValueError(f"unknown coverage engine {spec!r}: structgen, hf, hf+<peer>")


def run_generator(gen, cases: list[SchemaCase], prompts: list[list[int]], max_tokens: int,
                  progress: bool = True) -> list[dict]:
    """One row per schema; a compile refusal, a crash or an invalid output is a row, never an exception."""
    rows = []
    it = zip(cases, prompts)
    if progress:
        from tqdm import tqdm

        it = tqdm(list(it), desc=f"coverage {gen.name}", unit="schema", leave=False)
    for case, prompt in it:
        row = {"engine": gen.name, "case_id": case.case_id, "split": case.split, "prompt_tokens": len(prompt)}
        from .generators import ConstraintRefused

        try:
            compiled = gen.compile(case.schema)
        except ConstraintRefused as e:
            rows.append({**row, "declared": False, "valid": False, "error": str(e)})
            continue
        g = gen.generate(prompt, compiled, max_tokens)
        valid, reason = check_output(case.schema, g.text) if g.finish_reason != "error" else (False, g.error)
        rows.append({**row, "declared": True, "valid": valid, "reason": reason, "finish_reason": g.finish_reason,
                     "output_tokens": g.output_tokens, "forced_tokens": g.forced_tokens, "gen_s": g.gen_s,
                     "error": g.error, "text": g.text[:2000]})
    return rows


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    declared = sum(r["declared"] for r in rows)
    valid = sum(r["valid"] for r in rows)
    gen = [r for r in rows if r.get("output_tokens")]
    out_tokens = sum(r["output_tokens"] for r in gen)
    forced = sum(r["forced_tokens"] for r in gen)
    per_token = [r["gen_s"] / r["output_tokens"] for r in gen]
    return {"schemas": n, "declared": declared, "valid": valid,
            "compliance": stats.ratio(valid, declared) if declared else float("nan"),
            "output_tokens": out_tokens, "forced_tokens": forced, "sampled_tokens": out_tokens - forced,
            "hit_max_tokens": sum(1 for r in rows if r.get("finish_reason") == "length"),
            "errors": sum(1 for r in rows if r.get("finish_reason") == "error"),
            "s_per_token_p50": stats.percentile(per_token, 50),
            "s_per_token_all": (sum(r["gen_s"] for r in gen) / out_tokens) if out_tokens else float("nan")}


def render_markdown(results: dict[str, dict | str], header: dict, max_tokens: int) -> str:
    headers = ["engine", "schemas", "declared", "empirical (valid)", "compliance", "output tokens",
               "forced", "sampled", "hit max tokens", "errors", "ms/token p50", "ms/token overall"]
    lines, notes = [], []
    for name, s in results.items():
        if isinstance(s, str):
            lines.append([name, "unavailable"] + ["-"] * (len(headers) - 2))
            notes.append(f"- {name}: {s}")
            continue
        n = s["schemas"]
        lines.append([name, n, f"{s['declared']} ({stats.fmt_pct(s['declared'], n)})",
                      f"{s['valid']} ({stats.fmt_pct(s['valid'], n)})",
                      "-" if np.isnan(s["compliance"]) else f"{100 * s['compliance']:.1f}%",
                      s["output_tokens"], f"{s['forced_tokens']} ({stats.fmt_pct(s['forced_tokens'], s['output_tokens'])})",
                      s["sampled_tokens"], s["hit_max_tokens"], s["errors"],
                      stats.fmt(s["s_per_token_p50"], 1e3), stats.fmt(s["s_per_token_all"], 1e3)])
    parts = ["## Coverage benchmark", header_markdown(header), "",
             f"Greedy, at most {max_tokens} output tokens, same prompt ids for every engine. declared = compiled "
             "(the unconstrained LM declares all); empirical = output valid under jsonschema (own draft, formats "
             "checked); compliance = empirical / declared. forced: structgen = tokens appended by forced runs "
             "without a model step; hf+peer = steps whose mask allowed one token (the model still ran). "
             "ms/token = generation wall time (prefill included, compile excluded) / output tokens.", "",
             markdown_table(headers, lines)]
    if notes:
        parts += ["", *notes]
    return "\n".join(parts) + "\n"


def run(args: argparse.Namespace) -> int:
    from structgen import default_tokenizer

    if args.n < 1 or args.max_tokens < 1:
        print("structgen bench coverage: --n and --max-tokens must be >= 1", file=sys.stderr)
        return 2
    data_dir = args.data or (default_data_dir() / "jsonschemabench" / "dev")
    try:
        cases = load_schema_cases(data_dir, args.splits, sample=0, limit=0, seed=args.seed)
    except (FileNotFoundError, ValueError) as e:
        print(f"structgen bench coverage: {e}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    cases = [cases[i] for i in sorted(rng.choice(len(cases), size=min(args.n, len(cases)), replace=False))]
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)  # process-wide: structgen and transformers get the same threads
    header = run_header()
    tokenizer = default_tokenizer()
    prompts = [build_prompt(tokenizer, c.schema, args.max_schema_chars) for c in cases]
    shared_model = None
    results: dict[str, dict | str] = {}
    records: list[dict] = [{"type": "header", **header}]
    for spec in args.engines:
        try:
            if spec.startswith("hf") and shared_model is None:
                shared_model = make_generator("hf", tokenizer, args).model  # one copy of the weights for all hf rows
            gen = make_generator(spec, tokenizer, args, shared_model)
        except (EngineUnavailable, ImportError) as e:
            results[spec] = f"not installed / unavailable: {e}"
            print(f"coverage: {spec}: {results[spec]}", file=sys.stderr)
            continue
        except Exception as e:  # a broken engine is reported, the others still run
            results[spec] = f"failed to start: {type(e).__name__}: {e}"
            print(f"coverage: {spec}: {results[spec]}", file=sys.stderr)
            continue
        rows = run_generator(gen, cases, prompts, args.max_tokens, progress=not args.no_progress)
        if hasattr(gen, "close"):
            gen.close()
        results[spec] = summarize(rows)
        records.append({"type": "engine", "engine": spec, **results[spec]})
        records += [{"type": "schema", **r} for r in rows]
    out = Path(args.out)
    write_jsonl(out / "results.jsonl", records)
    md = render_markdown(results, header, args.max_tokens)
    (out / "summary.md").write_text(md)
    print(md)
    print(f"wrote {out / 'results.jsonl'}, {out / 'summary.md'}", file=sys.stderr)
    return 0
