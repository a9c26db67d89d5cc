"""KV-cache manager over the block pool: the only API the scheduler touches.

``match_prefix`` (lookup), ``count_evictable_hits``, ``touch_hits`` (take hit blocks),
``allocate`` (new blocks, LRU eviction), ``free_blocks`` (reverse order) and
``cache_block`` (register a full block's hash) — vLLM 0.33.0's ``KVCacheManager`` /
``BlockPool`` semantics, see ``oracle/engine/README.md``.

Pool arrays (all replicas, flat; ``rbase = r * N``, ``fbase = r * (N + 2)``, ``hbase = r * C``):
``ref_cnt`` i4[R*N], ``blk_hash`` u8[R*N] (0 = none), ``blk_sess`` i8[R*N] (producing
session label), ``dup_next`` i4[R*N] (next block registered under the same hash, in
insertion order; -1 = none; read only for hashed blocks), ``fq_prev``/``fq_next`` i4[R*(N+2)],
``hm`` u8[2*R*C] (interleaved keys/values: hash -> first block of its duplicate chain),
``num_free`` i4[R], ``num_mapped`` i8[R] (blocks that carry a hash). Block tables hold local
block ids.

Duplicates (vLLM ``BlockHashToBlockMap``): every full block is registered, also when another
block already carries its hash; a lookup returns the earliest registered block still mapped
(``get_one_block``); evicting one block leaves the others hittable (``pop(hash, block_id)``).
Chains longer than one block are rare (the same content computed twice at once), so walking
them is cheap.
"""

from __future__ import annotations

import numpy as np

from oracle.kernels._jit import jit
from oracle.kernels.blockpool import (fq_pop_front, fq_push_back, fq_push_front, fq_remove, hm_delete_slot, hm_find,
                                      hm_find_or_insert, hm_slot, hm_slot_of)
from oracle.kernels.prefetch import prefetch

# How far ahead block walks issue their memory reads (see oracle.kernels.prefetch).
AHEAD = 8


@jit(inline="always")
def _home(h, hbase, mask):
    """Index in ``hm`` of the key of hash ``h``'s home slot."""
    return 2 * (hbase + hm_slot(h, mask))


@jit(inline="always")
def match_prefix(hashes, h_start, max_blocks, hbase, mask, hm, out_blocks):
    """Leading blocks whose hashes are mapped, stopping at the first miss (<= max_blocks).

    in: hashes u8[] (all requests), h_start (this request's first hash), max_blocks.
    out: out_blocks i4[>= max_blocks] gets the hit blocks' local ids (if its size allows).
    """
    k = 0
    record = out_blocks.shape[0] >= max_blocks
    for j in range(min(max_blocks, AHEAD)):
        prefetch(hm, _home(hashes[h_start + j], hbase, mask))
    while k < max_blocks:
        if k + AHEAD < max_blocks:
            prefetch(hm, _home(hashes[h_start + k + AHEAD], hbase, mask))
        b = hm_find(hm, hbase, mask, hashes[h_start + k])
        if b < 0:
            break
        if record:
            out_blocks[k] = b
        k += 1
    return k


@jit(inline="always")
def count_evictable_hits(hit_blocks, num_hit, rbase, ref_cnt):
    """How many of the ``num_hit`` hit blocks sit in the free queue (ref_cnt == 0)."""
    n = 0
    for k in range(min(num_hit, AHEAD)):
        prefetch(ref_cnt, rbase + hit_blocks[k])
    for k in range(num_hit):
        if k + AHEAD < num_hit:
            prefetch(ref_cnt, rbase + hit_blocks[k + AHEAD])
        if ref_cnt[rbase + hit_blocks[k]] == 0:
            n += 1
    return n


@jit(inline="always")
def touch_hits(hit_blocks, num_hit, r, rbase, fbase, ref_cnt, fq_prev, fq_next, num_free, table, t_start):
    """Take the hit blocks: ref_cnt += 1, out of the free queue if free; write them to the
    block table at ``table[t_start : t_start + num_hit]``. Mutates ref_cnt, fq_*, num_free, table."""
    for k in range(num_hit):
        if k + AHEAD < num_hit:
            nb = hit_blocks[k + AHEAD]
            prefetch(fq_prev, fbase + nb)
            prefetch(fq_next, fbase + nb)
        b = hit_blocks[k]
        if ref_cnt[rbase + b] == 0:
            fq_remove(fbase, b, fq_prev, fq_next)
            num_free[r] -= 1
        ref_cnt[rbase + b] += 1
        table[t_start + k] = b


@jit(inline="always")
def _evict(b, r, rbase, hbase, mask, blk_hash, dup_next, hm, num_mapped):
    """Block ``b`` (about to be reused) leaves the hash map if it carries a hash; blocks
    registered under the same hash stay mapped."""
    h = blk_hash[rbase + b]
    if h == 0:
        return
    i = hm_slot_of(hbase, mask, h, hm)
    first = np.int64(hm[2 * (hbase + i) + 1])
    if first == b:
        nx = dup_next[rbase + b]
        if nx < 0:
            hm_delete_slot(hbase, mask, i, hm)
        else:
            hm[2 * (hbase + i) + 1] = np.uint64(nx)
    else:
        p = first
        while dup_next[rbase + p] != b:
            p = dup_next[rbase + p]
        dup_next[rbase + p] = dup_next[rbase + b]
    blk_hash[rbase + b] = 0
    num_mapped[r] -= 1


@jit(inline="always")
def allocate(num_blocks, r, n, rbase, fbase, hbase, mask, ref_cnt, blk_hash, dup_next, fq_prev, fq_next,
             hm, num_free, num_mapped, table, t_start):
    """Pop ``num_blocks`` blocks from the free-queue head (evicting their hashes) into
    ``table[t_start:]`` with ref_cnt 1. The caller checked ``num_free[r] >= num_blocks``."""
    for k in range(num_blocks):
        b = fq_pop_front(fbase, n, fq_prev, fq_next)
        nx = fq_next[fbase + n]  # the next block to be taken: start reading its state
        if nx < n:
            prefetch(blk_hash, rbase + nx)
            prefetch(fq_next, fbase + nx)
            prefetch(ref_cnt, rbase + nx)
        _evict(b, r, rbase, hbase, mask, blk_hash, dup_next, hm, num_mapped)
        ref_cnt[rbase + b] = 1
        table[t_start + k] = b
    num_free[r] -= num_blocks


@jit(inline="always")
def free_blocks(table, t_start, num_blocks, r, n, rbase, fbase, ref_cnt, blk_hash, fq_prev, fq_next, num_free):
    """Release a request's blocks, last block first (vLLM ``BlockPool.free_blocks`` over the
    reversed block table). Of the blocks reaching ref_cnt 0, hashed ones go to the free-queue
    tail in that order (the end of a prefix chain is evicted first; they keep their hash) and
    unhashed ones to the head, the last block first in line (reused before any cached block).
    """
    low = num_blocks  # the lowest table index of an unhashed block that reached 0
    for k in range(num_blocks - 1, -1, -1):
        if k >= AHEAD:
            pb = table[t_start + k - AHEAD]
            prefetch(ref_cnt, rbase + pb)
            prefetch(fq_prev, fbase + pb)
        b = table[t_start + k]
        ref_cnt[rbase + b] -= 1
        if ref_cnt[rbase + b] == 0:
            num_free[r] += 1
            if blk_hash[rbase + b] != 0:
                fq_push_back(fbase, n, b, fq_prev, fq_next)
            else:
                low = k
    # prepend_n([last, ..., first]) == push_front(first), ..., push_front(last)
    for k in range(low, num_blocks):
        b = table[t_start + k]
        if ref_cnt[rbase + b] == 0 and blk_hash[rbase + b] == 0:
            fq_push_front(fbase, n, b, fq_prev, fq_next)


@jit(inline="always")
def cache_block(b, h, label, r, rbase, hbase, mask, blk_hash, blk_sess, dup_next, hm, num_mapped):
    """Register full block ``b`` under hash ``h``, behind any blocks already registered
    under it (vLLM does not de-duplicate)."""
    first = hm_find_or_insert(hbase, mask, h, b, hm)
    if first >= 0:
        p = first
        while dup_next[rbase + p] >= 0:
            p = dup_next[rbase + p]
        dup_next[rbase + p] = b
    dup_next[rbase + b] = -1
    blk_hash[rbase + b] = h
    blk_sess[rbase + b] = label
    num_mapped[r] += 1
