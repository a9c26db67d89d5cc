"""One vLLM v1 scheduler step on one replica: running requests first (with preemption), then
FCFS admission with prefix-cache lookups, and the step's end (tokens, ITL, caching, completions).
See README "One step on replica r at time t"; the block pool is only touched through
``oracle.kernels.kvcache``.

State groups (tuples of arrays, built once in ``oracle.engine.loop._simulate``):

* ``pool``  = (ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped)
* ``rq``    = per-request state: (num_computed, generated, num_blocks, num_cached, slot,
  last_token_s, computed_total, table, slot_free, slot_top)
* ``queues``= (wq, wq_head, wq_len, run_list, run_len)
"""

from __future__ import annotations

import math

from oracle.engine.queues import _release_children, _wq_front, _wq_pop_front, _wq_push_front
from oracle.kernels._jit import jit
from oracle.kernels.blockpool import cdiv
from oracle.kernels.kvcache import allocate, cache_block, count_evictable_hits, free_blocks, match_prefix, touch_hits

# Cache events (see oracle.engine.inputs.CacheEvent); literals inside the kernels.
_MISS_FULL, _CROSS, _CONV_HIT, _FULL_HIT, _CONV_MISS = 0, 1, 2, 3, 4


@jit(inline="always")
def _free_request(q, r, n, s_max, m, pool, rq):
    """Free all blocks of running request q (reverse order) and give its slot back."""
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    row = (r * s_max + slot[q]) * m
    free_blocks(table, row, num_blocks[q], r, n, r * n, r * (n + 2), ref_cnt, fq_prev, fq_next, num_free)
    num_blocks[q] = 0
    slot_free[r * s_max + slot_top[r]] = slot[q]
    slot_top[r] += 1
    slot[q] = -1


@jit(inline="always")
def _schedule_running(r, n, s_max, m, bs, budget, pool, rq, queues, sch_req, sch_new, prompt, out_preempt):
    """vLLM v1 pass over running requests; returns (num_scheduled, budget_left, preempted)."""
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    wq, wq_head, wq_len, run_list, run_len = queues
    wcap = wq.shape[0] // wq_len.shape[0]
    cmask = hm.shape[0] // (2 * wq_len.shape[0]) - 1
    nsch = 0
    preempted = False
    i = 0
    while i < run_len[r] and budget > 0:
        q = run_list[r * s_max + i]
        num_new = min(prompt[q] + generated[q] - num_computed[q], budget)
        need = cdiv(num_computed[q] + num_new, bs) - num_blocks[q]
        can_schedule = True
        while need > num_free[r]:
            run_len[r] -= 1
            v = run_list[r * s_max + run_len[r]]
            _free_request(v, r, n, s_max, m, pool, rq)
            num_computed[v] = 0
            num_cached[v] = 0
            out_preempt[v] += 1
            _wq_push_front(r, v, wcap, wq, wq_head, wq_len)
            preempted = True
            if v == q:
                can_schedule = False
                break
        if not can_schedule:
            break
        if need > 0:
            row = (r * s_max + slot[q]) * m
            allocate(need, r, n, r * n, r * (n + 2), r * (cmask + 1), cmask, ref_cnt, blk_hash, fq_prev, fq_next,
                     hm, num_free, num_mapped, table, row + num_blocks[q])
            num_blocks[q] += need
        sch_req[nsch] = q
        sch_new[nsch] = num_new
        nsch += 1
        budget -= num_new
        i += 1
    return nsch, budget, preempted


@jit(inline="always")
def _classify(q, hit, max_hit, caching, turn, session, row, r, n, table, blk_sess):
    """Cache event of a request at its first admission (README "Cache event")."""
    if not caching:
        return _MISS_FULL
    if hit == 0:
        return _CONV_MISS if turn[q] >= 1 else _MISS_FULL
    if turn[q] >= 1 and session[q] >= 0 and blk_sess[r * n + table[row + hit - 1]] == session[q]:
        return _CONV_HIT
    if hit == max_hit:
        return _FULL_HIT
    return _CROSS


@jit(inline="always")
def _schedule_waiting(r, t, n, s_max, m, bs, budget, nsch, chunked, caching, pool, rq, queues, sch_req, sch_new,
                      prompt, turn, session, hash_off, hashes, out, counters, hit_blocks):
    """Admit waiting requests FCFS until one does not fit; returns num_scheduled."""
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    wq, wq_head, wq_len, run_list, run_len = queues
    o_admitted, o_cached, o_event = out
    wcap = wq.shape[0] // wq_len.shape[0]
    cmask = hm.shape[0] // (2 * wq_len.shape[0]) - 1
    hbase = r * (cmask + 1)
    while wq_len[r] > 0 and budget > 0 and run_len[r] < s_max:
        q = _wq_front(r, wcap, wq, wq_head)
        num_tokens = prompt[q] + generated[q]
        max_hit = (num_tokens - 1) // bs
        hit = 0
        counters[5] += 1
        if caching:
            hit = match_prefix(hashes, hash_off[q], max_hit, hbase, cmask, hm, hit_blocks)
            counters[6] += hit
        hit_tokens = hit * bs
        num_new = num_tokens - hit_tokens
        if not chunked and num_new > budget:
            break
        num_new = min(num_new, budget)
        need = cdiv(hit_tokens + num_new, bs) - hit
        evictable = 0
        if hit > 0:
            evictable = count_evictable_hits(hit_blocks, hit, r * n, ref_cnt)
        if need + evictable > num_free[r]:
            counters[9] += 1
            break
        slot_top[r] -= 1
        slot[q] = slot_free[r * s_max + slot_top[r]]
        row = (r * s_max + slot[q]) * m
        touch_hits(hit_blocks, hit, r, r * n, r * (n + 2), ref_cnt, fq_prev, fq_next, num_free, table, row)
        allocate(need, r, n, r * n, r * (n + 2), hbase, cmask, ref_cnt, blk_hash, fq_prev, fq_next,
                 hm, num_free, num_mapped, table, row + hit)
        num_blocks[q] = hit + need
        num_computed[q] = hit_tokens
        num_cached[q] = hit
        _wq_pop_front(r, wcap, wq_head, wq_len)
        run_list[r * s_max + run_len[r]] = q
        run_len[r] += 1
        if math.isnan(o_admitted[q]):
            o_admitted[q] = t
            o_cached[q] = hit_tokens
            counters[0] += prompt[q]
            counters[1] += hit_tokens
            o_event[q] = _classify(q, hit, (prompt[q] - 1) // bs, caching, turn, session, row, r, n, table, blk_sess)
        sch_req[nsch] = q
        sch_new[nsch] = num_new
        nsch += 1
        budget -= num_new
    return nsch


@jit(inline="always")
def _itl_bin(gap, itl_min_s, itl_per_decade, num_bins):
    """Histogram bin of an inter-token gap (see oracle.engine.inputs.itl_bin)."""
    if gap < itl_min_s:
        return 0
    return min(int(math.floor(math.log10(gap / itl_min_s) * itl_per_decade)) + 1, num_bins - 1)


@jit(inline="always")
def _finish_step(r, t_end, n, s_max, m, bs, nsch, caching, pool, rq, queues, sch_req, sch_new, prompt, output,
                 session, hash_off, hashes, child_off, child_ids, think_s, heap, out, itl):
    """Apply a step's results at its end time: tokens, ITL, block caching, completions.

    Returns True when every request still running emitted a token in this step (so all of
    them are decoding, with their last token at ``t_end``: the decode fast path may run next).
    """
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    wq, wq_head, wq_len, run_list, run_len = queues
    hp_t, hp_id, hp_n = heap
    o_first, o_completion, o_max_itl, o_status = out
    itl_hist, itl_min_s, itl_per_decade, itl_from_s, o_arrival = itl
    cmask = hm.shape[0] // (2 * wq_len.shape[0]) - 1
    num_finished = 0
    memo_gap = -1.0
    memo_bin = 0
    num_continuing_emitters = 0
    for k in range(nsch):
        q = sch_req[k]
        c = sch_new[k]
        num_computed[q] += c
        computed_total[q] += c
        emitted = num_computed[q] == prompt[q] + generated[q]
        if emitted:
            generated[q] += 1
            if generated[q] == 1:
                o_first[q] = t_end
            else:
                gap = t_end - last_token_s[q]
                if o_arrival[q] >= itl_from_s:
                    if gap != memo_gap:  # most requests in a step share their gap: one log10 per step
                        memo_gap = gap
                        memo_bin = _itl_bin(gap, itl_min_s, itl_per_decade, itl_hist.shape[0])
                    itl_hist[memo_bin] += 1
                if math.isnan(o_max_itl[q]) or gap > o_max_itl[q]:
                    o_max_itl[q] = gap
            last_token_s[q] = t_end
        if caching:
            cacheable = prompt[q] + generated[q] if emitted else num_computed[q]
            upto = min(cacheable // bs, num_blocks[q])
            if upto > num_cached[q]:
                row = (r * s_max + slot[q]) * m
                label = session[q] if session[q] >= 0 else -2 - q
                for b in range(num_cached[q], upto):
                    cache_block(table[row + b], hashes[hash_off[q] + b], label, r, r * n, r * (cmask + 1), cmask,
                                blk_hash, blk_sess, hm, num_mapped)
                num_cached[q] = upto
        if generated[q] == output[q]:
            o_completion[q] = t_end
            o_status[q] = 1
            _free_request(q, r, n, s_max, m, pool, rq)
            _release_children(q, t_end, child_off, child_ids, think_s, hp_t, hp_id, hp_n)
            num_finished += 1
        elif emitted:
            num_continuing_emitters += 1
    if num_finished > 0:  # compact the running list, keeping order
        j = 0
        for i in range(run_len[r]):
            q = run_list[r * s_max + i]
            if o_status[q] != 1:
                run_list[r * s_max + j] = q
                j += 1
        run_len[r] = j
    return num_continuing_emitters == run_len[r]
