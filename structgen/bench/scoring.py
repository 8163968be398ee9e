"""Scoring an extraction output against its item, shared by `structgen bench extraction`, `bench quality` and
`structgen regress`: is the output a valid value (JSON that validates under the item's schema, formats checked),
is it the expected value, and which top-level fields are right.

Pure functions over texts and items: no server, no model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from . import stats
from .cases import ExtractionItem

# The finish reasons a table always shows, in this order; any other value the server sends gets its own column.
FINISH_REASONS = ("stop", "budget", "length", "error")


def check_json(schema: dict, text: str) -> bool:
    """`text` parses as JSON and validates under `schema` (its own draft, else 2020-12; formats checked)."""
    import jsonschema

    try:
        value = json.loads(text)
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        return cls(schema, format_checker=cls.FORMAT_CHECKER).is_valid(value)
    except Exception:
        return False


def json_equal(a, b) -> bool:
    """JSON value equality: numbers compare by value (30 == 30.0), but a boolean is never a number (True != 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def field_scores(value, acceptable: dict) -> dict[str, bool]:
    """{top-level key: right?}: `value[k]` is one of `acceptable[k]`; an omitted key is right when "" is.

    `value` None (no valid value) gets every field wrong.
    """
    out = {}
    for key, accepted in acceptable.items():
        if isinstance(value, dict) and key in value:
            out[key] = any(json_equal(value[key], a) for a in accepted)
        else:
            out[key] = value is not None and any(a == "" for a in accepted)
    return out


def acceptable_of(item: ExtractionItem) -> dict:
    """The item's acceptable answers; from `expected` alone when it has none."""
    if item.acceptable is not None:
        return item.acceptable
    return {k: [v] for k, v in (item.expected or {}).items()}


@dataclass
class ItemResult:
    """One request: how it ended and how its output scores. `finish` is one of FINISH_REASONS (or what the server
    sent); `status` is "OK" or the error's gRPC status / class."""

    item_id: str
    title: str                  # the schema's title: field names are reported as "<title>.<key>"
    finish: str
    status: str = "OK"
    text: str = ""
    output_tokens: int = 0
    latency_s: float = 0.0
    valid: bool = False
    exact: bool = False
    fields: dict[str, bool] = field(default_factory=dict)
    extract_ok: bool = False    # the SDK's extract would have returned a value (its own check, no formats)
    detail: str = ""            # the error text, or why extract refused the output


def score(item: ExtractionItem, text: str, finish: str, *, output_tokens: int = 0, latency_s: float = 0.0,
          extract_ok: bool = False, detail: str = "") -> ItemResult:
    """Score a model output `text` for `item` (pure: no server)."""
    valid = check_json(item.schema, text)
    value = json.loads(text) if valid else None
    exact = valid and item.expected is not None and json_equal(value, item.expected)
    return ItemResult(item.item_id, _title(item), finish, "OK", text, output_tokens, latency_s, valid, exact,
                      field_scores(value, acceptable_of(item)), extract_ok, detail)


def failed(item: ExtractionItem, status: str, latency_s: float, detail: str) -> ItemResult:
    """A request that got no response (refused, deadline, broken connection): every field wrong."""
    return ItemResult(item.item_id, _title(item), "error", status, latency_s=latency_s, detail=detail,
                      fields=field_scores(None, acceptable_of(item)))


def _title(item: ExtractionItem) -> str:
    return str(item.schema.get("title") or "?")


def summarize(results: list[ItemResult], wall_s: float) -> dict:
    """One dataset's figures; `fields` maps "<title>.<key>" to [right, of]."""
    finishes = {r: 0 for r in FINISH_REASONS}
    errors: dict[str, int] = {}
    per_field: dict[str, list[int]] = {}
    for r in results:
        finishes[r.finish] = finishes.get(r.finish, 0) + 1
        if r.status != "OK":
            errors[r.status] = errors.get(r.status, 0) + 1
        for key, right in r.fields.items():
            cell = per_field.setdefault(f"{r.title}.{key}", [0, 0])
            cell[0] += int(right)
            cell[1] += 1
    out_tokens = sum(r.output_tokens for r in results)
    answered = [r for r in results if r.status == "OK"]
    return {"requests": len(results), "valid": sum(r.valid for r in results),
            "extract_ok": sum(r.extract_ok for r in results), "finish": finishes, "errors": errors,
            "exact": sum(r.exact for r in results),
            "fields_right": sum(c[0] for c in per_field.values()), "fields": sum(c[1] for c in per_field.values()),
            "per_field": dict(sorted(per_field.items())),
            "output_tokens": out_tokens, "wall_s": wall_s,
            "out_tok_per_s": out_tokens / wall_s if wall_s > 0 else float("nan"),
            "latency": stats.summarize([r.latency_s for r in answered], (50, 95))}
