"""KV block pool mechanism (vLLM ``BlockPool`` + ``FreeKVCacheBlockQueue``) as flat arrays.

All replicas share flat arrays; replica ``r`` owns a contiguous slice. Indices inside a
replica are *local* (0..N-1); block 0 is the null block and is never handed out.

Free queue (doubly linked, per replica, ``base = r * (N + 2)``)::

    fq_next[base + HEAD] -> b1 -> b2 -> ... -> TAIL        HEAD = N, TAIL = N + 1
    fq_prev[base + b] is the previous node; a block not in the queue has prev = next = -1

    head side = least recently freed = evicted first

Hash map (per replica, open addressing, linear probing, capacity ``C`` a power of two,
``hbase = r * C``): one u8 array ``hm`` of ``R * C`` slots, each ``tag << 32 | value``, where
``tag`` is the high half of the key (a 64-bit block hash) and ``value`` a local block (or host
slot) id >= 1; 0 = empty slot. The full key is not stored: the owner keeps it anyway
(``keys[kbase + value]``, the block's hash), and a probe whose tag matches checks it there,
so the map answers exactly as one keyed by the full hash, in half the memory (the maps are
most of the cache misses of a chat run). A slot's home depends on its tag alone, so that
deletion can shift later entries back (no tombstones).
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
from oracle.kernels.prefetch import prefetch

# How far ahead walks over many keys or blocks issue their memory reads (see
# oracle.kernels.prefetch).
AHEAD = 8

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


_LOW = 0xFFFFFFFF  # the value half of a slot


@jit(inline="always")
def _home_of_tag(tag, mask):
    """Home slot of a tag (Fibonacci hashing spreads the already mixed key over the table)."""
    return np.int64((tag * np.uint64(11400714819323198485)) >> np.uint64(20)) & mask


@jit(inline="always")
def hm_slot(h, mask):
    """Home slot of hash ``h`` in a map of ``mask + 1`` slots: that of its tag, its high half."""
    return _home_of_tag(np.uint64(h) >> np.uint64(32), mask)


@jit(inline="always")
def _entry(h, v):
    """The slot word of key ``h`` with value ``v``."""
    return ((np.uint64(h) >> np.uint64(32)) << np.uint64(32)) | np.uint64(v)


@jit(inline="always")
def hm_slot_of(hbase, mask, h, hm, keys, kbase):
    """Slot index (within the replica) of key ``h`` (present), or, if absent, of the empty
    slot that ends its probe run. ``keys[kbase + value]`` is the key of a mapped value."""
    tag = np.uint64(h) >> np.uint64(32)
    i = _home_of_tag(tag, mask)
    while True:
        e = hm[hbase + i]
        if e == 0:
            return i
        if (e >> np.uint64(32)) == tag and keys[kbase + np.int64(e & np.uint64(_LOW))] == h:
            return i
        i = (i + 1) & mask


@jit(inline="always")
def hm_find(hm, hbase, mask, h, keys, kbase):
    """Local block id mapped to hash ``h`` in one replica's map, or -1 (``keys[kbase + b]``:
    the key of block ``b``)."""
    e = hm[hbase + hm_slot_of(hbase, mask, h, hm, keys, kbase)]
    return np.int64(e & np.uint64(_LOW)) if e != 0 else np.int64(-1)


@jit(inline="always")
def hm_prefetch(hm, hbase, mask, h):
    """Start reading the home slot of key ``h``."""
    prefetch(hm, hbase + hm_slot(h, mask))


@jit(inline="always")
def hm_match(hm, hbase, mask, hashes, h_start, max_blocks, keys, kbase, out):
    """How many leading keys of ``hashes[h_start : h_start + max_blocks]`` are mapped,
    stopping at the first miss; the home slots are read ``AHEAD`` keys ahead. Their values go
    to ``out[:k]`` when ``out`` (an array, or None) holds ``max_blocks``."""
    record = out is not None and out.shape[0] >= max_blocks
    for j in range(min(max_blocks, AHEAD)):
        hm_prefetch(hm, hbase, mask, hashes[h_start + j])
    k = 0
    while k < max_blocks:
        if k + AHEAD < max_blocks:
            hm_prefetch(hm, hbase, mask, hashes[h_start + k + AHEAD])
        v = hm_find(hm, hbase, mask, hashes[h_start + k], keys, kbase)
        if v < 0:
            break
        if out is not None:
            if record:
                out[k] = v
        k += 1
    return k


@jit(inline="always")
def hm_find_or_insert(hbase, mask, h, v, hm, keys, kbase):
    """The block mapped to ``h``; if none, map ``h -> v`` and return -1. Mutates hm."""
    i = hm_slot_of(hbase, mask, h, hm, keys, kbase)
    e = hm[hbase + i]
    if e != 0:
        return np.int64(e & np.uint64(_LOW))
    hm[hbase + i] = _entry(h, v)
    return np.int64(-1)


@jit(inline="always")
def hm_set_value(hbase, i, v, hm):
    """Map the key of (occupied) slot ``i`` to ``v`` instead; the slot keeps its tag. Mutates hm."""
    hm[hbase + i] = (hm[hbase + i] & ~np.uint64(_LOW)) | np.uint64(v)


@jit(inline="always")
def hm_value(hbase, i, hm):
    """The value of slot ``i``."""
    return np.int64(hm[hbase + i] & np.uint64(_LOW))


@jit(inline="always")
def hm_delete_slot(hbase, mask, i, hm):
    """Empty slot ``i`` with backward-shift deletion. Mutates hm."""
    j = i
    while True:
        j = (j + 1) & mask
        kj = hm[hbase + j]
        if kj == 0:
            break
        home = _home_of_tag(kj >> np.uint64(32), mask)
        # Move entry j back to i if its home slot is not in the cyclic range (i, j].
        if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
            hm[hbase + i] = kj
            i = j
    hm[hbase + i] = 0
