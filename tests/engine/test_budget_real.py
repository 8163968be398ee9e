"""Budget-aware closing with real constraints (issue 13): the FSM's bound (structgen/fsm/budget.py) through the
engine's guard. Fast: a tiny random-weight model with the real tokenizer (it never closes anything by itself) on
JSON Schema, regex and choice constraints with small budgets, greedy and seeded, drafts (forced runs + prompt
lookup) on and off. Slow: SmolLM2-135M on extraction dev items with max_tokens 12 / 24 / 48."""

from __future__ import annotations

import json
import re
import time

import jsonschema
import pytest

import structgen
from structgen.bench.cases import default_data_dir
from structgen.engine.config import EngineConfig
from structgen.engine.engine import LLMEngine
from structgen.engine.requests import ConstraintSpec, GenerateRequest, SamplingParams

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"type": "string"}},
    "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["city"]}},
    "required": ["name", "age", "address"]}
REGEX = r"[a-z]{3,40}@[a-z]{2,10}\.(com|org)"
CHOICES = ["alpha", "beta gamma delta epsilon"]
CONSTRAINTS = [ConstraintSpec("json_schema", SCHEMA), ConstraintSpec("regex", REGEX), ConstraintSpec("choice", CHOICES)]
PROMPT = 'Example: {"name": "Ann Lee", "age": 41, "address": {"city": "Oslo"}}. Write one for Bob, 35, Rome.'
PLAIN = {"forced_runs": False, "speculation": "off"}
DRAFTING = {"forced_runs": True, "speculation": "prompt_lookup"}


def valid(spec: ConstraintSpec, text: str) -> bool:
    if spec.kind == "json_schema":
        try:
            jsonschema.Draft202012Validator(spec.value).validate(json.loads(text))
        except (ValueError, jsonschema.ValidationError):
            return False
        return True
    if spec.kind == "regex":
        return re.fullmatch(spec.value, text) is not None
    return text in spec.value


def check(spec, out, max_tokens: int) -> None:
    assert out.finish_reason in ("stop", "budget"), (out.finish_reason, out.error)
    assert len(out.token_ids) <= max_tokens, out
    assert out.usage.completion_tokens <= max_tokens
    assert valid(spec, out.text), (spec.kind, out.text)


def engine(model, tok, **cfg) -> LLMEngine:
    cfg.setdefault("kv_cache_bytes", 16 << 20)
    return LLMEngine(EngineConfig(**cfg), model, tok)


def requests(tok, budgets, sampling=None, tag="r"):
    prompt = tok.encode(PROMPT)
    reqs = []
    for c in CONSTRAINTS:
        for b in budgets:
            sp = sampling(len(reqs), b) if sampling else SamplingParams(max_tokens=b)
            reqs.append(GenerateRequest(f"{tag}{len(reqs)}", list(prompt), sp, c))
    return reqs


def run(eng, reqs):
    try:
        outs = eng.generate(reqs)
    finally:
        eng.close()
    return [outs[r.request_id] for r in reqs]


BUDGETS = [15, 20, 32, 48]             # the schema needs 15 tokens at least, the regex 6, the choice 1


def test_greedy_outputs_validate_within_budget_with_drafts_on_and_off(tok, tiny):
    reqs = requests(tok, BUDGETS)
    plain = run(engine(tiny, tok, **PLAIN), reqs)
    drafted = run(engine(tiny, tok, **DRAFTING), requests(tok, BUDGETS, tag="d"))
    for r, o in zip(reqs, plain):
        check(r.constraint, o, r.sampling.max_tokens)
    assert [o.token_ids for o in drafted] == [o.token_ids for o in plain]
    assert [o.finish_reason for o in drafted] == [o.finish_reason for o in plain]
    assert sum(o.usage.forced_tokens for o in drafted) > 0, "forced runs must take part"
    # A random-weight model never closes a JSON object by itself: the budget closes every schema output.
    assert all(o.finish_reason == "budget" for r, o in zip(reqs, plain) if r.constraint.kind == "json_schema")


def test_seeded_sampling_validates_within_budget_and_is_reproducible_alone_and_in_a_batch(tok, tiny):
    def sp(i, b):
        return SamplingParams(temperature=1.0, top_p=0.95, seed=1000 + i, max_tokens=b)

    reqs = requests(tok, BUDGETS, sp)
    batch = run(engine(tiny, tok, **DRAFTING), reqs)
    for r, o in zip(reqs, batch):
        check(r.constraint, o, r.sampling.max_tokens)
    for i in (0, 5, 9):
        alone = run(engine(tiny, tok, **PLAIN), [GenerateRequest("x", reqs[i].prompt_token_ids, reqs[i].sampling,
                                                                 reqs[i].constraint)])[0]
        assert alone.token_ids == batch[i].token_ids


def test_a_budget_below_the_shortest_completion_is_refused_naming_both_numbers(tok, tiny):
    reqs = [GenerateRequest("s", tok.encode(PROMPT), SamplingParams(max_tokens=3), CONSTRAINTS[0]),
            GenerateRequest("x", tok.encode(PROMPT), SamplingParams(max_tokens=4), CONSTRAINTS[1])]
    s, x = run(engine(tiny, tok, **PLAIN), reqs)
    for o, b in ((s, 3), (x, 4)):
        assert o.finish_reason == "error" and o.token_ids == []
        m = re.fullmatch(r"the constraint needs at least (\d+) tokens to complete but the budget is (\d+) "
                         r"\(max_tokens=(\d+), context room=(\d+)\)", o.error)
        assert m, o.error
        assert int(m[1]) > b and int(m[2]) == b and int(m[3]) == b


def test_a_budget_exactly_the_shortest_completion_closes_at_once(tok, tiny):
    cursor = structgen.compile_json_schema(SCHEMA, tok).cursor()
    need = cursor.min_tokens_to_finish()
    out, = run(engine(tiny, tok, **PLAIN),
               [GenerateRequest("r", tok.encode(PROMPT), SamplingParams(max_tokens=need), CONSTRAINTS[0])])
    check(CONSTRAINTS[0], out, need)
    assert out.finish_reason == "budget"


def test_the_guard_cost_per_step(tok, tiny):
    """Prints the guard's share of a step (no timed assert): the runner's budget guard alone vs the whole step."""
    from structgen.engine import runner as runner_mod

    spent = [0.0]
    real = runner_mod.ModelRunner._guard_budget

    def timed(self, *a):
        t = time.perf_counter()
        try:
            return real(self, *a)
        finally:
            spent[0] += time.perf_counter() - t

    def reqs(tag):
        return [GenerateRequest(f"{tag}{i}", tok.encode(PROMPT), SamplingParams(max_tokens=64), CONSTRAINTS[i % 3])
                for i in range(8)]

    for warm in (False, True):      # cold: the FSM builds each state's bound on first visit; warm: cached
        spent[0] = 0.0
        eng = engine(tiny, tok, **PLAIN)
        runner_mod.ModelRunner._guard_budget = timed
        try:
            t0 = time.perf_counter()
            eng.generate(reqs(f"w{warm}"))
            total = time.perf_counter() - t0
        finally:
            runner_mod.ModelRunner._guard_budget = real
        steps = eng.stats().steps
        eng.close()
        print(f"\nbudget guard ({'warm' if warm else 'cold'} states): {1e3 * spent[0] / steps:.3f} ms/step of "
              f"{1e3 * total / steps:.2f} ms/step ({100 * spent[0] / total:.1f}%), 8 constrained requests, tiny model")
        assert steps > 0


# ----- the real model -------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("max_tokens", [12, 24, 48])
def test_smollm_extraction_dev_items_close_in_budget(tok, max_tokens):
    from structgen.engine.weights import load_model

    folder = default_data_dir() / "extraction" / "dev"
    if not folder.is_dir():
        pytest.skip(f"test data not found at {folder} (set STRUCTGEN_DATA_DIR)")
    items = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))[:6]]
    model = load_model("default", "cpu")
    system = ("Fill in the arguments of the function described by the JSON Schema, copying values from the "
              "request. Answer with one JSON object.")
    reqs, specs = [], []
    for i, d in enumerate(items):
        prompt = tok.encode(tok.apply_chat_template([
            {"role": "system", "content": system},
            {"role": "user", "content": f"Schema: {json.dumps(d['schema'])}\n\nRequest: {d['text']}"}]))
        spec = ConstraintSpec("json_schema", d["schema"])
        specs.append(spec)
        reqs.append(GenerateRequest(f"x{i}", prompt, SamplingParams(max_tokens=max_tokens), spec))
    outs = run(engine(model, tok, kv_cache_bytes=128 << 20, **DRAFTING), reqs)
    closed = 0
    for spec, o in zip(specs, outs):
        if o.finish_reason == "error":
            assert o.error.startswith("the constraint needs at least"), o.error   # refused up front, named
            continue
        check(spec, o, max_tokens)
        closed += o.finish_reason == "budget"
    print(f"\nmax_tokens={max_tokens}: " + ", ".join(f"{o.finish_reason}:{len(o.token_ids)}" for o in outs))
    if max_tokens == 12:
        assert closed + sum(o.finish_reason == "error" for o in outs) == len(outs)
