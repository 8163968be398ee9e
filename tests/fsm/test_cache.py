"""The compile cache: memory LRU, disk entries across processes, corrupt files, cached failures, limits."""

import hashlib
import json
import os
import pickle
import subprocess
import sys
import threading
import time

import pytest

import structgen
from structgen.errors import ConstraintTooComplexError, InvalidRegexError
from structgen.fsm import cache as cache_mod
from structgen.fsm.api import compile_with_status
from structgen.fsm.cache import DISK, MEMORY, MISS, CompileCache, default_cache, make_key


class Thing:
    """A stand-in for a compiled constraint: what the cache needs (key, version, snapshot)."""

    def __init__(self, key: str, payload, version: int = 1):
        self.key, self.payload, self.version = key, payload, version

    def snapshot(self) -> dict:
        return {"payload": self.payload}


def restore_thing(key):
    return lambda snap: Thing(key, snap["payload"])


class Builds:
    def __init__(self, key, payload="built", error=None, delay=0.0):
        self.key, self.payload, self.error, self.delay, self.calls = key, payload, error, delay, 0

    def __call__(self):
        self.calls += 1
        time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return Thing(self.key, self.payload)


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    structgen.default_tokenizer()  # loaded from the real cache folder before it moves
    monkeypatch.setenv("STRUCTGEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("STRUCTGEN_DISABLE_DISK_CACHE", raising=False)
    default_cache().clear()
    yield
    default_cache().clear()


def test_key_depends_on_every_part():
    base = make_key("regex", "a+", {}, "fp")
    assert base == make_key("regex", "a+", {}, "fp") and len(base) == 64
    assert len({base, make_key("choice", "a+", {}, "fp"), make_key("regex", "a*", {}, "fp"),
                make_key("regex", "a+", {"x": 1}, "fp"), make_key("regex", "a+", {}, "fp2")}) == 5
    assert make_key("json_schema", "{}", {"a": 1, "b": 2}, "f") == make_key("json_schema", "{}", {"b": 2, "a": 1}, "f")
    with pytest.raises(TypeError):
        make_key("regex", "a", {"x": object()}, "fp")


def test_memory_hit_returns_the_same_object(tmp_path):
    c = CompileCache(disk_dir=tmp_path)
    build = Builds("k1")
    a, s1 = c.get_or_compile("k1", build, restore_thing("k1"))
    b, s2 = c.get_or_compile("k1", build, restore_thing("k1"))
    assert (s1, s2) == (MISS, MEMORY) and a is b and build.calls == 1


def test_disk_hit_after_a_restart(tmp_path):
    CompileCache(disk_dir=tmp_path).get_or_compile("k1", Builds("k1", payload=[1, 2]), restore_thing("k1"))
    build = Builds("k1")
    obj, status = CompileCache(disk_dir=tmp_path).get_or_compile("k1", build, restore_thing("k1"))
    assert status == DISK and obj.payload == [1, 2] and build.calls == 0


@pytest.mark.parametrize("content", [b"not a pickle", pickle.dumps({"format": -1}), b""])
def test_unusable_files_are_ignored_and_rewritten(tmp_path, content):
    c = CompileCache(disk_dir=tmp_path)
    c.path_for("k1").write_bytes(content)
    build = Builds("k1", payload="fresh")
    obj, status = c.get_or_compile("k1", build, restore_thing("k1"))
    assert status == MISS and build.calls == 1
    again, status = CompileCache(disk_dir=tmp_path).get_or_compile("k1", Builds("k1"), restore_thing("k1"))
    assert status == DISK and again.payload == "fresh"


def test_a_file_whose_restore_fails_is_a_miss(tmp_path):
    CompileCache(disk_dir=tmp_path).get_or_compile("k1", Builds("k1"), restore_thing("k1"))

    def broken(snap):
        raise ValueError("snapshot was built for another tokenizer")

    build = Builds("k1")
    _, status = CompileCache(disk_dir=tmp_path).get_or_compile("k1", build, broken)
    assert status == MISS and build.calls == 1


def test_constraint_errors_are_cached_other_errors_are_not(tmp_path):
    c = CompileCache(disk_dir=tmp_path)
    bad = Builds("k1", error=InvalidRegexError("(", 0, "missing )"))
    for _ in range(3):
        with pytest.raises(InvalidRegexError):
            c.get_or_compile("k1", bad, restore_thing("k1"))
    assert bad.calls == 1
    oops = Builds("k2", error=RuntimeError("bug"))
    for _ in range(2):
        with pytest.raises(RuntimeError):
            c.get_or_compile("k2", oops, restore_thing("k2"))
    assert oops.calls == 2


def test_limit_failures_are_forgotten_when_the_limits_change(tmp_path, monkeypatch):
    c = CompileCache(disk_dir=tmp_path)
    monkeypatch.setenv("STRUCTGEN_MAX_STATES", "10")
    bad = Builds("k1", error=ConstraintTooComplexError("automaton states", 10))
    for _ in range(2):
        with pytest.raises(ConstraintTooComplexError):
            c.get_or_compile("k1", bad, restore_thing("k1"))
    assert bad.calls == 1
    monkeypatch.setenv("STRUCTGEN_MAX_STATES", "1000")
    obj, status = c.get_or_compile("k1", Builds("k1"), restore_thing("k1"))
    assert status == MISS and obj.payload == "built"


def test_disabled_disk_cache_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("STRUCTGEN_DISABLE_DISK_CACHE", "1")
    c = CompileCache(disk_dir=tmp_path / "fsm")
    c.get_or_compile("k1", Builds("k1"), restore_thing("k1"))
    assert c.disk_dir() is None and not (tmp_path / "fsm").exists()
    _, status = CompileCache(disk_dir=tmp_path / "fsm").get_or_compile("k1", Builds("k1"), restore_thing("k1"))
    assert status == MISS


def test_lru_evicts_the_least_recent_and_saves_it(tmp_path):
    c = CompileCache(capacity=2, disk_dir=tmp_path)
    for k in ("a", "b"):
        c.get_or_compile(k, Builds(k), restore_thing(k))
    c.get_or_compile("a", Builds("a"), restore_thing("a"))  # a is now the most recent
    c.get_or_compile("c", Builds("c"), restore_thing("c"))  # evicts b
    assert len(c) == 2
    assert c.get_or_compile("a", Builds("a"), restore_thing("a"))[1] == MEMORY
    assert c.get_or_compile("b", Builds("b"), restore_thing("b"))[1] == DISK


def test_save_writes_only_when_the_object_grew(tmp_path):
    c = CompileCache(disk_dir=tmp_path)
    obj, _ = c.get_or_compile("k1", Builds("k1"), restore_thing("k1"))
    assert not c.save(obj)
    obj.version, obj.payload = 2, "grown"
    assert c.save(obj)
    assert c.save_dirty() == 0
    assert CompileCache(disk_dir=tmp_path).get_or_compile("k1", Builds("k1"), restore_thing("k1"))[0].payload == "grown"


def test_autosave_persists_growth(tmp_path):
    c = CompileCache(disk_dir=tmp_path)
    obj, _ = c.get_or_compile("k1", Builds("k1"), restore_thing("k1"))
    stop = c.start_autosave(0.05)
    try:
        obj.version, obj.payload = 2, "grown"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if pickle.loads(c.path_for("k1").read_bytes())["payload"]["payload"] == "grown":
                break
            time.sleep(0.05)
        else:
            pytest.fail("autosave did not write the grown entry")
    finally:
        stop.set()
    with pytest.raises(ValueError):
        c.start_autosave(0)


def test_disk_entries_are_pruned_oldest_first(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_mod, "MAX_DISK_ENTRIES", 3)
    c = CompileCache(disk_dir=tmp_path)
    for i, k in enumerate("abcde"):
        c.get_or_compile(k, Builds(k), restore_thing(k))
        os.utime(c.path_for(k), (1000 + i, 1000 + i))
    assert sorted(p.stem for p in tmp_path.glob("*.pkl")) == ["c", "d", "e"]


def test_unpicklable_objects_skip_the_disk(tmp_path):
    c = CompileCache(disk_dir=tmp_path)
    obj, status = c.get_or_compile("k1", Builds("k1", payload=lambda: 0), restore_thing("k1"))
    assert status == MISS and not c.path_for("k1").exists()


def test_concurrent_callers_share_one_compile(tmp_path):
    c = CompileCache(disk_dir=tmp_path)
    build = Builds("k1", delay=0.3)
    got = []
    threads = [threading.Thread(target=lambda: got.append(c.get_or_compile("k1", build, restore_thing("k1"))))
               for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert build.calls == 1 and len({id(o) for o, _ in got}) == 1
    assert sorted(s for _, s in got) == [MEMORY, MEMORY, MISS]


# ---- the real thing: compile_* through the default cache, a fresh process reads the disk entry ----------

CHILD = """
import hashlib, json, sys
from structgen.tokenizer import Tokenizer
from structgen.fsm.api import compile_with_status
tok = Tokenizer.from_dir(sys.argv[1])
c, status = compile_with_status("json_schema", json.loads(sys.argv[2]), tok)
cur = c.cursor()
masks = []
for t in c.encode(sys.argv[3]):
    masks.append(hashlib.sha256(cur.mask().tobytes()).hexdigest())
    assert cur.advance(t)
print(json.dumps({"status": status, "states": c.num_states, "key": c.key, "masks": masks}))
"""

SCHEMA = {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"}}},
          "required": ["xs"]}
TEXT = '{"xs": [1, -20, 300]}'


def run_child(tmp_path) -> dict:
    tok_dir = structgen.default_tokenizer().source
    out = subprocess.run([sys.executable, "-c", CHILD, tok_dir, json.dumps(SCHEMA), TEXT],
                         env={**_env(), "STRUCTGEN_CACHE_DIR": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _env():
    return {k: v for k, v in os.environ.items() if k != "STRUCTGEN_DISABLE_DISK_CACHE"}


def test_fresh_process_hits_the_disk_entry_with_states_learned_while_decoding(tmp_path):
    tok = structgen.default_tokenizer()
    c, status = compile_with_status("json_schema", SCHEMA, tok)
    assert status == MISS
    initial_states = c.num_states
    cur = c.cursor()
    masks = []
    for t in c.encode(TEXT):
        masks.append(hashlib.sha256(cur.mask().tobytes()).hexdigest())
        assert cur.advance(t)
    assert c.num_states > initial_states
    assert c.save()
    child = run_child(tmp_path)
    assert child["status"] == DISK and child["key"] == c.key
    assert child["states"] == c.num_states  # nothing new was needed: every state came from the file
    assert child["masks"] == masks
    assert compile_with_status("json_schema", SCHEMA, tok)[1] == MEMORY


def test_disk_hit_is_fast_and_equal(tmp_path):
    tok = structgen.default_tokenizer()
    schema = {"type": "array", "items": {"enum": [f"option number {i}" for i in range(200)]}}
    c, _ = compile_with_status("json_schema", schema, tok)
    first = c.cursor().mask().copy()
    default_cache().clear()
    start = time.perf_counter()
    again, status = compile_with_status("json_schema", schema, tok)
    elapsed = time.perf_counter() - start
    assert status == DISK and again is not c
    assert (again.cursor().mask() == first).all()
    print(f"disk hit: {elapsed * 1e3:.1f} ms")  # reported, not asserted (shared machine)


def test_corrupt_disk_entry_of_a_real_constraint_is_rewritten(tmp_path):
    tok = structgen.default_tokenizer()
    c, _ = compile_with_status("regex", r"[0-9]{2,4}", tok)
    path = default_cache().path_for(c.key)
    assert path.is_file()
    path.write_bytes(path.read_bytes()[:50])  # truncated
    default_cache().clear()
    again, status = compile_with_status("regex", r"[0-9]{2,4}", tok)
    assert status == MISS and again.accepts("123") and not again.accepts("1")
    default_cache().clear()
    assert compile_with_status("regex", r"[0-9]{2,4}", tok)[1] == DISK


def test_version_mismatched_entry_is_ignored(tmp_path, monkeypatch):
    tok = structgen.default_tokenizer()
    c, _ = compile_with_status("regex", r"ab+", tok)
    default_cache().clear()
    monkeypatch.setattr(cache_mod, "__version__", "0.0.0-other")
    _, status = compile_with_status("regex", r"ab+", tok)
    assert status == MISS  # a new version gives a new key, and the old file is not read under it
    path = default_cache().path_for(c.key)
    blob = pickle.loads(path.read_bytes())
    blob["structgen"] = "0.0.0-other"
    path.write_bytes(pickle.dumps(blob))
    monkeypatch.undo()
    monkeypatch.setenv("STRUCTGEN_CACHE_DIR", str(path.parent.parent))
    default_cache().clear()
    assert compile_with_status("regex", r"ab+", tok)[1] == MISS
