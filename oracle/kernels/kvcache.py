"""KV-cache manager over the block pool: the only door the scheduler, the router and the
loop go through to blocks (vLLM's ``KVCacheManager`` hiding ``BlockPool``).

``match_prefix`` (lookup), ``count_evictable_hits``, ``touch_hits`` (take hit blocks),
``allocate`` (new blocks, LRU eviction), ``free_blocks`` (reverse order), ``cache_block``
(register a full block's hash), and the read-only ``num_free`` / ``num_used`` /
``num_hashed`` / ``producing_session`` — vLLM 0.33.0's ``KVCacheManager`` / ``BlockPool``
semantics, see ``oracle/engine/README.md``.

A :data:`Pool` record holds all replicas' pools in flat arrays; replica ``r`` owns
``[r*N, (r+1)*N)`` of the per-block arrays, ``[r*(N+2), (r+1)*(N+2))`` of the free-queue links
(two sentinels) and ``[r*C, (r+1)*C)`` of the hash map's slots:

    ref_cnt    i4[R*N]      references (block tables holding the block)
    blk_hash   u8[R*N]      hash of a registered block (0 = none)
    blk_sess   i8[R*N]      session label of the request that registered it
    dup_next   i4[R*N]      next block registered under the same hash, in registration
                            order (-1 = none; read only for hashed blocks)
    fq_prev    i4[R*(N+2)]  free-queue links (see ``oracle.kernels.blockpool``)
    fq_next    i4[R*(N+2)]
    hm         u8[R*C]      hash map: hash -> first block of its duplicate chain (a slot
                            holds the hash's high half; the key is ``blk_hash[first]``)
    num_free   i4[R]        blocks in the free queue
    num_mapped i8[R]        blocks that carry a hash
    n          N, blocks per replica including the null block 0
    cmask      C - 1 (C a power of two >= 2N)
    caching    prefix caching on; off, blocks are interchangeable and only ``num_free``
               is kept (no free queue, no block tables, no hashes)

Duplicates (vLLM ``BlockHashToBlockMap``): every full block is registered, also when another
block already carries its hash; a lookup returns the earliest registered block still mapped
(``get_one_block``); evicting one block leaves the others hittable (``pop(hash, block_id)``).
Chains longer than one block are rare (the same content computed twice at once), so walking
them is cheap.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from oracle.kernels._jit import jit
from oracle.kernels.blockpool import (AHEAD, fq_init, fq_push_back, fq_push_front, fq_remove, hm_delete_slot,
                                      hm_find, hm_find_or_insert, hm_match, hm_set_value, hm_slot, hm_slot_of,
                                      hm_value)
from oracle.kernels.prefetch import prefetch

Pool = namedtuple("Pool", ["ref_cnt", "blk_hash", "blk_sess", "dup_next", "fq_prev", "fq_next", "hm", "num_free",
                           "num_mapped", "n", "cmask", "caching"])


def new_pool(num_replicas: int, n: int, caching: bool) -> Pool:
    """A pool of ``n`` blocks per replica (block 0 = null block), every usable block free.

    Arrays that are read before written are zeroed; ``np.zeros``/``np.empty`` map pages
    lazily, so a run touching few blocks pays for few pages.
    """
    cap = 8
    while cap < 2 * n:
        cap *= 2
    R = num_replicas
    pool = Pool(ref_cnt=np.zeros(R * n, np.int32), blk_hash=np.zeros(R * n, np.uint64),
                blk_sess=np.empty(R * n, np.int64), dup_next=np.empty(R * n, np.int32),
                fq_prev=np.empty(R * (n + 2), np.int32), fq_next=np.empty(R * (n + 2), np.int32),
                hm=np.zeros(R * cap, np.uint64), num_free=np.full(R, n - 1, np.int32),
                num_mapped=np.zeros(R, np.int64), n=np.int64(n), cmask=np.int64(cap - 1), caching=bool(caching))
    if caching:
        _init_queues(pool)
    return pool


@jit
def _init_queues(pool):
    for r in range(pool.num_free.shape[0]):
        fq_init(r * (pool.n + 2), pool.n, pool.fq_prev, pool.fq_next)


# ----------------------------------------------------------------------------------- reads
@jit(inline="always")
def num_free(pool, r):
    """Free blocks of replica ``r`` (cached ones included: they can be evicted)."""
    return pool.num_free[r]


@jit(inline="always")
def num_used(pool, r):
    """Blocks held by requests on replica ``r``."""
    return pool.n - 1 - pool.num_free[r]


@jit(inline="always")
def num_hashed(pool, r):
    """Blocks of replica ``r`` that carry a hash."""
    return pool.num_mapped[r]


@jit(inline="always")
def producing_session(pool, r, b):
    """Session label of the request that registered block ``b`` of replica ``r``."""
    return pool.blk_sess[r * pool.n + b]


@jit(inline="always")
def _home(pool, r, h):
    """Index in ``hm`` of hash ``h``'s home slot."""
    return r * (pool.cmask + 1) + hm_slot(h, pool.cmask)


@jit(inline="always")
def _prefetch_slot_of(pool, r, b):
    """Start reading the map slot of block ``b``'s hash (if it carries one)."""
    h = pool.blk_hash[r * pool.n + b]
    if h != 0:
        prefetch(pool.hm, _home(pool, r, h))


@jit(inline="always")
def _prefetch_links(pool, r, b):
    """Start reading what freeing block ``b`` reads and writes: its reference count, hash
    and free-queue links."""
    prefetch(pool.ref_cnt, r * pool.n + b)
    prefetch(pool.blk_hash, r * pool.n + b)
    prefetch(pool.fq_prev, r * (pool.n + 2) + b)
    prefetch(pool.fq_next, r * (pool.n + 2) + b)


@jit(inline="always")
def prefetch_registration(pool, r, b, h):
    """Start reading what registering block ``b`` under hash ``h`` writes (``cache_block``):
    the map slot of ``h`` and the block's session label and duplicate link."""
    prefetch(pool.hm, _home(pool, r, h))
    prefetch(pool.blk_sess, r * pool.n + b)
    prefetch(pool.dup_next, r * pool.n + b)


# ------------------------------------------------------------------------------- lookups
@jit(inline="always")
def match_prefix(pool, r, hashes, h_start, max_blocks, out_blocks):
    """Leading blocks whose hashes are mapped on replica ``r``, stopping at the first miss
    (at most ``max_blocks``). Touches nothing.

    in: hashes u8[] (all requests), h_start (this request's first hash), max_blocks.
    out: out_blocks i4[>= max_blocks] gets the hit blocks' local ids (if its size allows).
    """
    return hm_match(pool.hm, r * (pool.cmask + 1), pool.cmask, hashes, h_start, max_blocks, pool.blk_hash,
                    r * pool.n, out_blocks)


@jit(inline="always")
def is_mapped(pool, r, h):
    """Is hash ``h`` mapped on replica ``r``? (One probe; touches nothing.)"""
    return hm_find(pool.hm, r * (pool.cmask + 1), pool.cmask, h, pool.blk_hash, r * pool.n) >= 0


@jit(inline="always")
def count_evictable_hits(pool, r, hit_blocks, num_hit):
    """How many of the ``num_hit`` hit blocks sit in the free queue (ref_cnt == 0)."""
    rbase = r * pool.n
    cnt = 0
    for k in range(min(num_hit, AHEAD)):
        prefetch(pool.ref_cnt, rbase + hit_blocks[k])
    for k in range(num_hit):
        if k + AHEAD < num_hit:
            prefetch(pool.ref_cnt, rbase + hit_blocks[k + AHEAD])
        if pool.ref_cnt[rbase + hit_blocks[k]] == 0:
            cnt += 1
    return cnt


# ------------------------------------------------------------------------------ mutations
@jit(inline="always")
def touch_hits(pool, r, hit_blocks, num_hit, table, t_start):
    """Take the hit blocks: ref_cnt += 1, out of the free queue if free; write them to the
    block table at ``table[t_start : t_start + num_hit]``."""
    rbase = r * pool.n
    fbase = r * (pool.n + 2)
    for k in range(num_hit):
        if k + AHEAD < num_hit:
            nb = hit_blocks[k + AHEAD]
            prefetch(pool.fq_prev, fbase + nb)
            prefetch(pool.fq_next, fbase + nb)
        b = hit_blocks[k]
        if pool.ref_cnt[rbase + b] == 0:
            fq_remove(fbase, b, pool.fq_prev, pool.fq_next)
            pool.num_free[r] -= 1
        pool.ref_cnt[rbase + b] += 1
        table[t_start + k] = b


@jit(inline="always")
def _evict(pool, r, b):
    """Block ``b`` (about to be reused) leaves the hash map if it carries a hash; blocks
    registered under the same hash stay mapped."""
    rbase = r * pool.n
    h = pool.blk_hash[rbase + b]
    if h == 0:
        return
    hbase = r * (pool.cmask + 1)
    i = hm_slot_of(hbase, pool.cmask, h, pool.hm, pool.blk_hash, rbase)
    first = hm_value(hbase, i, pool.hm)
    if first == b:
        nx = pool.dup_next[rbase + b]
        if nx < 0:
            hm_delete_slot(hbase, pool.cmask, i, pool.hm)
        else:
            hm_set_value(hbase, i, nx, pool.hm)
    else:
        p = first
        while pool.dup_next[rbase + p] != b:
            p = pool.dup_next[rbase + p]
        pool.dup_next[rbase + p] = pool.dup_next[rbase + b]
    pool.blk_hash[rbase + b] = 0
    pool.num_mapped[r] -= 1


@jit(inline="always")
def _take_next(pool, r, b, table, k):
    """``b`` is the ``k``-th block taken: record it, start reading its state, and return
    the block after it in the queue."""
    rbase = r * pool.n
    fbase = r * (pool.n + 2)
    table[k] = b
    prefetch(pool.blk_hash, rbase + b)
    prefetch(pool.dup_next, rbase + b)
    prefetch(pool.ref_cnt, rbase + b)
    prefetch(pool.fq_prev, fbase + b)
    return pool.fq_next[fbase + b]


@jit(inline="always")
def allocate(pool, r, num_blocks, table, t_start):
    """Pop ``num_blocks`` blocks from the free-queue head (evicting their hashes) into
    ``table[t_start:]`` with ref_cnt 1. The caller checked ``num_free >= num_blocks``.
    Without caching only the count changes.

    The same pops, in the same order, as ``num_blocks`` times ``fq_pop_front`` and evict,
    pipelined so that memory reads overlap: the walk along the queue's links runs ``AHEAD``
    blocks in front of the evictions (starting the reads of each block's state), the map
    slot of a block's hash is read half as far ahead, and the run is unlinked from the
    head at the end."""
    if pool.caching and num_blocks > 0:
        n = pool.n
        rbase = r * n
        fbase = r * (n + 2)
        half = AHEAD // 2
        b = pool.fq_next[fbase + n]
        for k in range(min(num_blocks, AHEAD)):
            b = _take_next(pool, r, b, table, t_start + k)
        for k in range(min(num_blocks, half)):
            _prefetch_slot_of(pool, r, table[t_start + k])
        for k in range(num_blocks):
            if k + AHEAD < num_blocks:
                b = _take_next(pool, r, b, table, t_start + k + AHEAD)
            if k + half < num_blocks:
                _prefetch_slot_of(pool, r, table[t_start + k + half])
            x = table[t_start + k]
            pool.fq_prev[fbase + x] = -1
            pool.fq_next[fbase + x] = -1
            _evict(pool, r, x)
            pool.ref_cnt[rbase + x] = 1
        pool.fq_next[fbase + n] = b  # the first block left in the queue (or the tail)
        pool.fq_prev[fbase + b] = n
    pool.num_free[r] -= num_blocks


@jit(inline="always")
def free_blocks(pool, r, table, t_start, num_blocks):
    """Release a request's ``num_blocks`` blocks at ``table[t_start:]``, last block first
    (vLLM ``BlockPool.free_blocks`` over the reversed block table). Of the blocks reaching
    ref_cnt 0, hashed ones go to the free-queue tail in that order (the end of a prefix chain
    is evicted first; they keep their hash) and unhashed ones to the head, the last block
    first in line (reused before any cached block). Without caching only the count changes.
    """
    if not pool.caching:
        pool.num_free[r] += num_blocks
        return
    n = pool.n
    rbase = r * n
    fbase = r * (n + 2)
    low = num_blocks  # the lowest table index of an unhashed block that reached 0
    for k in range(num_blocks - 1, max(num_blocks - 1 - AHEAD, -1), -1):
        _prefetch_links(pool, r, table[t_start + k])
    for k in range(num_blocks - 1, -1, -1):
        if k >= AHEAD:
            _prefetch_links(pool, r, table[t_start + k - AHEAD])
        b = table[t_start + k]
        pool.ref_cnt[rbase + b] -= 1
        if pool.ref_cnt[rbase + b] == 0:
            pool.num_free[r] += 1
            if pool.blk_hash[rbase + b] != 0:
                fq_push_back(fbase, n, b, pool.fq_prev, pool.fq_next)
            else:
                low = k
    # prepend_n([last, ..., first]) == push_front(first), ..., push_front(last)
    for k in range(low, num_blocks):
        b = table[t_start + k]
        if pool.ref_cnt[rbase + b] == 0 and pool.blk_hash[rbase + b] == 0:
            fq_push_front(fbase, n, b, pool.fq_prev, pool.fq_next)


@jit(inline="always")
def cache_block(pool, r, b, h, label):
    """Register full block ``b`` of replica ``r`` under hash ``h``, behind any blocks already
    registered under it (vLLM does not de-duplicate); ``label``: the producing session."""
    rbase = r * pool.n
    first = hm_find_or_insert(r * (pool.cmask + 1), pool.cmask, h, b, pool.hm, pool.blk_hash, rbase)
    if first >= 0:
        p = first
        while pool.dup_next[rbase + p] >= 0:
            p = pool.dup_next[rbase + p]
        pool.dup_next[rbase + p] = b
    pool.dup_next[rbase + b] = -1
    pool.blk_hash[rbase + b] = h
    pool.blk_sess[rbase + b] = label
    pool.num_mapped[r] += 1
