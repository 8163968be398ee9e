"""The structured-output client libraries users already run, unmodified, against the real server's OpenAI API:
instructor (JSON_SCHEMA and TOOLS modes), langchain-openai's with_structured_output (its default method,
function_calling, json_mode) and outlines (from_openai, from_vllm, from_sglang). Every constrained output is checked
against its schema (jsonschema) or its regex (re.fullmatch) on the raw text the server sent, not only on what the
library parsed. The prompts do not ask for the format, so an unenforced constraint fails the check."""

from __future__ import annotations

import json
import re
from typing import Literal

import instructor
import jsonschema
import outlines
import pytest
from langchain_openai import ChatOpenAI
from outlines.types import Regex
from pydantic import BaseModel, Field

MODEL = "SmolLM2-135M-Instruct"
# Enough for a Pet object (~20 tokens) and a tool call's framing; small so each call takes ~1-3 s on a CPU.
MAX_TOKENS = 64
PHONE = r"[0-9]{3}-[0-9]{4}"


class Pet(BaseModel):
    name: str = Field(max_length=16)
    species: Literal["cat", "dog", "bird"]
    age: int = Field(ge=0, le=30)


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)


PET_TEXT = "My neighbour has a grey cat called Misty; she is seven years old."
PET_MESSAGES = [{"role": "user", "content": PET_TEXT}]
POEM = "Write a short poem about the sea."


def _valid(model: type[BaseModel], raw: str) -> dict:
    """The raw JSON text the server sent, parsed and validated against the model's JSON Schema."""
    value = json.loads(raw)
    jsonschema.Draft202012Validator(model.model_json_schema()).validate(value)
    return value


# ---- instructor ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_instructor_json_schema_mode_returns_a_valid_instance(openai_client):
    client = instructor.from_openai(openai_client, mode=instructor.Mode.JSON_SCHEMA)
    pet, completion = client.chat.completions.create_with_completion(
        model=MODEL, response_model=Pet, messages=PET_MESSAGES, max_retries=0, temperature=0, max_tokens=MAX_TOKENS)
    assert isinstance(pet, Pet)
    raw = completion.choices[0].message.content
    assert _valid(Pet, raw) == pet.model_dump()  # instructor returns a subclass of Pet: compare the values
    assert completion.choices[0].finish_reason == "stop"


@pytest.mark.slow
def test_instructor_tools_mode_returns_a_valid_instance(openai_client):
    # instructor forces the call with a named tool_choice and accepts exactly one call (OpenAI, vLLM and SGLang
    # answer a named tool_choice with one call).
    client = instructor.from_openai(openai_client, mode=instructor.Mode.TOOLS)
    pet, completion = client.chat.completions.create_with_completion(
        model=MODEL, response_model=Pet, messages=PET_MESSAGES, max_retries=0, temperature=0, max_tokens=MAX_TOKENS)
    assert isinstance(pet, Pet)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [c.function.name for c in choice.message.tool_calls] == ["Pet"]
    assert _valid(Pet, choice.message.tool_calls[0].function.arguments) == pet.model_dump()


# ---- langchain-openai ----------------------------------------------------------------------------------------

def _chat(http_url: str, key: str) -> ChatOpenAI:
    return ChatOpenAI(base_url=http_url + "/v1", api_key=key, model=MODEL, temperature=0, max_tokens=MAX_TOKENS,
                      timeout=300, max_retries=0)


@pytest.mark.slow
@pytest.mark.parametrize("method", [None, "function_calling"])
def test_langchain_with_structured_output_returns_a_valid_instance(http_url, real_api_key, method):
    kw = {} if method is None else {"method": method}  # None: langchain's default (json_schema in langchain-openai 1.x)
    structured = _chat(http_url, real_api_key).with_structured_output(Pet, include_raw=True, **kw)
    out = structured.invoke(PET_TEXT)
    assert out["parsing_error"] is None
    pet = out["parsed"]
    assert isinstance(pet, Pet)
    message = out["raw"]
    if method == "function_calling":
        assert [c["name"] for c in message.tool_calls] == ["Pet"]
        value = message.tool_calls[0]["args"]  # langchain's parse of the call's arguments text
        jsonschema.Draft202012Validator(Pet.model_json_schema()).validate(value)
    else:
        value = _valid(Pet, message.content)
    assert value == pet.model_dump()


@pytest.mark.slow
def test_langchain_json_mode_returns_a_json_object_and_an_instance(http_url, real_api_key):
    # json_mode sends response_format {"type": "json_object"}: the server guarantees an object, the keys come from
    # the prompt (so the prompt names them).
    structured = _chat(http_url, real_api_key).with_structured_output(Person, method="json_mode", include_raw=True)
    out = structured.invoke("Alice is 30 years old. Answer in JSON with the keys name and age.")
    raw = out["raw"].content
    jsonschema.Draft202012Validator({"type": "object"}).validate(json.loads(raw))
    assert out["parsing_error"] is None
    assert isinstance(out["parsed"], Person)
    assert _valid(Person, raw) == out["parsed"].model_dump()


# ---- outlines ------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_outlines_from_openai_with_a_pydantic_type(openai_client):
    model = outlines.from_openai(openai_client, MODEL)  # response_format json_schema (additionalProperties false)
    raw = model(PET_TEXT, Pet, temperature=0, max_tokens=MAX_TOKENS)
    Pet.model_validate(_valid(Pet, raw))


@pytest.mark.slow
def test_outlines_from_vllm_with_a_regex(openai_client):
    model = outlines.from_vllm(openai_client, MODEL)  # extra_body structured_outputs {"regex": ...}
    raw = model(POEM, Regex(PHONE), temperature=0, max_tokens=16)
    assert re.fullmatch(PHONE, raw), raw


@pytest.mark.slow
def test_outlines_from_vllm_with_a_pydantic_type(openai_client):
    model = outlines.from_vllm(openai_client, MODEL)  # extra_body structured_outputs {"json": schema}
    raw = model(PET_TEXT, Pet, temperature=0, max_tokens=MAX_TOKENS)
    Pet.model_validate(_valid(Pet, raw))


@pytest.mark.slow
def test_outlines_from_vllm_streams_a_regex(openai_client):
    model = outlines.from_vllm(openai_client, MODEL)
    raw = "".join(model.stream(POEM, Regex(PHONE), temperature=0, max_tokens=16))
    assert re.fullmatch(PHONE, raw), raw


@pytest.mark.slow
def test_outlines_from_sglang_with_a_regex(openai_client):
    model = outlines.from_sglang(openai_client, MODEL)  # extra_body {"regex": ...}
    raw = model(POEM, Regex(PHONE), temperature=0, max_tokens=16)
    assert re.fullmatch(PHONE, raw), raw


@pytest.mark.slow
def test_outlines_from_sglang_with_a_pydantic_type(openai_client):
    model = outlines.from_sglang(openai_client, MODEL)  # response_format json_schema
    raw = model(PET_TEXT, Pet, temperature=0, max_tokens=MAX_TOKENS)
    Pet.model_validate(_valid(Pet, raw))
