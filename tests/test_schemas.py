"""The ready schemas in schemas/: valid draft 2020-12, documented, compilable, each with an example
document; (slow) extracting each example on the real server gives output that validates."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

import structgen

SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"
NAMES = sorted(p.stem for p in SCHEMAS.glob("*.json"))
REQUIRED = {"invoice", "receipt", "resume", "contact_card", "product_listing", "support_ticket"}


def load(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.json").read_text())


def undocumented(schema: dict, pointer: str = "#") -> list[str]:
    """JSON pointers of properties (at any depth) that have no description."""
    missing = []
    for key, sub in schema.get("properties", {}).items():
        where = f"{pointer}/properties/{key}"
        if not sub.get("description"):
            missing.append(where)
        missing += undocumented(sub, where)
        if isinstance(sub.get("items"), dict):
            missing += undocumented(sub["items"], f"{where}/items")
    return missing


def test_the_required_set_is_there():
    assert REQUIRED <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_schema_is_valid_documented_and_has_an_example(name):
    schema = load(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema.get("description") and not undocumented(schema)
    example = SCHEMAS / "examples" / f"{name}.txt"
    assert example.is_file() and len(example.read_text().split()) >= 30


@pytest.mark.parametrize("name", NAMES)
def test_schema_compiles(name):
    compiled = structgen.compile_json_schema(load(name))
    assert compiled.num_states > 0


@pytest.mark.slow
def test_examples_extract_concurrently_to_valid_output(client):
    """All examples at once (they share the running batch): every finished extraction validates against its
    schema; the only acceptable failure is the 135M model running past max_tokens inside a value (the FSM
    guarantees form, not that a small model stops), and most examples must finish."""
    from concurrent.futures import ThreadPoolExecutor

    def run(name):
        try:
            return name, client.extract((SCHEMAS / "examples" / f"{name}.txt").read_text(), load(name),
                                        max_tokens=768), None
        except structgen.ExtractionError as e:
            return name, None, e

    with ThreadPoolExecutor(len(NAMES)) as pool:
        results = list(pool.map(run, NAMES))
    finished = 0
    for name, value, error in results:
        if error is not None:
            assert "max_tokens" in str(error), (name, error)
            continue
        jsonschema.Draft202012Validator(load(name), format_checker=jsonschema.FormatChecker()).validate(value)
        finished += 1
    assert finished >= len(NAMES) - 2, results
