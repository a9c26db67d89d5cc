"""KV block pool mechanism (vLLM ``BlockPool`` + ``FreeKVCacheBlockQueue``) as flat arrays.

All replicas share flat arrays; replica ``r`` owns a contiguous slice. Indices inside a
replica are *local* (0..N-1); block 0 is the null block and is never handed out.

Free queue (doubly linked, per replica, ``base = r * (N + 2)``)::

    fq_next[base + HEAD] -> b1 -> b2 -> ... -> TAIL        HEAD = N, TAIL = N + 1
    fq_prev[base + b] is the previous node; a block not in the queue has prev = next = -1

    head side = least recently freed = evicted first

Hash map (per replica, open addressing, linear probing, capacity ``C`` a power of two,
``hbase = r * C``): one u8 array ``hm`` of ``2 * R * C`` words, key and value interleaved
(key 0 = empty slot; value = local block id). Deletion shifts later entries back (no tombstones).
The value is the *first* block registered under the hash; further blocks with the same hash
(vLLM keeps duplicates) hang behind it in insertion order through ``dup_next`` (see
``oracle.kernels.kvcache``).

Every function here is a small pure kernel over these arrays: inputs first, then scalars,
then the arrays it mutates (documented per function).
"""

from __future__ import annotations

import numpy as np

from oracle.kernels import arith
from oracle.kernels._jit import jit

#: Ceiling division of non-negative integers, compiled from ``oracle.kernels.arith.cdiv``.
cdiv = jit(inline="always")(arith.cdiv)


@jit(inline="always")
def fq_init(base, n, fq_prev, fq_next):
    """Put blocks 1..n-1 in the free queue in id order (block 0 is the null block).

    in: base (i8), n (blocks); out: fq_prev, fq_next (i4, mutated).
    """
    head = n
    tail = n + 1
    fq_prev[base + 0] = -1
    fq_next[base + 0] = -1
    prev = head
    for b in range(1, n):
        fq_next[base + prev] = b
        fq_prev[base + b] = prev
        prev = b
    fq_next[base + prev] = tail
    fq_prev[base + tail] = prev
    fq_prev[base + head] = -1
    fq_next[base + tail] = -1


@jit(inline="always")
def fq_pop_front(base, n, fq_prev, fq_next):
    """Remove and return the head block (caller checks the queue is not empty)."""
    head = n
    b = fq_next[base + head]
    nxt = fq_next[base + b]
    fq_next[base + head] = nxt
    fq_prev[base + nxt] = head
    fq_prev[base + b] = -1
    fq_next[base + b] = -1
    return b


@jit(inline="always")
def fq_remove(base, b, fq_prev, fq_next):
    """Unlink block ``b`` from the middle of the queue in O(1)."""
    p = fq_prev[base + b]
    nx = fq_next[base + b]
    fq_next[base + p] = nx
    fq_prev[base + nx] = p
    fq_prev[base + b] = -1
    fq_next[base + b] = -1


@jit(inline="always")
def fq_push_front(base, n, b, fq_prev, fq_next):
    """Put block ``b`` at the head (reused first)."""
    head = n
    first = fq_next[base + head]
    fq_next[base + head] = b
    fq_prev[base + b] = head
    fq_next[base + b] = first
    fq_prev[base + first] = b


@jit(inline="always")
def fq_push_back(base, n, b, fq_prev, fq_next):
    """Append block ``b`` at the tail (most recently freed, evicted last)."""
    tail = n + 1
    last = fq_prev[base + tail]
    fq_next[base + last] = b
    fq_prev[base + b] = last
    fq_next[base + b] = tail
    fq_prev[base + tail] = b


@jit(inline="always")
def hm_slot(h, mask):
    """Home slot of hash ``h`` in a map of ``mask + 1`` slots (Fibonacci hashing spreads the
    already mixed key over the table)."""
    return np.int64((h * np.uint64(11400714819323198485)) >> np.uint64(20)) & mask


@jit(inline="always")
def hm_find(hm, hbase, mask, h):
    """Local block id mapped to hash ``h`` in one replica's map, or -1.

    ``hm`` interleaves keys and values (u8): slot i of the replica is ``hm[2 * (hbase + i)]``
    (the key, 0 = empty) and ``hm[2 * (hbase + i) + 1]`` (the block id), so a probe touches
    one cache line.
    """
    i = hm_slot(h, mask)
    while True:
        k = hm[2 * (hbase + i)]
        if k == h:
            return np.int64(hm[2 * (hbase + i) + 1])
        if k == 0:
            return np.int64(-1)
        i = (i + 1) & mask


@jit(inline="always")
def hm_find_or_insert(hbase, mask, h, v, hm):
    """The block mapped to ``h``; if none, map ``h -> v`` and return -1. Mutates hm."""
    i = hm_slot(h, mask)
    while True:
        k = hm[2 * (hbase + i)]
        if k == h:
            return np.int64(hm[2 * (hbase + i) + 1])
        if k == 0:
            hm[2 * (hbase + i)] = h
            hm[2 * (hbase + i) + 1] = np.uint64(v)
            return np.int64(-1)
        i = (i + 1) & mask


@jit(inline="always")
def hm_slot_of(hbase, mask, h, hm):
    """Slot index (within the replica) of the present key ``h``."""
    i = hm_slot(h, mask)
    while hm[2 * (hbase + i)] != h:
        i = (i + 1) & mask
    return i


@jit(inline="always")
def hm_delete_slot(hbase, mask, i, hm):
    """Empty slot ``i`` with backward-shift deletion. Mutates hm."""
    j = i
    while True:
        j = (j + 1) & mask
        kj = hm[2 * (hbase + j)]
        if kj == 0:
            break
        home = hm_slot(kj, mask)
        # Move entry j back to i if its home slot is not in the cyclic range (i, j].
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            hm[2 * (hbase + i)] = kj
            hm[2 * (hbase + i) + 1] = hm[2 * (hbase + j) + 1]
            i = j
    hm[2 * (hbase + i)] = 0
    hm[2 * (hbase + i) + 1] = 0
