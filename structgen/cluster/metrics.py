"""Reading a cluster's Prometheus counters: each replica's /metrics, summed, for tests and `structgen bench cluster`."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def scrape(url: str, timeout: float = 10.0) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one /metrics page."""
    text = httpx.get(url, timeout=timeout).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict, name: str, **labels) -> float:
    """The sum of every sample called `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == want for k, want in labels.items()))


def answered(samples: dict) -> float:
    """Requests a replica finished with status OK, health probes left out."""
    return sum(v for (n, ls), v in samples.items()
               if n == "structgen_requests_total" and dict(ls).get("status") == "OK"
               and "health" not in dict(ls).get("method", ""))


def cache_counters(samples: dict) -> tuple[float, float, float]:
    """(prompt tokens, prompt tokens served from the prefix cache, completion tokens) so far."""
    return (total(samples, "structgen_prompt_tokens_total"), total(samples, "structgen_prompt_tokens_cached_total"),
            total(samples, "structgen_completion_tokens_total"))
