"""Extraction as a task: a schema (pydantic model class or JSON Schema dict) -> prompt -> validated value.

Used by both clients (`Client.extract`, `AsyncClient.extract`, `extract_many`) and so by `structgen extract`,
local or not: one prompt, one validation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonschema

from .errors import ExtractionError

DEFAULT_INSTRUCTIONS = (
    "Extract the information in the user's document as one JSON object that follows this JSON Schema:\n"
    "{schema}\n"
    "Copy names, numbers and dates exactly as the document writes them. Where the document does not say, "
    "use null if the schema allows it."
)
# Enough for the ready schemas' outputs; generation ends as soon as the JSON is complete anyway.
DEFAULT_EXTRACT_MAX_TOKENS = 1024
# Sampling `extract` uses unless the caller says otherwise (generate stays neutral). The DRY guard (0.8, base 1.75,
# allowed length 2) stops the small model's loops without penalizing copies of the document: measured on the
# extraction dev set + the generated documents (benchmarks/RESULTS.md, issue 13), it leaves valid values (100%),
# exact matches and field accuracy as they were (11 fields gained, 11 lost of 509), lets 9 of the 17 outputs the
# budget had to close end naturally, and cuts output tokens by 40% (p95 latency by half). dry_multiplier=0 turns it
# off.
EXTRACT_SAMPLING_DEFAULTS = {"dry_multiplier": 0.8}


@dataclass(frozen=True)
class Extracted:
    """One extraction's answer: the validated value, and whether the token budget closed it (finish reason
    "budget": the server ended the JSON early so that it is complete and valid; fields may be shorter or fewer
    than the document holds)."""

    value: Any
    closed_by_budget: bool = False


@dataclass(frozen=True)
class ExtractionTask:
    """One schema, ready to prompt with and to validate against. Build with `ExtractionTask.of(schema)`."""

    schema: dict
    model: type | None = None  # the pydantic model class, when one was given
    instructions: str | None = None

    @classmethod
    def of(cls, schema, instructions: str | None = None) -> "ExtractionTask":
        if isinstance(schema, type):
            try:
                from pydantic import BaseModel
            except ImportError:  # pragma: no cover  (pydantic is a dependency)
                BaseModel = None
            if BaseModel is None or not issubclass(schema, BaseModel):
                raise TypeError(f"schema must be a pydantic model class or a JSON Schema dict, got {schema!r}")
            return cls(schema=schema.model_json_schema(), model=schema, instructions=instructions)
        if isinstance(schema, dict):
            jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
            return cls(schema=schema, instructions=instructions)
        raise TypeError(f"schema must be a pydantic model class or a JSON Schema dict, got {type(schema).__name__}")

    @property
    def schema_json(self) -> str:
        return json.dumps(self.schema, separators=(",", ":"), ensure_ascii=False)

    def system_text(self) -> str:
        text = DEFAULT_INSTRUCTIONS.format(schema=self.schema_json)
        return f"{text}\n{self.instructions}" if self.instructions else text

    def messages(self, document: str) -> list[dict]:
        """Chat messages for one document (the system turn is shared, so the prefix cache reuses it)."""
        if not isinstance(document, str):
            raise TypeError(f"the document must be a str, got {type(document).__name__}")
        return [{"role": "system", "content": self.system_text()}, {"role": "user", "content": document}]

    def parse(self, text: str, finish_reason: str | None = None) -> Any:
        """The validated value of a model output: a pydantic instance, or the JSON value (dict)."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            hint = " (generation hit max_tokens: raise it)" if finish_reason == "length" else ""
            raise ExtractionError(f"the output is not complete JSON{hint}: {e.msg} at {e.pos}: "
                                  f"{text[:200]!r}") from None
        if self.model is not None:
            from pydantic import ValidationError

            try:
                return self.model.model_validate(value)
            except ValidationError as e:
                raise ExtractionError(f"the output does not validate against {self.model.__name__}: {e}") from None
        validator = jsonschema.validators.validator_for(self.schema, default=jsonschema.Draft202012Validator)
        errors = sorted(validator(self.schema).iter_errors(value), key=lambda e: list(e.path))
        if errors:
            raise ExtractionError(f"the output does not validate against the schema: {errors[0].message} at "
                                  f"{'/'.join(map(str, errors[0].path)) or '#'}")
        return value
