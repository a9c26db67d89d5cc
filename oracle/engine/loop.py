"""The time-stepped engine: one ``@njit`` loop simulates a whole framework configuration.

The semantics are written down in ``oracle/engine/README.md``; this package is the fast
implementation, ``tests/reference/engine.py`` the slow one, and differential tests hold them
to identical results. State lives in preallocated struct-of-arrays; nothing is allocated per
step (the optional steps table grows by doubling).

    loop.py       _simulate: the event loop (arrivals, follow-ups, which replica steps next)
    queues.py     waiting ring buffers, follow-up heap
    router.py     the four routers
    scheduler.py  one vLLM v1 step: running, admission, step end
    cohort.py     the decoding requests of a replica, kept lazily (O(1 + batch / block_size) a step)
    hashes.py     block hashes stored once per prefix chain

The small kernels are compiled without reference counting (``oracle.kernels._jit.kernel``):
arrays reach them as borrowed references, so the per-step and per-block calls cost no atomic
operations.
"""

from __future__ import annotations

import numpy as np

from oracle.engine.cohort import CNT, HEAD, NPOST, NUM, SUM, J, new_cohort
from oracle.engine.inputs import ITL_BINS_PER_DECADE, ITL_MIN_S, ITL_NUM_BINS, EngineInputs, EngineOutputs
from oracle.engine.queues import _heap_pop, _release_children, _wq_push_back
from oracle.engine.router import _route
from oracle.engine.scheduler import (_cache_cohort, _cohort_fits, _finish_active, _finish_completions, _itl_bin,
                                     _join_active, _materialize_cohort, _schedule_active, _schedule_cohort,
                                     _schedule_waiting)
from oracle.kernels._jit import jit
from oracle.kernels.blockpool import cdiv, fq_init
from oracle.kernels.cost import step_time_s

# Step-table columns (float64 matrix), in order.
STEP_COLUMNS = ("replica", "start_s", "duration_s", "num_decode", "num_prefill_tokens", "num_running",
                "num_waiting", "kv_blocks_used", "kv_blocks_cached")

# Engine counters reported in EngineOutputs.diagnostics (index in the counters array -> name).
DIAGNOSTICS = ("", "", "steps", "cohort_materializations", "cohort_request_steps", "admission_attempts",
               "admission_hit_blocks", "active_request_steps", "router_probes", "failed_admissions", "", "", "")


@jit
def _simulate(arrival_s, prompt, output, session, turn, parent, think_s, static_order, child_off, child_ids, sess_idx,
              num_sessions, hash_off, hashes, num_replicas, router, bs, n, s_max, m, budget_max, max_model_len,
              chunked, full_isl, caching, record_steps, cost_params, itl_min_s, itl_per_decade, itl_from_s, w,
              o_replica, o_arrival, o_admitted, o_first, o_completion, o_cached, o_computed, o_preempt, o_event,
              o_max_itl, o_status, itl_hist, counters, kv_integral, kv_max, ref_cnt, blk_hash, blk_sess, dup_next,
              fq_prev, fq_next, hm, table):
    """Run the whole simulation; per-request outputs are written into the ``o_*`` arrays.

    Returns the steps matrix (num_steps x len(STEP_COLUMNS), empty unless record_steps) and
    the number of steps. ``counters``: i8[16] = (prefix_cache_queries, prefix_cache_hits, then
    the diagnostics named in DIAGNOSTICS: steps, cohort materializations, cohort request-steps,
    admission attempts, hit blocks found at admission, active request-steps, router probes,
    failed admissions; then preempted_requests, preempted_prefix_cache_queries,
    preempted_prefix_cache_hits);
    ``kv_integral`` f8[R] / ``kv_max`` i8[R]: time integral and peak of blocks in use.
    ``w``: a power of two larger than any request's output tokens (the cohort's rings).
    The block pool and the block tables come from the caller (see ``_pool_arrays``).
    """
    num_req = prompt.shape[0]
    R = num_replicas
    cmask = hm.shape[0] // (2 * R) - 1
    # block pool
    num_free = np.full(R, n - 1, np.int32)
    num_mapped = np.zeros(R, np.int64)
    if caching:  # without prefix caching only the number of free blocks is kept
        for r in range(R):
            fq_init(r * (n + 2), n, fq_prev, fq_next)
    pool = (ref_cnt, blk_hash, blk_sess, fq_prev, fq_next, hm, num_free, num_mapped, dup_next)
    hit_blocks = np.empty(m, np.int32)  # scratch: block ids of a prefix hit
    # per-request state
    num_computed = np.zeros(num_req, np.int32)
    generated = np.zeros(num_req, np.int32)
    num_blocks = np.zeros(num_req, np.int32)
    num_cached = np.zeros(num_req, np.int32)
    slot = np.full(num_req, -1, np.int32)
    last_token_s = np.zeros(num_req, np.float64)
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
    act = np.empty(R * s_max, np.int32)
    act_len = np.zeros(R, np.int64)
    queues = (wq, wq_head, wq_len, act, act_len)
    coh = new_cohort(R, s_max, bs, w)
    sl, bk, cl, dtlog, rp = coh
    outs = (o_first, o_completion, o_max_itl, o_status)
    adm_outs = (o_admitted, o_cached, o_event, o_preempt)
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
    scratch = (np.empty(s_max, np.int64), np.empty(s_max, np.int32))
    comp = np.empty(s_max, np.int64)
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
        rs = np.int64(-1)  # not a literal: the kernels below are compiled for one type of r
        ts = np.inf
        for r in range(R):
            if wq_len[r] + s_max - slot_top[r] > 0 and (rs < 0 or busy_until[r] < ts):
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
                       caching, hm, num_free, wq_len, s_max, slot_top, hit_blocks, parent, o_replica, counters)
            o_replica[qa] = r
            if wq_len[r] + s_max - slot_top[r] == 0 and busy_until[r] < ta:
                busy_until[r] = ta
            _wq_push_back(r, qa, wcap, wq, wq_head, wq_len)
            continue

        # one engine step on replica rs at time ts
        r = rs
        t = ts
        nb = rp[r, NUM]
        kb = r * bs + (-rp[r, J]) % bs  # the bucket of members that need a block this step
        if nb > 0:
            if act_len[r] > 0:
                fits = _cohort_fits(r, kb, bs, s_max, budget_max, pool, rq, queues, coh, prompt)
            else:
                fits = nb <= budget_max and bk[kb, CNT] <= num_free[r]
            if not fits:
                _materialize_cohort(r, t, bs, s_max, rq, queues, coh, o_max_itl, scratch)
                counters[3] += 1
                nb = 0
        if nb > 0:
            if caching:
                _schedule_cohort(r, n, m, kb, ref_cnt, blk_hash, dup_next, fq_prev, fq_next, hm, num_free,
                                 num_mapped, num_blocks, table, sl, bk)
            else:
                num_free[r] -= bk[kb, CNT]
        nsch = 0
        budget = budget_max - nb
        preempted = False
        if act_len[r] > 0:
            nsch, budget, preempted = _schedule_active(r, n, s_max, m, bs, budget, caching, pool, rq, queues, coh,
                                                       sch_req, sch_new, prompt, o_preempt, session, hash_off, hashes)
        elif caching and nb > 0 and bk[r * bs + (-rp[r, J] - 1) % bs, HEAD] >= 0:
            # the members that fill a block register it now (at scheduling, before admissions)
            _cache_cohort(r, rp[r, J], n, m, bs, blk_hash, blk_sess, dup_next, hm, num_mapped, num_blocks,
                          num_cached, table, sl, bk, session, hash_off, hashes)
        if not preempted and wq_len[r] > 0:
            nsch = _schedule_waiting(r, t, n, s_max, m, bs, budget, nsch, chunked, full_isl, caching, pool, rq,
                                     queues, coh, sch_req, sch_new, prompt, turn, session, hash_off, hashes,
                                     adm_outs, counters, hit_blocks)
        if nsch == 0 and nb == 0:
            continue
        counters[2] += 1
        counters[4] += nb
        counters[7] += nsch
        num_tokens = nb  # cohort: one decode token each (num_computed = base + J)
        num_emit = nb
        num_decode = nb
        decode_ctx = float(rp[r, SUM] + nb * (rp[r, J] + 1))
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
        # the step's end: the cohort (one token each, gap t_end - t), then active requests
        gap = t_end - t
        jpre = rp[r, J]
        rp[r, J] = jpre + 1
        dtlog[r * w + (jpre & (w - 1))] = gap
        if nb > 0 and rp[r, NPOST] > 0:
            itl_hist[_itl_bin(gap, itl_min_s, itl_per_decade, itl_hist.shape[0])] += rp[r, NPOST]
        if nsch > 0:
            _finish_active(r, t_end, s_max, nsch, rq, coh, sch_req, sch_new, prompt, outs, itl)
        if nsch > 0 or cl[r * w + ((jpre + 1) & (w - 1))] >= 0:
            _finish_completions(r, t_end, n, s_max, m, bs, nsch, caching, pool, rq, coh, sch_req, output, child_off,
                                child_ids, think_s, heap, outs, comp)
        if act_len[r] > 0:
            _join_active(r, s_max, bs, rq, queues, coh, output, o_status, o_arrival, itl_from_s)
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
            row[5] = s_max - slot_top[r]
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


def _pool_arrays(num_replicas: int, n: int, s_max: int, m: int) -> tuple[np.ndarray, ...]:
    """Block pool (ref_cnt, blk_hash, blk_sess, dup_next, fq_prev, fq_next, hash map) and block
    tables.

    Allocated here rather than in the jitted loop: NumPy's zeros and empty map fresh pages
    lazily, so a run pays only for the memory it touches (the pool is sized for the whole
    GPU: a short run, a sweep point, or a run without prefix caching touches little of it);
    the loop's own allocations would be written in full up front. Entries that are read
    before being written are zero: reference counts, block hashes, hash-map keys.
    """
    cap = 8
    while cap < 2 * n:
        cap *= 2
    return (np.zeros(num_replicas * n, np.int32), np.zeros(num_replicas * n, np.uint64),
            np.empty(num_replicas * n, np.int64), np.empty(num_replicas * n, np.int32),
            np.empty(num_replicas * (n + 2), np.int32),
            np.empty(num_replicas * (n + 2), np.int32), np.zeros(2 * num_replicas * cap, np.uint64),
            np.empty(num_replicas * s_max * m, np.int32))


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
    w = 4
    while w < int(output.max(initial=0)) + 2:
        w *= 2

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
        int(cfg.max_model_len), bool(cfg.enable_chunked_prefill), bool(cfg.scheduler_reserve_full_isl),
        bool(cfg.enable_prefix_caching),
        bool(cfg.record_steps), np.ascontiguousarray(inputs.cost_params, np.float64),
        float(ITL_MIN_S), float(ITL_BINS_PER_DECADE), float(cfg.warm_up_s), w,
        o_replica, o_arrival, o_admitted, o_first, o_completion, o_cached, o_computed, o_preempt, o_event,
        o_max_itl, o_status, itl_hist, counters, kv_integral, kv_max,
        *_pool_arrays(int(cfg.num_replicas), n, s_max, m))
    step_table = None
    if cfg.record_steps:
        rows = steps[:num_steps]  # in (start time, replica) order, as the loop ran them
        step_table = {name: rows[:, j].copy() for j, name in enumerate(STEP_COLUMNS)}
        for name in STEP_COLUMNS:
            if name not in ("start_s", "duration_s"):
                step_table[name] = step_table[name].astype(np.int64)
        step_table["replica"] = step_table["replica"].astype(np.int32)
    return EngineOutputs(replica=o_replica, admitted_s=o_admitted, first_token_s=o_first, completion_s=o_completion,
                         arrival_s=o_arrival, cached_tokens=o_cached, computed_tokens=o_computed,
                         preemptions=o_preempt, cache_event=o_event, max_itl_s=o_max_itl, status=o_status,
                         prefix_cache_queries=int(counters[0]), prefix_cache_hits=int(counters[1]),
                         preempted_requests=int(counters[10]), preempted_prefix_cache_queries=int(counters[11]),
                         preempted_prefix_cache_hits=int(counters[12]),
                         itl_hist=itl_hist, num_steps=int(num_steps), steps=step_table,
                         diagnostics={name: int(counters[k]) for k, name in enumerate(DIAGNOSTICS) if name},
                         kv_used_integral=kv_integral, kv_used_max=kv_max,
                         sim_end_s=float(np.nanmax(o_completion)) if np.isfinite(o_completion).any() else 0.0)
