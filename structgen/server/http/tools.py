"""Tool calls: `tools` + `tool_choice` in OpenAI's shape, how they are shown to the model, and the phases that
produce calls whose arguments the function's `parameters` schema admits.

The model writes a call as the Hermes / Qwen format does:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Oslo"}}
    </tool_call>

Generation runs in phases on one growing text (each phase's prompt is the previous one plus what it produced, so
the prefix cache makes each phase cost only its new tokens):

1. `auto` only: free text, stopping at the `<tool_call>` marker. If the model never writes it, the answer is
   that text. (Whatever follows the marker is constrained: a call the model starts is always a valid call.)
2. the function name: a choice over the tool names (skipped when tool_choice names one, or there is one tool);
3. the arguments: the function's `parameters` schema as a json_schema constraint;
4. with parallel_tool_calls (the default), whether another call follows: a regex `(\\n<tool_call>)?`, so the
   model either ends or opens the next call. Offered only while the budget holds another whole call.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

from ...engine.requests import ConstraintSpec
from ..wire import invalid
from .body import Body

CALL_MARKER = "<tool_call>"
CALL_OPEN = CALL_MARKER + "\n"
CALL_CLOSE = "}\n</tool_call>"
# OpenAI's rule for function names; it also keeps a name safe inside the call's JSON string.
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOOLS = 128
MAX_CALLS = 8  # calls in one answer (parallel_tool_calls)
NO_PARAMETERS = {"type": "object", "properties": {}}
# The regex of phase 4: end here, or open one more call.
ANOTHER_CALL = r"(\n<tool_call>)?"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict

    def definition(self) -> dict:
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolChoice:
    mode: str            # "none" | "auto" | "required" | "named"
    name: str | None = None


def parse_tools(body: Body) -> list[Tool]:
    raw = body.get("tools", list)
    if not raw:
        return []
    if len(raw) > MAX_TOOLS:
        raise body.error("tools", f"has {len(raw)} tools; at most {MAX_TOOLS}")
    tools, seen = [], set()
    for i, t in enumerate(raw):
        tb = Body(t, f"tools[{i}]")
        kind = tb.get("type", str, "function")
        if kind != "function":
            raise tb.error("type", f"is {kind!r}; only 'function' tools are supported")
        fn = tb.object("function")
        if fn is None:
            raise tb.error("function", "is required")
        name = fn.get("name", str)
        if not name or not NAME_RE.match(name):
            raise fn.error("name", "must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'")
        if name in seen:
            raise fn.error("name", f"{name!r} is defined twice")
        seen.add(name)
        params = fn.get("parameters", dict, NO_PARAMETERS)
        tools.append(Tool(name, fn.get("description", str, ""), params))
    return tools


def parse_tool_choice(body: Body, tools: list[Tool]) -> ToolChoice:
    raw = body.data.get("tool_choice")
    if raw is None:
        return ToolChoice("auto" if tools else "none")
    if isinstance(raw, str):
        if raw not in ("none", "auto", "required"):
            raise body.error("tool_choice", f"is {raw!r}; expected 'none', 'auto', 'required' or a function")
        if raw != "none" and not tools:
            raise body.error("tool_choice", f"is {raw!r} but the request has no tools")
        return ToolChoice(raw)
    tc = Body(raw, "tool_choice")
    fn = tc.object("function")
    name = fn.get("name", str) if fn is not None else None
    if name is None:
        raise tc.error("function", "must be {\"name\": <one of the tools>}")
    if name not in {t.name for t in tools}:
        raise fn.error("name", f"is {name!r}, which is not among the request's tools")
    return ToolChoice("named", name)


# ---- how tools and past calls are shown to the model -------------------------------------------------------

def tools_instruction(tools: list[Tool]) -> str:
    """The system text that tells a model whose template knows no tools which functions it may call, and how."""
    lines = ["You may call functions. Their definitions (JSON Schema of the arguments):", "<tools>"]
    lines += [json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters},
                         ensure_ascii=False) for t in tools]
    lines += ["</tools>", "To call a function, answer with:",
              CALL_OPEN + '{"name": <function name>, "arguments": <arguments object>}\n</tool_call>']
    return "\n".join(lines)


def call_text(name: str, arguments: str) -> str:
    """A past call as the model writes one (`arguments` is the JSON text the client got back)."""
    return f'{CALL_OPEN}{{"name": {json.dumps(name)}, "arguments": {arguments or "{}"}{CALL_CLOSE}'


def tool_result_text(content: str) -> str:
    return f"<tool_response>\n{content}\n</tool_response>"


# ---- the phases ----------------------------------------------------------------------------------------------

@dataclass
class Phase:
    """What one phase hands back (filled by the caller's runner)."""

    text: str
    finish_reason: str
    stop_string: str | None = None
    completion_tokens: int = 0


@dataclass
class Call:
    id: str
    name: str
    arguments: str = ""

    def message(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass
class ToolAnswer:
    content: str | None = None
    calls: list[Call] = field(default_factory=list)
    finish_reason: str = "stop"
    completion_tokens: int = 0


class ToolCallPlan:
    """Runs the phases of one answer. `run_phase(text_so_far, spec | None, max_tokens, stop, on_text) -> Phase`
    generates one phase (the caller owns the engine); `emit(event, **data)` streams: ("content", text=),
    ("call", index=, id=, name=), ("arguments", index=, text=)."""

    def __init__(self, tools: list[Tool], choice: ToolChoice, *, parallel: bool, max_tokens: int,
                 user_stop: tuple[str, ...], min_call_tokens: dict[str, int]):
        self.tools = tools if choice.mode != "named" else [t for t in tools if t.name == choice.name]
        self.choice = choice
        self.parallel = parallel
        self.max_tokens = max_tokens
        self.user_stop = user_stop
        # name -> fewest tokens a whole call of it takes (name + arguments + framing), to decide what still fits.
        self.min_call_tokens = min_call_tokens

    def _left(self, answer: ToolAnswer) -> int:
        return self.max_tokens - answer.completion_tokens

    async def run(self, run_phase, emit) -> ToolAnswer:
        answer = ToolAnswer()
        text = ""
        if self.choice.mode == "auto":
            async def content(delta):
                await emit("content", text=delta)

            first = await run_phase(text, None, self.max_tokens, self.user_stop + (CALL_MARKER,), content)
            answer.completion_tokens += first.completion_tokens
            if first.stop_string != CALL_MARKER:
                answer.content, answer.finish_reason = first.text, first.finish_reason
                return answer
            answer.content = first.text.strip() or None
            if self._left(answer) < min(self.min_call_tokens.values()):  # no whole call fits what is left
                answer.finish_reason = "length"
                return answer
            text = first.text + CALL_OPEN
        else:
            text = CALL_OPEN
        while True:
            fits = [t for t in self.tools if self.min_call_tokens[t.name] <= self._left(answer)]
            if not fits:
                raise invalid(f"max_tokens ({self.max_tokens}) is too small for a call of "
                              f"{', '.join(t.name for t in self.tools)}; raise it")
            text, call = await self._one_call(text, fits, len(answer.calls), answer, run_phase, emit)
            answer.calls.append(call)
            answer.finish_reason = "tool_calls"
            need = min(self.min_call_tokens[t.name] for t in self.tools) + 4
            if not self.parallel or len(answer.calls) >= MAX_CALLS or self._left(answer) < need:
                return answer
            more = await run_phase(text, ConstraintSpec(kind="regex", value=ANOTHER_CALL), min(8, self._left(answer)),
                                   (), None)
            answer.completion_tokens += more.completion_tokens
            if not more.text:
                return answer
            text += more.text + "\n"

    async def _one_call(self, text: str, tools: list[Tool], index: int, answer: ToolAnswer, run_phase, emit):
        text += '{"name": "'
        if len(tools) == 1:
            name = tools[0].name
        else:
            picked = await run_phase(text, ConstraintSpec(kind="choice", value=[t.name + '"' for t in tools]),
                                     self._left(answer), (), None)
            answer.completion_tokens += picked.completion_tokens
            name = picked.text[:-1]
        tool = next(t for t in tools if t.name == name)
        call = Call(id="call_" + uuid.uuid4().hex[:24], name=name)
        await emit("call", index=index, id=call.id, name=name)
        text += name + '", "arguments": '

        async def arguments(delta):
            call.arguments += delta
            await emit("arguments", index=index, text=delta)

        args = await run_phase(text, ConstraintSpec(kind="json_schema", value=json.dumps(tool.parameters)),
                               self._left(answer), (), arguments)
        answer.completion_tokens += args.completion_tokens
        call.arguments = args.text  # the whole text, whatever the deltas were
        return text + args.text + CALL_CLOSE, call


def with_tools_rendered(messages: list[dict], tools: list[Tool], template_knows_tools: bool) -> list[dict]:
    """The messages with the tool instruction in the system message (for templates that render no tools)."""
    if not tools or template_knows_tools:
        return messages
    instruction = tools_instruction(tools)
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": messages[0]["content"] + "\n\n" + instruction}] + messages[1:]
    return [{"role": "system", "content": instruction}] + messages
