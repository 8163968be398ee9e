import pytest

from structgen.engine.block_manager import BlockManager, OutOfBlocksError


def test_allocate_and_free_return_blocks_to_the_pool():
    bm = BlockManager(num_blocks=4, block_size=16)
    a = bm.allocate(3)
    assert len(set(a)) == 3 and bm.num_free == 1 and bm.num_used == 3
    assert bm.decref(a) == 3
    assert bm.num_free == 4


def test_shared_block_is_freed_only_by_its_last_holder():
    bm = BlockManager(num_blocks=2, block_size=4)
    (b,) = bm.allocate(1)
    bm.incref([b])
    assert bm.ref_count(b) == 2
    assert bm.decref([b]) == 0 and bm.num_free == 1
    assert bm.decref([b]) == 1 and bm.num_free == 2


def test_over_allocation_and_double_free_are_errors():
    bm = BlockManager(num_blocks=2, block_size=4)
    with pytest.raises(OutOfBlocksError):
        bm.allocate(3)
    assert bm.num_free == 2  # a failed allocation takes nothing
    (b,) = bm.allocate(1)
    bm.decref([b])
    with pytest.raises(ValueError, match="double free"):
        bm.decref([b])
    with pytest.raises(ValueError):
        bm.incref([b])


def test_blocks_for_rounds_up():
    bm = BlockManager(num_blocks=1, block_size=16)
    assert [bm.blocks_for(n) for n in (0, 1, 16, 17, 32)] == [0, 1, 1, 2, 2]


@pytest.mark.parametrize("n,bs", [(0, 16), (4, 0)])
def test_bad_sizes_are_rejected(n, bs):
    with pytest.raises(ValueError):
        BlockManager(n, bs)
