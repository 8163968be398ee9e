"""Where a client sends its calls: one server, several listed replicas, or a name grpcio resolves and balances.

    "host:port"                               one server: one channel, exactly as with a single replica
    ["h1:p1", "h2:p2"] or "h1:p1,h2:p2"       listed replicas: one health-checked channel each, the SDK picks
    "dns:///name:port", "ipv4:a:p1,b:p2"      a gRPC name URI: one channel, grpcio's round_robin over what it
                                              resolves, health-checked, grpcio's own retry policy

Only the three URI schemes grpcio can resolve to several addresses (dns, ipv4, ipv6) are balanced by grpcio; any
other string is one target, passed to grpcio untouched, as before several targets existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

# gRPC name-resolver schemes that can stand for several addresses (grpc/doc/naming.md).
BALANCED_SCHEMES = ("dns:", "ipv4:", "ipv6:")


@dataclass(frozen=True)
class Targets:
    """A parsed `target`. `replicas` is set for listed replicas (two or more "host:port"); otherwise `single`
    is the one string handed to grpcio, and `balanced` says whether grpcio balances it (a resolver URI)."""

    single: str | None = None
    balanced: bool = False
    replicas: tuple[str, ...] = ()

    @property
    def listed(self) -> bool:
        return bool(self.replicas)


def parse_targets(target: str | Sequence[str]) -> Targets:
    """`target` as a client was given it -> Targets. Raises ValueError for an empty target or a replica listed
    twice (it would get twice the traffic and break the affinity hash's even spread), TypeError for a non-string."""
    if isinstance(target, str):
        text = target.strip()
        if not text:
            raise ValueError("target is empty: give 'host:port', a list of them, or a 'dns:///name:port' URI")
        if text.startswith(BALANCED_SCHEMES):
            # NOTE: checked before splitting on commas: "ipv4:10.0.0.1:50051,10.0.0.2:50051" is one URI.
            return Targets(single=text, balanced=True)
        names = [part.strip() for part in text.split(",")] if "," in text else [text]
    elif isinstance(target, Sequence):
        names = list(target)
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"each target must be a 'host:port' string, got {type(name).__name__}")
        names = [name.strip() for name in names]
    else:
        raise TypeError(f"target must be 'host:port', a list of them, or a URI, got {type(target).__name__}")
    empty = [i for i, name in enumerate(names) if not name]
    if empty or not names:
        raise ValueError(f"target {target!r} has an empty entry: give 'host:port' for each replica")
    if len(names) == 1:
        return Targets(single=names[0])
    for name in names:
        if name.startswith(BALANCED_SCHEMES):
            raise ValueError(f"target {name!r} is a resolver URI: give it alone (grpcio balances what it resolves), "
                             "or list 'host:port' replicas")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"replica {name!r} is listed twice")
        seen.add(name)
    return Targets(replicas=tuple(names))
