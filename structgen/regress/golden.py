"""Golden sets: the cases `structgen regress` runs, loaded and checked before any server is asked.

Two forms:

- a JSON Lines file, one case per line: `id`, exactly one input (`text`: a document, sent as the SDK's `extract`
  sends it; `messages`: chat turns through the server's chat template; `prompt`: raw completion text), exactly one
  constraint (`schema`, `regex` or `choices`), optionally `expected` (and, for schema cases, `acceptable`:
  {top-level key: [accepted values]}, the extraction dev set's per-field answers). `source`, `license` and `note`
  are kept as information; any other key is an error (a misspelt `expeted` must not silently drop the answer).
- a folder of `*.json` items in the extraction dev set's format (`schema`, `text`, `expected`, `acceptable`,
  `id`; the file stem when there is no `id`).

Every problem is a `GoldenError` naming the file and line (or item file), raised before the run starts: a long
run must not fail on its 900th case. The set's hash (sha256 over its cases in canonical JSON, so reformatting a
file does not change it) identifies it in run.json; compare refuses two runs of different sets.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

INPUT_KINDS = ("text", "messages", "prompt")
CONSTRAINT_KINDS = ("schema", "regex", "choices")
_INFO_KEYS = ("source", "license", "note")
_KNOWN_KEYS = frozenset(("id", "expected", "acceptable") + INPUT_KINDS + CONSTRAINT_KINDS + _INFO_KEYS)
_ROLES = ("system", "user", "assistant")


class GoldenError(ValueError):
    """A golden set that cannot be run: the message names the file and line (or item) and what is wrong."""


@dataclass(frozen=True)
class GoldenCase:
    """One case. `input_kind` is one of INPUT_KINDS and `input` its value (a str, or a list of {role, content});
    `constraint_kind` one of CONSTRAINT_KINDS and `constraint` its value (a schema dict, a pattern, a list of
    strings). `has_expected` tells an `expected` of null apart from none given."""

    case_id: str
    input_kind: str
    input: object
    constraint_kind: str
    constraint: object
    has_expected: bool = False
    expected: object = None
    acceptable: dict | None = None

    def canonical(self) -> dict:
        """The case as plain JSON (what the set's hash covers)."""
        out = {"id": self.case_id, self.input_kind: self.input, self.constraint_kind: self.constraint}
        if self.has_expected:
            out["expected"] = self.expected
        if self.acceptable is not None:
            out["acceptable"] = self.acceptable
        return out


@dataclass(frozen=True)
class GoldenSet:
    path: str
    cases: tuple[GoldenCase, ...]
    digest: str      # sha256 hex over the cases' canonical JSON, in order

    def by_id(self) -> dict[str, GoldenCase]:
        return {c.case_id: c for c in self.cases}


def load_golden(path: str | Path) -> GoldenSet:
    """The golden set at `path` (a JSONL file or a folder of dev-format *.json items); GoldenError if unusable."""
    path = Path(path)
    if path.is_dir():
        cases = _load_folder(path)
    elif path.is_file():
        cases = _load_jsonl(path)
    else:
        raise GoldenError(f"golden set not found: {path} (a .jsonl file or a folder of *.json items)")
    if not cases:
        raise GoldenError(f"golden set {path} holds no cases")
    return GoldenSet(str(path), tuple(cases), golden_digest(cases))


def golden_digest(cases) -> str:
    text = json.dumps([c.canonical() for c in cases], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _load_jsonl(path: Path) -> list[GoldenCase]:
    cases: list[GoldenCase] = []
    first_line: dict[str, int] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise GoldenError(f"{path}: not UTF-8 text ({e})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            raise GoldenError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
        case = parse_case(doc, where)
        if case.case_id in first_line:
            raise GoldenError(f"{where}: duplicate id {case.case_id!r} (first on line {first_line[case.case_id]})")
        first_line[case.case_id] = number
        cases.append(case)
    return cases


def _load_folder(path: Path) -> list[GoldenCase]:
    cases: list[GoldenCase] = []
    first_file: dict[str, str] = {}
    for item in sorted(path.glob("*.json")):
        where = str(item)
        try:
            doc = json.loads(item.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GoldenError(f"{where}: not JSON ({e})") from None
        if isinstance(doc, dict) and "id" not in doc:
            doc = {**doc, "id": item.stem}
        case = parse_case(doc, where)
        if case.case_id in first_file:
            raise GoldenError(f"{where}: duplicate id {case.case_id!r} (also in {first_file[case.case_id]})")
        first_file[case.case_id] = item.name
        cases.append(case)
    return cases


def _one_of(doc: dict, kinds: tuple[str, ...], what: str, where: str) -> str:
    given = [k for k in kinds if k in doc]
    if len(given) != 1:
        got = ", ".join(given) if given else "none"
        raise GoldenError(f"{where}: a case needs exactly one {what} of {', '.join(kinds)} (got {got})")
    return given[0]


def parse_case(doc, where: str) -> GoldenCase:
    """One case from its JSON object; `where` ("file:line" or the item's file) prefixes every error."""
    if not isinstance(doc, dict):
        raise GoldenError(f"{where}: a case is a JSON object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - _KNOWN_KEYS)
    if unknown:
        raise GoldenError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; a case takes "
                          f"{', '.join(sorted(_KNOWN_KEYS))}")
    case_id = doc.get("id")
    if isinstance(case_id, int) and not isinstance(case_id, bool):
        case_id = str(case_id)
    if not isinstance(case_id, str) or not case_id.strip():
        raise GoldenError(f"{where}: 'id' must be a non-empty string")
    where = f"{where} (id {case_id!r})"
    input_kind = _one_of(doc, INPUT_KINDS, "input", where)
    constraint_kind = _one_of(doc, CONSTRAINT_KINDS, "constraint", where)
    value = doc[input_kind]
    if input_kind == "messages":
        _check_messages(value, where)
    elif not isinstance(value, str) or not value:
        raise GoldenError(f"{where}: {input_kind!r} must be a non-empty string")
    if input_kind == "text" and constraint_kind != "schema":
        raise GoldenError(f"{where}: a 'text' case is extracted with a schema; use 'messages' or 'prompt' with "
                          f"{constraint_kind!r}")
    constraint = doc[constraint_kind]
    _check_constraint(constraint_kind, constraint, where)
    has_expected = "expected" in doc
    expected = doc.get("expected")
    if has_expected:
        _check_expected(constraint_kind, constraint, expected, where)
    acceptable = doc.get("acceptable")
    if acceptable is not None:
        if constraint_kind != "schema":
            raise GoldenError(f"{where}: 'acceptable' (per-field answers) applies to schema cases only")
        if not isinstance(acceptable, dict) or not all(isinstance(v, list) and v for v in acceptable.values()):
            raise GoldenError(f"{where}: 'acceptable' must map each top-level key to a non-empty list of values")
    return GoldenCase(case_id, input_kind, value, constraint_kind, constraint, has_expected, expected, acceptable)


def _check_messages(value, where: str) -> None:
    if not isinstance(value, list) or not value:
        raise GoldenError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise GoldenError(f"{where}: messages[{i}] must be an object with exactly 'role' and 'content'")
        if m["role"] not in _ROLES:
            raise GoldenError(f"{where}: messages[{i}].role must be one of {', '.join(_ROLES)}, got {m['role']!r}")
        if not isinstance(m["content"], str):
            raise GoldenError(f"{where}: messages[{i}].content must be a string")


def _check_constraint(kind: str, value, where: str) -> None:
    if kind == "schema":
        import jsonschema

        if not isinstance(value, dict):
            raise GoldenError(f"{where}: 'schema' must be a JSON Schema object")
        cls = jsonschema.validators.validator_for(value, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(value)
        except jsonschema.SchemaError as e:
            path = "/".join(map(str, e.path)) or "(root)"
            raise GoldenError(f"{where}: 'schema' is not a valid JSON Schema at {path}: {e.message}") from None
    elif kind == "regex":
        if not isinstance(value, str) or not value:
            raise GoldenError(f"{where}: 'regex' must be a non-empty pattern string")
        try:
            re.compile(value)
        except re.error as e:
            raise GoldenError(f"{where}: 'regex' does not compile: {e}") from None
    else:
        if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
            raise GoldenError(f"{where}: 'choices' must be a non-empty list of non-empty strings")


def _check_expected(kind: str, constraint, expected, where: str) -> None:
    """An expected answer the constraint itself refuses can never be matched: a mistake in the set, said now."""
    from .outcome import valid_output

    if kind == "schema":
        text = json.dumps(expected)
    elif not isinstance(expected, str):
        raise GoldenError(f"{where}: 'expected' of a {kind} case must be a string")
    else:
        text = expected
    if not valid_output(kind, constraint, text):
        what = {"schema": "does not validate under the case's schema", "regex": "does not fully match the regex",
                "choices": "is not one of the choices"}[kind]
        raise GoldenError(f"{where}: 'expected' {what}")
