"""KV-cache manager over the block pool: the only API the scheduler touches.

``match_prefix`` (lookup), ``count_evictable_hits``, ``touch_hits`` (take hit blocks),
``allocate`` (new blocks, LRU eviction), ``free_blocks`` (reverse order) and
``cache_block`` (register a full block's hash) — vLLM's ``KVCacheManager`` /
``BlockPool`` semantics, see ``oracle/engine/README.md``.

Pool arrays (all replicas, flat; ``rbase = r * N``, ``fbase = r * (N + 2)``, ``hbase = r * C``):
``ref_cnt`` i4[R*N], ``blk_hash`` u8[R*N] (0 = none), ``blk_sess`` i8[R*N] (producing
session label), ``fq_prev``/``fq_next`` i4[R*(N+2)], ``hm`` u8[2*R*C] (interleaved keys/values),
``num_free`` i4[R], ``num_mapped`` i8[R]. Block tables hold local block ids.
"""

from __future__ import annotations

from oracle.kernels._jit import jit
from oracle.kernels.blockpool import fq_pop_front, fq_push_back, fq_remove, hm_delete, hm_find, hm_insert, hm_slot
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
def allocate(num_blocks, r, n, rbase, fbase, hbase, mask, ref_cnt, blk_hash, fq_prev, fq_next,
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
        h = blk_hash[rbase + b]
        if h != 0:
            hm_delete(hbase, mask, h, hm)
            blk_hash[rbase + b] = 0
            num_mapped[r] -= 1
        ref_cnt[rbase + b] = 1
        table[t_start + k] = b
    num_free[r] -= num_blocks


@jit(inline="always")
def free_blocks(table, t_start, num_blocks, r, n, rbase, fbase, ref_cnt, fq_prev, fq_next, num_free):
    """Release a request's blocks, last block first; blocks reaching ref_cnt 0 go to the
    free-queue tail (so the end of a prefix chain is evicted first). They keep their hash."""
    for k in range(num_blocks - 1, -1, -1):
        if k >= AHEAD:
            pb = table[t_start + k - AHEAD]
            prefetch(ref_cnt, rbase + pb)
            prefetch(fq_prev, fbase + pb)
        b = table[t_start + k]
        ref_cnt[rbase + b] -= 1
        if ref_cnt[rbase + b] == 0:
            fq_push_back(fbase, n, b, fq_prev, fq_next)
            num_free[r] += 1


@jit(inline="always")
def cache_block(b, h, label, r, rbase, hbase, mask, blk_hash, blk_sess, hm, num_mapped):
    """Register full block ``b`` under hash ``h`` unless the hash is already mapped (then the
    block stays unhashed: duplicates are not merged). Returns True if registered."""
    if hm_insert(hbase, mask, h, b, hm):
        blk_hash[rbase + b] = h
        blk_sess[rbase + b] = label
        num_mapped[r] += 1
        return True
    return False
