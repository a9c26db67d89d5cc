"""One vLLM v1 scheduler step on one replica: running requests first (with preemption), then
FCFS admission with prefix-cache lookups, and the step's end (tokens, ITL, caching, completions).
See README "One step on replica r at time t"; the block pool is only touched through
``oracle.kernels.kvcache``.

A replica's running requests are split in two: the *decode cohort* (``cohort.py``: requests
that emitted a token in the replica's last step, kept lazily) and the *active list* (every
other running request: prefilling, recomputing, or just admitted), in running order. A step
touches only the active list and the cohort members whose block state changes. When the
cohort could not simply take one token each (the token budget or the free blocks would run
out, so a preemption or a starved request could follow), the cohort is first materialized
back into the active list and the step runs the exact per-request loop.

State groups (tuples of arrays, built once in ``oracle.engine.loop._simulate``):

* ``pool``  = (ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped, dup_next)
* ``rq``    = per-request state: (num_computed, generated, num_blocks, num_cached, slot,
  last_token_s, computed_total, table, slot_free, slot_top)
* ``queues``= (wq, wq_head, wq_len, act, act_len): waiting rings; active lists
  (``act[r * s_max + i]``, running order). A replica's running requests (cohort + active)
  are ``s_max - slot_top[r]``: each holds one slot.
* ``coh``   = (sl, bk, cl, dtlog, rp), see ``cohort.py``.
"""

from __future__ import annotations

import math

from oracle.engine.cohort import (BASE, BKN, CLN, CNT, EMIT, HEAD, TAIL, JDONE, JJOIN, MAXSEQ, NEXTSEQ, NPOST, NUM, REQ,
                                  SEQ, SUM, J, coh_join, coh_materialize, coh_unlink, sort_slots_by_seq)
from oracle.engine.queues import _release_children, _wq_front, _wq_pop_front, _wq_push_front
from oracle.kernels._jit import jit, kernel
from oracle.kernels.blockpool import cdiv
from oracle.kernels.kvcache import allocate, cache_block, count_evictable_hits, free_blocks, match_prefix, touch_hits

# Cache events (see oracle.engine.inputs.CacheEvent); literals inside the kernels.
_MISS_FULL, _CROSS, _CONV_HIT, _FULL_HIT, _CONV_MISS = 0, 1, 2, 3, 4


@jit(inline="always")
def _free_request(q, r, n, s_max, m, caching, pool, rq):
    """Free all blocks of running request q (reverse order) and give its slot back. Without
    prefix caching blocks are interchangeable: only their number is kept."""
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped, dup_next = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    if caching:
        free_blocks(table, (r * s_max + slot[q]) * m, num_blocks[q], r, n, r * n, r * (n + 2), ref_cnt, blk_hash,
                    fq_prev, fq_next, num_free)
    else:
        num_free[r] += num_blocks[q]
    num_blocks[q] = 0
    slot_free[r * s_max + slot_top[r]] = slot[q]
    slot_top[r] += 1
    slot[q] = -1


@kernel
def _cohort_fits(r, kb, bs, s_max, budget_max, pool, rq, queues, coh, prompt):
    """Can the cohort take one token each this step, with no preemption and no request
    starved by the budget? (Then its members need not be visited.) ``kb``: the bucket row of
    the members that need a block this step."""
    num_free = pool[6]
    num_computed, generated, num_blocks = rq[0], rq[1], rq[2]
    slot = rq[4]
    act, act_len = queues[3], queues[4]
    sl, bk, rp = coh[0], coh[1], coh[4]
    nb = rp[r, NUM]
    if nb > budget_max:
        return False
    need = bk[kb, CNT]
    al = act_len[r]
    if al > 0:
        abase = r * s_max
        if sl[abase + slot[act[abase]], SEQ] < rp[r, MAXSEQ]:
            # an active request may precede a member in running order: only safe if the
            # budget covers everybody (then the order does not matter)
            tot = nb
            for i in range(al):
                q = act[abase + i]
                tot += prompt[q] + generated[q] - num_computed[q]
            if tot > budget_max:
                return False
        b = budget_max - nb
        for i in range(al):
            if b <= 0:
                break
            q = act[abase + i]
            num_new = min(prompt[q] + generated[q] - num_computed[q], b)
            need += cdiv(num_computed[q] + num_new, bs) - num_blocks[q]
            b -= num_new
    return need <= num_free[r]


@kernel
def _materialize_cohort(r, t_last, bs, s_max, rq, queues, coh, o_max_itl, scratch):
    """Dissolve the cohort: bring every member up to date and merge them into the active
    list in running order (before an exact step)."""
    num_computed, generated, last_token_s, computed_total = rq[0], rq[1], rq[5], rq[6]
    act, act_len = queues[3], queues[4]
    sl, bk, cl, dtlog, rp = coh
    w = cl.shape[0] // rp.shape[0]
    members, merged = scratch
    cnt = 0
    for k in range(bs):
        kb = r * bs + k
        g = bk[kb, HEAD]
        while g >= 0:
            members[cnt] = g
            cnt += 1
            g = sl[g, BKN]
        bk[kb, HEAD] = -1
        bk[kb, TAIL] = -1
        bk[kb, CNT] = 0
    sort_slots_by_seq(members, cnt, sl)
    abase = r * s_max
    al = act_len[r]
    a = 0
    out = 0
    for i in range(cnt):
        g = members[i]
        coh_materialize(r, g, t_last, bs, num_computed, generated, computed_total, rq[2], last_token_s, o_max_itl,
                        sl, dtlog, rp)
        cl[r * w + (sl[g, JDONE] & (w - 1))] = -1
        sl[g, JJOIN] = -1
        while a < al and sl[abase + rq[4][act[abase + a]], SEQ] < sl[g, SEQ]:
            merged[out] = act[abase + a]
            out += 1
            a += 1
        merged[out] = sl[g, REQ]
        out += 1
    while a < al:
        merged[out] = act[abase + a]
        out += 1
        a += 1
    for i in range(out):
        act[abase + i] = merged[i]
    act_len[r] = out
    rp[r, NUM] = 0
    rp[r, SUM] = 0
    rp[r, NPOST] = 0


@kernel
def _schedule_cohort(r, n, m, kb, ref_cnt, blk_hash, dup_next, fq_prev, fq_next, hm, num_free, num_mapped, num_blocks,
                     table, sl, bk):
    """With prefix caching: every member takes one token; those at a block boundary (bucket
    row ``kb``) get a new block. (Without caching only the number of free blocks changes, in
    the loop; members' block counts are brought up to date when they leave the cohort.)
    Arrays are passed one by one: this runs every step."""
    cmask = hm.shape[0] // (2 * num_free.shape[0]) - 1
    g = bk[kb, HEAD]
    while g >= 0:
        q = sl[g, REQ]
        allocate(1, r, n, r * n, r * (n + 2), r * (cmask + 1), cmask, ref_cnt, blk_hash, dup_next, fq_prev, fq_next,
                 hm, num_free, num_mapped, table, g * m + num_blocks[q])
        num_blocks[q] += 1
        g = sl[g, BKN]


@kernel
def _schedule_active(r, n, s_max, m, bs, budget, caching, pool, rq, queues, coh, sch_req, sch_new, prompt,
                     out_preempt, session, hash_off, hashes):
    """vLLM v1 pass over the active running requests; returns (num_scheduled, budget_left,
    preempted). Preemption (victim: the last running request) only happens with an empty
    cohort, when the active list is the whole running list.

    With prefix caching, each scheduled request registers the blocks it fills in this step
    right after its allocation (vLLM ``allocate_slots`` -> ``cache_blocks``); the cohort
    members that fill a block this step register theirs in between, by running order (the
    order decides which of two equal blocks a later lookup finds)."""
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped, dup_next = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    wq, wq_head, wq_len, act, act_len = queues
    wcap = wq.shape[0] // wq_len.shape[0]
    cmask = hm.shape[0] // (2 * wq_len.shape[0]) - 1
    sl, bk, rp = coh[0], coh[1], coh[4]
    jc = rp[r, J]
    x = -1  # the next cohort member (running order) that fills a block this step
    if caching and rp[r, NUM] > 0:
        x = bk[r * bs + (-jc - 1) % bs, HEAD]
    abase = r * s_max
    nsch = 0
    preempted = False
    i = 0
    while i < act_len[r] and budget > 0:
        q = act[abase + i]
        num_new = min(prompt[q] + generated[q] - num_computed[q], budget)
        need = cdiv(num_computed[q] + num_new, bs) - num_blocks[q]
        can_schedule = True
        while need > num_free[r]:
            act_len[r] -= 1
            v = act[abase + act_len[r]]
            _free_request(v, r, n, s_max, m, caching, pool, rq)
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
        gs = abase + slot[q]
        if need > 0:
            if caching:
                allocate(need, r, n, r * n, r * (n + 2), r * (cmask + 1), cmask, ref_cnt, blk_hash, dup_next, fq_prev,
                         fq_next, hm, num_free, num_mapped, table, gs * m + num_blocks[q])
            else:
                num_free[r] -= need
            num_blocks[q] += need
        if caching:
            while x >= 0 and sl[x, SEQ] < sl[gs, SEQ]:
                _cache_member(x, jc, r, n, m, bs, cmask, blk_hash, blk_sess, dup_next, hm, num_mapped, num_blocks,
                              num_cached, table, sl, session, hash_off, hashes)
                x = sl[x, BKN]
            _cache_upto(q, gs, (num_computed[q] + num_new) // bs, r, n, m, cmask, blk_hash, blk_sess, dup_next, hm,
                        num_mapped, num_cached, table, session, hash_off, hashes)
        sch_req[nsch] = q
        sch_new[nsch] = num_new
        nsch += 1
        budget -= num_new
        i += 1
    while x >= 0:
        _cache_member(x, jc, r, n, m, bs, cmask, blk_hash, blk_sess, dup_next, hm, num_mapped, num_blocks, num_cached,
                      table, sl, session, hash_off, hashes)
        x = sl[x, BKN]
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


@kernel
def _schedule_waiting(r, t, n, s_max, m, bs, budget, nsch, chunked, full_isl, caching, pool, rq, queues, coh,
                      sch_req, sch_new, prompt, turn, session, hash_off, hashes, out, counters, hit_blocks):
    """Admit waiting requests FCFS until one does not fit (they join the active list);
    returns num_scheduled. ``full_isl``: vLLM ``scheduler_reserve_full_isl`` (the free blocks
    must cover the request's whole known sequence, not just this step's chunk)."""
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped, dup_next = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    wq, wq_head, wq_len, act, act_len = queues
    sl, rp = coh[0], coh[4]
    o_admitted, o_cached, o_event, o_preempt = out
    wcap = wq.shape[0] // wq_len.shape[0]
    cmask = hm.shape[0] // (2 * wq_len.shape[0]) - 1
    hbase = r * (cmask + 1)
    while wq_len[r] > 0 and budget > 0 and slot_top[r] > 0:
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
        evictable = 0
        if hit > 0:
            evictable = count_evictable_hits(hit_blocks, hit, r * n, ref_cnt)
        if full_isl and cdiv(num_tokens, bs) - hit + evictable > num_free[r]:
            counters[9] += 1
            break
        need = cdiv(hit_tokens + num_new, bs) - hit
        if need + evictable > num_free[r]:
            counters[9] += 1
            break
        slot_top[r] -= 1
        slot[q] = slot_free[r * s_max + slot_top[r]]
        row = (r * s_max + slot[q]) * m
        if caching:
            touch_hits(hit_blocks, hit, r, r * n, r * (n + 2), ref_cnt, fq_prev, fq_next, num_free, table, row)
            allocate(need, r, n, r * n, r * (n + 2), hbase, cmask, ref_cnt, blk_hash, dup_next, fq_prev, fq_next,
                     hm, num_free, num_mapped, table, row + hit)
        else:
            num_free[r] -= need
        num_blocks[q] = hit + need
        num_computed[q] = hit_tokens
        num_cached[q] = hit
        if caching:
            _cache_upto(q, r * s_max + slot[q], (hit_tokens + num_new) // bs, r, n, m, cmask, blk_hash, blk_sess,
                        dup_next, hm, num_mapped, num_cached, table, session, hash_off, hashes)
            if o_preempt[q] > 0:  # vLLM PrefixCacheStats: re-admissions counted apart
                counters[10] += 1
                counters[11] += num_tokens
                counters[12] += hit_tokens
            else:
                counters[0] += num_tokens
                counters[1] += hit_tokens
        _wq_pop_front(r, wcap, wq_head, wq_len)
        act[r * s_max + act_len[r]] = q
        act_len[r] += 1
        gs = r * s_max + slot[q]
        sl[gs, REQ] = q
        sl[gs, SEQ] = rp[r, NEXTSEQ]
        rp[r, NEXTSEQ] += 1
        sl[gs, JJOIN] = -1
        sl[gs, EMIT] = 0
        if math.isnan(o_admitted[q]):
            o_admitted[q] = t
            o_cached[q] = hit_tokens
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
def _cache_upto(q, gs, upto, r, n, m, cmask, blk_hash, blk_sess, dup_next, hm, num_mapped, num_cached, table, session,
                hash_off, hashes):
    """Register the full blocks of request q (in slot gs) below block ``upto`` (README "One
    step", caching)."""
    if upto > num_cached[q]:
        row = gs * m
        label = session[q] if session[q] >= 0 else -2 - q
        for b in range(num_cached[q], upto):
            cache_block(table[row + b], hashes[hash_off[q] + b], label, r, r * n, r * (cmask + 1), cmask,
                        blk_hash, blk_sess, dup_next, hm, num_mapped)
        num_cached[q] = upto


@jit(inline="always")
def _complete(q, r, t_end, n, s_max, m, caching, pool, rq, child_off, child_ids, think_s, heap, out):
    """Request q generated its last token at t_end: record it, free it, release follow-ups."""
    hp_t, hp_id, hp_n = heap
    o_completion, o_status = out[1], out[3]
    o_completion[q] = t_end
    o_status[q] = 1
    _free_request(q, r, n, s_max, m, caching, pool, rq)
    _release_children(q, t_end, child_off, child_ids, think_s, hp_t, hp_id, hp_n)


@jit(inline="always")
def _cache_member(x, jc, r, n, m, bs, cmask, blk_hash, blk_sess, dup_next, hm, num_mapped, num_blocks, num_cached,
                  table, sl, session, hash_off, hashes):
    """Cohort member in slot x fills a block in the step numbered jc (it computes token
    ``base + jc``): register it."""
    q = sl[x, REQ]
    _cache_upto(q, x, (sl[x, BASE] + jc + 1) // bs, r, n, m, cmask, blk_hash, blk_sess, dup_next, hm, num_mapped,
                num_cached, table, session, hash_off, hashes)


@kernel
def _cache_cohort(r, jc, n, m, bs, blk_hash, blk_sess, dup_next, hm, num_mapped, num_blocks, num_cached, table, sl, bk,
                  session, hash_off, hashes):
    """Register the blocks the cohort fills in step jc (a step with no active request; at
    scheduling time, before admissions)."""
    x = bk[r * bs + (-jc - 1) % bs, HEAD]
    cmask = hm.shape[0] // (2 * num_mapped.shape[0]) - 1
    while x >= 0:
        _cache_member(x, jc, r, n, m, bs, cmask, blk_hash, blk_sess, dup_next, hm, num_mapped, num_blocks, num_cached,
                      table, sl, session, hash_off, hashes)
        x = sl[x, BKN]


@kernel
def _finish_active(r, t_end, s_max, nsch, rq, coh, sch_req, sch_new, prompt, out, itl):
    """Tokens and ITL of the step's active requests, in schedule order (their blocks were
    registered when they were scheduled)."""
    num_computed, generated, slot, last_token_s, computed_total = rq[0], rq[1], rq[4], rq[5], rq[6]
    sl = coh[0]
    o_first, o_max_itl = out[0], out[2]
    itl_hist, itl_min_s, itl_per_decade, itl_from_s, o_arrival = itl
    num_bins = itl_hist.shape[0]
    memo_gap = -1.0
    memo_bin = 0
    for k in range(nsch):
        q = sch_req[k]
        c = sch_new[k]
        gs = r * s_max + slot[q]
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
                        memo_bin = _itl_bin(gap, itl_min_s, itl_per_decade, num_bins)
                    itl_hist[memo_bin] += 1
                if math.isnan(o_max_itl[q]) or gap > o_max_itl[q]:
                    o_max_itl[q] = gap
            last_token_s[q] = t_end
        sl[gs, EMIT] = 1 if emitted else 0


@kernel
def _finish_completions(r, t_end, n, s_max, m, bs, nsch, caching, pool, rq, coh, sch_req, output, child_off, child_ids,
                        think_s, heap, out, comp):
    """Completions at the end of a step, in running order: cohort members whose last token
    this was (the calendar list of the new step counter) and active requests that finished.
    ``comp``: scratch i8[>= s_max]."""
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    sl, bk, cl, dtlog, rp = coh
    o_max_itl = out[2]
    w = cl.shape[0] // rp.shape[0]
    ncomp = 0
    g = cl[r * w + (rp[r, J] & (w - 1))]
    while g >= 0:
        comp[ncomp] = g
        ncomp += 1
        g = sl[g, CLN]
    sort_slots_by_seq(comp, ncomp, sl)
    i = 0
    for k in range(nsch + 1):
        seq_q = -1
        q = -1
        if k < nsch:
            q = sch_req[k]
            if generated[q] != output[q]:
                continue
            seq_q = sl[r * s_max + slot[q], SEQ]
        while i < ncomp and (q < 0 or sl[comp[i], SEQ] < seq_q):
            g = comp[i]
            coh_materialize(r, g, t_end, bs, num_computed, generated, computed_total, num_blocks, last_token_s,
                            o_max_itl, sl, dtlog, rp)
            coh_unlink(r, g, bs, sl, bk, cl, rp)
            _complete(sl[g, REQ], r, t_end, n, s_max, m, caching, pool, rq, child_off, child_ids, think_s,
                      heap, out)
            i += 1
        if q >= 0:
            _complete(q, r, t_end, n, s_max, m, caching, pool, rq, child_off, child_ids, think_s, heap, out)


@kernel
def _join_active(r, s_max, bs, rq, queues, coh, output, o_status, o_arrival, itl_from_s):
    """Active requests that emitted in the step (and go on) join the cohort; the others stay
    in the active list, in order."""
    num_computed, generated, slot = rq[0], rq[1], rq[4]
    act, act_len = queues[3], queues[4]
    sl, bk, cl, dtlog, rp = coh
    abase = r * s_max
    j = 0
    for i in range(act_len[r]):
        q = act[abase + i]
        if o_status[q] == 1:
            continue
        gs = abase + slot[q]
        if sl[gs, EMIT] == 1:
            sl[gs, EMIT] = 0
            coh_join(r, gs, num_computed[q], generated[q], output[q], 1 if o_arrival[q] >= itl_from_s else 0, bs,
                     sl, bk, cl, rp)
        else:
            act[abase + j] = q
            j += 1
    act_len[r] = j
