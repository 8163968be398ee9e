"""`structgen compile`: output, cache status, exit codes."""

import json
import os
import subprocess
import sys

import pytest

import structgen
from structgen.cli import main
from structgen.fsm.cache import default_cache


@pytest.fixture(scope="module")
def tok_dir():
    return structgen.default_tokenizer().source


@pytest.fixture(autouse=True)
def isolated(tok_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTGEN_CACHE_DIR", str(tmp_path))
    default_cache().clear()
    yield
    default_cache().clear()


def run_json(capsys, *args) -> tuple[int, dict | None, str]:
    code = main(["compile", *args, "--json"])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def test_regex_prints_states_time_and_cache_status(capsys, tok_dir):
    code = main(["compile", "--regex", r"\d{3}-[a-z]+", "--tokenizer", tok_dir])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "states:" in out and "compile time:" in out and "cache:        miss" in out
    code, info, _ = run_json(capsys, "--regex", r"\d{3}-[a-z]+", "--tokenizer", tok_dir)
    assert code == 0 and info["cache"] == "memory" and info["states"] >= 1 and info["first_mask_tokens"] > 0


def test_choice_and_schema(capsys, tok_dir, tmp_path):
    code, info, _ = run_json(capsys, "--choice", "yes,no,maybe", "--tokenizer", tok_dir)
    assert code == 0 and info["kind"] == "choice" and info["compile_ms"] >= 0
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"a": {"type": "integer"}}}))
    code, strict, _ = run_json(capsys, "--schema", str(schema), "--tokenizer", tok_dir)
    code2, loose, _ = run_json(capsys, "--schema", str(schema), "--tokenizer", tok_dir, "--extra-properties")
    assert code == code2 == 0 and strict["kind"] == "json_schema" and strict["key"] != loose["key"]


@pytest.mark.parametrize("args, message", [
    (["--regex", "(ab"], "invalid regex"),
    (["--choice", ""], None),  # one empty choice is a valid constraint
    (["--regex", "a", "--extra-properties"], "--extra-properties"),
    (["--schema", "/no/such/file.json"], "cannot read the schema"),
    (["--regex", "a", "--tokenizer", "/no/such/dir"], "cannot load the tokenizer"),
])
def test_errors_exit_2_with_a_message(capsys, tok_dir, args, message):
    if "--tokenizer" not in args:
        args = [*args, "--tokenizer", tok_dir]
    code = main(["compile", *args])
    _, err = capsys.readouterr()
    if message is None:
        assert code == 0
    else:
        assert code == 2 and message in err


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"type": "object", "unevaluatedProperties": False}), "unevaluatedProperties"),
    (json.dumps({"type": 5}), "'#"),
    ('{"type": "string", "maxLength": 1e400}', "(at '#/maxLength')"),
    ('{"a": ' * 400 + "1" + "}" * 400, "nests deeper than"),
])
def test_bad_schemas_exit_2(capsys, tok_dir, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    code = main(["compile", "--schema", str(path), "--tokenizer", tok_dir])
    _, err = capsys.readouterr()
    assert code == 2 and message in err and "Traceback" not in err


def test_no_constraint_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["compile"])
    assert e.value.code == 2


def test_entry_point_exit_codes_and_disk_status(tok_dir, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "structgen")
    if not os.path.exists(exe):
        pytest.skip("the structgen console script is not installed in this environment")
    env = {**os.environ, "STRUCTGEN_CACHE_DIR": str(tmp_path)}
    env.pop("STRUCTGEN_DISABLE_DISK_CACHE", None)
    args = [exe, "compile", "--regex", "[a-f]{2,5}", "--tokenizer", tok_dir, "--json"]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert json.loads(first.stdout)["cache"] == "miss" and json.loads(second.stdout)["cache"] == "disk"
    bad = subprocess.run([exe, "compile", "--regex", "a(", "--tokenizer", tok_dir], env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "invalid regex" in bad.stderr
