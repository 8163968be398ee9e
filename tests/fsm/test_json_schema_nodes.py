"""The node combinators of json_schema/nodes.py."""

from __future__ import annotations

from structgen.fsm.json_schema.nodes import NEVER, Alt, alt, literal


def test_alt_keeps_every_branch_of_alts_a_generator_yields():
    # An Alt yielded by a generator is dropped once its branches are copied out, and the next one is often allocated
    # at its address: deduplicating by id() took it for a repeat (4 of these 100 branches survived), which silently
    # lost anyOf branches depending on memory layout (a valid key of a real schema was not offered).
    leaves = [literal(f'"k{i}"') for i in range(100)]
    node = alt(Alt([leaves[2 * i], leaves[2 * i + 1]]) for i in range(50))
    assert list(node.branches) == leaves


def test_alt_drops_never_and_true_repeats():
    a, b = literal("1"), literal("2")
    assert alt([a, NEVER, a]) is a
    assert list(alt([a, b, a, Alt([b, a])]).branches) == [a, b, b, a]
    assert alt([NEVER]) is NEVER
