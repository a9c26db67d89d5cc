"""The time-stepped engine: one ``@njit`` loop simulates a whole framework configuration.

The semantics are written down in ``oracle/engine/README.md``; this module is the fast
implementation, ``tests/reference/engine.py`` the slow one, and differential tests hold them
to identical results. State lives in preallocated struct-of-arrays; nothing is allocated per
step (the optional steps table grows by doubling).

State groups passed between the kernels as tuples of arrays:

* ``pool``  = (ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm_key, hm_val, num_free, num_mapped)
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

# Cache events (see oracle.engine.inputs.CacheEvent); passed into the kernels as literals.
_MISS_FULL, _CROSS, _CONV_HIT, _FULL_HIT, _CONV_MISS = 0, 1, 2, 3, 4


# ---------------------------------------------------------------------------------------------
# queues
@jit
def _wq_push_back(r, q, wcap, wq, wq_head, wq_len):
    wq[r * wcap + (wq_head[r] + wq_len[r]) % wcap] = q
    wq_len[r] += 1


@jit
def _wq_push_front(r, q, wcap, wq, wq_head, wq_len):
    wq_head[r] = (wq_head[r] - 1 + wcap) % wcap
    wq[r * wcap + wq_head[r]] = q
    wq_len[r] += 1


@jit
def _wq_front(r, wcap, wq, wq_head):
    return wq[r * wcap + wq_head[r]]


@jit
def _wq_pop_front(r, wcap, wq_head, wq_len):
    wq_head[r] = (wq_head[r] + 1) % wcap
    wq_len[r] -= 1


@jit
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


@jit
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


@jit
def _release_children(q, t, child_off, child_ids, think_s, hp_t, hp_id, hp_n):
    """Follow-ups of ``q`` arrive ``think_s`` after ``q`` ends at time ``t``."""
    for k in range(child_off[q], child_off[q + 1]):
        c = child_ids[k]
        _heap_push(t + think_s[c], c, hp_t, hp_id, hp_n)


# ---------------------------------------------------------------------------------------------
# routing
@jit
def _load(r, wq_len, run_len):
    return 4 * wq_len[r] + run_len[r]


@jit
def _least_loaded(num_replicas, wq_len, run_len):
    best = 0
    for r in range(1, num_replicas):
        if _load(r, wq_len, run_len) < _load(best, wq_len, run_len):
            best = r
    return best


@jit
def _route(q, router, num_replicas, rr_counter, sess_idx, sess_rep, prompt, hash_off, hashes, bs, n, cmask,
           caching, hm_key, hm_val, num_free, wq_len, run_len):
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
    # prefix_aware: new prefill blocks + blocks in use, ties to the lower load, then lower r
    p = prompt[q]
    max_hit = (p - 1) // bs
    best = -1
    best_cost = 0
    for r in range(num_replicas):
        hit = 0
        if caching:
            hit = match_prefix(hashes, hash_off[q], max_hit, r * (cmask + 1), cmask, hm_key, hm_val)
        cost = (cdiv(p, bs) - hit) + (n - 1 - num_free[r])
        if best < 0 or cost < best_cost or (cost == best_cost
                                            and _load(r, wq_len, run_len) < _load(best, wq_len, run_len)):
            best = r
            best_cost = cost
    return best


# ---------------------------------------------------------------------------------------------
# scheduling
@jit
def _free_request(q, r, n, s_max, m, pool, rq):
    """Free all blocks of running request q (reverse order) and give its slot back."""
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm_key, hm_val, num_free, num_mapped = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    row = (r * s_max + slot[q]) * m
    free_blocks(table, row, num_blocks[q], r, n, r * n, r * (n + 2), ref_cnt, fq_prev, fq_next, num_free)
    num_blocks[q] = 0
    slot_free[r * s_max + slot_top[r]] = slot[q]
    slot_top[r] += 1
    slot[q] = -1


@jit
def _schedule_running(r, n, s_max, m, bs, budget, pool, rq, queues, sch_req, sch_new, prompt, out_preempt):
    """vLLM v1 pass over running requests; returns (num_scheduled, budget_left, preempted)."""
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm_key, hm_val, num_free, num_mapped = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    wq, wq_head, wq_len, run_list, run_len = queues
    wcap = wq.shape[0] // wq_len.shape[0]
    cmask = hm_key.shape[0] // wq_len.shape[0] - 1
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
        row = (r * s_max + slot[q]) * m
        allocate(need, r, n, r * n, r * (n + 2), r * (cmask + 1), cmask, ref_cnt, blk_hash, fq_prev, fq_next,
                 hm_key, hm_val, num_free, num_mapped, table, row + num_blocks[q])
        num_blocks[q] += need
        sch_req[nsch] = q
        sch_new[nsch] = num_new
        nsch += 1
        budget -= num_new
        i += 1
    return nsch, budget, preempted


@jit
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


@jit
def _schedule_waiting(r, t, n, s_max, m, bs, budget, nsch, chunked, caching, pool, rq, queues, sch_req, sch_new,
                      prompt, turn, session, hash_off, hashes, out, counters):
    """Admit waiting requests FCFS until one does not fit; returns num_scheduled."""
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm_key, hm_val, num_free, num_mapped = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    wq, wq_head, wq_len, run_list, run_len = queues
    o_admitted, o_cached, o_event = out
    wcap = wq.shape[0] // wq_len.shape[0]
    cmask = hm_key.shape[0] // wq_len.shape[0] - 1
    hbase = r * (cmask + 1)
    while wq_len[r] > 0 and budget > 0 and run_len[r] < s_max:
        q = _wq_front(r, wcap, wq, wq_head)
        num_tokens = prompt[q] + generated[q]
        max_hit = (num_tokens - 1) // bs
        hit = 0
        if caching:
            hit = match_prefix(hashes, hash_off[q], max_hit, hbase, cmask, hm_key, hm_val)
        hit_tokens = hit * bs
        num_new = num_tokens - hit_tokens
        if not chunked and num_new > budget:
            break
        num_new = min(num_new, budget)
        need = cdiv(hit_tokens + num_new, bs) - hit
        evictable = 0
        if hit > 0:
            evictable = count_evictable_hits(hashes, hash_off[q], hit, r * n, hbase, cmask, hm_key, hm_val, ref_cnt)
        if need + evictable > num_free[r]:
            break
        slot_top[r] -= 1
        slot[q] = slot_free[r * s_max + slot_top[r]]
        row = (r * s_max + slot[q]) * m
        touch_hits(hashes, hash_off[q], hit, r, r * n, r * (n + 2), hbase, cmask, hm_key, hm_val, ref_cnt,
                   fq_prev, fq_next, num_free, table, row)
        allocate(need, r, n, r * n, r * (n + 2), hbase, cmask, ref_cnt, blk_hash, fq_prev, fq_next,
                 hm_key, hm_val, num_free, num_mapped, table, row + hit)
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


@jit
def _finish_step(r, t_end, n, s_max, m, bs, nsch, caching, pool, rq, queues, sch_req, sch_new, prompt, output,
                 session, hash_off, hashes, child_off, child_ids, think_s, heap, out, itl):
    """Apply a step's results at its end time: tokens, ITL, block caching, completions."""
    ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm_key, hm_val, num_free, num_mapped = pool
    num_computed, generated, num_blocks, num_cached, slot, last_token_s, computed_total, table, slot_free, \
        slot_top = rq
    wq, wq_head, wq_len, run_list, run_len = queues
    hp_t, hp_id, hp_n = heap
    o_first, o_completion, o_max_itl, o_status = out
    itl_hist, itl_min_s, itl_per_decade, itl_from_s, o_arrival = itl
    cmask = hm_key.shape[0] // wq_len.shape[0] - 1
    num_finished = 0
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
                    b = 0
                    if gap >= itl_min_s:
                        b = min(int(math.floor(math.log10(gap / itl_min_s) * itl_per_decade)) + 1,
                                itl_hist.shape[0] - 1)
                    itl_hist[b] += 1
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
                                blk_hash, blk_sess, hm_key, hm_val, num_mapped)
                num_cached[q] = upto
        if generated[q] == output[q]:
            o_completion[q] = t_end
            o_status[q] = 1
            _free_request(q, r, n, s_max, m, pool, rq)
            _release_children(q, t_end, child_off, child_ids, think_s, hp_t, hp_id, hp_n)
            num_finished += 1
    if num_finished > 0:  # compact the running list, keeping order
        j = 0
        for i in range(run_len[r]):
            q = run_list[r * s_max + i]
            if o_status[q] != 1:
                run_list[r * s_max + j] = q
                j += 1
        run_len[r] = j


@jit
def _simulate(arrival_s, prompt, output, session, turn, think_s, static_order, child_off, child_ids, sess_idx,
              num_sessions, hash_off, hashes, num_replicas, router, bs, n, s_max, m, budget_max, max_model_len,
              chunked, caching, record_steps, cost_params, itl_min_s, itl_per_decade, itl_from_s,
              o_replica, o_arrival, o_admitted, o_first, o_completion, o_cached, o_computed, o_preempt, o_event,
              o_max_itl, o_status, itl_hist, counters, kv_integral, kv_max):
    """Run the whole simulation; per-request outputs are written into the ``o_*`` arrays.

    Returns the steps matrix (num_steps x len(STEP_COLUMNS), empty unless record_steps) and
    the number of steps. ``counters``: i8[2] = (prefix_cache_queries, prefix_cache_hits);
    ``kv_integral`` f8[R] / ``kv_max`` i8[R]: time integral and peak of blocks in use.
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
    hm_key = np.zeros(R * cap, np.uint64)
    hm_val = np.full(R * cap, -1, np.int32)
    num_free = np.full(R, n - 1, np.int32)
    num_mapped = np.zeros(R, np.int64)
    for r in range(R):
        fq_init(r * (n + 2), n, fq_prev, fq_next)
    pool = (ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm_key, hm_val, num_free, num_mapped)
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
                       caching, hm_key, hm_val, num_free, wq_len, run_len)
            o_replica[qa] = r
            if wq_len[r] + run_len[r] == 0 and busy_until[r] < ta:
                busy_until[r] = ta
            _wq_push_back(r, qa, wcap, wq, wq_head, wq_len)
            continue

        # one engine step on replica rs at time ts
        r = rs
        t = ts
        nsch, budget, preempted = _schedule_running(r, n, s_max, m, bs, budget_max, pool, rq, queues, sch_req,
                                                    sch_new, prompt, o_preempt)
        if not preempted:
            nsch = _schedule_waiting(r, t, n, s_max, m, bs, budget, nsch, chunked, caching, pool, rq, queues,
                                     sch_req, sch_new, prompt, turn, session, hash_off, hashes,
                                     (o_admitted, o_cached, o_event), counters)
        if nsch == 0:
            continue
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
        _finish_step(r, t_end, n, s_max, m, bs, nsch, caching, pool, rq, queues, sch_req, sch_new, prompt, output,
                     session, hash_off, hashes, child_off, child_ids, think_s, heap,
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
    counters = np.zeros(2, np.int64)
    kv_integral = np.zeros(cfg.num_replicas, np.float64)
    kv_max = np.zeros(cfg.num_replicas, np.int64)
    steps, num_steps = _simulate(
        arrival, prompt, output, session, np.ascontiguousarray(inputs.turn, np.int32),
        np.ascontiguousarray(inputs.think_s, np.float64), static, child_off, child_ids, sess_idx, num_sessions,
        np.ascontiguousarray(inputs.hash_offsets, np.int64), np.ascontiguousarray(inputs.hashes, np.uint64),
        int(cfg.num_replicas), int(cfg.router), bs, n, s_max, m, int(cfg.max_num_batched_tokens),
        int(cfg.max_model_len), bool(cfg.enable_chunked_prefill), bool(cfg.enable_prefix_caching),
        bool(cfg.record_steps), np.ascontiguousarray(inputs.cost_params, np.float64),
        float(ITL_MIN_S), float(ITL_BINS_PER_DECADE), float(cfg.warm_up_s),
        o_replica, o_arrival, o_admitted, o_first, o_completion, o_cached, o_computed, o_preempt, o_event,
        o_max_itl, o_status, itl_hist, counters, kv_integral, kv_max)
    step_table = None
    if cfg.record_steps:
        step_table = {name: steps[:num_steps, j].copy() for j, name in enumerate(STEP_COLUMNS)}
        for name in STEP_COLUMNS:
            if name not in ("start_s", "duration_s"):
                step_table[name] = step_table[name].astype(np.int64)
        step_table["replica"] = step_table["replica"].astype(np.int32)
    return EngineOutputs(replica=o_replica, admitted_s=o_admitted, first_token_s=o_first, completion_s=o_completion,
                         arrival_s=o_arrival, cached_tokens=o_cached, computed_tokens=o_computed,
                         preemptions=o_preempt, cache_event=o_event, max_itl_s=o_max_itl, status=o_status,
                         prefix_cache_queries=int(counters[0]), prefix_cache_hits=int(counters[1]),
                         itl_hist=itl_hist, num_steps=int(num_steps), steps=step_table,
                         kv_used_integral=kv_integral, kv_used_max=kv_max,
                         sim_end_s=float(np.nanmax(o_completion)) if np.isfinite(o_completion).any() else 0.0)
