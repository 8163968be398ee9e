"""The OpenAI-compatible API with the real `openai` SDK against the real server (real model, real port):
parse() with pydantic models on the extraction dev set, streaming, tools, the constraint spellings, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal, Optional

import jsonschema
import openai
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, create_model

DEV = Path(__file__).resolve().parents[4] / "shared" / "data" / "extraction" / "dev"
MODEL = "SmolLM2-135M-Instruct"

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120}},
          "required": ["name", "age"], "additionalProperties": False}
ASK = [{"role": "user", "content": "Invent a person and give their name and age as JSON."}]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "pattern": "^[A-Z][a-z]+/[A-Z][a-z]+$"}},
                   "required": ["zone"], "additionalProperties": False}}}
TOOLS = [WEATHER, TIME]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
WEATHER_ASK = [{"role": "user", "content": "What is the weather in Oslo right now?"}]


def _valid(schema: dict, text: str):
    value = json.loads(text)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(value)
    return value


# ---- parse() with pydantic models: the extraction dev set --------------------------------------------------

_PRIMITIVE = {"string": str, "integer": int, "number": float, "boolean": bool, "object": dict}


def _field_type(prop: dict):
    if "enum" in prop:
        return Literal[tuple(prop["enum"])]
    if prop.get("type") == "array":
        item = prop.get("items", {})
        return list[_field_type(item)] if item else list
    return _PRIMITIVE[prop.get("type", "string")]


def _model_of(schema: dict) -> type[BaseModel]:
    """The pydantic model a user would write for a flat extraction schema (optional keys: `X | None = None`)."""
    required = set(schema.get("required", ()))
    fields = {}
    for name, prop in schema["properties"].items():
        t = _field_type(prop)
        fields[name] = (t, ...) if name in required else (Optional[t], None)
    return create_model(re.sub(r"\W", "_", schema.get("title") or "Extraction"), **fields)


def _dev_items():
    if not DEV.is_dir():
        pytest.skip(f"the extraction dev set is not at {DEV}")
    return [json.loads(p.read_text()) for p in sorted(DEV.glob("*.json"))]


@pytest.mark.slow
def test_parse_returns_pydantic_objects_on_the_extraction_dev_set(openai_client):
    items = _dev_items()
    exact = 0
    for item in items:
        model = _model_of(item["schema"])
        sent = to_strict_json_schema(model)  # what parse() sends: strict, every key required, optional nullable
        completion = openai_client.chat.completions.parse(
            model=MODEL, temperature=0, max_tokens=200, response_format=model,
            messages=[{"role": "system", "content": "Extract the fields as JSON."},
                      {"role": "user", "content": item["text"]}])
        choice = completion.choices[0]
        assert choice.finish_reason == "stop", item["id"]
        assert isinstance(choice.message.parsed, model), item["id"]
        _valid(sent, choice.message.content)
        assert completion.usage.completion_tokens > 0 and completion.usage.prompt_tokens > 0
        got = choice.message.parsed.model_dump(exclude_none=True)
        exact += got == item["expected"]
    print(f"parse(): {len(items)} items, {exact} exact matches with the expected JSON")


# ---- unary and streaming ------------------------------------------------------------------------------------

def test_json_schema_response_format_is_valid_and_streams_the_same_text(openai_client):
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    unary = openai_client.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=60,
                                                  response_format=rf)
    text = unary.choices[0].message.content
    _valid(PERSON, text)
    assert unary.usage.total_tokens == unary.usage.prompt_tokens + unary.usage.completion_tokens
    chunks = list(openai_client.chat.completions.create(
        model=MODEL, messages=ASK, temperature=0, max_tokens=60, response_format=rf, stream=True,
        stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == unary.usage.completion_tokens


def test_json_object_mode_gives_a_json_object(openai_client):
    out = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Describe a cat as JSON."}], temperature=0, max_tokens=60,
        response_format={"type": "json_object"})
    assert out.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(out.choices[0].message.content), dict)


def test_legacy_completions_with_the_vllm_and_sglang_spellings(openai_client):
    prompt = "The phone number of the office is "
    for extra in ({"guided_regex": r"\d{3}-\d{4}"}, {"structured_outputs": {"regex": r"\d{3}-\d{4}"}},
                  {"regex": r"\d{3}-\d{4}"}):
        out = openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, temperature=0,
                                               extra_body=extra)
        assert re.fullmatch(r"\d{3}-\d{4}", out.choices[0].text), (extra, out.choices[0].text)
    for extra in ({"guided_choice": ["red", "green", "blue"]}, {"structured_outputs": {"choice": ["red", "green"]}}):
        out = openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=4, temperature=0,
            extra_body=extra)
        choices = extra.get("guided_choice") or extra["structured_outputs"]["choice"]
        assert out.choices[0].message.content in choices
    for extra in ({"guided_json": PERSON}, {"structured_outputs": {"json": PERSON}},
                  {"json_schema": json.dumps(PERSON)}):
        out = openai_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=60, temperature=0,
                                                    extra_body=extra)
        _valid(PERSON, out.choices[0].message.content)


def test_logprobs_and_n_choices(openai_client):
    out = openai_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=40, temperature=0.8, seed=7,
                                                n=2, logprobs=True, top_logprobs=2,
                                                response_format={"type": "json_schema", "json_schema": {
                                                    "name": "p", "schema": PERSON}})
    assert [c.index for c in out.choices] == [0, 1]
    for c in out.choices:
        _valid(PERSON, c.message.content)
        lps = c.logprobs.content
        assert "".join(t.token for t in lps) == c.message.content
        assert all(t.logprob <= 0 and len(t.top_logprobs) <= 2 for t in lps)


# ---- tools ----------------------------------------------------------------------------------------------------

def _check_calls(calls, names=PARAMS):
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        _valid(PARAMS[call.function.name], call.function.arguments)


def test_tool_choice_required_gives_valid_calls(openai_client):
    out = openai_client.chat.completions.create(model=MODEL, messages=WEATHER_ASK, tools=TOOLS,
                                                tool_choice="required", temperature=0, max_tokens=120)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    _check_calls(choice.message.tool_calls)


def test_a_named_tool_choice_calls_that_function_only(openai_client):
    out = openai_client.chat.completions.create(
        model=MODEL, messages=WEATHER_ASK, tools=TOOLS, temperature=0, max_tokens=120, parallel_tool_calls=False,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = out.choices[0].message.tool_calls
    assert len(calls) == 1
    _check_calls(calls, names={"get_time"})


def test_auto_may_answer_in_text_but_every_call_is_valid(openai_client):
    asks = [WEATHER_ASK, [{"role": "user", "content": "Say hello to me."}],
            [{"role": "user", "content": "What time is it in Europe/Paris? Call get_time."}]]
    for messages in asks:
        out = openai_client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="auto",
                                                    temperature=0, max_tokens=120)
        message = out.choices[0].message
        if message.tool_calls:
            assert out.choices[0].finish_reason == "tool_calls"
            _check_calls(message.tool_calls)
        else:
            assert message.content and "<tool_call>" not in message.content


def test_streamed_tool_calls_reassemble_to_the_unary_ones(openai_client):
    kw = dict(model=MODEL, messages=WEATHER_ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=120)
    unary = openai_client.chat.completions.create(**kw).choices[0].message.tool_calls
    calls: dict[int, dict] = {}
    reasons = []
    for chunk in openai_client.chat.completions.create(**kw, stream=True):
        for c in chunk.choices:
            reasons.append(c.finish_reason)
            for d in c.delta.tool_calls or ():
                entry = calls.setdefault(d.index, {"name": None, "arguments": "", "id": None})
                if d.id:
                    entry["id"] = d.id
                if d.function and d.function.name:
                    entry["name"] = d.function.name
                if d.function and d.function.arguments:
                    entry["arguments"] += d.function.arguments
    assert reasons[-1] == "tool_calls"
    assert [(calls[i]["name"], calls[i]["arguments"]) for i in sorted(calls)] == \
        [(c.function.name, c.function.arguments) for c in unary]
    assert all(calls[i]["id"] for i in calls)


def test_a_conversation_with_a_tool_result_continues(openai_client):
    first = openai_client.chat.completions.create(model=MODEL, messages=WEATHER_ASK, tools=[WEATHER],
                                                  tool_choice="required", temperature=0, max_tokens=80,
                                                  parallel_tool_calls=False)
    call = first.choices[0].message.tool_calls[0]
    history = WEATHER_ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})}]
    out = openai_client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], tool_choice="none",
                                                temperature=0, max_tokens=30)
    assert out.choices[0].message.content and not out.choices[0].message.tool_calls


# ---- errors in OpenAI's shape --------------------------------------------------------------------------------

def test_an_unsupported_keyword_is_a_bad_request_naming_it(openai_client):
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {
        "type": "object", "properties": {"a": {"const": 1}}, "unevaluatedProperties": False}}}}
    with pytest.raises(openai.BadRequestError, match="unevaluatedProperties") as e:
        openai_client.chat.completions.create(model=MODEL, messages=ASK, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    err = e.value.body
    assert err["code"] == "unsupported_schema"
    assert err["param"].startswith("response_format.json_schema.schema#/properties/tags/items")
    with pytest.raises(openai.BadRequestError, match="position"):
        openai_client.completions.create(model=MODEL, prompt="x", extra_body={"guided_regex": "[0-9]+(abc"})


def test_bad_parameters_name_the_field(openai_client):
    with pytest.raises(openai.BadRequestError, match="temperature") as e:
        openai_client.chat.completions.create(model=MODEL, messages=ASK, temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError, match="at most"):
        openai_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=10**7)
    with pytest.raises(openai.BadRequestError, match="more than one constraint"):
        openai_client.chat.completions.create(model=MODEL, messages=ASK, response_format={"type": "json_object"},
                                              extra_body={"guided_regex": "a+"})
    with pytest.raises(openai.BadRequestError, match="not among the request's tools"):
        openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS,
                                              tool_choice={"type": "function", "function": {"name": "nope"}})


def test_a_wrong_key_is_401(http_url):
    with openai.OpenAI(base_url=http_url + "/v1", api_key="sk-wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError, match="invalid API key"):
            bad.models.list()


def test_models_lists_the_served_model(openai_client):
    assert [m.id for m in openai_client.models.list().data] == [MODEL]


def test_a_bad_tool_schema_is_refused_naming_the_tool(openai_client):
    bad = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "object", "unevaluatedProperties": False,
                                              "properties": {"a": {"const": 1}}}}}}}
    with pytest.raises(openai.BadRequestError, match="unevaluatedProperties") as e:
        openai_client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, bad],
                                              tool_choice="required")
    assert e.value.body["param"].startswith("tools[1].function.parameters#/properties/x")


def test_grammars_in_ebnf_and_lark_and_a_non_regular_one_refused(openai_client):
    ebnf = 'root ::= "Answer: " ("yes" | "no") " (" [0-9]{1,2} "%)"'
    out = openai_client.completions.create(model=MODEL, prompt="Is the sky blue?", max_tokens=16, temperature=0,
                                           extra_body={"ebnf": ebnf})
    assert re.fullmatch(r"Answer: (yes|no) \([0-9]{1,2}%\)", out.choices[0].text), out.choices[0].text
    lark = 'start: "ID-" NUMBER ("," NUMBER)*\n%import common.NUMBER'
    out = openai_client.completions.create(model=MODEL, prompt="Ids:", max_tokens=16, temperature=0,
                                           extra_body={"structured_outputs": {"grammar": lark}})
    assert re.fullmatch(r"ID-\d+(\.\d+)?([eE][+-]?\d+)?(,\d+(\.\d+)?([eE][+-]?\d+)?)*", out.choices[0].text), \
        out.choices[0].text
    with pytest.raises(openai.BadRequestError, match="regular") as e:
        openai_client.completions.create(model=MODEL, prompt="x", max_tokens=8,
                                         extra_body={"guided_grammar": 'root ::= "(" root ")" | "x"'})
    assert e.value.body["param"].startswith("guided_grammar")
