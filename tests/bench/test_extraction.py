"""structgen/bench/extraction.py: scoring (valid, exact, per field with acceptable answers, omissions, cut-off and
failed requests), the command line, a run against a fake server, and one tiny real run (slow)."""

import asyncio
import json

import jsonschema
import pytest

from structgen._proto import structgen_pb2 as pb
from structgen.bench.cases import ExtractionItem, load_extraction
from structgen.bench.extraction import DEFAULT_DATASETS, dataset_path, parse_params, render_markdown, run_dataset
from structgen.bench.scoring import FINISH_REASONS, failed, field_scores, json_equal, score, summarize
from structgen.bench.report import read_jsonl
from structgen.cli import main

SCHEMA = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "weather", "type": "object",
          "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]},
                         "days": {"type": "integer"}, "when": {"type": "string", "format": "date"}},
          "required": ["city"]}
ITEM = ExtractionItem("w1", SCHEMA, "Weather in Oslo for 3 days?", expected={"city": "Oslo", "days": 3},
                      acceptable={"city": ["Oslo", "Oslo, Norway"], "days": [3], "unit": ["", "c"]})
HEADER = {"command": "structgen bench extraction", "date": "d", "commit": "abc", "cpu": "cpu", "cores": 2,
          "gpu": "none"}


def test_json_equal_keeps_booleans_apart_from_numbers():
    assert json_equal(30, 30.0) and json_equal({"a": [1, {"b": None}]}, {"a": [1.0, {"b": None}]})
    assert not json_equal(True, 1) and not json_equal(0, False) and not json_equal("1", 1)
    assert not json_equal({"a": 1}, {"a": 1, "b": 2}) and not json_equal([1], [1, 1])


def test_exact_match_and_every_field_right():
    r = score(ITEM, '{"city":"Oslo","days":3}', "stop")
    assert r.valid and r.exact
    assert r.fields == {"city": True, "days": True, "unit": True}   # unit omitted: "" is acceptable


def test_acceptable_forms_count_per_field_but_not_as_exact():
    r = score(ITEM, '{"city":"Oslo, Norway","days":3,"unit":"c"}', "stop")
    assert r.valid and not r.exact
    assert r.fields == {"city": True, "days": True, "unit": True}
    r = score(ITEM, '{"city":"Bergen","unit":"f"}', "stop")   # wrong city, days omitted (not optional), wrong unit
    assert r.valid and not r.exact and r.fields == {"city": False, "days": False, "unit": False}


def test_boolean_is_not_a_number_in_fields():
    item = ExtractionItem("b", {"type": "object"}, "x", expected={"n": 1}, acceptable={"n": [1]})
    assert score(item, '{"n":true}', "stop").fields == {"n": False}
    assert score(item, '{"n":1.0}', "stop").fields == {"n": True}


def test_invalid_outputs_score_nothing():
    cut = score(ITEM, '{"city":"Oslo, Oslo, Oslo, Os', "length", output_tokens=1024)
    assert not cut.valid and not cut.exact and cut.fields == {"city": False, "days": False, "unit": False}
    assert cut.finish == "length" and cut.output_tokens == 1024
    # parses but breaks the schema (a format the checker knows, and a missing required key)
    assert not score(ITEM, '{"city":"Oslo","when":"next week"}', "stop").valid
    assert not score(ITEM, '{"days":3}', "stop").valid
    # omitted-may-be-right never applies without a value
    assert field_scores(None, {"unit": ["", "c"]}) == {"unit": False}


def test_budget_closed_output_is_scored_like_any_other():
    r = score(ITEM, '{"city":"Oslo"}', "budget")
    assert r.valid and r.finish == "budget" and not r.exact
    assert r.fields == {"city": True, "days": False, "unit": True}


def test_item_without_acceptable_uses_expected():
    item = ExtractionItem("e", SCHEMA, "x", expected={"city": "Oslo"})
    assert score(item, '{"city":"Oslo","days":2}', "stop").fields == {"city": True}


def test_summary_counts_add_up_and_table_shows_them():
    results = [score(ITEM, '{"city":"Oslo","days":3}', "stop", output_tokens=9, latency_s=1.0),
               score(ITEM, '{"city":"Oslo"}', "budget", output_tokens=20, latency_s=2.0),
               score(ITEM, '{"city":"Os', "length", output_tokens=30, latency_s=3.0),
               failed(ITEM, "INVALID_ARGUMENT", 0.1, "InvalidArgument: needs 12 tokens, budget 8"),
               score(ITEM, '{"city":"Oslo","days":3}', "abort", output_tokens=1, latency_s=0.5)]
    s = summarize(results, 10.0)
    assert s["requests"] == 5 == sum(s["finish"].values())
    assert s["finish"] == {"stop": 1, "budget": 1, "length": 1, "error": 1, "abort": 1}
    assert (s["valid"], s["exact"], s["errors"]) == (3, 2, {"INVALID_ARGUMENT": 1})
    assert (s["fields_right"], s["fields"]) == (3 + 2 + 3, 15)
    assert s["per_field"]["weather.city"] == [3, 5] and s["per_field"]["weather.unit"] == [3, 5]
    assert s["output_tokens"] == 60 and s["out_tok_per_s"] == pytest.approx(6.0)
    assert s["latency"]["n"] == 4   # the failed request has no latency of an answer
    md = render_markdown([("tiny", s)], HEADER, "note")
    row = next(line for line in md.splitlines() if line.startswith("| tiny |"))
    assert row.startswith("| tiny | 5 | 3 (60.0%) | 0 (0.0%) | 1 | 1 | 1 | 1 | 1 | 2 (40.0%) | 8/15 (53.3%) | 60 |")
    assert "| abort |" in md and "INVALID_ARGUMENT: 1" in md and "| weather.days | 5 | 2 | 40.0% |" in md


def test_params_parse_as_json_values():
    assert parse_params(["repetition_penalty=1.1", "top_k=5", "logprobs=true", 'logit_bias={"7": -2}',
                         "stop=END"]) == {"repetition_penalty": 1.1, "top_k": 5, "logprobs": True,
                                          "logit_bias": {"7": -2}, "stop": "END"}
    for bad in (["nope"], ["=1"], ["a b=1"], ["x=1", "x=2"]):
        with pytest.raises(ValueError):
            parse_params(bad)


def test_datasets_resolve_and_hold_scorable_items():
    for name in DEFAULT_DATASETS:
        path = dataset_path(name)
        if not path.exists():
            pytest.skip(f"{path} not here")
        items = load_extraction(path)
        assert items and all(i.expected is not None and i.acceptable for i in items)
        # the expected answer scores as exact and every field right (the scorer agrees with the data)
        for item in items:
            r = score(item, json.dumps(item.expected), "stop")
            assert r.valid and r.exact and all(r.fields.values()), item.item_id


class FakeClient:
    """Answers like a server: a fixed output per item text; tracks the most requests in flight."""

    def __init__(self, outputs):
        self.outputs = outputs
        self.in_flight = self.max_in_flight = 0

    def _deadline(self, timeout):
        return timeout

    async def _unary(self, call, timeout):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        messages = call.request.messages
        assert messages[0].role == "system" and "JSON Schema" in messages[0].content   # extract's prompt
        assert call.request.max_tokens == 64 and call.request.constraint.json_schema
        text, reason = self.outputs[messages[1].content]
        if reason is None:
            raise ConnectionError("broken pipe")
        return call.parse(pb.GenerateResponse(text=text, finish_reason=reason,
                                              usage=pb.Usage(completion_tokens=len(text))))


def test_run_dataset_sends_extracts_request_and_keeps_order():
    items = [ExtractionItem(str(i), SCHEMA, f"doc {i}", expected={"city": "Oslo"}) for i in range(6)]
    outputs = {"doc 0": ('{"city":"Oslo"}', pb.FINISH_REASON_STOP), "doc 1": ('{"city":"Os', pb.FINISH_REASON_LENGTH),
               "doc 2": ("", None)}
    outputs.update({f"doc {i}": ('{"city":"Rome"}', pb.FINISH_REASON_STOP) for i in range(3, 6)})
    client = FakeClient(outputs)
    results, wall = asyncio.run(run_dataset(client, items, concurrency=2, max_tokens=64, params={}, timeout=5,
                                            progress=False))
    assert [r.item_id for r in results] == [str(i) for i in range(6)] and client.max_in_flight == 2
    assert [r.finish for r in results] == ["stop", "length", "error", "stop", "stop", "stop"]
    assert [r.extract_ok for r in results] == [True, False, False, True, True, True]
    assert results[0].exact and not results[3].exact and results[2].status == "ConnectionError"
    assert "max_tokens" in results[1].detail   # extract's own message for a cut-off output


def test_command_line_refuses_bad_arguments(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["bench", "extraction", "--param", "no_such_keyword=1", "--out", out]) == 2
    assert "no_such_keyword" in capsys.readouterr().err
    assert main(["bench", "extraction", "--param", "oops", "--out", out]) == 2
    assert main(["bench", "extraction", "--concurrency", "0", "--out", out]) == 2
    assert main(["bench", "extraction", "--datasets", str(tmp_path / "absent"), "--out", out]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_tiny_real_run_writes_its_files(real_server, real_api_key, tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"schema": SCHEMA, "text": text, "expected": {"city": "Oslo"},
                                         "acceptable": {"city": ["Oslo"]}}) + "\n"
                             for text in ("What is the weather in Oslo?", "Oslo, three days, in celsius please.")))
    out = tmp_path / "out"
    rc = main(["bench", "extraction", "--target", real_server.target, "--api-key", real_api_key,
               "--datasets", str(items), "--max-tokens", "24", "--concurrency", "2", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    records = read_jsonl(out / "results.jsonl")
    assert records[0]["type"] == "header" and records[0]["commit"] and records[0]["max_tokens"] == 24
    done = [r for r in records if r["type"] == "item"]
    (summary,) = [r for r in records if r["type"] == "dataset"]
    assert len(done) == 2 == summary["requests"] == sum(summary["finish"].values())
    assert summary["valid"] == sum(r["valid"] for r in done) and summary["fields"] == 2
    for r in done:
        assert r["finish"] in FINISH_REASONS
        assert r["output_tokens"] <= 24
        if r["valid"]:
            jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(
                json.loads(r["text"]))
    assert "## Extraction quality" in (out / "summary.md").read_text()
    assert f"| {items} | 2 |" in capsys.readouterr().out
