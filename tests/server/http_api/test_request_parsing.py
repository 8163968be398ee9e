"""The HTTP layer's own logic without a model: constraint spellings, sampling fields, messages, tools and the
tool-call phases (run over a scripted phase runner: a fake of the engine side only)."""

from __future__ import annotations

import json

import grpc
import pytest

from structgen.server.http.body import Body
from structgen.server.http.chat import template_messages
from structgen.server.http.constraints import ANY_OBJECT, grammar_syntax, openai_constraint
from structgen.server.http.errors import error_param, openai_error, status_of
from structgen.server.http.tools import (ANOTHER_CALL, CALL_MARKER, Phase, ToolCallPlan, ToolChoice,
                                         parse_tool_choice, parse_tools, with_tools_rendered)
from structgen.server.wire import RequestError, constraint_error
from structgen.errors import UnsupportedSchemaError

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}


def spec_of(body: dict):
    got = openai_constraint(Body(body))
    return None if got is None else (got.spec.kind, got.spec.value, got.spec.options, got.field)


@pytest.mark.parametrize("body, kind, value, field", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA, "strict": True}}},
     "json_schema", SCHEMA, "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_object"}}, "json_schema", ANY_OBJECT, "response_format.type"),
    ({"response_format": {"type": "json_object", "schema": SCHEMA}}, "json_schema", SCHEMA,
     "response_format.schema"),
    ({"structured_outputs": {"json": SCHEMA}}, "json_schema", SCHEMA, "structured_outputs.json"),
    ({"structured_outputs": {"json": json.dumps(SCHEMA)}}, "json_schema", SCHEMA, "structured_outputs.json"),
    ({"structured_outputs": {"regex": "a+"}}, "regex", "a+", "structured_outputs.regex"),
    ({"structured_outputs": {"choice": ["x", "y"]}}, "choice", ["x", "y"], "structured_outputs.choice"),
    ({"structured_outputs": {"json_object": True}}, "json_schema", ANY_OBJECT, "structured_outputs.json_object"),
    ({"guided_json": SCHEMA}, "json_schema", SCHEMA, "guided_json"),
    ({"guided_regex": "[0-9]+"}, "regex", "[0-9]+", "guided_regex"),
    ({"guided_choice": ["a"]}, "choice", ["a"], "guided_choice"),
    ({"regex": "b+"}, "regex", "b+", "regex"),
    ({"json_schema": json.dumps(SCHEMA)}, "json_schema", SCHEMA, "json_schema"),
])
def test_every_spelling_gives_one_spec(body, kind, value, field):
    got_kind, got_value, _, got_field = spec_of(body)
    assert (got_kind, got_field) == (kind, field)
    assert (json.loads(got_value) if kind == "json_schema" else got_value) == value


def test_grammars_keep_their_syntax():
    assert spec_of({"ebnf": 'root ::= "a"'})[:3] == ("grammar", 'root ::= "a"', {"syntax": "ebnf"})
    assert spec_of({"structured_outputs": {"grammar": 'start: "a"'}})[2] == {"syntax": "lark"}
    assert spec_of({"guided_grammar": 'root ::= [0-9]+'})[2] == {"syntax": "ebnf"}
    assert grammar_syntax("?start: x\nx: /a/") == "lark"


def test_no_constraint_and_text_format():
    assert spec_of({}) is None
    assert spec_of({"response_format": {"type": "text"}}) is None


@pytest.mark.parametrize("body, message", [
    ({"response_format": {"type": "json_object"}, "guided_regex": "a"}, "more than one constraint"),
    ({"response_format": {"type": "yaml"}}, "expected 'text'"),
    ({"response_format": {"type": "json_schema"}}, "json_schema is required"),
    ({"structured_outputs": {"json": "{not json"}}, "not valid JSON"),
    ({"structured_outputs": {"choice": []}}, "non-empty array"),
    ({"guided_regex": ""}, "non-empty regular expression"),
    ({"structured_outputs": {"structural_tag": {}}}, "not supported"),
    ({"guided_json": [1, 2]}, "JSON Schema"),
])
def test_bad_constraints_are_refused_naming_the_field(body, message):
    with pytest.raises(RequestError, match=message) as e:
        openai_constraint(Body(body))
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_a_schema_error_points_into_the_field_that_held_it():
    err = constraint_error(UnsupportedSchemaError("unevaluatedProperties", "#/properties/x"))
    body = openai_error(err, "response_format.json_schema.schema")["error"]
    assert body["param"] == "response_format.json_schema.schema#/properties/x"
    assert body["code"] == "unsupported_schema" and body["type"] == "invalid_request_error"
    assert status_of(err) == 400
    assert error_param(RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, "full")) is None
    assert status_of(RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED, "full")) == 429
    assert status_of(RequestError(grpc.StatusCode.UNAVAILABLE, "draining")) == 503


def test_messages_roles_parts_and_past_tool_calls():
    msgs = template_messages(Body({"messages": [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Oslo?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]}))
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool"]
    assert msgs[1]["content"] == "Weather in Oslo?"
    assert '{"name": "w", "arguments": {"city": "Oslo"}}' in msgs[2]["content"]
    assert CALL_MARKER in msgs[2]["content"] and "sunny" in msgs[3]["content"]
    with pytest.raises(RequestError, match=r"messages\[0\].role"):
        template_messages(Body({"messages": [{"role": "robot", "content": "x"}]}))
    with pytest.raises(RequestError, match="text parts only"):
        template_messages(Body({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}))


TOOLS = [{"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
         {"type": "function", "function": {"name": "b"}}]


def test_tools_and_tool_choice():
    tools = parse_tools(Body({"tools": TOOLS}))
    assert [t.name for t in tools] == ["a", "b"] and tools[1].parameters["type"] == "object"
    assert parse_tool_choice(Body({}), tools) == ToolChoice("auto")
    assert parse_tool_choice(Body({}), []) == ToolChoice("none")
    assert parse_tool_choice(Body({"tool_choice": {"type": "function", "function": {"name": "b"}}}),
                             tools) == ToolChoice("named", "b")
    with pytest.raises(RequestError, match="no tools"):
        parse_tool_choice(Body({"tool_choice": "required"}), [])
    with pytest.raises(RequestError, match="defined twice"):
        parse_tools(Body({"tools": [TOOLS[0], TOOLS[0]]}))
    with pytest.raises(RequestError, match="1-64 characters"):
        parse_tools(Body({"tools": [{"type": "function", "function": {"name": "has space"}}]}))
    rendered = with_tools_rendered([{"role": "user", "content": "hi"}], tools, template_knows_tools=False)
    assert rendered[0]["role"] == "system" and '"name": "a"' in rendered[0]["content"]
    assert with_tools_rendered([{"role": "user", "content": "hi"}], tools, template_knows_tools=True)[0]["role"] == \
        "user"


class Script:
    """Phase results handed out in order; records what each phase was asked (text so far, constraint)."""

    def __init__(self, *phases: Phase):
        self.phases = list(phases)
        self.asked = []

    async def run_phase(self, text, spec, max_tokens, stop, on_text):
        self.asked.append((text, spec and (spec.kind, spec.value), max_tokens, stop))
        phase = self.phases.pop(0)
        if on_text is not None and phase.text:
            await on_text(phase.text)
        return phase


def _run(plan, script):
    import asyncio

    events = []

    async def emit(event, **data):
        events.append((event, data))

    return asyncio.run(plan.run(script.run_phase, emit)), events


def _plan(choice, parallel=True, max_tokens=100):
    tools = parse_tools(Body({"tools": TOOLS}))
    return ToolCallPlan(tools, choice, parallel=parallel, max_tokens=max_tokens, user_stop=(),
                        min_call_tokens={"a": 3, "b": 3})


def test_required_picks_a_name_then_constrains_its_arguments_then_may_call_again():
    script = Script(Phase('b"', "stop", completion_tokens=1), Phase('{"x": 1}', "stop", completion_tokens=5),
                    Phase("\n<tool_call>", "stop", completion_tokens=2),
                    Phase('a"', "stop", completion_tokens=1), Phase("{}", "stop", completion_tokens=1),
                    Phase("", "stop", completion_tokens=1))
    answer, events = _run(_plan(ToolChoice("required")), script)
    assert [(c.name, c.arguments) for c in answer.calls] == [("b", '{"x": 1}'), ("a", "{}")]
    assert answer.finish_reason == "tool_calls" and answer.completion_tokens == 11
    kinds = [a[1][0] if a[1] else None for a in script.asked]
    assert kinds == ["choice", "json_schema", "regex", "choice", "json_schema", "regex"]
    assert script.asked[2][1] == ("regex", ANOTHER_CALL)
    assert script.asked[1][0].endswith('{"name": "b", "arguments": ')  # the call's text so far
    assert [e for e, _ in events] == ["call", "arguments", "call", "arguments"]


def test_named_skips_the_name_and_no_parallel_makes_one_call():
    script = Script(Phase("{}", "stop", completion_tokens=1))
    answer, _ = _run(_plan(ToolChoice("named", "a"), parallel=False), script)
    assert [c.name for c in answer.calls] == ["a"] and len(script.asked) == 1


def test_auto_answers_in_text_unless_the_model_opens_a_call():
    text_only = Script(Phase("Hello there.", "stop", completion_tokens=3))
    answer, events = _run(_plan(ToolChoice("auto")), text_only)
    assert answer.content == "Hello there." and not answer.calls and answer.finish_reason == "stop"
    assert text_only.asked[0][3] == (CALL_MARKER,) and text_only.asked[0][1] is None
    calling = Script(Phase("Let me check.", "stop", stop_string=CALL_MARKER, completion_tokens=4),
                     Phase('a"', "stop", completion_tokens=1), Phase("{}", "stop", completion_tokens=1),
                     Phase("", "stop", completion_tokens=1))
    answer, _ = _run(_plan(ToolChoice("auto")), calling)
    assert answer.content == "Let me check." and [c.name for c in answer.calls] == ["a"]


def test_a_budget_too_small_for_any_call_is_refused_before_generating():
    with pytest.raises(RequestError, match="too small"):
        _run(_plan(ToolChoice("required"), max_tokens=2), Script())
