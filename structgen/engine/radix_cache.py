"""RadixCache: a radix tree over token ids whose edges are whole KV pages, mapping prefixes to KV blocks.

Keys are page-aligned: only full blocks (`page_size` tokens) are ever stored, so a cached block is never
written again and a sequence that reuses it starts its own writes in a fresh block.

Holding rules (what mutates and when a handle is safe):
- The cache holds one BlockManager reference on every block it stores (taken in `insert`, dropped on eviction).
- `lock(node)` pins `node` and all its ancestors against eviction; every sequence that uses blocks of the
  tree locks the deepest node it uses and unlocks it when it lets go. A node returned by `match_prefix` or
  `insert` is safe to use until the next `evict` unless it is locked.
- `evict(n)` drops least-recently-used unlocked leaves until `n` blocks went back to the pool (or none is left).

Pure Python, no tensors: the constructor needs only the page size (tests build it with no model or device).
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Sequence

from .block_manager import BlockManager


@dataclass(eq=False)
class RadixNode:
    key: tuple[int, ...] = ()           # tokens of this edge, a multiple of page_size long
    blocks: list[int] = field(default_factory=list)  # one block per page of `key`
    parent: "RadixNode | None" = None
    children: dict[tuple[int, ...], "RadixNode"] = field(default_factory=dict)  # first page -> child
    lock_ref: int = 0
    last_access: int = 0


@dataclass
class PrefixMatch:
    num_tokens: int                     # matched tokens (a multiple of page_size)
    blocks: list[int]                   # the KV blocks of those tokens, in order
    node: RadixNode                     # deepest matched node (the root when nothing matched)


class RadixCache:
    def __init__(self, page_size: int, block_manager: BlockManager | None = None):
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        if block_manager is not None and block_manager.block_size != page_size:
            raise ValueError("the radix cache's page size must equal the KV block size")
        self.page_size = page_size
        self.block_manager = block_manager
        self.root = RadixNode()
        self.root.lock_ref = 1          # NOTE: the root is never evicted
        self._clock = itertools.count(1)
        self._num_blocks = 0            # blocks stored in the tree
        self._evictable = 0             # blocks stored in unlocked nodes

    # ----- queries -----
    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def evictable_blocks(self) -> int:
        return self._evictable

    def _page(self, tokens: Sequence[int], i: int) -> tuple[int, ...]:
        return tuple(tokens[i:i + self.page_size])

    def _matched_pages(self, node: RadixNode, tokens: Sequence[int], start: int) -> int:
        """How many whole pages of node.key equal tokens[start:] page by page."""
        ps = self.page_size
        n = 0
        for p in range(len(node.blocks)):
            a = start + p * ps
            if a + ps > len(tokens) or tuple(tokens[a:a + ps]) != node.key[p * ps:(p + 1) * ps]:
                break
            n += 1
        return n

    def _split(self, child: RadixNode, pages: int) -> RadixNode:
        """Cut `child` after `pages` pages; return the new upper node (same lock count and age)."""
        ps = self.page_size
        parent = child.parent
        upper = RadixNode(key=child.key[:pages * ps], blocks=child.blocks[:pages], parent=parent,
                          lock_ref=child.lock_ref, last_access=child.last_access)
        child.key = child.key[pages * ps:]
        child.blocks = child.blocks[pages:]
        child.parent = upper
        upper.children[child.key[:ps]] = child
        parent.children[upper.key[:ps]] = upper
        return upper

    def match_prefix(self, tokens: Sequence[int]) -> PrefixMatch:
        """The longest cached page-aligned prefix of `tokens`. Marks the path as recently used."""
        now = next(self._clock)
        node, i, blocks = self.root, 0, []
        n_full = len(tokens) - len(tokens) % self.page_size
        while i < n_full:
            child = node.children.get(self._page(tokens, i))
            if child is None:
                break
            pages = self._matched_pages(child, tokens, i)
            if pages < len(child.blocks):
                child = self._split(child, pages)
            child.last_access = now
            blocks.extend(child.blocks)
            i += pages * self.page_size
            node = child
        return PrefixMatch(num_tokens=i, blocks=blocks, node=node)

    # ----- updates -----
    def insert(self, tokens: Sequence[int], blocks: Sequence[int]) -> RadixNode:
        """Store the full pages of `tokens` (KV in `blocks`, one per page). Pages already in the tree keep
        their blocks (the caller keeps its own copies); new pages take a reference on the caller's blocks.
        Returns the deepest node of the inserted prefix."""
        ps = self.page_size
        n_pages = min(len(tokens) // ps, len(blocks))
        now = next(self._clock)
        node, p = self.root, 0
        while p < n_pages:
            i = p * ps
            child = node.children.get(self._page(tokens, i))
            if child is None:
                new = RadixNode(key=tuple(tokens[i:n_pages * ps]), blocks=list(blocks[p:n_pages]), parent=node,
                                last_access=now)
                node.children[new.key[:ps]] = new
                if self.block_manager is not None:
                    self.block_manager.incref(new.blocks)
                self._num_blocks += len(new.blocks)
                self._evictable += len(new.blocks)
                return new
            pages = min(self._matched_pages(child, tokens, i), n_pages - p)
            if pages < len(child.blocks):
                child = self._split(child, pages)
            child.last_access = now
            p += pages
            node = child
        return node

    def lock(self, node: RadixNode) -> None:
        while node is not None and node is not self.root:
            if node.lock_ref == 0:
                self._evictable -= len(node.blocks)
            node.lock_ref += 1
            node = node.parent

    def unlock(self, node: RadixNode) -> None:
        while node is not None and node is not self.root:
            if node.lock_ref <= 0:
                raise ValueError("unlock of a radix node that is not locked")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self._evictable += len(node.blocks)
            node = node.parent

    def evict(self, num_blocks: int) -> int:
        """Drop least-recently-used unlocked leaves until `num_blocks` blocks were freed in the pool (with a
        block manager) or dropped from the tree (without). Returns that count."""
        heap = [(n.last_access, id(n), n) for n in self._leaves() if n.lock_ref == 0]
        heapq.heapify(heap)
        done = 0
        while done < num_blocks and heap:
            _, _, leaf = heapq.heappop(heap)
            parent = leaf.parent
            del parent.children[leaf.key[:self.page_size]]
            self._num_blocks -= len(leaf.blocks)
            self._evictable -= len(leaf.blocks)
            if self.block_manager is not None:
                done += self.block_manager.decref(leaf.blocks)
            else:
                done += len(leaf.blocks)
            if parent is not self.root and not parent.children and parent.lock_ref == 0:
                heapq.heappush(heap, (parent.last_access, id(parent), parent))
        return done

    def _leaves(self):
        stack = [self.root]
        while stack:
            n = stack.pop()
            if n.children:
                stack.extend(n.children.values())
            elif n is not self.root:
                yield n
