"""The time-stepped engine: one ``@njit`` loop simulates a whole framework configuration.

The semantics are written down in ``oracle/engine/README.md``; this module is the fast
implementation, ``tests/reference/engine.py`` the slow one, and differential tests hold them
to identical results. State lives in preallocated struct-of-arrays; nothing is allocated per
step (the optional steps table grows by doubling).

State groups passed between the kernels as tuples of arrays:

* ``pool``  = (ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped)
* ``rq``    = per-request state: (num_computed, generated, num_blocks, num_cached, slot,
  last_token_s, computed_total)
* ``queues``= (wq, wq_head, wq_len, run_list, run_len, slot_free, slot_top, busy_until)
* ``out``   = per-request outputs (replica, arrival, admitted, first, completion, cached,
  preemptions, event, max_itl, status)
"""

from __future__ import annotations

import math

import numpy as np

from oracle.engine.inputs import ITL_BINS_PER_DECADE, ITL_MIN_S, ITL_NUM_BINS, EngineInputs, EngineOutputs
from oracle.kernels._jit import jit
from oracle.kernels.blockpool import cdiv, fq_init
from oracle.kernels.cost import step_time_s
from oracle.kernels.kvcache import (allocate, cache_block, count_evictable_hits, free_blocks, match_prefix,
                                    touch_hits)

# Step-table columns (float64 matrix), in order.
STEP_COLUMNS = ("replica", "start_s", "duration_s", "num_decode", "num_prefill_tokens", "num_running",
                "num_waiting", "kv_blocks_used", "kv_blocks_cached")

# Engine counters reported in EngineOutputs.diagnostics (index in the counters array -> name).
DIAGNOSTICS = ("", "", "normal_steps", "fast_path_calls", "fast_path_steps", "admission_attempts",
               "admission_hit_blocks", "normal_step_requests", "", "failed_admissions")

# Cache events (see oracle.engine.inputs.CacheEvent); passed into the kernels as literals.
_MISS_FULL, _CROSS, _CONV_HIT, _FULL_HIT, _CONV_MISS = 0, 1, 2, 3, 4


# ---------------------------------------------------------------------------------------------
# queues
@jit(inline="always")
def _wq_push_back(r, q, wcap, wq, wq_head, wq_len):
    wq[r * wcap + (wq_head[r] + wq_len[r]) % wcap] = q
    wq_len[r] += 1


@jit(inline="always")
def _wq_push_front(r, q, wcap, wq, wq_head, wq_len):
    wq_head[r] = (wq_head[r] - 1 + wcap) % wcap
    wq[r * wcap + wq_head[r]] = q
    wq_len[r] += 1


@jit(inline="always")
def _wq_front(r, wcap, wq, wq_head):
    return wq[r * wcap + wq_head[r]]


@jit(inline="always")
def _wq_pop_front(r, wcap, wq_head, wq_len):
    wq_head[r] = (wq_head[r] + 1) % wcap
    wq_len[r] -= 1


@jit(inline="always")
def _heap_push(t, q, hp_t, hp_id, hp_n):
    """Binary min-heap on (t, id); hp_n is a 1-element array holding the size."""
    i = hp_n[0]
    hp_n[0] += 1
    while i > 0:
        p = (i - 1) >> 1
        if hp_t[p] < t or (hp_t[p] == t and hp_id[p] < q):
            break
        hp_t[i] = hp_t[p]
        hp_id[i] = hp_id[p]
        i = p
    hp_t[i] = t
    hp_id[i] = q


@jit(inline="always")
def _heap_pop(hp_t, hp_id, hp_n):
    n = hp_n[0] - 1
    hp_n[0] = n
    t = hp_t[n]
    q = hp_id[n]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and (hp_t[c + 1] < hp_t[c] or (hp_t[c + 1] == hp_t[c] and hp_id[c + 1] < hp_id[c])):
            c += 1
        if t < hp_t[c] or (t == hp_t[c] and q < hp_id[c]):
            break
        hp_t[i] = hp_t[c]
        hp_id[i] = hp_id[c]
        i = c
    hp_t[i] = t
    hp_id[i] = q


@jit(inline="always")
def _release_children(q, t, child_off, child_ids, think_s, hp_t, hp_id, hp_n):
    """Follow-ups of ``q`` arrive ``think_s`` after ``q`` ends at time ``t``."""
    for k in range(child_off[q], child_off[q + 1]):
        c = child_ids[k]
        _heap_push(t + think_s[c], c, hp_t, hp_id, hp_n)


# ---------------------------------------------------------------------------------------------
# routing
@jit(inline="always")
def _load(r, wq_len, run_len):
    return 4 * wq_len[r] + run_len[r]


@jit(inline="always")
def _least_loaded(num_replicas, wq_len, run_len):
    best = 0
    for r in range(1, num_replicas):
        if _load(r, wq_len, run_len) < _load(best, wq_len, run_len):
            best = r
    return best


@jit(inline="always")
def _route(q, router, num_replicas, rr_counter, sess_idx, sess_rep, prompt, hash_off, hashes, bs, n, cmask,
           caching, hm, num_free, wq_len, run_len, hit_scratch, parent, o_replica):
    """Replica for request ``q`` (see README "Router"). rr_counter: 1-element array."""
    if router == 0:  # round_robin
        r = rr_counter[0] % num_replicas
        rr_counter[0] += 1
        return r
    if router == 1:  # least_loaded
        return _least_loaded(num_replicas, wq_len, run_len)
    if router == 2:  # session_affinity
        s = sess_idx[q]
        if s >= 0 and sess_rep[s] >= 0:
            return sess_rep[s]
        r = _least_loaded(num_replicas, wq_len, run_len)
        if s >= 0:
            sess_rep[s] = r
        return r
    # prefix_aware: new prefill blocks + blocks in use, ties to the lower load, then lower r.
    # The winner is the least (cost, load, r); replicas are visited starting with the one
    # that holds the parent turn (likely the winner), and a replica whose best possible cost
    # (every hashable block hit) cannot beat the current winner is not looked up at all.
    p = prompt[q]
    max_hit = (p - 1) // bs
    best = -1
    best_cost = 0
    best_load = 0
    first = 0
    if parent[q] >= 0 and o_replica[parent[q]] >= 0:
        first = o_replica[parent[q]]
    for k in range(num_replicas):
        r = (first + k) % num_replicas
        used = n - 1 - num_free[r]
        load = _load(r, wq_len, run_len)
        if best >= 0:
            lower = (cdiv(p, bs) - max_hit) + used
            if lower > best_cost or (lower == best_cost and (load > best_load or (load == best_load and r > best))):
                continue
        hit = 0
        if caching:
            hit = match_prefix(hashes, hash_off[q], max_hit, r * (cmask + 1), cmask, hm, hit_scratch)
        cost = (cdiv(p, bs) - hit) + used
        if best < 0 or cost < best_cost or (cost == best_cost and (load < best_load
                                                                    or (load == best_load and r < best))):
            best = r
            best_cost = cost
            best_load = load
    return best


# ---------------------------------------------------------------------------------------------
# scheduling
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
                    itl_hist[_itl_bin(gap, itl_min_s, itl_per_decade, itl_hist.shape[0])] += 1
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


@jit(inline="always")
def _decode_leap(r, t, horizon, n, s_max, m, bs, budget_max, caching, record_steps, cost_params, pool, rq, run_list,
                 run_len, prompt, output, session, hash_off, hashes, o_arrival, o_max_itl, itl, scratch, kv_integral,
                 kv_max, steps, num_steps):
    """Fast path for a replica whose running requests all emitted a token in its last step
    (so all are decoding, their last token at ``t``) and whose waiting queue is empty.

    Runs the same steps the normal path would (README "One step"), but touches only the
    requests whose block state changes in a step (a new block, or a block becoming full and
    cached), so a step costs O(1 + batch / block_size) instead of O(batch). Stops before the
    first step that would complete a request, need more blocks than are free, or start at or
    after ``horizon`` (the earliest time an arrival could be processed). Every request's
    per-token state is brought up to date at the end. Returns (steps done, end time, steps matrix).

    scratch: (c0 i4[s_max], order i4[s_max], key_start i8[>= bs + 1]).
    """
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    itl_hist, itl_min_s, itl_per_decade, itl_from_s, _arr = itl
    c0, order, key_start = scratch
    num_bins = itl_hist.shape[0]
    cmask = hm.shape[0] // (2 * num_free.shape[0]) - 1
    nb = run_len[r]
    if nb == 0 or nb > budget_max:
        return 0, t, steps
    # eligibility, and what is constant over the leap
    min_left = 1 << 30
    decode_ctx0 = 0.0
    num_post = 0
    for i in range(nb):  # (leap_ok: all decoding, last token at t)
        q = run_list[r * s_max + i]
        left = output[q] - generated[q]
        if left < min_left:
            min_left = left
        c0[i] = num_computed[q]
        decode_ctx0 += num_computed[q] + 1
        if o_arrival[q] >= itl_from_s:
            num_post += 1
    if min_left < 2:
        return 0, t, steps
    # bucket the batch (stable, in running order) by num_computed % bs
    for k in range(bs + 1):
        key_start[k] = 0
    for i in range(nb):
        key_start[c0[i] % bs + 1] += 1
    for k in range(bs):
        key_start[k + 1] += key_start[k]
    for i in range(nb):
        k = c0[i] % bs
        order[key_start[k]] = i
        key_start[k] += 1
    for k in range(bs, 0, -1):
        key_start[k] = key_start[k - 1]
    key_start[0] = 0

    t_cur = t
    max_gap = -1.0
    j = 0
    while j + 1 < min_left:
        jj = j + 1
        if jj >= 2 and t_cur >= horizon:
            break
        ka = (bs - (jj - 1) % bs) % bs  # requests starting a new block this step
        need = key_start[ka + 1] - key_start[ka]
        if need > num_free[r]:
            break
        for x in range(key_start[ka], key_start[ka + 1]):
            q = run_list[r * s_max + order[x]]
            row = (r * s_max + slot[q]) * m
            allocate(1, r, n, r * n, r * (n + 2), r * (cmask + 1), cmask, ref_cnt, blk_hash, fq_prev, fq_next,
                     hm, num_free, num_mapped, table, row + num_blocks[q])
            num_blocks[q] += 1
        dt = step_time_s(cost_params, nb, nb, nb, decode_ctx0 + (jj - 1) * nb, 0.0, 0.0)
        t_end = t_cur + dt
        used = n - 1 - num_free[r]
        kv_integral[r] += used * dt
        if used > kv_max[r]:
            kv_max[r] = used
        # every request's previous token came at the end of the previous step: gap = dt
        itl_hist[_itl_bin(dt, itl_min_s, itl_per_decade, num_bins)] += num_post
        if dt > max_gap:
            max_gap = dt
        if caching:  # blocks that became full at the end of this step
            kc = (bs - (jj + 1) % bs) % bs
            for x in range(key_start[kc], key_start[kc + 1]):
                i = order[x]
                q = run_list[r * s_max + i]
                upto = min((c0[i] + jj + 1) // bs, num_blocks[q])
                if upto > num_cached[q]:
                    row = (r * s_max + slot[q]) * m
                    label = session[q] if session[q] >= 0 else -2 - q
                    for b in range(num_cached[q], upto):
                        cache_block(table[row + b], hashes[hash_off[q] + b], label, r, r * n, r * (cmask + 1),
                                    cmask, blk_hash, blk_sess, hm, num_mapped)
                    num_cached[q] = upto
        if record_steps:
            if num_steps + j == steps.shape[0]:
                bigger = np.empty((2 * steps.shape[0], steps.shape[1]), np.float64)
                bigger[:num_steps + j] = steps[:num_steps + j]
                steps = bigger
            row_s = steps[num_steps + j]
            row_s[0] = r
            row_s[1] = t_cur
            row_s[2] = dt
            row_s[3] = nb
            row_s[4] = 0
            row_s[5] = nb
            row_s[6] = 0
            row_s[7] = n - 1 - num_free[r]
            row_s[8] = num_mapped[r]
        t_cur = t_end
        j = jj
    for i in range(nb):
        q = run_list[r * s_max + i]
        num_computed[q] += j
        computed_total[q] += j
        generated[q] += j
        if j >= 1:
            last_token_s[q] = t_cur
        if j >= 1 and (math.isnan(o_max_itl[q]) or max_gap > o_max_itl[q]):
            o_max_itl[q] = max_gap
    return j, t_cur, steps


@jit
def _simulate(arrival_s, prompt, output, session, turn, parent, think_s, static_order, child_off, child_ids, sess_idx,
              num_sessions, hash_off, hashes, num_replicas, router, bs, n, s_max, m, budget_max, max_model_len,
              chunked, caching, record_steps, cost_params, itl_min_s, itl_per_decade, itl_from_s, min_think_s,
              o_replica, o_arrival, o_admitted, o_first, o_completion, o_cached, o_computed, o_preempt, o_event,
              o_max_itl, o_status, itl_hist, counters, kv_integral, kv_max):
    """Run the whole simulation; per-request outputs are written into the ``o_*`` arrays.

    Returns the steps matrix (num_steps x len(STEP_COLUMNS), empty unless record_steps) and
    the number of steps. ``counters``: i8[16] = (prefix_cache_queries, prefix_cache_hits, then
    diagnostics: normal steps, fast-path calls, fast-path steps, admission attempts, hit blocks
    found at admission, requests scheduled by normal steps, -, failed admissions, ...);
    ``kv_integral`` f8[R] / ``kv_max`` i8[R]: time integral and peak of blocks in use.
    ``min_think_s``: the smallest think time of any follow-up (inf if none); it bounds how
    far a replica may run ahead of the others in the decode fast path.
    """
    num_req = prompt.shape[0]
    R = num_replicas
    cap = 8
    while cap < 2 * n:
        cap *= 2
    cmask = cap - 1
    # block pool
    ref_cnt = np.zeros(R * n, np.int32)
    blk_hash = np.zeros(R * n, np.uint64)
    blk_sess = np.zeros(R * n, np.int64)
    fq_prev = np.full(R * (n + 2), -1, np.int32)
    fq_next = np.full(R * (n + 2), -1, np.int32)
    hm = np.zeros(2 * R * cap, np.uint64)
    num_free = np.full(R, n - 1, np.int32)
    num_mapped = np.zeros(R, np.int64)
    for r in range(R):
        fq_init(r * (n + 2), n, fq_prev, fq_next)
    pool = (ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped)
    hit_blocks = np.empty(m, np.int32)  # scratch: block ids of a prefix hit
    # per-request state
    num_computed = np.zeros(num_req, np.int32)
    generated = np.zeros(num_req, np.int32)
    num_blocks = np.zeros(num_req, np.int32)
    num_cached = np.zeros(num_req, np.int32)
    slot = np.full(num_req, -1, np.int32)
    last_token_s = np.zeros(num_req, np.float64)
    table = np.zeros(R * s_max * m, np.int32)
    slot_free = np.empty(R * s_max, np.int32)
    slot_top = np.full(R, s_max, np.int32)
    for r in range(R):
        for k in range(s_max):
            slot_free[r * s_max + k] = s_max - 1 - k
    rq = (num_computed, generated, num_blocks, num_cached, slot, last_token_s, o_computed, table, slot_free,
          slot_top)
    # queues
    wcap = num_req + 1
    wq = np.empty(R * wcap, np.int32)
    wq_head = np.zeros(R, np.int64)
    wq_len = np.zeros(R, np.int64)
    run_list = np.empty(R * s_max, np.int32)
    run_len = np.zeros(R, np.int64)
    queues = (wq, wq_head, wq_len, run_list, run_len)
    busy_until = np.zeros(R, np.float64)
    hp_t = np.empty(num_req + 1, np.float64)
    hp_id = np.empty(num_req + 1, np.int64)
    hp_n = np.zeros(1, np.int64)
    heap = (hp_t, hp_id, hp_n)
    sess_rep = np.full(max(num_sessions, 1), -1, np.int32)
    rr_counter = np.zeros(1, np.int64)
    sch_req = np.empty(s_max, np.int32)
    sch_new = np.empty(s_max, np.int32)
    itl = (itl_hist, itl_min_s, itl_per_decade, itl_from_s, o_arrival)
    leap_ok = np.zeros(R, np.bool_)  # every running request emitted in the replica's last step
    scratch = (np.empty(s_max, np.int32), np.empty(s_max, np.int32), np.empty(bs + 1, np.int64))
    num_cols = 9
    steps = np.empty((1024 if record_steps else 0, num_cols), np.float64)
    num_steps = 0

    si = 0
    num_static = static_order.shape[0]
    while True:
        # earliest pending arrival, by (time, id)
        have_arr = False
        from_heap = False
        ta = np.inf
        qa = -1
        if si < num_static:
            qa = static_order[si]
            ta = arrival_s[qa]
            have_arr = True
        if hp_n[0] > 0 and (not have_arr or hp_t[0] < ta or (hp_t[0] == ta and hp_id[0] < qa)):
            ta = hp_t[0]
            qa = hp_id[0]
            have_arr = True
            from_heap = True
        # earliest replica step
        rs = -1
        ts = np.inf
        for r in range(R):
            if wq_len[r] + run_len[r] > 0 and (rs < 0 or busy_until[r] < ts):
                rs = r
                ts = busy_until[r]
        if not have_arr and rs < 0:
            break
        if have_arr and (rs < 0 or ta <= ts):
            if from_heap:
                _heap_pop(hp_t, hp_id, hp_n)
            else:
                si += 1
            o_arrival[qa] = ta
            total = prompt[qa] + output[qa]
            if total > max_model_len or cdiv(total, bs) > n - 1:
                o_status[qa] = 2
                _release_children(qa, ta, child_off, child_ids, think_s, hp_t, hp_id, hp_n)
                continue
            r = _route(qa, router, R, rr_counter, sess_idx, sess_rep, prompt, hash_off, hashes, bs, n, cmask,
                       caching, hm, num_free, wq_len, run_len, hit_blocks, parent, o_replica)
            o_replica[qa] = r
            if wq_len[r] + run_len[r] == 0 and busy_until[r] < ta:
                busy_until[r] = ta
            _wq_push_back(r, qa, wcap, wq, wq_head, wq_len)
            continue

        # one engine step on replica rs at time ts (or several, via the decode fast path)
        r = rs
        t = ts
        if leap_ok[r] and wq_len[r] == 0:
            horizon = ta if have_arr else np.inf
            for r2 in range(R):
                if r2 != r and wq_len[r2] + run_len[r2] > 0 and busy_until[r2] + min_think_s < horizon:
                    horizon = busy_until[r2] + min_think_s
            done, t_done, steps = _decode_leap(r, t, horizon, n, s_max, m, bs, budget_max, caching, record_steps,
                                       cost_params, pool, rq, run_list, run_len, prompt, output, session, hash_off,
                                       hashes, o_arrival, o_max_itl, itl, scratch, kv_integral, kv_max, steps,
                                       num_steps)
            counters[3] += 1
            if done > 0:
                counters[4] += done
                busy_until[r] = t_done
                num_steps += done
                continue
            leap_ok[r] = False  # a completion or a preemption is next: take the normal path
        nsch, budget, preempted = _schedule_running(r, n, s_max, m, bs, budget_max, pool, rq, queues, sch_req,
                                                    sch_new, prompt, o_preempt)
        if not preempted:
            nsch = _schedule_waiting(r, t, n, s_max, m, bs, budget, nsch, chunked, caching, pool, rq, queues,
                                     sch_req, sch_new, prompt, turn, session, hash_off, hashes,
                                     (o_admitted, o_cached, o_event), counters, hit_blocks)
        if nsch == 0:
            continue
        counters[2] += 1
        counters[7] += nsch
        num_tokens = 0
        num_emit = 0
        num_decode = 0
        decode_ctx = 0.0
        attn_units = 0.0
        prefill_ctx = 0.0
        for k in range(nsch):
            q = sch_req[k]
            c = sch_new[k]
            p0 = num_computed[q]
            known = prompt[q] + generated[q]
            num_tokens += c
            if c == 1 and p0 > 0 and p0 + 1 == known:
                num_decode += 1
                decode_ctx += p0 + 1
            else:
                attn_units += c * (p0 + (c + 1) / 2.0)
                prefill_ctx += p0
            if p0 + c == known:
                num_emit += 1
        dt = step_time_s(cost_params, num_tokens, num_emit, num_decode, decode_ctx, attn_units, prefill_ctx)
        t_end = t + dt
        busy_until[r] = t_end
        used = n - 1 - num_free[r]  # blocks held during the step (after its allocations)
        kv_integral[r] += used * dt
        if used > kv_max[r]:
            kv_max[r] = used
        leap_ok[r] = _finish_step(r, t_end, n, s_max, m, bs, nsch, caching, pool, rq, queues, sch_req, sch_new,
                                  prompt, output, session, hash_off, hashes, child_off, child_ids, think_s, heap,
                                  (o_first, o_completion, o_max_itl, o_status), itl)
        if record_steps:
            if num_steps == steps.shape[0]:
                bigger = np.empty((2 * steps.shape[0], num_cols), np.float64)
                bigger[:num_steps] = steps
                steps = bigger
            row = steps[num_steps]
            row[0] = r
            row[1] = t
            row[2] = dt
            row[3] = num_decode
            row[4] = num_tokens - num_decode
            row[5] = run_len[r]
            row[6] = wq_len[r]
            row[7] = n - 1 - num_free[r]
            row[8] = num_mapped[r]
        num_steps += 1
    return steps, num_steps


# ---------------------------------------------------------------------------------------------
def _children_csr(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR of follow-ups per request: children of q are child_ids[child_off[q]:child_off[q+1]]."""
    n = parent.shape[0]
    has = parent >= 0
    counts = np.bincount(parent[has], minlength=n).astype(np.int64)
    child_off = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=child_off[1:])
    child_ids = np.flatnonzero(has)[np.argsort(parent[has], kind="stable")].astype(np.int64)
    return child_off, child_ids


def run_engine(inputs: EngineInputs) -> EngineOutputs:
    """Simulate one framework configuration over a workload (see oracle/engine/README.md)."""
    cfg = inputs.config
    num_req = len(inputs)
    bs = int(cfg.block_size)
    n = inputs.resolved_num_gpu_blocks()
    prompt = np.ascontiguousarray(inputs.prompt_tokens, np.int32)
    output = np.ascontiguousarray(inputs.output_tokens, np.int32)
    parent = np.ascontiguousarray(inputs.parent, np.int64)
    arrival = np.ascontiguousarray(inputs.arrival_s, np.float64)
    static = np.flatnonzero(parent < 0)
    static = static[np.lexsort((static, arrival[static]))].astype(np.int64)
    child_off, child_ids = _children_csr(parent)
    session = np.ascontiguousarray(inputs.session, np.int64)
    uniq, inv = np.unique(session, return_inverse=True)
    sess_idx = np.where(session >= 0, inv - np.count_nonzero(uniq < 0), -1).astype(np.int32)
    num_sessions = int(np.count_nonzero(uniq >= 0))
    total = prompt.astype(np.int64) + output
    fits = total <= cfg.max_model_len
    m = int(((total[fits] + bs - 1) // bs).max()) if fits.any() else 1
    s_max = int(cfg.max_num_seqs)
    follow = parent >= 0
    min_think = float(np.min(inputs.think_s[follow])) if follow.any() else np.inf

    o_replica = np.full(num_req, -1, np.int32)
    o_arrival = np.full(num_req, np.nan)
    o_admitted = np.full(num_req, np.nan)
    o_first = np.full(num_req, np.nan)
    o_completion = np.full(num_req, np.nan)
    o_cached = np.zeros(num_req, np.int32)
    o_computed = np.zeros(num_req, np.int64)
    o_preempt = np.zeros(num_req, np.int32)
    o_event = np.full(num_req, -1, np.int8)
    o_max_itl = np.full(num_req, np.nan)
    o_status = np.zeros(num_req, np.int8)
    itl_hist = np.zeros(ITL_NUM_BINS, np.int64)
    counters = np.zeros(16, np.int64)
    kv_integral = np.zeros(cfg.num_replicas, np.float64)
    kv_max = np.zeros(cfg.num_replicas, np.int64)
    steps, num_steps = _simulate(
        arrival, prompt, output, session, np.ascontiguousarray(inputs.turn, np.int32), parent,
        np.ascontiguousarray(inputs.think_s, np.float64), static, child_off, child_ids, sess_idx, num_sessions,
        np.ascontiguousarray(inputs.hash_offsets, np.int64), np.ascontiguousarray(inputs.hashes, np.uint64),
        int(cfg.num_replicas), int(cfg.router), bs, n, s_max, m, int(cfg.max_num_batched_tokens),
        int(cfg.max_model_len), bool(cfg.enable_chunked_prefill), bool(cfg.enable_prefix_caching),
        bool(cfg.record_steps), np.ascontiguousarray(inputs.cost_params, np.float64),
        float(ITL_MIN_S), float(ITL_BINS_PER_DECADE), float(cfg.warm_up_s), min_think,
        o_replica, o_arrival, o_admitted, o_first, o_completion, o_cached, o_computed, o_preempt, o_event,
        o_max_itl, o_status, itl_hist, counters, kv_integral, kv_max)
    step_table = None
    if cfg.record_steps:
        # The decode fast path lets a replica run ahead of the others: restore global time order
        # (step start, then replica: the order a strictly time-ordered loop records them in).
        rows = steps[:num_steps]
        rows = rows[np.lexsort((rows[:, 0], rows[:, 1]))]
        step_table = {name: rows[:, j].copy() for j, name in enumerate(STEP_COLUMNS)}
        for name in STEP_COLUMNS:
            if name not in ("start_s", "duration_s"):
                step_table[name] = step_table[name].astype(np.int64)
        step_table["replica"] = step_table["replica"].astype(np.int32)
    return EngineOutputs(replica=o_replica, admitted_s=o_admitted, first_token_s=o_first, completion_s=o_completion,
                         arrival_s=o_arrival, cached_tokens=o_cached, computed_tokens=o_computed,
                         preemptions=o_preempt, cache_event=o_event, max_itl_s=o_max_itl, status=o_status,
                         prefix_cache_queries=int(counters[0]), prefix_cache_hits=int(counters[1]),
                         itl_hist=itl_hist, num_steps=int(num_steps), steps=step_table,
                         diagnostics={name: int(counters[k]) for k, name in enumerate(DIAGNOSTICS) if name},
                         kv_used_integral=kv_integral, kv_used_max=kv_max,
                         sim_end_s=float(np.nanmax(o_completion)) if np.isfinite(o_completion).any() else 0.0)
