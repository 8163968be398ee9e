"""Draft-model speculation (structgen/engine/draft_model.py, wired through structgen/engine/drafter.py).

Fast: a tiny random-weight model with the real vocabulary drafts for itself or for another tiny model: cursors
end where they started, reused draft KV gives the same drafts as a fresh pool, a draft model of another vocabulary
is refused, draft KV goes back when requests finish or abort, no spare draft KV means no drafts (never an error),
and greedy outputs match plain decoding in a mixed batch. Slow (real SmolLM2-135M as the target): greedy outputs
are token for token those of plain decoding with the same weights drafting (nearly everything accepted) and with
a random-weight draft (nearly nothing accepted), with forced runs, constrained and unconstrained requests and
requests that opt out in one batch.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch

import structgen
from structgen.engine.config import EngineConfig
from structgen.engine.speculation.draft_model import DraftModelProposer, DraftRequest, check_draft_vocab
from structgen.engine.engine import LLMEngine
from structgen.engine.requests import ConstraintSpec, GenerateRequest, SamplingParams
from structgen.engine.sequence import Sequence, SequenceStatus
from structgen.bench.cases import default_data_dir
from tiny_models import tiny_model  # tests/engine/tiny_models.py (tests/engine is on sys.path via conftest)

DATA = default_data_dir()
INSTRUCTION = (
    "You are a careful data-extraction assistant. Read the user's request and fill in the arguments of the "
    "function described by the JSON Schema. Copy values from the request exactly when they appear there. "
    "Answer with one JSON object and nothing else."
)
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"}},
          "required": ["name", "age"]}
DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"


def _proposer(model, tok, kv_bytes=8 << 20) -> DraftModelProposer:
    return DraftModelProposer(model, target_vocab_size=tok.vocab_size, tokenizer_vocab_size=tok.vocab_size,
                              eos_token_ids=tok.eos_token_ids, kv_cache_bytes=kv_bytes, block_size=16)


def _running_seq(tok, prompt: str, cursor=None, rid="r", max_tokens=64) -> Sequence:
    seq = Sequence(GenerateRequest(rid, tok.encode(prompt), SamplingParams(max_tokens=max_tokens)), tok.eos_token_ids)
    seq.status = SequenceStatus.RUNNING
    if cursor is not None:
        seq.cursor = cursor
        seq.mask_words = -(-tok.vocab_size // 32)
    return seq


def _commit(seq, tokens):
    for t in tokens:
        assert seq.cursor is None or seq.cursor.advance(t)
    seq.append_tokens(list(tokens))


# ----- the proposer (tiny model) ------------------------------------------------------------------------------------

def test_cursor_ends_where_it_started_and_drafts_fit_the_constraint(tok, tiny):
    prop = _proposer(tiny, tok)
    compiled = structgen.compile_json_schema(SCHEMA)
    seq = _running_seq(tok, "Who are you?", compiled.cursor())
    free = _running_seq(tok, "Say anything.")
    _commit(seq, tok.encode('{"name":"'))
    for step in range(6):
        state, advanced = seq.cursor.state, seq.cursor.num_advanced
        forced = seq.cursor.forced_tokens()
        drafts = prop.propose([DraftRequest(seq, 5, list(forced)), DraftRequest(free, 3)])
        assert (seq.cursor.state, seq.cursor.num_advanced) == (state, advanced)
        assert 1 <= len(drafts[0]) <= 5 and 1 <= len(drafts[1]) <= 3
        walk = seq.cursor.copy()
        for t in forced + drafts[0]:
            assert walk.advance(t), "a draft token the constraint rejects"
        # Commit part of the draft (as verification would) and a token of the model's own.
        _commit(seq, forced + drafts[0][:step % 3])
        _commit(free, drafts[1][:1] + [tok.encode(" ok")[0]])
        nxt = [int(t) for t in seq.cursor.allowed_token_ids() if int(t) not in tok.eos_token_ids]
        if not nxt:
            break
        _commit(seq, [nxt[len(nxt) // 2]])


def test_reused_draft_kv_drafts_like_a_fresh_pool(tok, tiny):
    """KV of rejected drafts is overwritten: a long-lived proposer drafts what a fresh one drafts."""
    kept = _proposer(tiny, tok)
    seq = _running_seq(tok, "Count: one two three four five six seven eight nine ten")
    for step in range(8):
        got = kept.propose([DraftRequest(seq, 4)])[0]
        fresh = _proposer(tiny, tok)
        want = fresh.propose([DraftRequest(seq, 4)])[0]
        assert got == want, step
        # Accept a varying part of the draft, then a token the draft did not propose.
        _commit(seq, got[:step % 4] + [(got[0] + 7) % tok.vocab_size])
    seq.status = SequenceStatus.FINISHED
    kept.propose([])
    assert kept.block_manager.num_used == 0 and kept.num_tracked == 0


def test_a_long_catch_up_goes_in_chunks_and_then_drafts(tok, tiny):
    prop = DraftModelProposer(tiny, target_vocab_size=tok.vocab_size, tokenizer_vocab_size=tok.vocab_size,
                              eos_token_ids=tok.eos_token_ids, kv_cache_bytes=8 << 20, block_size=16,
                              max_catchup_tokens=8)
    seq = _running_seq(tok, " ".join(f"w{i}" for i in range(20)))
    assert seq.num_tokens > 24
    calls = 0
    while not (got := prop.propose([DraftRequest(seq, 3)])[0]):
        calls += 1
        assert calls <= -(-seq.num_tokens // 8)
    assert calls >= 2
    assert got == _proposer(tiny, tok).propose([DraftRequest(seq, 3)])[0]


def test_a_draft_model_of_another_vocabulary_is_refused(tok, tiny):
    small = tiny_model(vocab_size=1000, layers=1, hidden=16)
    cfg = EngineConfig(kv_cache_bytes=8 << 20, speculation="draft_model", draft_model="small")
    with pytest.raises(ValueError, match="same tokenizer|target's tokenizer"):
        LLMEngine(cfg, tiny, tok, draft_model=small)
    with pytest.raises(ValueError, match="draft model"):
        LLMEngine(cfg, tiny, tok)              # speculation='draft_model' without a loaded draft model
    check_draft_vocab(49216, 49152, 49152)     # embedding tables padded differently past the tokenizer: fine
    with pytest.raises(ValueError, match="1000 token ids"):
        check_draft_vocab(1000, 49152, 49152)


def test_serve_flags_reach_the_engine_config():
    import argparse

    from structgen.server import cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    cfg = cli.engine_config(parser.parse_args(["--speculation", "draft_model", "--draft-model", "/models/small",
                                               "--num-speculative-tokens", "6", "--forced-runs"]))
    assert (cfg.speculation, cfg.draft_model, cfg.num_speculative_tokens, cfg.forced_runs) == (
        "draft_model", "/models/small", 6, True)
    assert cli.engine_config(parser.parse_args(["--draft-model", "/models/small"])).speculation == "draft_model"
    default = cli.engine_config(parser.parse_args([]))
    assert (default.speculation, default.forced_runs) == (EngineConfig().speculation, EngineConfig().forced_runs)


def _mixed_requests(tok, tag: str, opt_out: bool = True) -> list[GenerateRequest]:
    sp = SamplingParams(max_tokens=32)
    return [
        GenerateRequest(f"{tag}-0", tok.encode("Hello there, who are you?"), sp, ConstraintSpec("json_schema", SCHEMA)),
        GenerateRequest(f"{tag}-1", tok.encode("A date please"), sp, ConstraintSpec("regex", DATE)),
        GenerateRequest(f"{tag}-2", tok.encode("Free text"), sp),
        GenerateRequest(f"{tag}-3", tok.encode("Free text, opted out"), sp, speculation=False if opt_out else None),
        GenerateRequest(f"{tag}-4", tok.encode("Another person"), sp, ConstraintSpec("json_schema", SCHEMA),
                        speculation=False if opt_out else True),
    ]


def _run(engine, reqs):
    outs = engine.generate(reqs)
    return [outs[r.request_id] for r in reqs]


def test_tiny_greedy_outputs_match_plain_decoding_and_draft_kv_is_released(tok, tiny):
    base = LLMEngine(EngineConfig(kv_cache_bytes=8 << 20, forced_runs=False, speculation="off"), tiny, tok)
    want = [o.token_ids for o in _run(base, _mixed_requests(tok, "base"))]
    base.close()
    for forced in (False, True):
        eng = LLMEngine(EngineConfig(kv_cache_bytes=8 << 20, forced_runs=forced, speculation="draft_model",
                                     draft_model="tiny"), tiny, tok, draft_model=tiny)
        outs = _run(eng, _mixed_requests(tok, f"spec{forced}"))
        assert [o.token_ids for o in outs] == want
        accepted = [o.usage.draft_accepted_tokens for o in outs]
        assert accepted[3] == 0 and accepted[4] == 0 and outs[4].usage.forced_tokens == 0, "opted out, drafted"
        assert sum(accepted) > 0.5 * sum(len(o.token_ids) for o in outs[:3]), "self-drafting accepts most tokens"
        prop = eng.drafter.draft_model
        assert prop.proposed_tokens > 0
        assert prop.block_manager.num_used == 0 and prop.num_tracked == 0, "draft KV kept after the requests ended"
        eng.close()


def test_preemption_under_a_tiny_target_kv_budget_keeps_outputs(tok, tiny):
    eight_blocks = 8 * 2 * tiny.config.num_layers * 16 * tiny.config.num_kv_heads * tiny.config.head_dim * 4
    base = LLMEngine(EngineConfig(kv_cache_bytes=eight_blocks, enable_prefix_cache=False, forced_runs=False, speculation="off"), tiny, tok)
    want = [o.token_ids for o in _run(base, _mixed_requests(tok, "p", opt_out=False))]
    base.close()
    eng = LLMEngine(EngineConfig(kv_cache_bytes=eight_blocks, enable_prefix_cache=False, forced_runs=True,
                                 speculation="draft_model", draft_model="tiny"), tiny, tok, draft_model=tiny,
                    draft_kv_bytes=8 << 20)
    outs = _run(eng, _mixed_requests(tok, "q", opt_out=False))
    assert eng.scheduler.num_preemptions > 0
    assert [o.token_ids for o in outs] == want
    assert sum(o.usage.draft_accepted_tokens for o in outs) > 0
    assert eng.drafter.draft_model.block_manager.num_used == 0
    eng.close()


def test_sampled_requests_with_a_draft_model_stay_valid_and_reproducible(tok, tiny):
    def run():
        eng = LLMEngine(EngineConfig(kv_cache_bytes=8 << 20, speculation="draft_model", draft_model="tiny"), tiny,
                        tok, draft_model=tiny)
        reqs = [GenerateRequest(f"s{i}", tok.encode(f"Person number {i}"),
                                SamplingParams(temperature=0.8, top_p=0.95, seed=7 + i, max_tokens=32),
                                ConstraintSpec("json_schema", SCHEMA)) for i in range(3)]
        outs = _run(eng, reqs)
        eng.close()
        return outs

    first, second = run(), run()
    assert [o.token_ids for o in first] == [o.token_ids for o in second]
    for o in first:
        if o.finish_reason == "stop":
            jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(o.text))
    assert sum(o.usage.draft_accepted_tokens for o in first) > 0


def test_draft_kv_goes_back_on_abort(tok, tiny):
    eng = LLMEngine(EngineConfig(kv_cache_bytes=8 << 20, speculation="draft_model", draft_model="tiny"), tiny, tok,
                    draft_model=tiny)
    prop = eng.drafter.draft_model
    for r in _mixed_requests(tok, "a", opt_out=False):
        eng.add_request(r)
    while prop.block_manager.num_used == 0:
        eng.step()
    for r in _mixed_requests(tok, "a", opt_out=False):
        eng.abort(r.request_id)
    assert prop.block_manager.num_used == 0 and prop.num_tracked == 0
    eng.close()


def test_no_spare_draft_kv_means_no_drafts_not_errors(tok, tiny):
    """One draft KV block for five sequences: at most one drafts at a time, the others decode plainly."""
    base = LLMEngine(EngineConfig(kv_cache_bytes=8 << 20, forced_runs=False, speculation="off"), tiny, tok)
    want = [o.token_ids for o in _run(base, _mixed_requests(tok, "b", opt_out=False))]
    base.close()
    other = tiny_model(seed=1)
    one_block = 2 * other.config.num_layers * 16 * other.config.num_kv_heads * other.config.head_dim * 4
    eng = LLMEngine(EngineConfig(kv_cache_bytes=8 << 20, speculation="draft_model", draft_model="other"), tiny, tok,
                    draft_model=other, draft_kv_bytes=one_block)
    outs = _run(eng, _mixed_requests(tok, "n", opt_out=False))
    assert [o.token_ids for o in outs] == want
    assert all(o.finish_reason in ("stop", "length", "budget") for o in outs)
    prop = eng.drafter.draft_model
    assert prop.block_manager.num_blocks == 1 and prop.block_manager.num_used == 0
    eng.close()


# ----- the real model -----------------------------------------------------------------------------------------------

REGEX_CASES = [
    ("Give a date as YYYY-MM-DD for the 15th of March 2024.", DATE),
    ("Write the phone number 555-0147 in the form (ddd) ddd-dddd with area code 212.",
     r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"),
]
FREE_CASES = ["List three primary colours, separated by commas.", "Say hello to Ada Lovelace in one sentence."]


@pytest.fixture(scope="module")
def model():
    from structgen import settings
    from structgen.engine.weights import load_model

    if settings.get("STRUCTGEN_NUM_THREADS"):
        torch.set_num_threads(settings.get("STRUCTGEN_NUM_THREADS"))
    return load_model("default", "cpu")


def _chat(tok, user: str) -> list[int]:
    return tok.encode(tok.apply_chat_template([{"role": "system", "content": INSTRUCTION},
                                               {"role": "user", "content": user}]))


def _real_cases(tok):
    folder = DATA / "extraction" / "dev"
    if not folder.is_dir():
        pytest.skip(f"extraction dev set not found at {folder} (set STRUCTGEN_DATA_DIR)")
    cases = []
    for f in sorted(folder.glob("*.json"))[:6]:
        d = json.loads(f.read_text())
        cases.append(("json_schema", d["schema"], _chat(tok, f"Schema: {json.dumps(d['schema'])}\n\n"
                                                             f"Request: {d['text']}")))
    cases += [("regex", pattern, _chat(tok, prompt)) for prompt, pattern in REGEX_CASES]
    cases += [(None, None, _chat(tok, prompt)) for prompt in FREE_CASES]
    return cases


@pytest.mark.slow
def test_greedy_outputs_are_identical_with_a_draft_model(model, tok, tiny):
    cases = _real_cases(tok)
    runs, usage, drafters = {}, {}, {}
    # draft KV for every sequence (the default would hold a quarter of the target's tokens with equal models).
    configs = [("base", {"forced_runs": False, "speculation": "off"}, None),
               ("self", {"forced_runs": True, "speculation": "draft_model", "draft_model": "default"}, model),
               ("random", {"forced_runs": True, "speculation": "draft_model", "draft_model": "tiny"}, tiny)]
    for name, cfg, draft in configs:
        eng = LLMEngine(EngineConfig(kv_cache_bytes=128 << 20, num_speculative_tokens=6, **cfg), model, tok,
                        draft_model=draft, draft_kv_bytes=128 << 20 if draft is not None else None)
        reqs = []
        for i, (kind, value, prompt) in enumerate(cases):
            # Every fourth request opts out: drafts are verified in the same batch as plain decodes.
            spec = False if name != "base" and i % 4 == 3 else None
            reqs.append(GenerateRequest(f"{name}-{i}", prompt, SamplingParams(max_tokens=40),
                                        ConstraintSpec(kind, value) if kind else None, speculation=spec))
        outs = _run(eng, reqs)
        runs[name] = [(o.token_ids, o.finish_reason, o.usage.completion_tokens) for o in outs]
        usage[name] = [o.usage for o in outs]
        for (kind, value, _), o in zip(cases, outs):
            # A constrained output ends complete ("stop", or "budget" when max_tokens closed it); only an
            # unconstrained one may be cut ("length").
            assert o.finish_reason in (("stop", "length") if kind is None else ("stop", "budget")), (
                o.finish_reason, o.error)
            assert o.usage.completion_tokens <= 40
            if kind is None:
                continue
            if kind == "json_schema":
                jsonschema.Draft202012Validator(value, format_checker=jsonschema.FormatChecker()).validate(
                    json.loads(o.text))
            else:
                assert re.fullmatch(value, o.text), (value, o.text)
        if draft is not None:
            drafters[name] = eng.drafter
            assert eng.drafter.draft_model.block_manager.num_used == 0, "draft KV kept after the requests ended"
        eng.close()
    for name in ("self", "random"):
        diffs = [i for i, (a, b) in enumerate(zip(runs["base"], runs[name])) if a != b]
        assert not diffs, (f"{name}: greedy outputs differ from plain decoding for cases {diffs}: "
                           f"{[(runs['base'][i], runs[name][i]) for i in diffs[:2]]}")
        for i, u in enumerate(usage[name]):
            if i % 4 == 3:
                assert u.forced_tokens == 0 and u.draft_accepted_tokens == 0, "an opted-out request speculated"
    same = drafters["self"]
    assert same.accepted_proposed_tokens > 0
    assert same.accepted_proposed_tokens >= 0.9 * same.proposed_tokens, (same.accepted_proposed_tokens,
                                                                         same.proposed_tokens)
    rnd = drafters["random"]
    assert rnd.proposed_tokens > 0 and rnd.accepted_proposed_tokens <= 0.5 * rnd.proposed_tokens
