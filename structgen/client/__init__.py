"""The Python SDK and `structgen extract`: everything here talks to a server over gRPC, never to an engine.

    wire.py        call arguments -> protobuf requests, responses -> SDK values (one `Call` per RPC, both clients)
    base.py        what both clients share: target(s), deadline, API key, channels and stubs
    targets.py     `target` -> one server, listed replicas, or a resolver URI grpcio balances
    balancer.py    several replicas: health-checked channels, the pick (affinity | round robin), failover
    sync.py        `Client` (blocking, grpc)          aio.py   `AsyncClient` (asyncio, grpc.aio)
    batch.py       `extract_many` semantics: input order, per-item errors, retries, progress
    extraction.py  a schema -> its prompt and the validation of its output
    errors.py      gRPC status -> typed error
    local.py       a real server in-process on a free loopback port (`structgen extract --local`)
    cli.py         `structgen extract`
"""

from __future__ import annotations

from .._lazy import lazy_getattr

# name -> submodule. Imported on first use, so `structgen extract --help` (and the `structgen` command, which
# reads every subcommand's flags) does not load grpc.
_EXPORTS = {
    "Client": "sync", "AsyncClient": "aio", "ExtractResult": "batch", "RemoteError": "errors",
    "Completion": "wire", "Delta": "wire", "Compiled": "wire", "Usage": "wire", "Timings": "wire",
    "build_request": "wire", "Choice": "wire", "TokenLogprob": "wire", "BudgetClosedWarning": "errors",
    "ReplicaStatus": "balancer",
}


__getattr__ = lazy_getattr(__name__, _EXPORTS)


__all__ = ["Client", "AsyncClient", "Completion", "Delta", "Compiled", "ExtractResult", "Usage", "Timings",
           "RemoteError", "build_request", "Choice", "TokenLogprob", "BudgetClosedWarning",
           "ReplicaStatus"]
