"""Host-memory KV tier (vLLM 0.33.0 ``CPUOffloadingManager`` with the ``lru`` policy) as flat
arrays: per replica a map from block hash to a host slot and an LRU list over the slots.

Replica ``r`` owns host slots ``1..C`` (slot 0 unused, as block 0 of the GPU pool), the LRU
links ``[r*(C+3), (r+1)*(C+3))`` (two sentinels, ``oracle.kernels.blockpool`` free-queue
functions: head = least recently used = evicted first) and ``[r*M, (r+1)*M)`` of the map:

    slot_hash  u8[R*(C+1)]   hash held by a slot (0 = never used)
    lru_prev   i4[R*(C+3)]   LRU links (every used slot is in the list)
    lru_next   i4[R*(C+3)]
    hm         u8[R*M]       hash -> slot (``oracle.kernels.blockpool`` hash map; keys in slot_hash)
    num_used   i8[R]         slots handed out so far (fresh slots go in id order, then the
                             LRU head is evicted and its slot reused, as vLLM's chunk pool)
    n          C + 1
    cmask      M - 1 (M a power of two >= 2(C+1))

A hash is held at most once (vLLM's policy is a dict keyed by the offload key). Nothing is
pinned: loads complete within the step that issues them (``oracle/engine/README.md``, "KV
offload"), so every slot is evictable except those of the store offer being served.
"""

from __future__ import annotations

import numpy as np

from oracle.kernels._jit import jit
from oracle.kernels.blockpool import (AHEAD, fq_pop_front, fq_push_back, fq_remove, hm_delete_slot, hm_find,
                                      hm_find_or_insert, hm_match, hm_prefetch, hm_slot_of)


def new_host_arrays(num_replicas: int, num_slots: int) -> tuple:
    """``(slot_hash, lru_prev, lru_next, hm, num_used, n, cmask)`` for ``num_slots`` host
    slots per replica (0: a disabled tier, minimal arrays)."""
    n = num_slots + 1
    cap = 8
    while cap < 2 * n:
        cap *= 2
    R = num_replicas
    prev = np.empty(R * (n + 2), np.int32)
    nxt = np.empty(R * (n + 2), np.int32)
    for r in range(R):  # an empty list: head -> tail
        base = r * (n + 2)
        prev[base + n], nxt[base + n] = -1, n + 1
        prev[base + n + 1], nxt[base + n + 1] = n, -1
    return (np.zeros(R * n, np.uint64), prev, nxt, np.zeros(R * cap, np.uint64),
            np.zeros(R, np.int64), np.int64(n), np.int64(cap - 1))


@jit(inline="always")
def host_match(hm, slot_hash, n, cmask, r, hashes, h_start, max_blocks):
    """Leading hashes ``hashes[h_start : h_start + max_blocks]`` held by replica ``r``'s host
    tier, stopping at the first miss (vLLM ``_maximal_prefix_lookup``). Touches nothing."""
    return hm_match(hm, r * (cmask + 1), cmask, hashes, h_start, max_blocks, slot_hash, r * n, None)


@jit(inline="always")
def host_touch(hm, slot_hash, n, cmask, r, hashes, h_start, num, lru_prev, lru_next):
    """The ``num`` held hashes from ``h_start`` become the most recently used, the last one
    first (so the first ends most recent: a prefix's tail is evicted before its head)."""
    hbase = r * (cmask + 1)
    base = r * (n + 2)
    for k in range(num - 1, -1, -1):
        s = hm_find(hm, hbase, cmask, hashes[h_start + k], slot_hash, r * n)
        fq_remove(base, s, lru_prev, lru_next)
        fq_push_back(base, n, s, lru_prev, lru_next)


@jit(inline="always")
def host_store(n, cmask, r, hashes, h_start, num, slot_hash, lru_prev, lru_next, hm, num_used, slots):
    """Offer ``num`` hashes from ``h_start`` to replica ``r``'s tier (vLLM ``prepare_store``):
    those not held are stored, evicting least recently used slots not in the offer; all of
    them end most recently used, the last first. Returns ``(stored, evicted)``, or
    ``(-1, 0)`` when the new ones do not fit beside the held ones of the offer (vLLM returns
    None: nothing is stored). ``slots`` (i4[>= num], scratch) gets the slot of each offered
    hash held before the offer (-1: not held)."""
    hbase = r * (cmask + 1)
    base = r * (n + 2)
    cap = n - 1
    num_new = 0
    for k in range(min(num, AHEAD)):
        hm_prefetch(hm, hbase, cmask, hashes[h_start + k])
    for k in range(num):
        if k + AHEAD < num:
            hm_prefetch(hm, hbase, cmask, hashes[h_start + k + AHEAD])
        slots[k] = hm_find(hm, hbase, cmask, hashes[h_start + k], slot_hash, r * n)
        if slots[k] < 0:
            num_new += 1
    if num_new > cap - (num - num_new):
        return -1, 0
    # Held hashes of the offer go behind every other slot first, so evictions (from the
    # head) never take one of them (their slots stay theirs); then the offer is walked last
    # to first.
    for k in range(num - 1, -1, -1):
        if slots[k] >= 0:
            fq_remove(base, slots[k], lru_prev, lru_next)
            fq_push_back(base, n, slots[k], lru_prev, lru_next)
    evicted = 0
    for k in range(num - 1, -1, -1):
        h = hashes[h_start + k]
        s = slots[k]
        if s < 0:  # stored by this offer already if the offer repeats a hash
            s = hm_find(hm, hbase, cmask, h, slot_hash, r * n)
        if s >= 0:
            fq_remove(base, s, lru_prev, lru_next)
        else:
            if num_used[r] < cap:
                num_used[r] += 1
                s = num_used[r]
            else:
                s = fq_pop_front(base, n, lru_prev, lru_next)
                hm_delete_slot(hbase, cmask, hm_slot_of(hbase, cmask, slot_hash[r * n + s], hm, slot_hash, r * n), hm)
                evicted += 1
            slot_hash[r * n + s] = h
            hm_find_or_insert(hbase, cmask, h, s, hm, slot_hash, r * n)
        fq_push_back(base, n, s, lru_prev, lru_next)
    return num_new, evicted
