"""OpenAI chat messages to the model's prompt text: roles, content parts, past tool calls and tool results."""

from __future__ import annotations

import json

from .body import Body
from .tools import call_text, tool_result_text

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_MESSAGES = 4096


def _content(m: Body) -> str:
    """A message's text: a string, or the text parts of a content array (images and audio are refused)."""
    raw = m.data.get("content")
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise m.error("content", "must be a string or an array of content parts")
    texts = []
    for i, part in enumerate(raw):
        pb = Body(part, m.path(f"content[{i}]"))
        kind = pb.get("type", str)
        if kind not in ("text", "input_text"):
            raise pb.error("type", f"is {kind!r}; this model reads text parts only")
        texts.append(pb.get("text", str, ""))
    return "".join(texts)


def template_messages(body: Body) -> list[dict]:
    """The request's messages as [{role, content}] for the chat template. `developer` is the system role of
    newer OpenAI models; an assistant message's tool calls and a tool message's result are written in the form
    the model is asked to call tools in (structgen/server/http/tools.py)."""
    raw = body.get("messages", list)
    if not raw:
        raise body.error("messages", "must be a non-empty array of messages")
    if len(raw) > MAX_MESSAGES:
        raise body.error("messages", f"has {len(raw)} messages; at most {MAX_MESSAGES}")
    out = []
    for i, item in enumerate(raw):
        m = Body(item, f"messages[{i}]")
        role = m.get("role", str)
        if role not in ROLES:
            raise m.error("role", f"is {role!r}; expected one of {', '.join(ROLES)}")
        text = _content(m)
        if role == "developer":
            role = "system"
        elif role == "tool":
            text = tool_result_text(text)
        elif role == "assistant" and m.has("tool_calls"):
            calls = m.get("tool_calls", list)
            parts = [text] if text else []
            for j, call in enumerate(calls):
                cb = Body(call, m.path(f"tool_calls[{j}]"))
                fn = cb.object("function")
                if fn is None:
                    raise cb.error("function", "is required")
                arguments = fn.get("arguments", (str, dict), "{}")
                if isinstance(arguments, dict):
                    arguments = json.dumps(arguments, ensure_ascii=False)
                parts.append(call_text(fn.get("name", str, ""), arguments))
            text = "\n".join(parts)
        out.append({"role": role, "content": text})
    return out
