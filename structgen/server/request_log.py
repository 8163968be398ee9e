"""One structured (JSON) log line per finished request: id, method, status, tokens, timings.

The prompt is never logged unless the server was started with `log_prompts=True`: prompts often hold the
private documents being extracted from.
"""

from __future__ import annotations

import json
import logging

LOGGER = logging.getLogger("structgen.server.requests")


def log_request(*, request_id: str, method: str, status: str, message: str = "", finish_reason: str | None = None,
                prompt_tokens: int = 0, cached_tokens: int = 0, completion_tokens: int = 0,
                queued_s: float | None = None, ttft_s: float | None = None, total_s: float | None = None,
                prompt: str | None = None):
    record = {
        "event": "request", "id": request_id, "method": method, "status": status,
        "finish_reason": finish_reason, "prompt_tokens": prompt_tokens, "cached_tokens": cached_tokens,
        "completion_tokens": completion_tokens,
        "queued_s": _round(queued_s), "ttft_s": _round(ttft_s), "total_s": _round(total_s),
    }
    if message:
        record["error"] = message
    if prompt is not None:
        record["prompt"] = prompt
    level = logging.INFO if status in ("OK", "CANCELLED") else logging.WARNING
    LOGGER.log(level, json.dumps(record, ensure_ascii=False))


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
