"""Forced runs and prompt lookup inside the engine.

Fast: the Drafter's policy on real Sequences and cursors (no model). Slow (real SmolLM2): greedy outputs are token
for token the same with and without forced runs and prompt lookup across 30+ constrained requests (mixed batch
with requests that do not speculate); rejected drafts give back exactly their KV blocks and never reach the prefix
cache; sampled outputs stay valid and seeded runs reproduce.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

import structgen
from structgen.engine.config import EngineConfig
from structgen.engine.speculation.drafter import Drafter
from structgen.engine.requests import ConstraintSpec, GenerateRequest, SamplingParams
from structgen.engine.sequence import Sequence
from structgen.bench.cases import default_data_dir

DATA = default_data_dir()
INSTRUCTION = (
    "You are a careful data-extraction assistant. Read the user's request and fill in the arguments of the "
    "function described by the JSON Schema. Copy values from the request exactly when they appear there. "
    "Answer with one JSON object and nothing else."
)


@pytest.fixture(scope="module")
def tok():
    return structgen.default_tokenizer()


def _seq(tok, prompt: str, constraint=None, *, max_tokens=64, speculation=None) -> Sequence:
    req = GenerateRequest("r", tok.encode(prompt), SamplingParams(max_tokens=max_tokens), None,
                          speculation=speculation)
    seq = Sequence(req, tok.eos_token_ids)
    if constraint is not None:
        seq.cursor = constraint.cursor()
    return seq


def _commit(seq, tokens):
    for t in tokens:
        assert seq.cursor is None or seq.cursor.advance(t)
    seq.append_tokens(tokens)


# ----- the policy (no model) -------------------------------------------------------------------------------------

def test_draft_is_the_forced_run_then_a_lookup_cut_by_the_constraint(tok):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    compiled = structgen.compile_json_schema(schema)
    prompt = "Where? The city is Paris, France and the date is today."
    seq = _seq(tok, prompt, compiled)
    d = Drafter(EngineConfig(forced_runs=True, speculation="prompt_lookup", num_speculative_tokens=8), tok)
    _commit(seq, tok.encode('{"'))
    d.propose(seq, 4096)
    assert tok.decode(seq.draft_tokens).startswith("city")   # the forced key
    forced = d._state(seq).num_forced
    assert forced >= 1
    # Commit the key and a value's first word: the lookup proposes what followed " Paris" in the prompt, the
    # constraint keeps it (any text fits in a string), and the cursor is left where it was.
    _commit(seq, tok.encode('city":"'))
    _commit(seq, tok.encode(" Paris"))
    before = seq.cursor.num_advanced
    d.propose(seq, 4096)
    assert seq.cursor.num_advanced == before
    assert tok.decode(seq.draft_tokens).startswith(", France")


def test_lookup_drafts_are_cut_where_the_constraint_rejects_them(tok):
    compiled = structgen.compile_regex(r"[a-z]+ [0-9]+")
    seq = _seq(tok, "alpha 12 beta gamma 99", compiled)
    # cost_per_token=0: speculating is free, so k is always the maximum and the constraint alone cuts the draft.
    d = Drafter(EngineConfig(speculation="prompt_lookup", num_speculative_tokens=8), tok, cost_per_token=0.0)
    _commit(seq, tok.encode("alpha"))
    d.propose(seq, 4096)
    # The prompt continues " 12 beta gamma": only " 12" fits the regex after "alpha".
    assert tok.decode(seq.draft_tokens) == " 12"


def test_a_bigger_batch_gets_shorter_proposals_but_keeps_its_forced_run(tok):
    # Draft rows are weighed against the batch they are verified in: a request whose lookups keep failing stops
    # proposing in a batch of 32 while it would still propose alone; its forced run is drafted either way.
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    compiled = structgen.compile_json_schema(schema)
    prompt = "Where is the office? It is in Paris, France, near the river."
    d = Drafter(EngineConfig(forced_runs=True, speculation="prompt_lookup", num_speculative_tokens=8), tok)
    seq = _seq(tok, prompt, compiled)
    _commit(seq, tok.encode('{"city":"'))
    _commit(seq, tok.encode(" Paris"))
    for _ in range(2):
        d.observe(seq, 1, 0)  # two single-token proposals rejected: acceptance ~0.1
    d.propose(seq, 4096, batch_size=1)
    alone = list(seq.draft_tokens)
    d.propose(seq, 4096, batch_size=32)
    assert alone and seq.draft_tokens == []
    fresh = _seq(tok, prompt, compiled)
    _commit(fresh, tok.encode('{"'))
    d.observe(fresh, 1, 0)
    d.propose(fresh, 4096, batch_size=32)
    assert tok.decode(fresh.draft_tokens).startswith("city")  # the forced key still goes


def test_no_draft_when_off_or_out_of_room(tok):
    compiled = structgen.compile_json_schema({"type": "object", "properties": {"name": {"type": "string"}},
                                              "required": ["name"]})
    on = Drafter(EngineConfig(forced_runs=True, speculation="prompt_lookup"), tok)
    seq = _seq(tok, "x", compiled, speculation=False)
    _commit(seq, tok.encode('{"'))
    on.propose(seq, 4096)
    assert seq.draft_tokens == []
    # max_tokens 3 with one token used: one draft token at most, so that the model's own next token still fits.
    seq = _seq(tok, "x", compiled, max_tokens=3)
    _commit(seq, tok.encode('{"'))
    assert seq.num_output_tokens == 1
    on.propose(seq, 4096)
    assert len(seq.draft_tokens) == 1
    seq = _seq(tok, "x", compiled, max_tokens=2)
    _commit(seq, tok.encode('{"'))
    on.propose(seq, 4096)
    assert seq.draft_tokens == []


def test_counters_split_forced_and_lookup_acceptance(tok):
    compiled = structgen.compile_json_schema({"type": "object", "properties": {"name": {"type": "string"}},
                                              "required": ["name"]})
    d = Drafter(EngineConfig(forced_runs=True, speculation="prompt_lookup"), tok)
    seq = _seq(tok, "x", compiled)
    _commit(seq, tok.encode('{"'))
    d.propose(seq, 4096)
    forced = d._state(seq).num_forced
    assert forced > 0
    d.observe(seq, forced + 3, forced + 1)
    assert seq.num_forced_tokens == forced and seq.num_draft_accepted == 1
    d._state(seq).num_forced = 2
    d.observe(seq, 5, 1)                      # rejected inside the forced part
    assert seq.num_forced_tokens == forced + 1 and seq.num_draft_accepted == 1
    assert d.rejected_forced_tokens == 1


# ----- the real model ----------------------------------------------------------------------------------------------

REGEX_CASES = [
    ("Give a date as YYYY-MM-DD for the 15th of March 2024.", r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    ("Answer yes or no: is Paris in France?", r"(yes|no)"),
    ("Write the phone number 555-0147 in the form (ddd) ddd-dddd with area code 212.",
     r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"),
    ("Name the capital of Italy and its country code, like 'Rome, IT'.", r"[A-Z][a-z]+, [A-Z]{2}"),
]


@pytest.fixture(scope="module")
def model():
    import torch

    from structgen import settings
    from structgen.engine.weights import load_model

    if settings.get("STRUCTGEN_NUM_THREADS"):
        torch.set_num_threads(settings.get("STRUCTGEN_NUM_THREADS"))
    return load_model("default", "cpu")


def _engine(model, tok, **cfg):
    from structgen.engine.engine import LLMEngine

    cfg.setdefault("kv_cache_bytes", 256 << 20)
    cfg.setdefault("forced_runs", False)        # plain decoding unless asked: the reference must not draft
    cfg.setdefault("speculation", "off")
    return LLMEngine(EngineConfig(**cfg), model, tok)


def _chat(tok, user: str) -> list[int]:
    return tok.encode(tok.apply_chat_template([{"role": "system", "content": INSTRUCTION},
                                               {"role": "user", "content": user}]))


def _constrained_cases(tok) -> list[tuple[str, object, list[int]]]:
    """(kind, value, prompt ids): extraction dev requests, jsonschemabench dev schemas, regexes."""
    folder = DATA / "extraction" / "dev"
    bench = DATA / "jsonschemabench" / "dev" / "Github_easy"
    if not folder.is_dir() or not bench.is_dir():
        pytest.skip(f"test data not found under {DATA} (set STRUCTGEN_DATA_DIR)")
    from structgen.errors import ConstraintError

    cases = []
    for f in sorted(folder.glob("*.json"))[:24]:
        d = json.loads(f.read_text())
        cases.append(("json_schema", d["schema"], _chat(tok, f"Schema: {json.dumps(d['schema'])}\n\n"
                                                             f"Request: {d['text']}")))
    n_bench = 0
    for f in sorted(bench.glob("*.json")):
        schema = json.loads(f.read_text())["schema"]
        if len(json.dumps(schema)) > 1200:
            continue
        try:
            structgen.compile_json_schema(schema)
        except ConstraintError:
            continue
        cases.append(("json_schema", schema, _chat(tok, f"Schema: {json.dumps(schema)}\n\nWrite a realistic "
                                                        "example instance.")))
        n_bench += 1
        if n_bench == 6:
            break
    for prompt, pattern in REGEX_CASES:
        cases.append(("regex", pattern, _chat(tok, prompt)))
    return cases


def _check(kind, value, text):
    if kind == "json_schema":
        jsonschema.Draft202012Validator(value).validate(json.loads(text))
    else:
        assert re.fullmatch(value, text), (value, text)


@pytest.mark.slow
def test_greedy_outputs_are_identical_with_forced_runs_and_prompt_lookup(model, tok):
    cases = _constrained_cases(tok)
    assert len(cases) >= 30
    runs = {}
    usage = {}
    for name, cfg in [("base", {}), ("forced", {"forced_runs": True}),
                      ("forced+lookup", {"forced_runs": True, "speculation": "prompt_lookup",
                                         "num_speculative_tokens": 8})]:
        eng = _engine(model, tok, **cfg)
        reqs = []
        for i, (kind, value, prompt) in enumerate(cases):
            # In the last configuration every third request opts out: drafts are verified in the same batch as
            # plain decodes.
            spec = False if name == "forced+lookup" and i % 3 == 2 else None
            reqs.append(GenerateRequest(f"{name}-{i}", prompt, SamplingParams(max_tokens=64),
                                        ConstraintSpec(kind, value), speculation=spec))
        outs = eng.generate(reqs)
        # Token ids, the finish reason and the completion count: a draft that ends the output must stop where plain
        # decoding stops (no extra EOS step counted).
        runs[name] = [(outs[r.request_id].token_ids, outs[r.request_id].finish_reason,
                       outs[r.request_id].usage.completion_tokens) for r in reqs]
        usage[name] = [outs[r.request_id].usage for r in reqs]
        for (kind, value, _), r in zip(cases, reqs):
            o = outs[r.request_id]
            # A constrained output ends complete: naturally ("stop") or closed by its token budget ("budget").
            assert o.finish_reason in ("stop", "budget"), (o.finish_reason, o.error)
            assert o.usage.completion_tokens <= 64
            _check(kind, value, o.text)
        eng.close()
    for name in ("forced", "forced+lookup"):
        diffs = [i for i, (a, b) in enumerate(zip(runs["base"], runs[name])) if a != b]
        assert not diffs, f"{name}: greedy outputs differ from plain decoding for cases {diffs}"
    forced = sum(u.forced_tokens for u in usage["forced"])
    assert forced > 0 and all(u.draft_accepted_tokens == 0 for u in usage["forced"])
    assert sum(u.draft_accepted_tokens for u in usage["forced+lookup"]) > 0
    for i, u in enumerate(usage["forced+lookup"]):
        assert u.forced_tokens + u.draft_accepted_tokens <= u.completion_tokens
        if i % 3 == 2:
            assert u.forced_tokens == 0 and u.draft_accepted_tokens == 0, "opted-out request speculated"


@pytest.mark.slow
def test_rejected_drafts_free_exactly_their_kv_and_never_reach_the_prefix_cache(model, tok):
    prompt = _chat(tok, "Count from one to twenty in words, separated by commas.")
    # The greedy continuation, from a plain engine.
    base = _engine(model, tok)
    want = base.generate([GenerateRequest("b", prompt, SamplingParams(max_tokens=12))])["b"].token_ids
    base.close()
    eng = _engine(model, tok, forced_runs=True, speculation="prompt_lookup", block_size=16)
    bm, cache = eng.block_manager, eng.radix_cache
    seq = eng.add_request(GenerateRequest("s", prompt, SamplingParams(max_tokens=64)))
    while seq.num_output_tokens == 0:
        eng.step()
    assert seq.output_token_ids == want[:1]
    # A draft: the next 3 greedy tokens, then 37 tokens the model will not write (3 blocks' worth).
    garbage = [tok.encode(" zebra")[0]] * 37
    seq.draft_tokens = want[1:4] + garbage
    computed_before, blocks_before, free_before = seq.num_computed_tokens, len(seq.block_table), bm.num_free
    eng.step()
    assert seq.output_token_ids[:5] == want[:5], "accepted the agreeing prefix and the model's own next token"
    assert seq.num_draft_accepted >= 3
    # KV: exactly the blocks for the computed tokens stay; the garbage-only blocks went back.
    assert seq.num_computed_tokens == computed_before + 1 + 3
    assert len(seq.block_table) == bm.blocks_for(seq.num_computed_tokens)
    assert bm.num_free == free_before - (len(seq.block_table) - blocks_before)
    # The prefix cache never sees a page holding a rejected token.
    eng.abort("s")
    eng.step()
    probe = seq.token_ids[:computed_before + 4] + garbage
    assert cache.match_prefix(probe).num_tokens <= computed_before + 4
    eng.close()


@pytest.mark.slow
def test_sampling_with_speculation_stays_valid_and_reproducible(model, tok):
    folder = DATA / "extraction" / "dev"
    if not folder.is_dir():
        pytest.skip(f"test data not found at {folder} (set STRUCTGEN_DATA_DIR)")
    cases = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))[:2]]

    def run():
        eng = _engine(model, tok, forced_runs=True, speculation="prompt_lookup")
        reqs = [GenerateRequest(f"s{i}", _chat(tok, f"Schema: {json.dumps(d['schema'])}\n\nRequest: {d['text']}"),
                                SamplingParams(temperature=0.8, top_p=0.95, seed=7 + i, max_tokens=64),
                                ConstraintSpec("json_schema", d["schema"])) for i, d in enumerate(cases)]
        outs = eng.generate(reqs)
        eng.close()
        return [outs[r.request_id] for r in reqs]

    first, second = run(), run()
    assert [o.token_ids for o in first] == [o.token_ids for o in second]
    for d, o in zip(cases, first):
        if o.finish_reason == "stop":
            jsonschema.Draft202012Validator(d["schema"]).validate(json.loads(o.text))
    assert sum(o.usage.forced_tokens + o.usage.draft_accepted_tokens for o in first) > 0
