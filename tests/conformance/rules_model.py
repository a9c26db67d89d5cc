"""The reference engine with vLLM 0.33.0's six rules patched in: a debugging aid.

``python -m tests.conformance run NAME --side rules`` compares vLLM with this model. It is
``tests/reference/engine.py`` (as of the conformance suite's first commit) with:

1. blocks hashed when scheduled: ``KVCacheManager.allocate_slots`` caches
   ``min(num_computed + new, num_tokens) // block_size`` blocks, before the step runs, so a
   request admitted later in the same step can hit them (nothing is hashed at step end);
2. hence the block completed by a request's last sampled token is never hashed;
3. duplicate hashes all stay mapped (``BlockHashToBlockMap``): a lookup returns the
   earliest-mapped block still carrying the hash, eviction unmaps only the evicted block,
   ``kv_blocks_cached`` counts distinct hashes;
4. ``BlockPool.free_blocks``: blocks reaching ref 0 go, in the given (reversed block table)
   order, to the free-queue head when unhashed (or caching is off), to the tail when hashed;
5. ``scheduler_reserve_full_isl``: a waiting request is admitted only if
   ``cdiv(min(num_tokens, max_model_len), bs) - hit + evictable_hit_blocks <= free``;
6. counters: nothing with caching off; every admission with a lookup counts, first ones
   in ``queries``/``hits`` (``num_tokens``), re-admissions after a preemption in
   ``preempted_requests/queries/hits``.

On the commit that added it, every hand-made, trace and 1,000 generated workloads agreed
with vLLM exactly. It subclasses the reference's internals (``_schedule_running``,
``_schedule_waiting``, ``_finish_scheduled``, ``_outputs``) and is not maintained with it.
"""
import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

from reference.blockpool import FreeKVCacheBlockQueue, KVCacheBlock  # noqa: E402
from reference.engine import ReferenceEngine, Scheduled  # noqa: E402

from oracle.engine.inputs import cdiv  # noqa: E402


class VllmBlockPool:
    """vLLM BlockPool semantics: duplicates stay mapped (hash -> ordered dict of blocks),
    unhashed freed blocks to the head, hashed to the tail."""
    def __init__(self, n, caching):
        self.num_gpu_blocks = n
        self.caching = caching
        self.blocks = [KVCacheBlock(i) for i in range(n)]
        self.q = FreeKVCacheBlockQueue(self.blocks[1:])
        self.map = {}  # hash -> dict(block_id -> block), insertion ordered

    @property
    def num_free(self):
        return self.q.num_free_blocks

    @property
    def num_usable(self):
        return self.num_gpu_blocks - 1

    @property
    def num_cached(self):
        """Distinct hashes mapped (``len(BlockHashToBlockMap)``)."""
        return len(self.map)

    def lookup(self, hashes, max_blocks):
        """``find_longest_cache_hit``: per hash ``get_one_block`` = the earliest-mapped block."""
        hit = []
        for h in hashes[:max(max_blocks, 0)]:
            d = self.map.get(int(h))
            if not d:
                break
            hit.append(next(iter(d.values())))
        return hit

    def allocate(self, n):
        """``get_new_blocks``: pop the head; an evicted block unmaps only itself."""
        out = []
        for _ in range(n):
            b = self.q.popleft()
            if b.block_hash is not None:
                d = self.map[b.block_hash]
                del d[b.block_id]
                if not d:
                    del self.map[b.block_hash]
                b.block_hash = None
                b.session_label = None
            assert b.ref_cnt == 0
            b.ref_cnt = 1
            out.append(b)
        return out

    def touch(self, blocks):
        for b in blocks:
            if b.ref_cnt == 0:
                self.q.remove(b)
            b.ref_cnt += 1

    def free_blocks(self, ordered):
        """``BlockPool.free_blocks``: unhashed (or caching off) to the head, hashed to the tail."""
        first, last = [], []
        for b in ordered:
            b.ref_cnt -= 1
            if b.ref_cnt == 0:
                (first if (b.block_hash is None or not self.caching) else last).append(b)
        # FreeKVCacheBlockQueue.prepend_n keeps the order: first[0] becomes the head
        head = self.q.fake_free_list_head
        nxt = head.next_free_block
        prev = head
        for b in first:
            b.prev_free_block = prev
            prev.next_free_block = b
            prev = b
        prev.next_free_block = nxt
        nxt.prev_free_block = prev
        self.q.num_free_blocks += len(first)
        for b in last:
            self.q.append(b)

    def cache_block(self, b, h, label):
        """``cache_full_blocks``: map the block even if the hash is mapped already."""
        if b.block_hash is not None:
            return
        b.block_hash = int(h)
        b.session_label = label
        self.map.setdefault(int(h), {})[b.block_id] = b


class VllmRulesEngine(ReferenceEngine):
    """``ReferenceEngine`` scheduling with the rules above (one replica is what vLLM has)."""

    def __init__(self, inputs, fn, reserve_full_isl=True):
        super().__init__(inputs, fn)
        for rep in self.replicas:
            rep.pool = VllmBlockPool(self.N, self.caching)
        self.reserve_full_isl = reserve_full_isl
        self.pre_req = self.pre_q = self.pre_h = 0

    def _cache_at_schedule(self, rep, req, c):
        """``allocate_slots`` -> ``cache_blocks(min(num_computed + c, num_tokens))``."""
        if not self.caching:
            return
        upto = min(req.num_computed + c, req.num_tokens)
        stop = min(upto // self.bs, len(req.block_table))
        for b in range(req.num_cached_blocks, stop):
            rep.pool.cache_block(req.block_table[b], req.hashes[b], req.session_label)
        req.num_cached_blocks = max(req.num_cached_blocks, stop)

    def _schedule_running(self, rep, sched, budget):
        preempted = False
        i = 0
        while i < len(rep.running) and budget > 0:
            req = rep.running[i]
            num_new = min(req.num_tokens - req.num_computed, budget)
            need = cdiv(req.num_computed + num_new, self.bs) - len(req.block_table)
            self_pre = False
            while need > rep.pool.num_free:
                victim = rep.running.pop()
                self._preempt(rep, victim)
                preempted = True
                if victim is req:
                    self_pre = True
                    break
            if self_pre:
                break
            req.block_table.extend(rep.pool.allocate(need))
            self._cache_at_schedule(rep, req, num_new)
            sched.append(Scheduled(req, num_new, req.num_computed))
            budget -= num_new
            i += 1
        return budget, preempted

    def _schedule_waiting(self, rep, sched, budget, t):
        while rep.waiting and budget > 0 and len(rep.running) < self.cfg.max_num_seqs:
            req = rep.waiting[0]
            hit = self._lookup(rep, req)
            hit_tokens = len(hit) * self.bs
            num_new = req.num_tokens - hit_tokens
            if not self.cfg.enable_chunked_prefill:
                if num_new > budget:
                    break
            else:
                num_new = min(num_new, budget)
            evictable = sum(1 for blk in hit if blk.ref_cnt == 0)
            if self.reserve_full_isl:
                full = max(cdiv(min(req.num_tokens, self.cfg.max_model_len), self.bs) - len(hit), 0)
                if full + evictable > rep.pool.num_free:
                    break
            need = cdiv(hit_tokens + num_new, self.bs) - len(hit)
            if need + evictable > rep.pool.num_free:
                break
            rep.pool.touch(hit)
            req.block_table = list(hit) + rep.pool.allocate(need)
            rep.waiting.popleft()
            rep.running.append(req)
            req.num_computed = hit_tokens
            req.num_cached_blocks = len(hit)
            self._cache_at_schedule(rep, req, num_new)
            sched.append(Scheduled(req, num_new, req.num_computed))
            budget -= num_new
            if self.caching:
                if req.preemptions > 0:
                    self.pre_req += 1; self.pre_q += req.num_tokens; self.pre_h += hit_tokens
                else:
                    self.prefix_cache_queries += req.num_tokens
                    self.prefix_cache_hits += hit_tokens
            if not req.ever_admitted:
                req.ever_admitted = True
                req.admitted_s = t
                req.cached_tokens = hit_tokens
                req.cache_event = int(self._classify(req, hit))
        return budget

    def _finish_scheduled(self, rep, s, t_end):
        caching = self.caching
        self.caching = False           # no hashing at step end
        try:
            super()._finish_scheduled(rep, s, t_end)
        finally:
            self.caching = caching

    def _outputs(self):
        out = super()._outputs()
        out.prefix_cache_preempted_requests = self.pre_req
        out.prefix_cache_preempted_queries = self.pre_q
        out.prefix_cache_preempted_hits = self.pre_h
        return out
