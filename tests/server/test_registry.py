"""servicer.CompiledRegistry: compile ids never keep a constraint in memory past the compile cache."""

from __future__ import annotations

import gc

import pytest

from structgen.server.servicer import CompiledRegistry
from structgen.server.wire import RequestError


class _Compiled:
    def __init__(self, key):
        self.key = key


def test_ids_are_stable_and_found_while_the_constraint_lives():
    reg = CompiledRegistry(4)
    c = _Compiled("k1")
    cid, seen = reg.put(c)
    assert not seen and cid == CompiledRegistry.id_for(_Compiled("k1"))
    assert reg.get(cid) is c
    assert reg.put(c) == (cid, True)


def test_an_id_does_not_pin_its_constraint():
    reg = CompiledRegistry(4)
    c = _Compiled("k2")
    cid, _ = reg.put(c)
    del c
    gc.collect()
    with pytest.raises(RequestError, match="call Compile again") as e:
        reg.get(cid)
    assert e.value.code.name == "NOT_FOUND"


def test_least_recently_used_ids_go_past_capacity():
    reg = CompiledRegistry(2)
    objs = [_Compiled(f"k{i}") for i in range(3)]
    ids = [reg.put(o)[0] for o in objs]
    with pytest.raises(RequestError):
        reg.get(ids[0])
    assert reg.get(ids[2]) is objs[2]
