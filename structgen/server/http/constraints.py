"""Every spelling clients use for a constraint, to one engine ConstraintSpec.

- OpenAI: `response_format` {"type": "json_schema", "json_schema": {"name", "schema", "strict"}} or
  {"type": "json_object"} (any JSON object; with a "schema" key, as Together/instructor send it, that schema).
- vLLM: `structured_outputs` {json | regex | choice | grammar | json_object}, and the older top-level
  `guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`.
- SGLang: top-level `regex`, `json_schema` (JSON text) and `ebnf` (in /v1/* bodies and in /generate's
  sampling_params).

A request names at most one; two are refused (which should win is not ours to guess).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

from ...engine.requests import ConstraintSpec
from ..wire import invalid
from .body import Body

# The schema `{"type": "json_object"}` stands for: any JSON object.
ANY_OBJECT = {"type": "object"}


@dataclass(frozen=True)
class Requested:
    """A constraint a request asked for, and the request field that held it (for error messages)."""

    spec: ConstraintSpec
    field: str


def _schema_spec(value, field: str, body: Body, options: dict | None = None) -> Requested:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            raise body.error(field.rsplit(".", 1)[-1], f"is not valid JSON: {e.msg} at line {e.lineno} column "
                                                       f"{e.colno}") from None
        text = value
    else:
        parsed, text = value, json.dumps(value, ensure_ascii=False)
    if not isinstance(parsed, (dict, bool)):
        raise body.error(field.rsplit(".", 1)[-1], "must be a JSON Schema (an object or a boolean)")
    # NOTE: the text goes on, not the parsed value: a repeat of it is a compile-cache hit found by its hash.
    return Requested(ConstraintSpec(kind="json_schema", value=text, options=options or {}), field)


def _regex_spec(value, field: str, body: Body) -> Requested:
    if not isinstance(value, str) or not value:
        raise body.error(field.rsplit(".", 1)[-1], "must be a non-empty regular expression")
    return Requested(ConstraintSpec(kind="regex", value=value), field)


def _choice_spec(value, field: str, body: Body) -> Requested:
    name = field.rsplit(".", 1)[-1]
    if not isinstance(value, list) or not value:
        raise body.error(name, "must be a non-empty array of strings")
    for i, c in enumerate(value):
        if not isinstance(c, str) or not c:
            raise body.error(f"{name}[{i}]", "must be a non-empty string")
    return Requested(ConstraintSpec(kind="choice", value=list(value)), field)


def grammar_syntax(text: str) -> str:
    """'ebnf' (xgrammar / GBNF: `rule ::= ...`) or 'lark' (`rule: ...`), by the rule definitions the text uses."""
    return "ebnf" if "::=" in text else "lark"


def _grammar_spec(value, field: str, body: Body, syntax: str | None = None) -> Requested:
    if not isinstance(value, str) or not value.strip():
        raise body.error(field.rsplit(".", 1)[-1], "must be a non-empty grammar")
    return Requested(ConstraintSpec(kind="grammar", value=value, options={"syntax": syntax or grammar_syntax(value)}),
                     field)


def _response_format(body: Body) -> Requested | None:
    rf = body.object("response_format")
    if rf is None:
        return None
    kind = rf.get("type", str)
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        if rf.has("schema"):  # Together / Anyscale / instructor's JSON_SCHEMA mode
            return _schema_spec(rf.data["schema"], rf.path("schema"), rf)
        return _schema_spec(ANY_OBJECT, rf.path("type"), rf)
    if kind == "json_schema":
        js = rf.object("json_schema")
        if js is None:
            raise rf.error("json_schema", "is required when type is 'json_schema'")
        if js.has("strict"):
            js.get("strict", bool)  # checked, not needed: every schema is enforced exactly, strict or not
        if not js.has("schema"):
            return _schema_spec(ANY_OBJECT, js.path("schema"), js)
        return _schema_spec(js.data["schema"], js.path("schema"), js)
    if kind == "regex":  # a few servers accept {"type": "regex", "regex"|"pattern": ...}
        key = "regex" if rf.has("regex") else "pattern"
        return _regex_spec(rf.data.get(key), rf.path(key), rf)
    raise rf.error("type", f"is {kind!r}; expected 'text', 'json_object' or 'json_schema'")


def _named(body: Body, spellings) -> list[Requested]:
    """The constraints `body` names among `spellings` ((field name, spec builder), ...), in that order."""
    return [build(body.data[name], body.path(name), body) for name, build in spellings if body.has(name)]


# vLLM >= 0.12 (`structured_outputs: {...}`), vLLM before it (top-level guided_*), SGLang (top level or
# sampling_params).
_STRUCTURED_OUTPUTS = (("json", _schema_spec), ("regex", _regex_spec), ("choice", _choice_spec),
                       ("grammar", _grammar_spec))
_GUIDED = (("guided_json", _schema_spec), ("guided_regex", _regex_spec), ("guided_choice", _choice_spec),
           ("guided_grammar", _grammar_spec))
_SGLANG = (("regex", _regex_spec), ("json_schema", _schema_spec),
           ("ebnf", functools.partial(_grammar_spec, syntax="ebnf")))


def _structured_outputs(body: Body) -> list[Requested]:
    so = body.object("structured_outputs")
    if so is None:
        return []
    found = _named(so, _STRUCTURED_OUTPUTS)
    if so.get("json_object", bool):
        found.append(_schema_spec(ANY_OBJECT, so.path("json_object"), so))
    if so.has("structural_tag"):
        raise so.error("structural_tag", "is not supported; use tools, json or regex")
    return found


def sglang_constraints(params: Body) -> list[Requested]:
    """SGLang's spellings: `regex`, `json_schema` (JSON text) and `ebnf`, in a body or its sampling_params."""
    if params.has("structural_tag"):
        raise params.error("structural_tag", "is not supported; use json_schema, regex or ebnf")
    return _named(params, _SGLANG)


def one_constraint(found: list[Requested], body: Body) -> Requested | None:
    if len(found) > 1:
        names = ", ".join(r.field for r in found)
        e = invalid(f"the request names more than one constraint ({names}); give one")
        e.param = found[1].field
        raise e
    return found[0] if found else None


def openai_constraint(body: Body) -> Requested | None:
    """The constraint of a /v1/chat/completions or /v1/completions body (None: free text)."""
    found = []
    rf = _response_format(body)
    if rf is not None:
        found.append(rf)
    found += _structured_outputs(body)
    found += _named(body, _GUIDED)
    found += sglang_constraints(body)
    return one_constraint(found, body)
