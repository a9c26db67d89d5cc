"""Object-per-block KV block pool, modelled on vLLM's ``BlockPool`` (``vllm/v1/core/block_pool.py``)
and ``FreeKVCacheBlockQueue`` (``vllm/v1/core/kv_cache_utils.py``). Written for clarity, not speed.

Semantics are those of ``oracle/engine/README.md`` ("Block pool"), as vLLM 0.33.0 has them:

* blocks ``0..N-1``; block 0 is the null block and is never handed out (usable: N - 1);
* the free queue starts as ``1, 2, ..., N-1`` (head first); ``allocate`` pops the head and
  evicts the popped block's hash from the map if it has one (``get_new_blocks`` ->
  ``_maybe_evict_cached_block``);
* hash -> *every* block registered under it, in insertion order (``BlockHashToBlockMap``:
  duplicates are kept); a lookup returns the earliest inserted one still mapped
  (``get_one_block``); evicting one block leaves the others hittable (``pop(hash, block_id)``);
* ``free_blocks`` takes blocks in eviction order (callers pass a block table reversed):
  ``ref_cnt -= 1``; of the blocks reaching 0, those without a hash go to the *head* of the
  queue (``prepend_n``, the first given ends up first: reused first) and hashed ones to the
  tail (``append_n``), keeping their hash (``BlockPool.free_blocks``);
* ``touch`` (prefix hit): ``ref_cnt += 1``, removing a free block from the middle of the queue.

The free queue is a doubly linked list through ``KVCacheBlock.prev_free_block`` /
``next_free_block`` with two sentinel blocks, so every operation is O(1)::

    fake_head <-> b1 <-> b2 <-> ... <-> bk <-> fake_tail
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class KVCacheBlock:
    """One KV block: id, reference count, hash (None = unhashed) and free-list links."""

    __slots__ = ("block_id", "ref_cnt", "block_hash", "session_label", "prev_free_block",
                 "next_free_block")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: int | None = None
        # Session label of the request that produced (hashed) this block (README: `session`
        # if >= 0 else -2 - request_id); None while unhashed.
        self.session_label: int | None = None
        self.prev_free_block: KVCacheBlock | None = None
        self.next_free_block: KVCacheBlock | None = None

    def __repr__(self) -> str:
        p = self.prev_free_block.block_id if self.prev_free_block else None
        n = self.next_free_block.block_id if self.next_free_block else None
        return (f"KVCacheBlock(id={self.block_id}, ref={self.ref_cnt}, hash={self.block_hash}, "
                f"prev={p}, next={n})")


class FreeKVCacheBlockQueue:
    """Doubly linked list of free blocks, least recently freed at the head (evicted first)."""

    def __init__(self, blocks: Sequence[KVCacheBlock]):
        self.num_free_blocks = len(blocks)
        # Sentinels: never handed out, never counted (ids -1 / -2 for printing only).
        self.fake_free_list_head = KVCacheBlock(-1)
        self.fake_free_list_tail = KVCacheBlock(-2)
        prev = self.fake_free_list_head
        for b in blocks:
            prev.next_free_block = b
            b.prev_free_block = prev
            prev = b
        prev.next_free_block = self.fake_free_list_tail
        self.fake_free_list_tail.prev_free_block = prev

    def popleft(self) -> KVCacheBlock:
        first = self.fake_free_list_head.next_free_block
        if first is self.fake_free_list_tail:
            raise ValueError("no free block")
        self.remove(first)
        return first

    def remove(self, block: KVCacheBlock) -> None:
        """Unlink ``block`` from anywhere in the list (O(1))."""
        if block.prev_free_block is None or block.next_free_block is None:
            raise ValueError(f"block {block.block_id} is not in the free queue")
        block.prev_free_block.next_free_block = block.next_free_block
        block.next_free_block.prev_free_block = block.prev_free_block
        block.prev_free_block = block.next_free_block = None
        self.num_free_blocks -= 1

    def prepend_n(self, blocks: Sequence[KVCacheBlock]) -> None:
        """Put ``blocks`` at the head, in the given order (``blocks[0]`` becomes the head)."""
        for block in reversed(blocks):
            if block.prev_free_block is not None or block.next_free_block is not None:
                raise ValueError(f"block {block.block_id} is already in the free queue")
            first = self.fake_free_list_head.next_free_block
            self.fake_free_list_head.next_free_block = block
            block.prev_free_block = self.fake_free_list_head
            block.next_free_block = first
            first.prev_free_block = block
            self.num_free_blocks += 1

    def append(self, block: KVCacheBlock) -> None:
        """Put ``block`` at the tail (evicted last)."""
        if block.prev_free_block is not None or block.next_free_block is not None:
            raise ValueError(f"block {block.block_id} is already in the free queue")
        last = self.fake_free_list_tail.prev_free_block
        last.next_free_block = block
        block.prev_free_block = last
        block.next_free_block = self.fake_free_list_tail
        self.fake_free_list_tail.prev_free_block = block
        self.num_free_blocks += 1

    def get_all_free_blocks(self) -> list[KVCacheBlock]:
        out = []
        cur = self.fake_free_list_head.next_free_block
        while cur is not self.fake_free_list_tail:
            out.append(cur)
            cur = cur.next_free_block
        return out


class BlockPool:
    """``num_gpu_blocks`` blocks (block 0 = null block), a free queue and a hash -> blocks map."""

    def __init__(self, num_gpu_blocks: int):
        if num_gpu_blocks < 1:
            raise ValueError("num_gpu_blocks counts the null block and must be >= 1")
        self.num_gpu_blocks = num_gpu_blocks
        self.blocks = [KVCacheBlock(i) for i in range(num_gpu_blocks)]
        self.null_block = self.blocks[0]
        self.free_block_queue = FreeKVCacheBlockQueue(self.blocks[1:])
        # hash -> {block_id: block}, in insertion order (vLLM keeps duplicates)
        self.cached_block_hash_to_block: dict[int, dict[int, KVCacheBlock]] = {}

    # -- queries -----------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return self.free_block_queue.num_free_blocks

    @property
    def num_usable(self) -> int:
        return self.num_gpu_blocks - 1

    @property
    def num_cached(self) -> int:
        """Number of blocks that carry a hash (README: ``kv_blocks_cached``)."""
        return sum(len(blocks) for blocks in self.cached_block_hash_to_block.values())

    def lookup(self, hashes: Sequence[int], max_blocks: int) -> list[KVCacheBlock]:
        """Longest cached prefix of ``hashes``, at most ``max_blocks`` blocks; touches nothing."""
        hit: list[KVCacheBlock] = []
        for h in hashes[:max(max_blocks, 0)]:
            blocks = self.cached_block_hash_to_block.get(int(h))
            if not blocks:
                break
            hit.append(next(iter(blocks.values())))  # the earliest registered

        return hit

    # -- mutations ---------------------------------------------------------------------------
    def allocate(self, n: int) -> list[KVCacheBlock]:
        """Pop ``n`` blocks from the free-queue head (evicting their hashes), ref_cnt = 1."""
        if n > self.num_free:
            raise ValueError(f"cannot allocate {n} blocks, {self.num_free} free")
        out = []
        for _ in range(n):
            blk = self.free_block_queue.popleft()
            self._maybe_evict(blk)
            assert blk.ref_cnt == 0
            blk.ref_cnt = 1
            out.append(blk)
        return out

    def _maybe_evict(self, blk: KVCacheBlock) -> None:
        if blk.block_hash is not None:
            blocks = self.cached_block_hash_to_block[blk.block_hash]
            assert blocks[blk.block_id] is blk
            del blocks[blk.block_id]
            if not blocks:
                del self.cached_block_hash_to_block[blk.block_hash]
            blk.block_hash = None
            blk.session_label = None

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Prefix hit: ref_cnt += 1; a free block (ref_cnt 0) leaves the free queue."""
        for blk in blocks:
            if blk.ref_cnt == 0:
                self.free_block_queue.remove(blk)
            blk.ref_cnt += 1

    def free_blocks(self, blocks_in_eviction_order: Iterable[KVCacheBlock]) -> None:
        """ref_cnt -= 1; of the blocks reaching 0, unhashed ones go to the free-queue head and
        hashed ones to the tail, each group in the given order."""
        first: list[KVCacheBlock] = []
        last: list[KVCacheBlock] = []
        for blk in blocks_in_eviction_order:
            if blk is self.null_block:
                raise ValueError("the null block is never freed")
            blk.ref_cnt -= 1
            if blk.ref_cnt < 0:
                raise ValueError(f"block {blk.block_id} freed more often than allocated")
            if blk.ref_cnt == 0:
                (first if blk.block_hash is None else last).append(blk)
        self.free_block_queue.prepend_n(first)
        for blk in last:
            self.free_block_queue.append(blk)

    def cache_block(self, blk: KVCacheBlock, block_hash: int, session_label: int) -> None:
        """Register a full block under ``block_hash`` (after any blocks already registered
        under it: vLLM does not de-duplicate)."""
        assert blk.block_hash is None, "a block is hashed once"
        blk.block_hash = int(block_hash)
        blk.session_label = session_label
        self.cached_block_hash_to_block.setdefault(int(block_hash), {})[blk.block_id] = blk

    # -- debugging ---------------------------------------------------------------------------
    def check_invariants(self, owned: dict[int, int] | None = None) -> None:
        """Assert the pool is consistent.

        ``owned``: block_id -> number of block tables holding it (if given, ref_cnt must match).
        """
        free = self.free_block_queue.get_all_free_blocks()
        assert len(free) == self.num_free
        free_ids = {b.block_id for b in free}
        assert len(free_ids) == len(free), "a block appears twice in the free queue"
        assert 0 not in free_ids, "the null block is in the free queue"
        used = 0
        for blk in self.blocks[1:]:
            assert blk.ref_cnt >= 0
            if blk.ref_cnt == 0:
                assert blk.block_id in free_ids, f"block {blk.block_id} lost (ref 0, not free)"
            else:
                assert blk.block_id not in free_ids, f"block {blk.block_id} free and owned"
                used += 1
            if owned is not None:
                assert blk.ref_cnt == owned.get(blk.block_id, 0), (blk, owned.get(blk.block_id))
            if blk.block_hash is not None:
                assert self.cached_block_hash_to_block[blk.block_hash].get(blk.block_id) is blk
        assert used + self.num_free == self.num_usable, "free + used != total"
        for h, blocks in self.cached_block_hash_to_block.items():
            assert blocks, "an empty hash entry"
            for bid, blk in blocks.items():
                assert blk.block_hash == h and blk.block_id == bid != 0
        if owned is not None:
            assert 0 not in owned, "the null block is owned"
