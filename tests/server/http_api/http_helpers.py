"""Helpers of the HTTP API tests (imported by them as `http_helpers`)."""

from __future__ import annotations

import time

import httpx


def load(http_url: str, key: str) -> dict:
    r = httpx.get(http_url + "/get_server_info", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    r.raise_for_status()
    return r.json()["internal_states"][0]["load"]


def wait_idle(http_url: str, key: str, timeout: float = 60.0) -> dict:
    """Wait until no request is held and no KV block is held outside the prefix cache; returns the load."""
    end = time.monotonic() + timeout
    while True:
        got = load(http_url, key)
        busy = (got["in_flight"], got["running"], got["queued"], got["kv_blocks_used"] - got["kv_blocks_cached"])
        if busy == (0, 0, 0, 0):
            return got
        if time.monotonic() > end:
            raise AssertionError(f"the server did not return to idle: {got}")
        time.sleep(0.1)
