import random

import pytest

from structgen.engine.block_manager import BlockManager
from structgen.engine.radix_cache import RadixCache

PS = 4


def _stored(bm, cache, tokens):
    """Allocate blocks for the full pages of `tokens` and insert them; the caller drops its own refs."""
    blocks = bm.allocate(len(tokens) // PS)
    node = cache.insert(tokens, blocks)
    bm.decref(blocks)
    return blocks, node


def test_match_returns_page_aligned_prefix_blocks():
    bm = BlockManager(16, PS)
    cache = RadixCache(PS, bm)
    toks = list(range(10))               # 2 full pages + 2 spare tokens
    blocks, _ = _stored(bm, cache, toks)
    assert cache.num_blocks == 2
    m = cache.match_prefix(list(range(9)) + [99])
    assert m.num_tokens == 8 and m.blocks == blocks
    m = cache.match_prefix([0, 1, 2, 3, 4, 5, 77, 7])
    assert m.num_tokens == 4 and m.blocks == blocks[:1]
    assert cache.match_prefix([5, 5, 5, 5]).num_tokens == 0


def test_branching_prefixes_share_the_common_pages():
    bm = BlockManager(16, PS)
    cache = RadixCache(PS, bm)
    a, _ = _stored(bm, cache, [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
    b = bm.allocate(3)
    cache.insert([1, 1, 1, 1, 2, 2, 2, 2, 9, 9, 9, 9], b)
    bm.decref(b)
    # The two shared pages keep the first inserter's blocks; only the new page took a reference.
    assert cache.num_blocks == 4
    assert bm.num_used == 4
    m = cache.match_prefix([1, 1, 1, 1, 2, 2, 2, 2, 9, 9, 9, 9, 0])
    assert m.blocks == a[:2] + b[2:]


def test_locked_nodes_are_not_evicted_and_lru_goes_first():
    bm = BlockManager(16, PS)
    cache = RadixCache(PS, bm)
    old, old_node = _stored(bm, cache, [1] * 8)
    new, new_node = _stored(bm, cache, [2] * 8)
    cache.match_prefix([2] * 8)          # touch: `new` is now the most recently used
    cache.lock(old_node)
    assert cache.evictable_blocks == 2
    assert cache.evict(1) == 2           # the whole unlocked leaf goes
    assert cache.match_prefix([2] * 8).num_tokens == 0
    assert cache.match_prefix([1] * 8).num_tokens == 8
    assert cache.evict(10) == 0          # everything left is locked
    cache.unlock(old_node)
    assert cache.evict(10) == 2
    assert bm.num_free == 16 and cache.num_blocks == 0


def test_lru_order():
    bm = BlockManager(16, PS)
    cache = RadixCache(PS, bm)
    _stored(bm, cache, [1] * 4)
    _stored(bm, cache, [2] * 4)
    _stored(bm, cache, [3] * 4)
    cache.match_prefix([1] * 4)
    cache.evict(1)
    assert cache.match_prefix([2] * 4).num_tokens == 0   # least recently used
    assert cache.match_prefix([1] * 4).num_tokens == 4


def test_lock_pins_ancestors_after_a_split():
    bm = BlockManager(16, PS)
    cache = RadixCache(PS, bm)
    _, leaf = _stored(bm, cache, [1] * 12)
    cache.lock(leaf)
    # A match that ends mid-edge splits the node; the upper half stays locked through the leaf.
    m = cache.match_prefix([1] * 8 + [5] * 4)
    assert m.num_tokens == 8
    assert cache.evict(100) == 0
    cache.unlock(leaf)
    assert cache.evictable_blocks == 3
    with pytest.raises(ValueError):
        cache.unlock(leaf)


def test_blocks_held_by_a_sequence_are_not_freed_by_eviction():
    bm = BlockManager(8, PS)
    cache = RadixCache(PS, bm)
    blocks = bm.allocate(2)              # a sequence's blocks
    cache.insert([7] * 8, blocks)        # the cache now shares them (ref 2)
    assert cache.evict(2) == 0           # dropped from the tree, but the sequence still holds them
    assert bm.num_used == 2
    bm.decref(blocks)
    assert bm.num_free == 8


def test_random_inserts_keep_counts_consistent():
    rng = random.Random(0)
    bm = BlockManager(400, PS)
    cache = RadixCache(PS, bm)
    seqs = []
    for _ in range(60):
        base = rng.choice(seqs) if seqs and rng.random() < 0.6 else []
        cut = rng.randrange(0, len(base) + 1) if base else 0
        toks = base[:cut] + [rng.randrange(3) for _ in range(rng.randrange(1, 14))]
        seqs.append(toks)
        m = cache.match_prefix(toks)
        assert toks[:m.num_tokens] == toks[:m.num_tokens] and m.num_tokens % PS == 0
        need = len(toks) // PS - len(m.blocks)
        if need < 0 or need > bm.num_free:
            continue
        bm.incref(m.blocks)
        own = bm.allocate(need)
        cache.insert(toks, m.blocks + own)
        bm.decref(m.blocks + own)
        # Every stored block is held exactly by the cache now.
        assert bm.num_used == cache.num_blocks == cache.evictable_blocks
        again = cache.match_prefix(toks)
        assert again.num_tokens == len(toks) - len(toks) % PS
    cache.evict(10_000)
    assert bm.num_free == 400 and cache.num_blocks == 0


def test_cpu_only_constructor_needs_no_block_manager():
    cache = RadixCache(PS)
    cache.insert([1] * 8, [10, 11])
    assert cache.match_prefix([1] * 9).blocks == [10, 11]
    assert cache.evict(1) == 2
    with pytest.raises(ValueError):
        RadixCache(0)
