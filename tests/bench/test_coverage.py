"""structgen/bench/coverage.py: declared / empirical coverage and compliance are counted from what happened."""


import pytest

import structgen
from structgen.bench.cases import Instance, SchemaCase
from structgen.bench.coverage import build_prompt, check_output, parse_output, render_markdown, run_generator, summarize
from structgen.bench.generators import ConstraintRefused, Generation

OBJ = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
EMAIL = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "string", "format": "email"}


class ScriptedGenerator:
    """Answers each schema (by case id) the way the script says: refuse, a text, or an error."""

    name = "scripted"

    def __init__(self, script):
        self.script = script
        self._current = None

    def compile(self, schema):
        for case_id, (schema_, action) in self.script.items():
            if schema_ is schema:
                self._current = action
        if self._current == "refuse":
            raise ConstraintRefused("UnsupportedSchemaError: not today")
        return object()

    def generate(self, prompt_ids, compiled, max_tokens):
        if self._current == "error":
            return Generation("", 0, 0, 0.1, "error", error="RuntimeError: engine fell over")
        text, tokens, forced, reason = self._current
        return Generation(text, tokens, forced, 0.01 * tokens, reason)


def test_counts_declared_valid_and_compliance():
    schemas = [dict(OBJ) for _ in range(5)]
    cases = [SchemaCase("S", f"S/{i}", s, (Instance({"n": 1}, True),)) for i, s in enumerate(schemas)]
    script = {
        "S/0": (schemas[0], ('{"n": 3}', 6, 2, "stop")),            # valid
        "S/1": (schemas[1], ('{"n": "x"}', 6, 0, "stop")),          # valid JSON, fails the schema
        "S/2": (schemas[2], "refuse"),                               # not declared
        "S/3": (schemas[3], ('{"n": 4', 10, 1, "length")),          # cut at max tokens
        "S/4": (schemas[4], "error"),                                # engine error: declared, not valid
    }
    rows = run_generator(ScriptedGenerator(script), cases, [[1, 2]] * 5, max_tokens=10, progress=False)
    assert [(r["declared"], r["valid"]) for r in rows] == [(True, True), (True, False), (False, False),
                                                           (True, False), (True, False)]
    s = summarize(rows)
    assert (s["schemas"], s["declared"], s["valid"]) == (5, 4, 1)
    assert s["compliance"] == pytest.approx(0.25)
    assert (s["output_tokens"], s["forced_tokens"], s["sampled_tokens"]) == (22, 3, 19)
    assert s["hit_max_tokens"] == 1 and s["errors"] == 1
    assert s["s_per_token_all"] == pytest.approx(0.01)
    md = render_markdown({"scripted": s, "peer": "not installed / unavailable: nope"},
                         {"command": "c", "date": "d", "commit": "x", "cpu": "c", "cores": 2, "gpu": "none"}, 10)
    line = next(x for x in md.splitlines() if x.startswith("| scripted |"))
    assert "| 4 (80.0%) | 1 (20.0%) | 25.0% |" in line
    assert "| peer | unavailable |" in md


def test_output_checks_use_the_schema_draft_and_formats():
    assert check_output(OBJ, '{"n": 1}') == (True, None)
    assert check_output(OBJ, '```json\n{"n": 1}\n```')[0]
    assert check_output(OBJ, "Sure! {")[1].startswith("not JSON")
    assert check_output(EMAIL, '"ann@example.com"')[0]
    assert not check_output(EMAIL, '"not an email"')[0]  # formats are asserted, not annotations
    assert not check_output({"$ref": "#/nowhere"}, "1")[0]
    with pytest.raises(ValueError):
        parse_output("nope")


def test_prompt_shows_the_schema_and_cuts_long_ones():
    tok = structgen.default_tokenizer()
    short = tok.decode(build_prompt(tok, OBJ, 2000))
    assert '"required":["n"]' in short and "assistant" in short
    long_schema = {"enum": ["x" * 50] * 200}
    cut = tok.decode(build_prompt(tok, long_schema, 300))
    assert "schema cut for length" in cut and len(cut) < 1500
