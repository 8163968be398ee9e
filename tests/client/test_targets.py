"""Target parsing (structgen/client/targets.py): one server, listed replicas, resolver URIs grpcio balances."""

from __future__ import annotations

import pytest

from structgen.client.targets import parse_targets


def test_one_target_is_passed_through_untouched():
    for text in ("localhost:50051", "unix:/tmp/structgen.sock", "[::1]:50051"):
        t = parse_targets(text)
        assert t.single == text and not t.balanced and not t.listed
    assert parse_targets(["h1:1"]).single == "h1:1"  # a list of one is one target


def test_listed_replicas_from_a_list_or_a_comma_separated_string():
    assert parse_targets(["h1:1", "h2:2"]).replicas == ("h1:1", "h2:2")
    t = parse_targets(" h1:1 , h2:2,h3:3 ")
    assert t.replicas == ("h1:1", "h2:2", "h3:3") and t.single is None and t.listed


def test_resolver_uris_are_one_balanced_target_even_with_commas():
    for uri in ("dns:///structgen.internal:50051", "ipv4:127.0.0.1:1,127.0.0.1:2", "ipv6:[::1]:1,[::1]:2"):
        t = parse_targets(uri)
        assert t.single == uri and t.balanced and not t.listed


@pytest.mark.parametrize("target, error, match", [
    ("", ValueError, "empty"),
    ("h1:1,,h2:2", ValueError, "empty entry"),
    ([], ValueError, "empty entry"),
    (["h1:1", "h1:1"], ValueError, "listed twice"),
    (["h1:1", "dns:///x:1"], ValueError, "resolver URI"),
    (["h1:1", 2], TypeError, "host:port"),
    (50051, TypeError, "target must be"),
])
def test_bad_targets_are_refused_naming_the_problem(target, error, match):
    with pytest.raises(error, match=match):
        parse_targets(target)
