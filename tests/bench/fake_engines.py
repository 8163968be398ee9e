"""Engines that misbehave on purpose, for the benchmark harness tests (loaded by workers as module:factory).

Each one is driven through the same adapter shape as the real peers (compile -> matcher -> fill_mask/advance).
Schemas steer them: {"x-hang": true} never compiles, {"x-crash": true} kills the worker process,
{"x-unsupported": true} raises at compile time.
"""

from __future__ import annotations

import json
import os
import time

import jsonschema
import numpy as np


def _steer(schema) -> None:
    if isinstance(schema, dict):
        if schema.get("x-hang"):
            while True:
                time.sleep(1)
        if schema.get("x-crash"):
            os._exit(3)
        if schema.get("x-unsupported"):
            raise ValueError("x-unsupported: refused on purpose")


class _OracleMatcher:
    """Allows every token; allows EOS exactly when the text so far is a JSON document the schema accepts."""

    def __init__(self, tokenizer, schema, eos_policy):
        self._tokenizer = tokenizer
        self._schema = schema
        self._ids: list[int] = []
        self._eos_policy = eos_policy

    def _eos_allowed(self) -> bool:
        if self._eos_policy != "oracle":
            return self._eos_policy == "always"
        try:
            doc = json.loads(self._tokenizer.decode(self._ids))
        except ValueError:
            return False
        return jsonschema.Draft202012Validator(self._schema).is_valid(doc)

    def fill_mask(self, row: np.ndarray) -> None:
        row[:] = -1  # every token ...
        if not self._eos_allowed():  # ... but EOS only when the policy says so
            words = row.view(np.uint32)
            for eos in self._tokenizer.eos_token_ids:
                words[eos >> 5] &= np.uint32(~(1 << (eos & 31)) & 0xFFFFFFFF)

    def advance(self, token_id: int) -> bool:
        self._ids.append(token_id)
        return True


class _Compiled:
    def __init__(self, tokenizer, schema, eos_policy):
        self._args = (tokenizer, schema, eos_policy)

    def matcher(self):
        return _OracleMatcher(*self._args)


class OracleEngine:
    """A correct (slow) engine: every labelled instance ends up where its label says."""

    name = "oracle"
    eos_policy = "oracle"

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def compile(self, schema):
        _steer(schema)
        return _Compiled(self._tokenizer, schema, self.eos_policy)


class LaxEngine(OracleEngine):
    """Accepts everything: invalid instances get through (invalidation errors)."""

    eos_policy = "always"


class StrictEngine(OracleEngine):
    """Never allows EOS: valid instances are rejected at the end (validation errors)."""

    eos_policy = "never"


class SilentEngine(OracleEngine):
    """Writes nothing into the mask: the harness must read that as 'nothing allowed', not as a stale mask."""

    def compile(self, schema):
        compiled = super().compile(schema)
        compiled.matcher = lambda: _Silent()
        return compiled


class _Silent:
    def fill_mask(self, row):
        pass

    def advance(self, token_id):
        return True


def broken_factory(tokenizer):
    raise ImportError("No module named 'enginethatisnotthere'")


# --- plain worker functions for the run_tasks tests ------------------------------------------------------

def setup_echo(tag: str):
    return {"tag": tag, "pid": os.getpid()}


def setup_fail(reason: str):
    raise RuntimeError(reason)


def handle_echo(state, task):
    """task: {"sleep": s} sleeps, {"crash": True} exits the process, {"raise": True} raises, else echoes."""
    if task.get("crash"):
        os._exit(5)
    if task.get("raise"):
        raise KeyError("boom")
    time.sleep(task.get("sleep", 0))
    return {"tag": state["tag"], "pid": state["pid"], "value": task.get("value")}
