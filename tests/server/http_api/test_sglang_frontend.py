"""SGLang's frontend language (`sglang.RuntimeEndpoint`: sgl.gen with regex / json_schema, sgl.select) against
the real server's /generate, and /generate's prompt logprobs (what sgl.select scores its choices with).

The frontend runs in a subprocess: importing sglang patches transformers at import time, which must not leak into
the process that holds the real server. The script prints one JSON line: the variable, its meta info, the state's
error (the frontend swallows a failed request into the state) and the state's text."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap

import httpx
import jsonschema
import pytest

import structgen

PHONE = r"\d{3}-\d{4}"
CHOICES = ["yes", "no", "maybe"]
SELECT_PROMPT = "Question: Is the sky blue? Answer:"
OBJECT_SCHEMA = {"type": "object",
                 "properties": {"name": {"type": "string", "maxLength": 12},
                                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                "city": {"type": "string", "maxLength": 16}},
                 "required": ["name", "age", "city"], "additionalProperties": False}

FRONTEND = textwrap.dedent('''
    import json, sys
    import sglang as sgl

    url, key, which = sys.argv[1], sys.argv[2], sys.argv[3]
    sgl.set_default_backend(sgl.RuntimeEndpoint(url, api_key=key))

    @sgl.function
    def phone(s):
        s += "Write a short poem about the sea.\\n"
        s += sgl.gen("phone", regex=%(phone)r, max_tokens=16)

    @sgl.function
    def obj(s):
        s += "Alice is 30 years old and lives in Oslo.\\n"
        s += sgl.gen("obj", json_schema=json.dumps(%(schema)r), max_tokens=64)

    @sgl.function
    def answer(s):
        s += %(question)r
        s += sgl.select("answer", choices=%(choices)r)

    state = {"phone": phone, "obj": obj, "answer": answer}[which].run(temperature=0)
    error = state.error()
    print(json.dumps({"value": None if error else state[which], "meta": None if error else state.get_meta_info(which),
                      "error": None if error is None else repr(error), "text": state.text()}))
''') % {"phone": PHONE, "schema": OBJECT_SCHEMA, "question": SELECT_PROMPT, "choices": CHOICES}


def _run_frontend(tmp_path, http_url: str, key: str, which: str) -> dict:
    script = tmp_path / "frontend.py"
    script.write_text(FRONTEND)
    done = subprocess.run([sys.executable, str(script), http_url, key, which], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["error"] is None, f"the frontend's request failed: {result['error']}"
    return result


@pytest.mark.slow
def test_gen_with_a_regex(tmp_path, http_url, real_api_key):
    result = _run_frontend(tmp_path, http_url, real_api_key, "phone")
    assert re.fullmatch(PHONE, result["value"]), result["value"]
    assert result["text"].endswith(result["value"])


@pytest.mark.slow
def test_gen_with_a_json_schema(tmp_path, http_url, real_api_key):
    result = _run_frontend(tmp_path, http_url, real_api_key, "obj")
    jsonschema.Draft202012Validator(OBJECT_SCHEMA).validate(json.loads(result["value"]))


@pytest.mark.slow
def test_select_scores_every_choice_with_prompt_logprobs(tmp_path, http_url, real_api_key):
    result = _run_frontend(tmp_path, http_url, real_api_key, "answer")
    assert result["value"] in CHOICES
    meta = result["meta"]
    scores = meta["normalized_prompt_logprobs"]
    assert len(scores) == len(CHOICES) and all(math.isfinite(x) and x <= 0 for x in scores)
    assert result["value"] == CHOICES[scores.index(max(scores))]  # the frontend's greedy pick
    for choice, entries in zip(CHOICES, meta["input_token_logprobs"]):
        # from logprob_start_len = prompt tokens - 2 on (it asked for text): the prompt's tail, then the choice
        assert entries and all(isinstance(lp, float) and lp <= 0 and isinstance(t, int) and isinstance(x, str)
                               for lp, t, x in entries), entries
        assert (SELECT_PROMPT + choice).endswith("".join(x for _, _, x in entries))


# ---- /generate's prompt logprobs, called directly ------------------------------------------------------------

def _generate(http_url: str, key: str, body: dict) -> dict:
    r = httpx.post(http_url + "/generate", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.slow
def test_prompt_logprobs_from_the_first_token(http_url, real_api_key):
    tok = structgen.default_tokenizer()
    ids = tok.encode("Question: Is the sky blue? Answer: yes")
    out = _generate(http_url, real_api_key, {"input_ids": ids, "sampling_params": {"max_new_tokens": 0},
                                             "return_logprob": True, "logprob_start_len": 0,
                                             "return_text_in_logprobs": True})
    meta = out["meta_info"]
    entries = meta["input_token_logprobs"]
    assert (out["text"], out["output_ids"], meta["completion_tokens"], meta["output_token_logprobs"]) == ("", [], 0, [])
    assert len(entries) == len(ids)
    # SGLang's shape: [logprob, token_id, text] per prompt token; the first token has no logprob but keeps its id
    assert entries[0] == [None, ids[0], tok.decode([ids[0]])], entries[0]
    for (lp, t, x), want in zip(entries[1:], ids[1:]):
        assert isinstance(lp, float) and lp <= 0 and t == want and x == tok.decode([want])


@pytest.mark.slow
def test_a_prompt_logprob_is_the_logprob_the_token_was_generated_with(http_url, real_api_key):
    tok = structgen.default_tokenizer()
    ids = tok.encode("The capital of France is")
    step = _generate(http_url, real_api_key, {"input_ids": ids, "sampling_params": {"max_new_tokens": 1,
                                                                                     "temperature": 0},
                                              "return_logprob": True})
    [[generated_lp, token, _]] = step["meta_info"]["output_token_logprobs"]
    assert step["output_ids"] == [token]
    scored = _generate(http_url, real_api_key, {"input_ids": ids + [token], "sampling_params": {"max_new_tokens": 0},
                                                "return_logprob": True, "logprob_start_len": len(ids)})
    [[prompt_lp, prompt_token, _]] = scored["meta_info"]["input_token_logprobs"]
    # greedy output logprobs are under the unprocessed distribution, as prompt logprobs are
    assert prompt_token == token
    assert prompt_lp == pytest.approx(generated_lp, abs=1e-3)
