"""The engine end to end with the real SmolLM2-135M-Instruct: mixed constrained batches, seeds, prefix reuse,
abort, preemption, requests that cannot fit, compile errors, the async API."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import jsonschema
import pytest

from structgen.engine.config import EngineConfig
from structgen.engine.async_engine import AsyncEngine
from structgen.engine.engine import LLMEngine
from structgen.engine.requests import ConstraintSpec, GenerateRequest, SamplingParams
from structgen.bench.cases import default_data_dir

pytestmark = pytest.mark.slow

DATA = default_data_dir()

INSTRUCTION = (
    "You are a careful data-extraction assistant. Read the user's request and fill in the arguments of the "
    "function described by the JSON Schema. Copy values from the request exactly when they appear there; "
    "use the formats the schema's descriptions ask for. Answer with one JSON object and nothing else."
)
# Bounded repetitions: a 135M model can loop inside `[a-z]+` until max_tokens, which no constraint forbids.
REGEXES = [r"[A-Z][a-z]{1,10} [0-9]{2}", r"(yes|no|maybe)", r"[0-9]{3}-[0-9]{4}", r"\(?[a-z]{1,10}, [a-z]{1,10}\)?",
           r"[a-z]{2,8}@[a-z]{3,6}\.(com|org)", r"-?[0-9]{1,4}\.[0-9]{2}"]


@pytest.fixture(scope="module")
def model_and_tokenizer():
    import torch

    from structgen import default_tokenizer, settings
    from structgen.engine.weights import load_model

    if settings.get("STRUCTGEN_NUM_THREADS"):
        torch.set_num_threads(settings.get("STRUCTGEN_NUM_THREADS"))
    return load_model("default", "cpu"), default_tokenizer()


DRAFTING = {"forced_runs": True, "speculation": "prompt_lookup"}   # the engine's defaults, spelled out


def make_engine(model_and_tokenizer, **cfg) -> LLMEngine:
    """Plain decoding unless the test passes DRAFTING: reference outputs must come from an engine that does not
    draft, whatever EngineConfig's defaults are."""
    cfg.setdefault("kv_cache_bytes", 128 << 20)
    cfg.setdefault("forced_runs", False)
    cfg.setdefault("speculation", "off")
    model, tok = model_and_tokenizer
    return LLMEngine(EngineConfig(**cfg), model, tok)


def chat(tok, user: str, system: str = INSTRUCTION) -> list[int]:
    return tok.encode(tok.apply_chat_template([{"role": "system", "content": system},
                                               {"role": "user", "content": user}]))


def data_or_skip(*parts) -> Path:
    p = DATA.joinpath(*parts)
    if not p.is_dir():
        pytest.skip(f"test data not found at {p} (set STRUCTGEN_DATA_DIR)")
    return p


def extraction_cases(n: int):
    folder = data_or_skip("extraction", "dev")
    out = []
    for f in sorted(folder.glob("*.json"))[:n]:
        d = json.loads(f.read_text())
        out.append((d["schema"], f"Schema: {json.dumps(d['schema'])}\n\nRequest: {d['text']}"))
    return out


def bench_schemas(n: int, tok):
    """The first `n` small jsonschemabench dev schemas (Github_easy) that our compiler supports."""
    from structgen.errors import ConstraintError
    from structgen.fsm import compile_constraint

    folder = data_or_skip("jsonschemabench", "dev", "Github_easy")
    out = []
    for f in sorted(folder.glob("*.json")):
        schema = json.loads(f.read_text())["schema"]
        if len(json.dumps(schema)) > 400:
            continue
        try:
            compile_constraint("json_schema", bounded(schema), tok)
        except ConstraintError:
            continue
        out.append(schema)
        if len(out) == n:
            break
    return out


def bounded(schema):
    """The schema with short strings and arrays added (maxLength / maxItems where none is set), so that a 135M
    model cannot ramble past max_tokens inside a string. Outputs are still validated against the original."""
    if isinstance(schema, list):
        return [bounded(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: bounded(v) if k not in ("enum", "const", "required", "default", "examples") else v
           for k, v in schema.items()}
    types = out.get("type") if isinstance(out.get("type"), list) else [out.get("type")]
    if "string" in types and not {"enum", "const", "pattern", "format", "maxLength"} & out.keys():
        out["maxLength"] = 12
    if "array" in types and "maxItems" not in out:
        out["maxItems"] = max(2, out.get("minItems", 0))
    return out


def check_constrained(kind, value, text):
    if kind == "json_schema":
        cls = jsonschema.validators.validator_for(value, default=jsonschema.Draft202012Validator)
        validator = cls(value, format_checker=cls.FORMAT_CHECKER)
        validator.validate(json.loads(text))
    elif kind == "regex":
        assert re.fullmatch(value, text), (value, text)
    else:
        assert text in value


def test_32_mixed_requests_in_one_run(model_and_tokenizer):
    _, tok = model_and_tokenizer
    eng = make_engine(model_and_tokenizer, max_num_seqs=32, **DRAFTING)     # as the server runs by default
    reqs, specs = [], {}
    for i, (schema, user) in enumerate(extraction_cases(8)):
        reqs.append(GenerateRequest(f"x{i}", chat(tok, user), SamplingParams(max_tokens=128),
                                    ConstraintSpec("json_schema", bounded(schema))))
        specs[f"x{i}"] = ("json_schema", schema)
    for i, schema in enumerate(bench_schemas(4, tok)):
        user = f"Write an example JSON document for this schema: {json.dumps(schema)}"
        reqs.append(GenerateRequest(f"b{i}", chat(tok, user), SamplingParams(max_tokens=128, temperature=0.7, seed=i),
                                    ConstraintSpec("json_schema", bounded(schema))))
        specs[f"b{i}"] = ("json_schema", schema)
    for i, rx in enumerate(REGEXES):
        reqs.append(GenerateRequest(f"r{i}", chat(tok, f"Give one example matching {rx}"),
                                    SamplingParams(max_tokens=40), ConstraintSpec("regex", rx)))
        specs[f"r{i}"] = ("regex", rx)
    for i in range(32 - len(reqs)):
        reqs.append(GenerateRequest(f"u{i}", chat(tok, f"Count from {i} to {i + 5}.", system="Be brief."),
                                    SamplingParams(max_tokens=24, temperature=0.5 * (i % 2), seed=i)))
    assert len(reqs) == 32
    outs = eng.generate(reqs)
    assert set(outs) == {r.request_id for r in reqs}
    for rid, o in outs.items():
        assert o.finished and o.error is None, (rid, o.error)
        assert tok.decode(o.token_ids) == o.text or o.text in tok.decode(o.token_ids)
        if rid in specs:
            assert o.finish_reason == "stop", (rid, o.finish_reason, o.text)
            check_constrained(*specs[rid], o.text)
        else:
            assert o.finish_reason in ("stop", "length") and o.usage.completion_tokens <= 24
    st = eng.stats()
    assert st.running == 0 and st.queue_len == 0
    assert st.mask_time_s > 0 and st.generated_tokens >= sum(o.usage.completion_tokens for o in outs.values())
    # The shared instruction was computed once, then read from the prefix cache.
    assert st.prefix_hit_tokens > 0


def test_same_seed_same_output_alone_and_in_a_batch(model_and_tokenizer):
    _, tok = model_and_tokenizer
    eng = make_engine(model_and_tokenizer, enable_prefix_cache=False, **DRAFTING)
    sp = SamplingParams(temperature=0.9, top_p=0.95, seed=42, max_tokens=16)
    target = GenerateRequest("t", chat(tok, "Invent a name for a cat.", system="Be brief."), sp)
    alone = eng.generate([target])["t"]
    others = [GenerateRequest(f"o{i}", chat(tok, f"Say a number above {i}."), SamplingParams(
        temperature=1.0, seed=100 + i, max_tokens=10 + i)) for i in range(5)]
    target2 = GenerateRequest("t", target.prompt_token_ids, sp)
    batched = eng.generate(others[:2] + [target2] + others[2:])["t"]
    assert batched.token_ids == alone.token_ids and batched.text == alone.text
    other_seed = eng.generate([GenerateRequest("t", target.prompt_token_ids, SamplingParams(
        temperature=0.9, top_p=0.95, seed=7, max_tokens=16))])["t"]
    assert other_seed.token_ids != alone.token_ids


def test_shared_300_token_prefix_prefills_only_the_suffix(model_and_tokenizer):
    _, tok = model_and_tokenizer
    eng = make_engine(model_and_tokenizer)
    long_text = " ".join(f"Rule {i}: copy values exactly and keep the field order stable." for i in range(60))
    prefix = tok.encode(long_text)[:300]
    assert len(prefix) == 300
    a = prefix + tok.encode(" First document: Alice, 31.")
    b = prefix + tok.encode(" Second document: Bob, 45, Paris.")
    out_a = eng.generate([GenerateRequest("a", a, SamplingParams(max_tokens=4))])["a"]
    before = eng.stats().prefill_tokens
    out_b = eng.generate([GenerateRequest("b", b, SamplingParams(max_tokens=4))])["b"]
    computed = eng.stats().prefill_tokens - before
    shared_pages = 300 // eng.config.block_size * eng.config.block_size      # 288 with 16-token blocks
    assert out_a.usage.cached_tokens == 0
    assert out_b.usage.cached_tokens == shared_pages
    assert computed == len(b) - shared_pages
    # Reused KV gives the same answer as computing everything.
    fresh = make_engine(model_and_tokenizer, enable_prefix_cache=False)
    assert fresh.generate([GenerateRequest("b", b, SamplingParams(max_tokens=4))])["b"].token_ids == out_b.token_ids


def test_flush_prefix_cache_drops_what_no_request_holds(model_and_tokenizer):
    _, tok = model_and_tokenizer
    eng = make_engine(model_and_tokenizer)
    prompt = tok.encode(" ".join(f"Rule {i}: keep the order." for i in range(20)))

    async def main():
        aeng = AsyncEngine(eng)
        await aeng.start()
        await _collect(aeng, GenerateRequest("a", prompt, SamplingParams(max_tokens=2)))
        cached = aeng.stats().kv_blocks_cached
        freed = await aeng.flush_prefix_cache()
        after = aeng.stats()
        again = await _collect(aeng, GenerateRequest("b", prompt, SamplingParams(max_tokens=2)))
        await aeng.shutdown()
        return cached, freed, after, again[-1]

    cached, freed, after, again = asyncio.run(main())
    assert cached > 0 and freed == cached
    assert after.kv_blocks_cached == 0 and after.kv_blocks_used == 0
    assert again.usage.cached_tokens == 0  # the same prompt finds nothing cached any more


def test_abort_mid_generation_frees_every_block(model_and_tokenizer):
    _, tok = model_and_tokenizer
    eng = make_engine(model_and_tokenizer, enable_prefix_cache=False)

    async def main():
        aeng = AsyncEngine(eng)
        await aeng.start()
        seen = []
        other = asyncio.ensure_future(_collect(aeng, GenerateRequest(
            "other", chat(tok, "Say hi."), SamplingParams(max_tokens=6))))
        async for o in aeng.generate(GenerateRequest("long", chat(tok, "Write a long story."),
                                                     SamplingParams(max_tokens=200, ignore_eos=True))):
            seen.append(o)
            if len(seen) == 3:
                assert eng.stats().kv_blocks_used > 0
                await aeng.abort("long")
        other_out = await other
        stats = aeng.stats()
        await aeng.shutdown()
        return seen, other_out, stats

    seen, other_out, stats = asyncio.run(main())
    assert seen[-1].finished and seen[-1].finish_reason == "abort"
    assert seen[-1].usage.completion_tokens < 200
    assert stats.kv_blocks_used == 0 and stats.running == 0
    assert other_out[-1].finish_reason in ("stop", "length") and other_out[-1].error is None


async def _collect(aeng, req):
    return [o async for o in aeng.generate(req)]


def test_closing_the_stream_early_aborts(model_and_tokenizer):
    _, tok = model_and_tokenizer
    eng = make_engine(model_and_tokenizer, enable_prefix_cache=False)

    async def main():
        aeng = AsyncEngine(eng)
        await aeng.start()
        stream = aeng.generate(GenerateRequest("c", chat(tok, "Write a poem."),
                                               SamplingParams(max_tokens=200, ignore_eos=True)))
        async for _ in stream:
            break
        await stream.aclose()
        for _ in range(200):
            if aeng.stats().running == 0:
                break
            await asyncio.sleep(0.05)
        stats = aeng.stats()
        await aeng.shutdown()
        return stats

    stats = asyncio.run(main())
    assert stats.running == 0 and stats.kv_blocks_used == 0 and stats.requests_finished.get("abort") == 1


def test_preemption_under_a_tiny_kv_budget_is_still_correct(model_and_tokenizer):
    model, tok = model_and_tokenizer
    from structgen.engine.kv_cache import KVCache

    def reqs():
        out = [GenerateRequest(f"r{i}", chat(tok, f"List {i + 2} fruits, comma separated."),
                               SamplingParams(max_tokens=40)) for i in range(5)]
        out.append(GenerateRequest("rx", chat(tok, "Give a phone number."), SamplingParams(max_tokens=40),
                                   ConstraintSpec("regex", REGEXES[2])))
        return out

    roomy = make_engine(model_and_tokenizer).generate(reqs())
    per_block = KVCache.bytes_per_block(model.config, 16, model.dtype)
    tiny = make_engine(model_and_tokenizer, kv_cache_bytes=12 * per_block, max_num_seqs=6, **DRAFTING)
    assert tiny.kv.num_blocks == 12            # ~6 blocks per request at peak: 6 requests need 36
    got = tiny.generate(reqs())
    assert tiny.stats().preemptions > 0
    for rid, o in roomy.items():
        assert got[rid].token_ids == o.token_ids, rid
    assert re.fullmatch(REGEXES[2], got["rx"].text)


def test_request_that_can_never_fit_fails_alone(model_and_tokenizer):
    _, tok = model_and_tokenizer
    eng = make_engine(model_and_tokenizer, max_model_len=256)
    ok = GenerateRequest("ok", chat(tok, "Say hi."), SamplingParams(max_tokens=5))
    too_long = GenerateRequest("long", list(range(1000, 1300)), SamplingParams(max_tokens=5))
    outs = eng.generate([too_long, ok])
    assert outs["long"].finish_reason == "error" and "max_model_len" in outs["long"].error
    assert outs["ok"].finish_reason in ("stop", "length") and outs["ok"].error is None
    assert len(outs["ok"].token_ids) > 0
    model, _ = model_and_tokenizer
    from structgen.engine.kv_cache import KVCache

    small = make_engine(model_and_tokenizer, kv_cache_bytes=8 * KVCache.bytes_per_block(model.config, 16, model.dtype))
    outs = small.generate([GenerateRequest("big", chat(tok, "Hi"), SamplingParams(max_tokens=200)), ok])
    assert outs["big"].finish_reason == "error" and "KV blocks" in outs["big"].error
    assert outs["ok"].error is None


def test_bad_constraint_fails_only_its_request(model_and_tokenizer):
    _, tok = model_and_tokenizer
    eng = make_engine(model_and_tokenizer)
    bad = GenerateRequest("bad", chat(tok, "Hi"), SamplingParams(max_tokens=5), ConstraintSpec("regex", "[a-"))
    good = GenerateRequest("good", chat(tok, "Yes or no?"), SamplingParams(max_tokens=5),
                           ConstraintSpec("choice", ["yes", "no"]))
    outs = eng.generate([bad, good])
    assert outs["bad"].finish_reason == "error" and "regex" in outs["bad"].error.lower()
    assert outs["good"].finish_reason == "stop" and outs["good"].text in ("yes", "no")


def test_async_stream_deltas_add_up(model_and_tokenizer):
    _, tok = model_and_tokenizer
    eng = make_engine(model_and_tokenizer)
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                               "age": {"type": "integer"}}, "required": ["name", "age"]}

    async def main():
        aeng = AsyncEngine(eng)
        await aeng.start()
        compiled = await aeng.compile(ConstraintSpec("json_schema", schema))
        outs = await _collect(aeng, GenerateRequest("s", chat(tok, "Tom is 7 years old."),
                                                    SamplingParams(max_tokens=60), compiled))
        dup = await asyncio.gather(_collect(aeng, GenerateRequest("d", chat(tok, "x"), SamplingParams(max_tokens=30))),
                                   _collect(aeng, GenerateRequest("d", chat(tok, "y"), SamplingParams(max_tokens=3))))
        await aeng.shutdown()
        return outs, dup

    outs, dup = asyncio.run(main())
    text = "".join(o.text for o in outs)
    ids = [t for o in outs for t in o.token_ids]
    assert outs[-1].finished and outs[-1].finish_reason == "stop"
    assert text == tok.decode(ids)
    jsonschema.Draft202012Validator(schema).validate(json.loads(text))
    last = outs[-1]
    assert last.usage.completion_tokens >= len(ids) and last.usage.prompt_tokens > 0
    assert last.timings.ttft_s is not None and 0 < last.timings.ttft_s <= last.timings.total_s
    assert sum(1 for o in outs if o.token_ids) > 1                 # streamed, not one blob
    reasons = sorted(d[-1].finish_reason for d in dup)
    assert "error" in reasons                                      # the duplicate id is refused, not mixed in


def test_forced_runs_skip_model_steps_and_stay_valid(model_and_tokenizer):
    _, tok = model_and_tokenizer
    schema = {"type": "object", "properties": {"first_name": {"type": "string", "maxLength": 16},
                                               "years_old": {"type": "integer", "maximum": 150}},
              "required": ["first_name", "years_old"], "additionalProperties": False}
    req = GenerateRequest("f", chat(tok, "Tom is 7 years old."), SamplingParams(max_tokens=60),
                          ConstraintSpec("json_schema", schema))
    plain = make_engine(model_and_tokenizer)
    base = plain.generate([req])["f"]
    jumpy = make_engine(model_and_tokenizer, forced_runs=True)
    out = jumpy.generate([GenerateRequest("f", req.prompt_token_ids, req.sampling, req.constraint)])["f"]
    for o in (base, out):
        assert o.finish_reason == "stop"
        jsonschema.Draft202012Validator(schema).validate(json.loads(o.text))
    assert out.usage.forced_tokens > 0
    assert jumpy.stats().steps < plain.stats().steps


def test_drafts_are_verified_and_only_agreed_tokens_committed(model_and_tokenizer):
    """Prompt-lookup drafts are verified in the next forward: only agreed tokens are committed, greedy output is
    unchanged and rejected drafts leave no KV behind."""
    _, tok = model_and_tokenizer
    prompt = chat(tok, "Count from 1 to 20, comma separated.", system="Be brief.")
    sp = SamplingParams(max_tokens=24, ignore_eos=True)
    ref = make_engine(model_and_tokenizer).generate([GenerateRequest("d", prompt, sp)])["d"].token_ids
    eng = make_engine(model_and_tokenizer, speculation="prompt_lookup", num_speculative_tokens=4)
    out = eng.generate([GenerateRequest("d", prompt, sp)])["d"]
    assert out.token_ids == ref                                     # greedy output unchanged
    assert out.usage.draft_accepted_tokens > 0
    assert eng.stats().steps < len(ref)
    # Rejected drafts left nothing behind: with the request gone, only prefix-cache blocks remain, and the
    # cache holds committed tokens only.
    assert eng.block_manager.num_used == eng.radix_cache.num_blocks
    full = prompt + ref
    m = eng.radix_cache.match_prefix(full + [0])
    assert m.num_tokens == (len(full) - 1) // 16 * 16
    assert eng.radix_cache.num_blocks == m.num_tokens // 16       # no page of rejected drafts anywhere


def test_a_draft_that_runs_past_the_end_is_cut_where_plain_decoding_stops(model_and_tokenizer):
    """Drafts accepted past a stop string, or past the end the constraint allows, are dropped: the same tokens,
    text, finish reason and completion count as without drafts."""
    _, tok = model_and_tokenizer
    prompt = chat(tok, "Repeat this list exactly: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14.", system="Be brief.")
    sp_stop = SamplingParams(max_tokens=40, stop=["9,"])
    doc = "Ticket 4471: the printer on floor 3 is out of toner. Reported by Dana Whitfield."
    sp_json = SamplingParams(max_tokens=48)
    # The output ends in a forced run (`, "status": "open"}` after the number): the forward that verifies it also
    # yields the model's EOS, one step plain decoding never runs.
    schema = {"type": "object", "properties": {"ticket": {"type": "integer"}, "status": {"const": "open"}},
              "required": ["ticket", "status"], "additionalProperties": False}

    def run(**cfg):
        eng = make_engine(model_and_tokenizer, **cfg)
        outs = eng.generate([GenerateRequest("s", prompt, sp_stop),
                             GenerateRequest("j", chat(tok, doc), sp_json, ConstraintSpec("json_schema", schema))])
        eng.close()
        return {k: (o.token_ids, o.text, o.finish_reason, o.usage.completion_tokens) for k, o in outs.items()}, outs

    plain, _ = run()
    drafted, outs = run(**DRAFTING, num_speculative_tokens=8)
    assert outs["s"].usage.draft_accepted_tokens > 0 and outs["j"].usage.forced_tokens > 0   # drafting happened
    assert plain["s"][2] == "stop" and "9," not in plain["s"][1]             # the stop string ended it
    assert drafted == plain
    check_constrained("json_schema", schema, outs["j"].text)
