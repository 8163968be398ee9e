"""`structgen extract` as a user runs it: a subprocess against the real server (tests/conftest.py), stdout one
JSON value per input, errors on stderr naming the input, exit code."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "schemas"


def extract(*args, server=None, key=None, stdin: str | None = None, timeout=900) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("STRUCTGEN_API_KEY", None)
    if key:
        env["STRUCTGEN_API_KEY"] = key
    cmd = [sys.executable, "-m", "structgen.cli", "extract", "--no-progress", *args]
    if server:
        cmd += ["--server", server]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def validate(line: str, schema_file: Path):
    jsonschema.Draft202012Validator(json.loads(schema_file.read_text())).validate(json.loads(line))


@pytest.mark.slow
def test_invoice_example_against_a_running_server(real_server, real_api_key):
    r = extract("--schema", "schemas/invoice.json", "schemas/examples/invoice.txt", server=real_server.target,
                key=real_api_key)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1
    validate(lines[0], SCHEMAS / "invoice.json")


def test_files_stdin_and_a_missing_file(real_server, real_api_key, tmp_path):
    schema = tmp_path / "person.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"name": {"type": "string", "maxLength": 30}},
                                  "required": ["name"], "additionalProperties": False}))
    doc = tmp_path / "doc.txt"
    doc.write_text("Signed: Ingrid Bergström, notary.")
    r = extract("--schema", str(schema), str(doc), str(tmp_path / "missing.txt"), "--max-tokens", "30",
                server=real_server.target, key=real_api_key)
    assert r.returncode == 1
    assert len(r.stdout.splitlines()) == 1
    validate(r.stdout.splitlines()[0], schema)
    assert "missing.txt" in r.stderr and "cannot read" in r.stderr
    r = extract("--schema", str(schema), "-", "--max-tokens", "30", server=real_server.target, key=real_api_key,
                stdin="From the desk of Kofi Mensah.")
    assert r.returncode == 0, r.stderr
    validate(r.stdout.strip(), schema)


def test_wrong_key_and_bad_schema(real_server, tmp_path):
    r = extract("--schema", "schemas/contact_card.json", "schemas/examples/contact_card.txt",
                server=real_server.target, key="sk-wrong")
    assert r.returncode == 1 and r.stdout == ""
    assert "contact_card.txt" in r.stderr and "invalid API key" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": 12}')
    r = extract("--schema", str(bad), "schemas/examples/contact_card.txt", server=real_server.target)
    assert r.returncode == 2 and "not a valid JSON Schema" in r.stderr


@pytest.mark.slow
def test_local_engine_without_a_server():
    r = extract("--local", "--schema", "schemas/support_ticket.json", "schemas/examples/support_ticket.txt")
    assert r.returncode == 0, r.stderr
    validate(r.stdout.strip(), SCHEMAS / "support_ticket.json")


def test_bad_schema_names_keyword_and_pointer(tmp_path, capsys):
    from structgen.cli import main

    bad = tmp_path / "age.json"
    bad.write_text(json.dumps({"type": "object", "properties": {"age": {"minimum": "ten"}}}))
    assert main(["extract", "--no-progress", "--schema", str(bad), str(tmp_path / "doc.txt")]) == 2
    err = capsys.readouterr().err
    assert "is not a valid JSON Schema: 'minimum' must be a number (at '#/properties/age')" in err


def test_schema_problem_falls_back_to_jsonschema_with_keyword_and_pointer():
    from structgen.client.cli import schema_problem

    schema = {"properties": {"x": {"format": 5}}}  # the compiler ignores a format it does not know
    with pytest.raises(jsonschema.SchemaError) as e:
        jsonschema.Draft202012Validator.check_schema(schema)
    assert schema_problem(schema, e.value) == "'format': 5 is not of type 'string' (at '#/properties/x')"


@pytest.mark.slow
def test_local_goes_over_the_wire(caplog, capsys):
    """--local asks a real server in this process: its request log shows the one Generate call, and nothing of
    it reaches stderr on success."""
    from structgen.cli import main

    caplog.set_level(logging.INFO, logger="structgen.server.requests")
    rc = main(["extract", "--local", "--no-progress", "--schema", str(SCHEMAS / "support_ticket.json"),
               str(SCHEMAS / "examples" / "support_ticket.txt")])
    out = capsys.readouterr()
    assert rc == 0, out.err
    validate(out.out.strip(), SCHEMAS / "support_ticket.json")
    calls = [json.loads(r.getMessage()) for r in caplog.records if r.name == "structgen.server.requests"]
    assert [(c["method"], c["status"]) for c in calls] == [("Generate", "OK")]
    assert out.err == ""


def test_budget_closed_value_is_printed_with_a_warning(tmp_path, capsys, monkeypatch):
    """A value the token budget closed goes to stdout like any other; stderr names the input; exit 0."""
    from structgen.cli import main
    from structgen.client import cli

    seen = {}

    def fake_extract(target, api_key, args, task, texts):
        seen["sampling"] = cli.sampling_options(args)
        return [({"name": "Ana"}, None, True), ({"name": "Bo"}, None, False)]

    monkeypatch.setattr(cli, "_extract", fake_extract)
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object"}))
    docs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    for d in docs:
        d.write_text("x")
    rc = main(["extract", "--no-progress", "--schema", str(schema), *map(str, docs), "--repetition-penalty", "1.1",
               "--dry-multiplier", "0.8", "--logit-bias", "198=-5", "--logit-bias", "13=2.5", "--seed", "3"])
    out = capsys.readouterr()
    assert rc == 0
    assert out.out.splitlines() == ['{"name":"Ana"}', '{"name":"Bo"}']
    assert "a.txt: warning: the token budget closed" in out.err and "b.txt" not in out.err
    assert seen["sampling"] == dict(repetition_penalty=1.1, dry_multiplier=0.8, seed=3,
                                    logit_bias={198: -5.0, 13: 2.5})


def test_bad_logit_bias_flag_is_a_usage_error(tmp_path, capsys):
    from structgen.cli import main

    schema = tmp_path / "s.json"
    schema.write_text("{}")
    assert main(["extract", "--no-progress", "--schema", str(schema), "--logit-bias", "198"]) == 2
    assert "TOKEN_ID=BIAS" in capsys.readouterr().err


def test_budget_closed_value_against_the_server(real_server, real_api_key, tmp_path):
    schema = tmp_path / "story.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"story": {"type": "string"}},
                                  "required": ["story"], "additionalProperties": False}))
    doc = tmp_path / "logbook.txt"
    doc.write_text("The keeper, Ana, kept the light for forty years through every storm on the coast and wrote it "
                   "all down, night after night, in a long blue logbook.")
    r = extract("--schema", str(schema), str(doc), "--max-tokens", "12", "--repetition-penalty", "1.05",
                "--instructions", "Copy the whole document into story, word for word.", server=real_server.target,
                key=real_api_key)
    assert r.returncode == 0, r.stderr
    validate(r.stdout.strip(), schema)
    assert "logbook.txt: warning: the token budget closed" in r.stderr
