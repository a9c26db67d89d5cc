"""The jitted block pool and KV-manager kernels against the plain-Python reference pool.

``oracle/kernels/blockpool.py`` (free queue as arrays, open-addressing hash map) and
``oracle/kernels/kvcache.py`` (``match_prefix``, ``count_evictable_hits``, ``touch_hits``,
``allocate`` with ``_evict``, ``free_blocks``, ``cache_block``) are driven here directly, through a
thin jitted driver that calls them exactly as ``oracle/engine/scheduler.py`` does (a ``Pool``
record and a replica; block-table rows ``(r * s_max + slot) * m``), on a pool built as the
engine builds it (``oracle.kernels.kvcache.new_pool``). Every operation is applied to the same
requests on ``tests/reference/blockpool.py``'s ``BlockPool`` too, and after every operation the
two are compared: free-queue order (every pointer walked), reference counts, block hashes and
session labels, the map's content per hash (jitted: map entry, then the ``dup_next`` chain;
reference: dict insertion order), ``num_free``, ``num_mapped`` and prefix lookups. Block ids
must be identical: both pop the same queue positions.

Hand-written cases draw the free queue in a comment (``H <-> 3 <-> 1 <-> T``) and assert every
pointer of the arrays, as ``tests/test_reference_engine.py`` does for the reference pool.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from reference.blockpool import BlockPool, KVCacheBlock

from oracle.kernels._jit import jit
from oracle.kernels.blockpool import hm_slot
from oracle.kernels.kvcache import (allocate, cache_block, count_evictable_hits, free_blocks, match_prefix, new_pool,
                                    touch_hits)

M = 8       # block-table row length (blocks per request at most)
S_MAX = 4   # request slots per replica


# =============================================================================== jitted driver
# One function per operation, each a transcription of its scheduler.py call site.
@jit
def k_hit(pool, r, hashes, h_start, max_hit, table, row, hit_blocks):
    """scheduler.schedule_waiting: match_prefix, count_evictable_hits, touch_hits (into table[row:])."""
    hit = match_prefix(pool, r, hashes, h_start, max_hit, hit_blocks)
    evictable = 0
    if hit > 0:
        evictable = count_evictable_hits(pool, r, hit_blocks, hit)
    touch_hits(pool, r, hit_blocks, hit, table, row)
    return hit, evictable


@jit
def k_allocate(pool, r, need, table, t_start):
    """scheduler.schedule_waiting / schedule_active: allocate ``need`` blocks into table[t_start:]."""
    allocate(pool, r, need, table, t_start)


@jit
def k_register(pool, r, first, upto, row, hashes, h_start, label, table):
    """scheduler._cache_upto: register blocks first..upto-1 of the request in table row ``row``."""
    for b in range(first, upto):
        cache_block(pool, r, table[row + b], hashes[h_start + b], label)


@jit
def k_free(pool, r, table, row, nb):
    """scheduler._free_request (caching on)."""
    free_blocks(pool, r, table, row, nb)


@jit
def k_lookup(pool, r, hashes, h_start, max_blocks, out):
    """router.route: a lookup that touches nothing (``out`` may be too small to record)."""
    return match_prefix(pool, r, hashes, h_start, max_blocks, out)


@jit
def k_slots(keys, mask, out):
    """hm_slot of every key."""
    for i in range(keys.shape[0]):
        out[i] = hm_slot(keys[i], mask)


def slots(keys, mask: int) -> list[int]:
    keys = np.asarray(keys, np.uint64)
    out = np.empty(keys.shape[0], np.int64)
    k_slots(keys, mask, out)
    return out.tolist()


def hm_capacity(n: int) -> int:
    """Slots per replica of the map new_pool allocates for n blocks."""
    cap = 8
    while cap < 2 * n:
        cap *= 2
    return cap


@functools.lru_cache(maxsize=None)
def keys_by_home(mask: int) -> dict[int, list[int]]:
    """home slot -> hash values with that home slot, small and large (top bit set) alternating.
    The home depends on a key's high half (its tag) alone; every other key shares its tag
    with the key before it, so probes meet tags that match but keys that do not."""
    i = np.arange(1, 1 << 14, dtype=np.uint64)
    tag = (i + np.uint64(1)) // np.uint64(2)
    small = (tag << np.uint64(32)) | i
    large = ((np.uint64(2**32) - tag) << np.uint64(32)) | i
    out: dict[int, tuple[list[int], list[int]]] = {}
    for which, vals in enumerate((small, large)):
        for v, s in zip(vals.tolist(), slots(vals, mask)):
            out.setdefault(s, ([], []))[which].append(v)
    return {s: [x for pair in zip(a, b) for x in pair] for s, (a, b) in out.items()}


# =============================================================================== the pair
@dataclass
class Req:
    """One request, on both sides: replica, hashes (its full blocks' hashes), state."""
    r: int
    hashes: list[int]
    label: int
    h_start: int = 0
    state: str = "new"          # new -> live -> done (-> live again)
    row: int = -1               # table offset of its row (while live)
    slot: int = -1
    nb: int = 0                 # blocks in its table
    num_cached: int = 0         # leading blocks registered (or hit)
    blocks: list[KVCacheBlock] = field(default_factory=list)  # the reference's block table


class Pair:
    """The jitted pool of R replicas and R reference pools, driven through the same operations.

    ``reference=False`` runs the kernels alone (their invariants are still checked).
    """

    def __init__(self, n: int, reqs: list[tuple[int, list[int], int]], num_replicas: int = 1,
                 reference: bool = True):
        self.n, self.R = n, num_replicas
        self.pool = new_pool(num_replicas, n, caching=True)   # as oracle.engine.state.new_state builds it
        p = self.pool
        (self.ref_cnt, self.blk_hash, self.blk_sess, self.dup_next, self.fq_prev, self.fq_next, self.hm,
         self.num_free, self.num_mapped) = (p.ref_cnt, p.blk_hash, p.blk_sess, p.dup_next, p.fq_prev, p.fq_next,
                                            p.hm, p.num_free, p.num_mapped)
        self.table = np.empty(num_replicas * S_MAX * M, np.int32)
        self.cap = self.hm.shape[0] // num_replicas
        assert self.cap == hm_capacity(n)
        self.mask = self.cap - 1
        self.hit_blocks = np.empty(M, np.int32)
        self.reqs: list[Req] = []
        flat: list[int] = []
        for r, hashes, label in reqs:
            assert 0 <= r < num_replicas and len(hashes) <= M and all(h != 0 for h in hashes)
            self.reqs.append(Req(r, list(hashes), label, h_start=len(flat)))
            flat += hashes
        self.hashes = np.array(flat + [0], np.uint64)  # never empty
        self.free_slots = [list(range(S_MAX - 1, -1, -1)) for _ in range(num_replicas)]
        self.refs = [BlockPool(n) for _ in range(num_replicas)] if reference else None
        self.events: set[str] = set()  # what the operations exercised (hypothesis statistics)
        self.after(None, None)

    # ------------------------------------------------------------------ operations
    def arrays(self):
        return (self.ref_cnt, self.blk_hash, self.blk_sess, self.dup_next, self.fq_prev, self.fq_next, self.hm,
                self.table, self.num_free, self.num_mapped)

    def snapshot(self):
        return [a.copy() for a in self.arrays()]

    def admit(self, j: int, max_hit: int) -> tuple[int, int]:
        """A prefix hit of request j (match_prefix + count_evictable_hits + touch_hits). A freed
        request may be admitted again (as after a preemption)."""
        q = self.reqs[j]
        assert q.state in ("new", "done") and 0 <= max_hit <= len(q.hashes)
        q.slot = self.free_slots[q.r].pop()
        q.row = (q.r * S_MAX + q.slot) * M
        q.state = "live"
        snap = self.snapshot()
        hit, evictable = k_hit(self.pool, q.r, self.hashes, q.h_start, max_hit, self.table, q.row, self.hit_blocks)
        ids = self.table[q.row:q.row + hit].tolist()
        assert self.hit_blocks[:hit].tolist() == ids
        if self.refs is not None:
            pool = self.refs[q.r]
            got = pool.lookup(q.hashes, max_hit)
            assert (hit, ids) == (len(got), [b.block_id for b in got])
            assert evictable == sum(b.ref_cnt == 0 for b in got)
            pool.touch(got)
            q.blocks = got
        if evictable:
            self.events.add("hit: on a free block")
        if hit > evictable:
            self.events.add("hit: on an owned block")
        if 0 < hit < max_hit:
            self.events.add("hit: stopped at a miss")
        q.num_cached = q.nb = hit
        self.after(q, snap)
        return hit, evictable

    def alloc(self, j: int, k: int) -> list[int]:
        q = self.reqs[j]
        nb = self.num_blocks(q)
        assert q.state == "live" and k <= self.num_free[q.r] and nb + k <= M
        snap = self.snapshot()
        where = {b: (i, len(c)) for c in self.chains(q.r).values() for i, b in enumerate(c)}
        home = {e[0]: i for i, e in enumerate(self.hm_slots(q.r)) if e}
        k_allocate(self.pool, q.r, k, self.table, q.row + nb)
        ids = self.table[q.row + nb:q.row + nb + k].tolist()
        if self.refs is not None:
            got = self.refs[q.r].allocate(k)
            assert ids == [b.block_id for b in got]
            q.blocks += got
        q.nb = nb + k
        for b in ids:
            if b in where:
                i, size = where[b]
                self.events.add("evict: " + ("sole block of its hash" if size == 1 else "first of a duplicate chain"
                                             if i == 0 else "last of a duplicate chain" if i == size - 1
                                             else "middle of a duplicate chain"))
        for i, e in enumerate(self.hm_slots(q.r)):
            if e and home[e[0]] != i:
                self.events.add("hash map: backward shift moved an entry")
                if i > home[e[0]]:
                    self.events.add("hash map: backward shift moved an entry across the table end")
        self.after(q, snap)
        return ids

    def register(self, j: int, c: int) -> None:
        """cache_block the next c full blocks of request j with its hashes."""
        q = self.reqs[j]
        first, upto = q.num_cached, q.num_cached + c
        assert q.state == "live" and upto <= min(self.num_blocks(q), len(q.hashes))
        snap = self.snapshot()
        k_register(self.pool, q.r, first, upto, q.row, self.hashes, q.h_start, q.label, self.table)
        if self.refs is not None:
            for b in range(first, upto):
                self.refs[q.r].cache_block(q.blocks[b], q.hashes[b], q.label)
        q.num_cached = upto
        self.after(q, snap)

    def free(self, j: int) -> None:
        q = self.reqs[j]
        assert q.state == "live"
        snap = self.snapshot()
        last = [b for b in self.table_ids(q) if self.ref_cnt[q.r * self.n + b] == 1]
        if len({self.blk_hash[q.r * self.n + b] == 0 for b in last}) == 2:
            self.events.add("free: unhashed blocks to the head, hashed ones to the tail")
        k_free(self.pool, q.r, self.table, q.row, self.num_blocks(q))
        if self.refs is not None:
            self.refs[q.r].free_blocks(reversed(q.blocks))
        q.state, q.nb = "done", 0
        self.free_slots[q.r].append(q.slot)
        row = q.row
        q.row = q.slot = -1
        self.after(q, snap, row=row)

    def lookup(self, hashes: list[int], r: int, max_blocks: int | None = None, untouched: bool = True) -> list[int]:
        """Longest mapped prefix in replica r, checked against the reference; touches nothing
        (checked here if ``untouched``)."""
        max_blocks = len(hashes) if max_blocks is None else max_blocks
        arr = np.array([0, 0, *hashes, 0], np.uint64)  # h_start = 2
        before = self.snapshot() if untouched else []
        out = np.full(M + 1, -7, np.int32)
        k = k_lookup(self.pool, r, arr, 2, max_blocks, out)
        assert out[k:].tolist() == [-7] * (M + 1 - k)
        small = np.full(max(max_blocks - 1, 0), -7, np.int32)  # too small: counts, records nothing
        assert k_lookup(self.pool, r, arr, 2, max_blocks, small) == k
        assert (small == -7).all()
        for a, b in zip(before, self.arrays()):
            assert np.array_equal(a, b)
        ids = out[:k].tolist()
        if self.refs is not None:
            assert ids == [b.block_id for b in self.refs[r].lookup(hashes, max_blocks)]
        return ids

    # ------------------------------------------------------------------ bookkeeping
    @staticmethod
    def num_blocks(q: Req) -> int:
        return q.nb if q.state == "live" else 0

    def table_ids(self, q: Req) -> list[int]:
        return self.table[q.row:q.row + self.num_blocks(q)].tolist()

    # ------------------------------------------------------------------ views of the arrays
    def free_queue(self, r: int) -> list[int]:
        """Walk fq_next from HEAD to TAIL, checking every fq_prev on the way; blocks outside the
        queue must carry prev = next = -1."""
        n, fb = self.n, r * (self.n + 2)
        head, tail = n, n + 1
        fq_prev, fq_next = self.fq_prev, self.fq_next
        assert fq_prev[fb + head] == -1 and fq_next[fb + tail] == -1
        out, prev, b = [], head, int(fq_next[fb + head])
        while b != tail:
            assert 1 <= b < n and len(out) < n, f"replica {r}: bad free-queue link to {b} after {out}"
            assert fq_prev[fb + b] == prev, (r, b, prev)
            out.append(b)
            prev, b = b, int(fq_next[fb + b])
        assert fq_prev[fb + tail] == prev
        assert len(set(out)) == len(out)
        for b in set(range(n)) - set(out):
            assert fq_prev[fb + b] == -1 and fq_next[fb + b] == -1, (r, b)
        return out

    def hm_slots(self, r: int) -> list[tuple[int, int] | None]:
        """Replica r's map slot by slot: (key, block) or None (empty: the word is 0). A slot
        holds the key's high half and the block; the full key is the block's hash."""
        out = []
        blk_hash = self.blk_hash
        for w in self.hm[r * self.cap:(r + 1) * self.cap].tolist():
            if w == 0:
                out.append(None)
                continue
            b = w & 0xFFFFFFFF
            assert 1 <= b < self.n, (r, w)
            key = int(blk_hash[r * self.n + b])
            assert key >> 32 == w >> 32, f"slot tag {w >> 32:#x} is not block {b}'s hash {key:#x}"
            out.append((key, b))
        return out

    def chains(self, r: int) -> dict[int, list[int]]:
        """hash -> [map entry, then its dup_next chain]; checks the linear-probing invariant
        (every slot from a key's home slot to its own slot is occupied)."""
        n, mask = self.n, self.mask
        table = self.hm_slots(r)
        keys = [e[0] for e in table if e]
        assert len(set(keys)) == len(keys), "a key twice in the map"
        homes = dict(zip(keys, slots(keys, mask)))
        out = {}
        for i, e in enumerate(table):
            if e is None:
                continue
            key, b = e
            j = homes[key]
            while j != i:
                assert table[j] is not None, f"key {key} in slot {i} unreachable from home {homes[key]}"
                j = (j + 1) & mask
            chain = []
            while b >= 0:
                assert 1 <= b < n and b not in chain, (key, b, chain)
                chain.append(b)
                b = int(self.dup_next[r * n + b])
            out[key] = chain
        return out

    # ------------------------------------------------------------------ checks
    def after(self, q: Req | None, snap, row: int | None = None) -> None:
        """After an operation on request q: nothing outside q's replica slices and q's table
        row changed; every replica matches its reference and satisfies the invariants."""
        if snap is not None:
            row = q.row if row is None else row
            n, cap, r = self.n, self.cap, q.r
            mine = {"n": slice(r * n, (r + 1) * n), "n2": slice(r * (n + 2), (r + 1) * (n + 2)),
                    "hm": slice(r * cap, (r + 1) * cap), "R": slice(r, r + 1),
                    "table": slice(row, row + M)}
            kinds = ["n", "n", "n", "n", "n2", "n2", "hm", "table", "R", "R"]
            for name, kind, old, new in zip(("ref_cnt", "blk_hash", "blk_sess", "dup_next", "fq_prev", "fq_next",
                                             "hm", "table", "num_free", "num_mapped"), kinds, snap,
                                            self.arrays()):
                keep = np.ones(old.shape[0], bool)
                keep[mine[kind]] = False
                assert np.array_equal(old[keep], new[keep]), f"{name} changed outside replica {r} / row {row}"
        for r in range(self.R):
            self.check_invariants(r)
            if self.refs is not None:
                self.compare(r)
        if self.refs is not None:  # every request's prefix, in the replica operated on
            before = self.snapshot()
            for r in range(self.R) if q is None else [q.r]:
                for hashes in {tuple(other.hashes) for other in self.reqs}:
                    self.lookup(list(hashes), r, untouched=False)
            for a, b in zip(before, self.arrays()):
                assert np.array_equal(a, b)

    def check_invariants(self, r: int) -> None:
        """The kernel arrays alone: free + used = total, ref_cnt >= 0 and equal to the number of
        live block tables holding the block, no block both free and owned, the null block
        untouched, every hashed block reachable from its hash's chain exactly once."""
        n = self.n
        free = self.free_queue(r)
        assert len(free) == self.num_free[r]
        rc = self.ref_cnt[r * n:(r + 1) * n].tolist()
        owned = Counter(b for q in self.reqs if q.r == r and q.state == "live" for b in self.table_ids(q))
        assert 0 not in owned and rc[0] == 0 and 0 not in free and self.blk_hash[r * n] == 0
        for b in range(1, n):
            assert rc[b] >= 0
            assert rc[b] == owned[b], (r, b, rc[b], owned[b])
            assert (rc[b] == 0) == (b in free), f"replica {r}: block {b} ref {rc[b]}, free {b in free}"
        assert sum(c > 0 for c in rc) + len(free) == n - 1
        hashed = {b: int(self.blk_hash[r * n + b]) for b in range(n) if self.blk_hash[r * n + b]}
        chains = self.chains(r)
        seen = Counter(b for chain in chains.values() for b in chain)
        assert set(seen) == set(hashed) and all(c == 1 for c in seen.values()), (seen, hashed)
        for h, chain in chains.items():
            assert all(hashed[b] == h for b in chain)
        assert self.num_mapped[r] == len(hashed)

    def compare(self, r: int) -> None:
        """Replica r against its reference pool."""
        n, pool = self.n, self.refs[r]
        assert self.free_queue(r) == [b.block_id for b in pool.free_block_queue.get_all_free_blocks()]
        assert self.ref_cnt[r * n:(r + 1) * n].tolist() == [b.ref_cnt for b in pool.blocks]
        assert self.blk_hash[r * n:(r + 1) * n].tolist() == [b.block_hash or 0 for b in pool.blocks]
        for b in pool.blocks:
            if b.block_hash is not None:
                assert self.blk_sess[r * n + b.block_id] == b.session_label
        assert self.chains(r) == mapped(pool)
        assert self.num_free[r] == pool.num_free
        assert self.num_mapped[r] == pool.num_cached
        owned = Counter(b.block_id for q in self.reqs if q.r == r and q.state == "live" for b in q.blocks)
        pool.check_invariants(dict(owned))
        for q in self.reqs:
            if q.r == r and q.state == "live":
                assert self.table_ids(q) == [b.block_id for b in q.blocks]


def mapped(pool: BlockPool) -> dict[int, list[int]]:
    return {h: list(blocks) for h, blocks in pool.cached_block_hash_to_block.items()}


def assert_fq(p: Pair, r: int, ids: list[int]) -> None:
    """Every pointer of replica r's free queue: H <-> ids[0] <-> ... <-> ids[-1] <-> T, and
    prev = next = -1 on every other block."""
    n, fb = p.n, r * (p.n + 2)
    chain = [n, *ids, n + 1]
    for a, b in zip(chain, chain[1:]):
        assert p.fq_next[fb + a] == b, (a, b)
        assert p.fq_prev[fb + b] == a, (a, b)
    assert p.fq_prev[fb + n] == -1 and p.fq_next[fb + n + 1] == -1
    for b in set(range(n)) - set(ids):
        assert p.fq_prev[fb + b] == -1 and p.fq_next[fb + b] == -1, b
    assert p.num_free[r] == len(ids)


def ref_of(p: Pair, r: int = 0) -> list[int]:
    return p.ref_cnt[r * p.n:(r + 1) * p.n].tolist()


# =============================================================================== hand-written
def test_hm_slot_is_fibonacci_hashing_of_the_high_half():
    keys = [1, 2, 3, 12345, 2**32, 3 << 32 | 7, 2**63, 2**64 - 1]
    for mask in (7, 15, 127):
        expect = [(((k >> 32) * 11400714819323198485) % 2**64 >> 20) & mask for k in keys]
        assert slots(keys, mask) == expect


def test_empty_pool():
    # N = 1: only the null block.  H <-> T
    p = Pair(1, [(0, [5, 6], 0)])
    assert_fq(p, 0, [])
    assert p.num_free[0] == 0 and p.num_mapped[0] == 0
    assert p.lookup([5, 6], 0) == []
    assert p.admit(0, 2) == (0, 0)
    assert p.alloc(0, 0) == []  # allocate(0) is a no-op
    p.free(0)
    assert_fq(p, 0, [])
    assert ref_of(p) == [0]


def test_one_block():
    # N = 2: block 1 only.  H <-> 1 <-> T
    p = Pair(2, [(0, [9], 4), (0, [9], 5), (0, [8], 6)])
    assert_fq(p, 0, [1])
    assert p.admit(0, 1) == (0, 0)
    assert p.alloc(0, 1) == [1]
    # H <-> T
    assert_fq(p, 0, [])
    p.register(0, 1)
    assert p.chains(0) == {9: [1]} and p.blk_sess[1] == 4 and p.dup_next[1] == -1
    p.free(0)
    # H <-> 1 <-> T      (1 keeps hash 9)
    assert_fq(p, 0, [1])
    assert p.blk_hash[1] == 9 and p.num_mapped[0] == 1
    assert p.admit(1, 1) == (1, 1)  # hit on the free block: taken out of the queue
    # H <-> T
    assert_fq(p, 0, [])
    assert ref_of(p) == [0, 1]
    p.free(1)
    # H <-> 1 <-> T
    assert_fq(p, 0, [1])
    assert p.admit(2, 1) == (0, 0)
    assert p.alloc(2, 1) == [1]  # evicts hash 9
    assert_fq(p, 0, [])
    assert p.hm_slots(0) == [None] * 8 and p.blk_hash[1] == 0 and p.num_mapped[0] == 0
    assert p.lookup([9], 0) == []


def test_exactly_full_and_back():
    p = Pair(5, [(0, [1, 2, 3, 4], 0)])
    # H <-> 1 <-> 2 <-> 3 <-> 4 <-> T
    assert_fq(p, 0, [1, 2, 3, 4])
    p.admit(0, 0)
    assert p.alloc(0, 4) == [1, 2, 3, 4]
    # H <-> T
    assert_fq(p, 0, [])
    assert ref_of(p) == [0, 1, 1, 1, 1]
    p.register(0, 2)
    p.free(0)
    # reversed table 4, 3, 2, 1: 4 and 3 unhashed -> head (4 first), 2 and 1 hashed -> tail
    # H <-> 4 <-> 3 <-> 2 <-> 1 <-> T
    assert_fq(p, 0, [4, 3, 2, 1])
    assert p.chains(0) == {1: [1], 2: [2]}


def test_duplicates_evict_first_registered_then_second_answers():
    p = Pair(5, [(0, [7], 3), (0, [7], 4), (0, [], 0), (0, [7], 0)])
    p.admit(0, 0)
    p.admit(1, 0)  # both miss: the same content computed twice at once
    assert p.alloc(0, 1) == [1] and p.alloc(1, 1) == [2]
    p.register(0, 1)
    p.register(1, 1)
    # map: 7 -> 1, dup_next 1 -> 2 -> -1
    assert p.chains(0) == {7: [1, 2]}
    assert p.dup_next[1] == 2 and p.dup_next[2] == -1 and p.num_mapped[0] == 2
    assert p.lookup([7], 0) == [1]
    p.free(0)
    # H <-> 3 <-> 4 <-> 1 <-> T
    assert_fq(p, 0, [3, 4, 1])
    p.admit(2, 0)
    assert p.alloc(2, 3) == [3, 4, 1]  # 1 evicted: its map entry now names 2
    assert_fq(p, 0, [])
    assert p.chains(0) == {7: [2]} and p.dup_next[2] == -1 and p.num_mapped[0] == 1
    assert p.lookup([7], 0) == [2]
    assert p.admit(3, 1) == (1, 0)  # hits block 2 (owned, not evictable)
    assert ref_of(p) == [0, 1, 2, 1, 1]


def test_duplicates_evict_middle_of_three():
    p = Pair(6, [(0, [7], 0), (0, [7], 1), (0, [7], 2), (0, [], 3)])
    for j in range(3):
        p.admit(j, 0)
        assert p.alloc(j, 1) == [j + 1]
        p.register(j, 1)
    # map: 7 -> 1 -> 2 -> 3
    assert p.chains(0) == {7: [1, 2, 3]}
    p.free(1)
    # H <-> 4 <-> 5 <-> 2 <-> T
    assert_fq(p, 0, [4, 5, 2])
    p.admit(3, 0)
    assert p.alloc(3, 3) == [4, 5, 2]
    # 7 -> 1 -> 3: the middle block unlinked, the map entry unchanged
    assert p.chains(0) == {7: [1, 3]}
    assert p.dup_next[1] == 3 and p.dup_next[3] == -1 and p.blk_hash[2] == 0
    assert p.lookup([7], 0) == [1]
    # evict the last one too: free request 2 (block 3), then take it
    p.free(3)
    p.free(2)
    # request 3 frees 2, 5, 4 (unhashed: head, last block first), then request 2 frees 3 (hashed: tail)
    # H <-> 2 <-> 5 <-> 4 <-> 3 <-> T
    assert_fq(p, 0, [2, 5, 4, 3])


def test_free_puts_partial_blocks_first_and_hashed_blocks_last():
    p = Pair(8, [(0, [11, 22], 0), (0, [11, 22, 33], 1), (0, [], 2)])
    p.admit(0, 0)
    assert p.alloc(0, 4) == [1, 2, 3, 4]
    p.register(0, 2)
    # H <-> 5 <-> 6 <-> 7 <-> T
    assert_fq(p, 0, [5, 6, 7])
    assert p.admit(1, 3) == (2, 0)  # hits 1, 2 (owned by request 0)
    assert p.alloc(1, 1) == [5]
    # H <-> 6 <-> 7 <-> T
    assert ref_of(p) == [0, 2, 2, 1, 1, 1, 0, 0]
    p.free(0)
    # reversed table 4, 3, 2, 1: 4 and 3 reach 0 unhashed -> head in that order; 2, 1 still held
    # H <-> 4 <-> 3 <-> 6 <-> 7 <-> T
    assert_fq(p, 0, [4, 3, 6, 7])
    assert ref_of(p) == [0, 1, 1, 0, 0, 1, 0, 0]
    p.register(1, 1)  # block 5 gets hash 33
    p.free(1)
    # reversed table 5, 2, 1: all hashed -> tail in that order
    # H <-> 4 <-> 3 <-> 6 <-> 7 <-> 5 <-> 2 <-> 1 <-> T
    assert_fq(p, 0, [4, 3, 6, 7, 5, 2, 1])
    p.admit(2, 0)
    assert p.alloc(2, 6) == [4, 3, 6, 7, 5, 2]  # evicts 33 then 22; 11 stays
    assert p.chains(0) == {11: [1]} and p.num_mapped[0] == 1


def test_free_sends_each_group_to_its_end():
    # A table whose hashed and unhashed blocks reach 0 in one free: the unhashed ones
    # (the partial tail) go to the head, the hashed ones to the tail, each in reversed order.
    p = Pair(7, [(0, [1, 2, 3], 0)])
    p.admit(0, 0)
    assert p.alloc(0, 5) == [1, 2, 3, 4, 5]
    p.register(0, 3)
    # H <-> 6 <-> T
    p.free(0)
    # H <-> 5 <-> 4 <-> 6 <-> 3 <-> 2 <-> 1 <-> T
    assert_fq(p, 0, [5, 4, 6, 3, 2, 1])


def test_backward_shift_deletion_with_colliding_keys():
    # N = 5 -> 16 slots (mask 15). Keys A, B home 15; E home 1; F home 0. Registered in that
    # order on blocks 1, 2, 3, 4:   slot 15: A/1,  0: B/2 (wrapped),  1: E/3,  2: F/4 (0, 1 taken)
    n = 5
    mask = hm_capacity(n) - 1
    assert mask == 15
    cands = keys_by_home(mask)
    A, B, E, F = cands[15][0], cands[15][1], cands[1][0], cands[0][0]
    assert slots([A, B, E, F], mask) == [15, 15, 1, 0]
    p = Pair(n, [(0, [A], 0), (0, [B], 0), (0, [E], 0), (0, [F], 0), (0, [], 0), (0, [], 0), (0, [], 0)])
    for j in range(4):
        p.admit(j, 0)
        p.alloc(j, 1)
        p.register(j, 1)
    empty = [None] * 16
    assert p.hm_slots(0) == [(B, 2), (E, 3), (F, 4), *empty[3:15], (A, 1)]
    for j in range(4):
        p.free(j)
    # H <-> 1 <-> 2 <-> 3 <-> 4 <-> T   (all hashed, appended in the order freed)
    assert_fq(p, 0, [1, 2, 3, 4])
    p.admit(4, 0)
    assert p.alloc(4, 1) == [1]
    # A leaves slot 15: B (home 15, in slot 0) moves back across the wrap to 15; E (home 1,
    # slot 1) stays; F (home 0, slot 2) moves to 0; slot 2 is emptied.
    assert p.hm_slots(0) == [(F, 4), (E, 3), *empty[2:15], (B, 2)]
    assert p.lookup([B], 0) == [2] and p.lookup([E], 0) == [3] and p.lookup([F], 0) == [4]
    assert p.lookup([A], 0) == []
    p.admit(5, 0)
    assert p.alloc(5, 1) == [2]
    # B leaves slot 15: F (home 0, slot 0) stays -- 0 is in the cyclic range (15, 0]; E stays.
    assert p.hm_slots(0) == [(F, 4), (E, 3), *empty[2:]]
    p.admit(6, 0)
    assert p.alloc(6, 2) == [3, 4]
    assert p.hm_slots(0) == empty and p.num_mapped[0] == 0


def test_keys_sharing_a_tag_are_told_apart_by_the_blocks_hash():
    # A slot keeps the key's high half (the tag) and the block; K1, K2, K3 share a tag (so a
    # home slot), and a probe whose tag matches compares the block's own hash with the key.
    n = 5
    t = 0x9E3779B9 << 32
    K1, K2, K3 = t | 1, t | 2, t | 3
    home = slots([K1], hm_capacity(n) - 1)[0]
    assert slots([K1, K2, K3], hm_capacity(n) - 1) == [home] * 3
    p = Pair(n, [(0, [K1], 0), (0, [K2], 0), (0, [], 0)])
    for j in range(2):
        p.admit(j, 0)
        p.alloc(j, 1)
        p.register(j, 1)
    wrap = hm_capacity(n) - 1
    assert p.hm_slots(0)[home] == (K1, 1) and p.hm_slots(0)[(home + 1) & wrap] == (K2, 2)
    assert p.lookup([K2], 0) == [2] and p.lookup([K1], 0) == [1] and p.lookup([K3], 0) == []
    for j in range(2):
        p.free(j)
    p.admit(2, 0)
    assert p.alloc(2, 3) == [3, 4, 1]  # evicts K1: K2 moves back to its home slot
    assert p.hm_slots(0)[home] == (K2, 2) and p.lookup([K2], 0) == [2] and p.lookup([K1], 0) == []


def test_backward_shift_across_the_wrap_moves_the_whole_run():
    # N = 5 -> mask 15. Keys C1, C2, C3 home 14: slots 14, 15, 0 (wrapped); D home 15: slot 1.
    # Deleting C1 (slot 14) pulls the whole run back: C2 -> 14, C3 -> 15, D -> 0, slot 1 empty.
    n = 5
    mask = 15
    cands = keys_by_home(mask)
    C1, C2, C3, D = cands[14][0], cands[14][1], cands[14][2], cands[15][0]
    p = Pair(n, [(0, [C1], 0), (0, [C2], 0), (0, [C3], 0), (0, [D], 0), (0, [], 0), (0, [], 0)])
    for j in range(4):
        p.admit(j, 0)
        p.alloc(j, 1)
        p.register(j, 1)
    empty = [None] * 16
    assert p.hm_slots(0) == [(C3, 3), (D, 4), *empty[2:14], (C1, 1), (C2, 2)]
    for j in range(4):
        p.free(j)
    # H <-> 1 <-> 2 <-> 3 <-> 4 <-> T
    assert_fq(p, 0, [1, 2, 3, 4])
    p.admit(4, 0)
    assert p.alloc(4, 1) == [1]
    assert p.hm_slots(0) == [(D, 4), *empty[1:14], (C2, 2), (C3, 3)]
    assert p.lookup([C2, C3], 0) == [2, 3] and p.lookup([D], 0) == [4]
    p.free(4)
    # 1 is unhashed now: head.  H <-> 1 <-> 2 <-> 3 <-> 4 <-> T
    assert_fq(p, 0, [1, 2, 3, 4])
    p.admit(5, 0)
    assert p.alloc(5, 4) == [1, 2, 3, 4]
    assert p.hm_slots(0) == empty and p.num_mapped[0] == 0


def test_replicas_are_isolated():
    # Two replicas, the same hashes in both: each replica's blocks, queue and map are its own.
    p = Pair(4, [(0, [5, 6], 0), (1, [5, 6], 1), (1, [5, 6], 2), (0, [5], 3)], num_replicas=2)
    p.admit(0, 0)
    assert p.alloc(0, 2) == [1, 2]
    p.register(0, 2)
    assert p.lookup([5, 6], 0) == [1, 2] and p.lookup([5, 6], 1) == []
    assert p.admit(1, 2) == (0, 0)
    assert p.alloc(1, 3) == [1, 2, 3]  # replica 1's own block ids
    p.register(1, 1)
    assert p.chains(0) == {5: [1], 6: [2]} and p.chains(1) == {5: [1]}
    p.free(1)
    # replica 1: H <-> 3 <-> 2 <-> 1 <-> T ; replica 0: H <-> 3 <-> T
    assert_fq(p, 1, [3, 2, 1])
    assert_fq(p, 0, [3])
    assert p.admit(2, 2) == (1, 1)
    assert p.admit(3, 1) == (1, 0)
    assert ref_of(p, 0) == [0, 2, 1, 0] and ref_of(p, 1) == [0, 1, 0, 0]


# =============================================================================== hypothesis
def draw_requests(data, n: int, num_replicas: int, max_requests: int) -> list[tuple[int, list[int], int]]:
    """Requests over a small alphabet of hash values whose home slots crowd one to three slots
    (table ends included, so probe runs wrap): duplicates and shared prefixes are frequent.

    ``raw``: any hash at any position (a request may repeat a hash);
    ``chain``: hashes name token prefixes as the engine's chained hashes do (equal hash at
    position i <=> equal prefix up to i) over a two- or three-letter token alphabet.
    """
    mask = hm_capacity(n) - 1
    cands = keys_by_home(mask)
    homes = data.draw(st.lists(st.sampled_from(sorted({0, 1, mask // 2, mask - 1, mask})), min_size=1, max_size=3,
                               unique=True), label="homes")
    num_req = data.draw(st.integers(2, max_requests), label="num_requests")
    reqs: list[tuple[int, list[int], int]] = []
    if data.draw(st.booleans(), label="chain"):
        letters = data.draw(st.integers(2, 3))
        names: dict[tuple, int] = {}
        used: Counter = Counter()
        seqs: list[list[int]] = []
        for j in range(num_req):
            base: list[int] = []
            if seqs and data.draw(st.booleans()):
                src = seqs[data.draw(st.integers(0, len(seqs) - 1))]
                base = src[:data.draw(st.integers(0, len(src)))]
            toks = base + data.draw(st.lists(st.integers(0, letters - 1), max_size=M - len(base)))
            seqs.append(toks)
            hashes = []
            for i in range(len(toks)):
                key = tuple(toks[:i + 1])
                if key not in names:
                    home = homes[len(names) % len(homes)]
                    names[key] = cands[home][used[home]]
                    used[home] += 1
                hashes.append(names[key])
            reqs.append((data.draw(st.integers(0, num_replicas - 1)), hashes, j if j % 2 else -2 - j))
    else:
        alphabet = data.draw(st.lists(st.tuples(st.sampled_from(homes), st.integers(0, 3)), min_size=1, max_size=5,
                                      unique=True), label="alphabet")
        alphabet = [cands[s][i] for s, i in alphabet]
        for j in range(num_req):
            base = []
            if reqs and data.draw(st.booleans()):
                src = reqs[data.draw(st.integers(0, len(reqs) - 1))][1]
                base = src[:data.draw(st.integers(0, len(src)))]
            hashes = base + data.draw(st.lists(st.sampled_from(alphabet), max_size=M - len(base)))
            reqs.append((data.draw(st.integers(0, num_replicas - 1)), hashes, j if j % 2 else -2 - j))
    return reqs


def run_ops(data, num_replicas: int, max_ops: int, max_requests: int, reference: bool = True) -> Pair:
    """A valid random operation sequence, applied to both sides (checked after each). Small
    pools are drawn as often as large ones, so that blocks cycle and cached blocks get evicted."""
    n = data.draw(st.one_of(st.integers(2, 6), st.integers(2, 12), st.integers(2, 40)), label="n")
    p = Pair(n, draw_requests(data, n, num_replicas, max_requests), num_replicas, reference=reference)
    num_ops = data.draw(st.integers(max_ops // 4, max_ops), label="num_ops")
    for _ in range(num_ops):
        live = [j for j, q in enumerate(p.reqs) if q.state == "live"]
        ops = {
            "alloc": [j for j in live if p.num_blocks(p.reqs[j]) < M and p.num_free[p.reqs[j].r] > 0],
            "register": [j for j in live
                         if min(p.num_blocks(p.reqs[j]), len(p.reqs[j].hashes)) > p.reqs[j].num_cached],
            "admit": [j for j, q in enumerate(p.reqs) if q.state != "live" and p.free_slots[q.r]],
            "free": live,
        }
        kinds = [k for k, js in ops.items() if js]
        if not kinds:
            break
        kind = data.draw(st.sampled_from(kinds))
        j = data.draw(st.sampled_from(ops[kind]))
        q = p.reqs[j]
        if kind == "alloc":
            room = min(M - p.num_blocks(q), int(p.num_free[q.r]))
            p.alloc(j, data.draw(st.integers(1, room)))
        elif kind == "register":
            p.register(j, data.draw(st.integers(1, min(p.num_blocks(q), len(q.hashes)) - q.num_cached)))
        elif kind == "admit":  # as the scheduler admits: the hit, then new blocks
            p.admit(j, data.draw(st.integers(0, len(q.hashes))))
            room = min(M - p.num_blocks(q), int(p.num_free[q.r]))
            need = data.draw(st.integers(0, room))
            if need:
                p.alloc(j, need)
        else:
            p.free(j)
    for e in sorted(p.events):
        event(e)
    return p


@given(st.data())
def test_kernels_match_reference(data):
    run_ops(data, num_replicas=1, max_ops=80, max_requests=16)


@given(st.data())
def test_replica_slices_do_not_interfere(data):
    run_ops(data, num_replicas=data.draw(st.integers(2, 3), label="R"), max_ops=60, max_requests=16)


@given(st.data())
def test_kernel_invariants_on_long_sequences(data):
    # The kernels alone (no reference): free + used = total, ref_cnt >= 0 and = owners, no
    # block both free and owned, every hashed block in its hash's chain exactly once.
    run_ops(data, num_replicas=data.draw(st.integers(1, 2), label="R"), max_ops=120, max_requests=24,
            reference=False)


@pytest.mark.nightly
def test_kernels_match_reference_nightly():
    @settings(settings.get_profile("nightly"))
    @given(st.data())
    def prop(data):
        run_ops(data, num_replicas=data.draw(st.integers(1, 3), label="R"), max_ops=200, max_requests=40)

    prop()
