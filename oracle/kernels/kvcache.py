"""KV-cache manager over the block pool: the only door the scheduler, the router and the
loop go through to blocks (vLLM's ``KVCacheManager`` hiding ``BlockPool``).

``match_prefix`` (lookup), ``count_evictable_hits``, ``touch_hits`` (take hit blocks),
``allocate`` (new blocks, LRU eviction), ``free_blocks`` (reverse order), ``cache_block``
(register a full block's hash), and the read-only ``num_free`` / ``num_used`` /
``num_hashed`` / ``producing_session`` — vLLM 0.33.0's ``KVCacheManager`` / ``BlockPool``
semantics, see ``oracle/engine/README.md``.

A :data:`Pool` record holds all replicas' pools in flat arrays; replica ``r`` owns
``[r*N, (r+1)*N)`` of the per-block arrays and of the stack, ``[r*M, (r+1)*M)`` of the ring
and ``[r*C, (r+1)*C)`` of the hash map's slots:

    bi         i4[4*R*N]    per block, one 16-byte row at ``4 * (r*N + b)`` (a quarter of a cache line): REF
                            (references: block tables holding it), DUP (next block registered
                            under the same hash, in registration order; -1 = none; read only
                            for hashed blocks), QPOS (its entry's index in the ring while it
                            waits there, else -1), HASHED (1 if it carries a hash)
    blk_hash   u8[R*N]      hash of a registered block (0 = none)
    blk_sess   i8[R*N]      session label of the request that registered it
    ring       i4[R*M]      free hashed blocks, least recently freed first (lazy; below)
    stack      i4[R*N]      free unhashed blocks, the next one to be reused on top
    qc         i8[R, 3]     RHEAD, RTAIL (ring counters; entry c at ring[r*M + (c & rmask)]),
                            STOP (stack height)
    hm         u8[2*R*C]    hash map: hash -> first block of its duplicate chain
    num_free   i4[R]        free blocks (stack + valid ring entries)
    num_mapped i8[R]        blocks that carry a hash
    n          N, blocks per replica including the null block 0
    rmask      M - 1 (M a power of two >= 2N)
    cmask      C - 1 (C a power of two >= 2N)
    caching    prefix caching on; off, blocks are interchangeable and only ``num_free``
               is kept (no free queue, no block tables, no hashes)

The free queue (vLLM ``FreeKVCacheBlockQueue``) is the stack followed by the ring. That is
exact because of where vLLM puts blocks: a freed block without a hash goes to the queue's
head, one with a hash to its tail, and only hashed blocks ever leave it from the middle (a
prefix hit takes them); so the queue is always [unhashed blocks, last pushed first] +
[hashed blocks, in the order freed]. Taking a hashed block out of the middle only sets its
QPOS to -1: its ring entry goes stale and is skipped when the head reaches it (an entry
``c`` is live iff ``QPOS[ring[c]] == c & rmask``). When the ring is full, its live entries
(at most N - 1 < M / 2) are packed to its head in order, so each push costs O(1) amortized.
Compared with a doubly linked queue, a hit or a free touches only the block's own row:
no neighbour's links.

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
from oracle.kernels.blockpool import hm_delete_slot, hm_find, hm_find_or_insert, hm_slot, hm_slot_of
from oracle.kernels.prefetch import prefetch

# How far ahead block walks issue their memory reads (see oracle.kernels.prefetch).
AHEAD = 8
# bi columns
REF, DUP, QPOS, HASHED = range(4)
# qc columns
RHEAD, RTAIL, STOP = range(3)

Pool = namedtuple("Pool", ["bi", "blk_hash", "blk_sess", "ring", "stack", "qc", "hm", "num_free", "num_mapped", "n",
                           "rmask", "cmask", "caching"])


def _pow2_at_least(x: int) -> int:
    cap = 8
    while cap < x:
        cap *= 2
    return cap


def new_pool(num_replicas: int, n: int, caching: bool) -> Pool:
    """A pool of ``n`` blocks per replica (block 0 = null block), every usable block free.

    Arrays that are read before written are zeroed; ``np.zeros``/``np.empty`` map pages
    lazily, so a run touching few blocks pays for few pages.
    """
    cap = _pow2_at_least(2 * n)
    R = num_replicas
    pool = Pool(bi=np.zeros(4 * R * n, np.int32), blk_hash=np.zeros(R * n, np.uint64),
                blk_sess=np.empty(R * n, np.int64), ring=np.empty(R * cap, np.int32),
                stack=np.empty(R * n, np.int32), qc=np.zeros((R, 3), np.int64),
                hm=np.zeros(2 * R * cap, np.uint64), num_free=np.full(R, n - 1, np.int32),
                num_mapped=np.zeros(R, np.int64), n=np.int64(n), rmask=np.int64(cap - 1), cmask=np.int64(cap - 1),
                caching=bool(caching))
    if caching:
        _init_queues(pool)
    return pool


@jit
def _init_queues(pool):
    """Blocks 1..n-1 free in id order: on the stack, block 1 on top."""
    n = pool.n
    for r in range(pool.num_free.shape[0]):
        for k in range(n - 1):
            pool.stack[r * n + k] = n - 1 - k
        pool.qc[r, STOP] = n - 1
        for b in range(n):
            pool.bi[4 * (r * n + b) + QPOS] = -1


def free_queue(pool: Pool, r: int) -> list[int]:
    """Replica ``r``'s free queue, head (reused first) to tail, as local block ids (plain
    Python, for tests and inspection)."""
    n, m = int(pool.n), int(pool.rmask) + 1
    top = int(pool.qc[r, STOP])
    out = [int(b) for b in pool.stack[r * n:r * n + top][::-1]]
    for c in range(int(pool.qc[r, RHEAD]), int(pool.qc[r, RTAIL])):
        b = int(pool.ring[r * m + (c & (m - 1))])
        if pool.bi[4 * (r * n + b) + QPOS] == c & (m - 1):
            out.append(b)
    return out


# ------------------------------------------------------------------------------ free queue
@jit(inline="always")
def _push_back(pool, r, b):
    """Hashed block ``b`` (local id) joins the free queue's tail."""
    m = pool.rmask + 1
    rb = r * m
    if pool.qc[r, RTAIL] - pool.qc[r, RHEAD] == m:
        _compact(pool, r)
    c = pool.qc[r, RTAIL]
    i = c & pool.rmask
    pool.ring[rb + i] = b
    pool.bi[4 * (r * pool.n + b) + QPOS] = i
    pool.qc[r, RTAIL] = c + 1


@jit(inline="always")
def _compact(pool, r):
    """Pack the ring's live entries to its head, in order (the ring is full)."""
    m = pool.rmask + 1
    rb = r * m
    rbase = r * pool.n
    head = pool.qc[r, RHEAD]
    nc = head
    for c in range(head, pool.qc[r, RTAIL]):
        b = pool.ring[rb + (c & pool.rmask)]
        if pool.bi[4 * (rbase + b) + QPOS] == c & pool.rmask:
            j = nc & pool.rmask
            pool.ring[rb + j] = b
            pool.bi[4 * (rbase + b) + QPOS] = j
            nc += 1
    pool.qc[r, RTAIL] = nc


@jit(inline="always")
def _pop_front(pool, r):
    """Take the free queue's head block (the caller checked it is not empty)."""
    top = pool.qc[r, STOP]
    if top > 0:
        pool.qc[r, STOP] = top - 1
        return pool.stack[r * pool.n + top - 1]
    m = pool.rmask + 1
    rb = r * m
    rbase = r * pool.n
    c = pool.qc[r, RHEAD]
    while True:
        i = c & pool.rmask
        b = pool.ring[rb + i]
        c += 1
        if pool.bi[4 * (rbase + b) + QPOS] == i:
            break
    pool.qc[r, RHEAD] = c
    pool.bi[4 * (rbase + b) + QPOS] = -1
    if c < pool.qc[r, RTAIL]:  # the next entry's row and hash: start reading them
        nb = rbase + pool.ring[rb + (c & pool.rmask)]
        prefetch(pool.bi, 4 * nb)
        prefetch(pool.blk_hash, nb)
    return b


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
    """Index in ``hm`` of the key of hash ``h``'s home slot."""
    return 2 * (r * (pool.cmask + 1) + hm_slot(h, pool.cmask))


# ------------------------------------------------------------------------------- lookups
@jit(inline="always")
def match_prefix(pool, r, hashes, h_start, max_blocks, out_blocks):
    """Leading blocks whose hashes are mapped on replica ``r``, stopping at the first miss
    (at most ``max_blocks``). Touches nothing.

    in: hashes u8[] (all requests), h_start (this request's first hash), max_blocks.
    out: out_blocks i4[>= max_blocks] gets the hit blocks' local ids (if its size allows).
    """
    hbase = r * (pool.cmask + 1)
    k = 0
    record = out_blocks.shape[0] >= max_blocks
    for j in range(min(max_blocks, AHEAD)):
        prefetch(pool.hm, _home(pool, r, hashes[h_start + j]))
    while k < max_blocks:
        if k + AHEAD < max_blocks:
            prefetch(pool.hm, _home(pool, r, hashes[h_start + k + AHEAD]))
        b = hm_find(pool.hm, hbase, pool.cmask, hashes[h_start + k])
        if b < 0:
            break
        if record:
            out_blocks[k] = b
        k += 1
    return k


@jit(inline="always")
def is_mapped(pool, r, h):
    """Is hash ``h`` mapped on replica ``r``? (One probe; touches nothing.)"""
    return hm_find(pool.hm, r * (pool.cmask + 1), pool.cmask, h) >= 0


@jit(inline="always")
def count_evictable_hits(pool, r, hit_blocks, num_hit):
    """How many of the ``num_hit`` hit blocks sit in the free queue (ref_cnt == 0)."""
    rbase = r * pool.n
    cnt = 0
    for k in range(min(num_hit, AHEAD)):
        prefetch(pool.bi, 4 * (rbase + hit_blocks[k]))
    for k in range(num_hit):
        if k + AHEAD < num_hit:
            prefetch(pool.bi, 4 * (rbase + hit_blocks[k + AHEAD]))
        if pool.bi[4 * (rbase + hit_blocks[k]) + REF] == 0:
            cnt += 1
    return cnt


# ------------------------------------------------------------------------------ mutations
@jit(inline="always")
def touch_hits(pool, r, hit_blocks, num_hit, table, t_start):
    """Take the hit blocks: ref_cnt += 1, out of the free queue if free (its ring entry goes
    stale); write them to the block table at ``table[t_start : t_start + num_hit]``."""
    rbase = r * pool.n
    for k in range(num_hit):
        b = hit_blocks[k]
        x = 4 * (rbase + b)
        if pool.bi[x + REF] == 0:
            pool.bi[x + QPOS] = -1
            pool.num_free[r] -= 1
        pool.bi[x + REF] += 1
        table[t_start + k] = b


@jit(inline="always")
def _evict(pool, r, b):
    """Block ``b`` (about to be reused) leaves the hash map if it carries a hash; blocks
    registered under the same hash stay mapped."""
    rbase = r * pool.n
    x = 4 * (rbase + b)
    if pool.bi[x + HASHED] == 0:
        return
    h = pool.blk_hash[rbase + b]
    hbase = r * (pool.cmask + 1)
    i = hm_slot_of(hbase, pool.cmask, h, pool.hm)
    first = np.int64(pool.hm[2 * (hbase + i) + 1])
    if first == b:
        nx = pool.bi[x + DUP]
        if nx < 0:
            hm_delete_slot(hbase, pool.cmask, i, pool.hm)
        else:
            pool.hm[2 * (hbase + i) + 1] = np.uint64(nx)
    else:
        p = first
        while pool.bi[4 * (rbase + p) + DUP] != b:
            p = pool.bi[4 * (rbase + p) + DUP]
        pool.bi[4 * (rbase + p) + DUP] = pool.bi[x + DUP]
    pool.blk_hash[rbase + b] = 0
    pool.bi[x + HASHED] = 0
    pool.num_mapped[r] -= 1


@jit(inline="always")
def allocate(pool, r, num_blocks, table, t_start):
    """Pop ``num_blocks`` blocks from the free-queue head (evicting their hashes) into
    ``table[t_start:]`` with ref_cnt 1. The caller checked ``num_free >= num_blocks``.
    Without caching only the count changes."""
    if pool.caching:
        rbase = r * pool.n
        for k in range(num_blocks):
            b = _pop_front(pool, r)
            _evict(pool, r, b)
            pool.bi[4 * (rbase + b) + REF] = 1
            table[t_start + k] = b
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
    low = num_blocks  # the lowest table index of an unhashed block that reached 0
    for k in range(num_blocks - 1, -1, -1):
        if k >= AHEAD:
            prefetch(pool.bi, 4 * (rbase + table[t_start + k - AHEAD]))
        b = table[t_start + k]
        x = 4 * (rbase + b)
        pool.bi[x + REF] -= 1
        if pool.bi[x + REF] == 0:
            pool.num_free[r] += 1
            if pool.bi[x + HASHED] != 0:
                _push_back(pool, r, b)
            else:
                low = k
    # prepend_n([last, ..., first]) == push_front(first), ..., push_front(last)
    for k in range(low, num_blocks):
        b = table[t_start + k]
        x = 4 * (rbase + b)
        if pool.bi[x + REF] == 0 and pool.bi[x + HASHED] == 0:
            top = pool.qc[r, STOP]
            pool.stack[rbase + top] = b
            pool.qc[r, STOP] = top + 1


@jit(inline="always")
def cache_block(pool, r, b, h, label):
    """Register full block ``b`` of replica ``r`` under hash ``h``, behind any blocks already
    registered under it (vLLM does not de-duplicate); ``label``: the producing session."""
    rbase = r * pool.n
    first = hm_find_or_insert(r * (pool.cmask + 1), pool.cmask, h, b, pool.hm)
    if first >= 0:
        p = first
        while pool.bi[4 * (rbase + p) + DUP] >= 0:
            p = pool.bi[4 * (rbase + p) + DUP]
        pool.bi[4 * (rbase + p) + DUP] = b
    x = 4 * (rbase + b)
    pool.bi[x + DUP] = -1
    pool.bi[x + HASHED] = 1
    pool.blk_hash[rbase + b] = h
    pool.blk_sess[rbase + b] = label
    pool.num_mapped[r] += 1
