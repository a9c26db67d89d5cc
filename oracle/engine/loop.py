"""The time-stepped engine: one ``@njit`` loop simulates a whole framework configuration.

The semantics are written down in ``oracle/engine/README.md``; this package is the fast
implementation, ``tests/reference/engine.py`` the slow one, and differential tests (and
``tests/conformance/``, against vLLM's own scheduler) hold them to identical results. State
lives in preallocated struct-of-arrays records (``state.py``); nothing is allocated per step
(the optional steps table grows by doubling).

    loop.py       the event loop: next arrival or next replica step, in time order
    state.py      the named records (Requests, Config, Outputs, State) and the counters
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

from oracle.engine.async_sched import apply_last_outputs
from oracle.engine.cohort import CNT, NPOST, NUM, SUM, J
from oracle.engine.inputs import ITL_BINS_PER_DECADE, ITL_MIN_S, STEP_COLUMNS, EngineInputs, EngineOutputs, Status
from oracle.engine.lora import lora_outputs, lora_step_s, new_lora
from oracle.engine.queues import heap_pop, heap_push, release_followups, wq_push_back, wq_remove
from oracle.engine.offload import HostCounter, offload_scheduled, take_load_s
from oracle.engine.router import route
from oracle.engine.scheduler import (abort_running, cache_cohort, cohort_fits, fill_bucket, finish_active,
                                     finish_completions,
                                     itl_bin, join_active, materialize_cohort, schedule_active, schedule_cohort,
                                     schedule_waiting)
from oracle.engine.spec_cohort import spec_cohort_fits, spec_end_step, spec_price, spec_schedule_cohort
from oracle.engine.specdec import max_blocks, spec_keys, spec_thresholds
from oracle.engine.state import DIAGNOSTICS, Config, Counter, Requests, new_state
from oracle.kernels._jit import jit, kernel
from oracle.kernels.blockpool import cdiv
from oracle.kernels.cost import step_time_s
from oracle.kernels.drafter import draft_time_s
from oracle.kernels.kvcache import num_free, num_hashed, num_used

NUM_STEP_COLUMNS = len(STEP_COLUMNS)


@jit
def _simulate(req, cfg, st):
    """Run the whole simulation; results go into ``st.out``. Returns the steps matrix
    (num_steps x len(STEP_COLUMNS), empty unless ``cfg.record_steps``) and the number of steps.

    The events are processed by :func:`_run`, compiled without reference counting, with
    every per-event kernel inlined into it; this function only grows the steps table when
    ``_run`` has filled it.
    """
    steps = np.empty((1024 if cfg.record_steps else 0, NUM_STEP_COLUMNS), np.float64)
    pos = np.zeros(2, np.int64)  # (next request without a parent, in arrival order; steps so far)
    while not _run(req, cfg, st, steps, pos):
        steps = grow_steps(steps, pos[1])
    return steps, pos[1]


@jit
def grow_steps(steps, num_steps):
    """The steps table with twice the rows, its first ``num_steps`` rows copied."""
    bigger = np.empty((2 * steps.shape[0], steps.shape[1]), np.float64)
    bigger[:num_steps] = steps[:num_steps]
    return bigger


@kernel
def _run(req, cfg, st, steps, pos):
    """Process aborts, arrivals and steps strictly in time order (ties: aborts, then
    arrivals, then the lowest replica's step), so the steps table comes out in (start time,
    replica) order. Returns True when no event is left, False when the steps table is full
    (``pos`` then says where to resume)."""
    qs = st.qs
    si, num_steps = pos[0], pos[1]
    while True:
        if cfg.record_steps and num_steps == steps.shape[0]:
            pos[0], pos[1] = si, num_steps
            return False
        q, ta, from_heap = _next_arrival(si, req.static_order, req.arrival_s, qs.hp_t, qs.hp_id, qs.hp_n)
        r, ts = _next_step(cfg.max_num_seqs, qs.wq_len, st.rs.slot_top, qs.busy_until)
        if qs.ab_n[0] > 0 and (q < 0 or qs.ab_t[0] <= ta) and (r < 0 or qs.ab_t[0] <= ts):
            qa, t_abort = qs.ab_id[0], qs.ab_t[0]
            heap_pop(qs.ab_t, qs.ab_id, qs.ab_n)
            _abort(qa, t_abort, cfg, req, st)
            continue
        if q < 0 and r < 0:
            break
        if q >= 0 and (r < 0 or ta <= ts):
            if from_heap:
                heap_pop(qs.hp_t, qs.hp_id, qs.hp_n)
            else:
                si += 1
            _arrive(q, ta, cfg, req, st)
            continue
        dt, num_decode, num_tokens = _step(r, ts, cfg, req, st)
        if dt < 0:  # nothing scheduled (only after a preemption): no time passes
            continue
        if cfg.record_steps:
            _record_step(steps[num_steps], r, ts, dt, num_decode, num_tokens, cfg, st)
        num_steps += 1
    pos[0], pos[1] = si, num_steps
    return True


@jit(inline="always")
def _has_work(cfg, st, r):
    """Replica r has waiting or running requests (a running one holds a slot)."""
    return st.qs.wq_len[r] + cfg.max_num_seqs - st.rs.slot_top[r] > 0


@jit(inline="always")
def _next_arrival(si, static_order, arrival_s, hp_t, hp_id, hp_n):
    """``(request, time, from_heap)`` of the earliest pending arrival by (time, id): the next
    request without a parent (``static_order[si]``) or the head of the follow-up heap;
    request -1 if none."""
    qa = np.int64(-1)
    ta = np.inf
    from_heap = False
    if si < static_order.shape[0]:
        qa = static_order[si]
        ta = arrival_s[qa]
    if hp_n[0] > 0 and (qa < 0 or hp_t[0] < ta or (hp_t[0] == ta and hp_id[0] < qa)):
        ta = hp_t[0]
        qa = hp_id[0]
        from_heap = True
    return qa, ta, from_heap


@jit(inline="always")
def _next_step(s_max, wq_len, slot_top, busy_until):
    """``(replica, time)`` of the next step: the replica with work (waiting or running
    requests; a running one holds one of the ``s_max`` slots) whose clock is earliest (ties:
    the lowest); replica -1 if none has work."""
    rs = np.int64(-1)  # not a literal: the kernels below are compiled for one type of r
    ts = np.inf
    for r in range(busy_until.shape[0]):
        if wq_len[r] + s_max - slot_top[r] > 0 and (rs < 0 or busy_until[r] < ts):
            rs = r
            ts = busy_until[r]
    return rs, ts


@jit(inline="always")
def _arrive(q, ta, cfg, req, st):
    """Request q arrives at ta: rejected if it can never fit, else routed to a waiting queue."""
    out, qs = st.out, st.qs
    out.arrival_s[q] = ta
    total = req.prompt[q] + req.output[q]
    if total > cfg.max_model_len or max_blocks(total, cfg) > st.pool.n - 1:
        out.status[q] = Status.REJECTED
        release_followups(qs, req, q, ta)
        return
    _enqueue(q, route(q, cfg, req, st), ta, cfg, req, st)


@jit(inline="always")
def _enqueue(q, r, ta, cfg, req, st):
    """Request q joins replica r's waiting tail at ta (its client's deadline, if any, armed)."""
    qs = st.qs
    st.out.replica[q] = r
    if not _has_work(cfg, st, r) and qs.busy_until[r] < ta:
        qs.busy_until[r] = ta
    wq_push_back(qs, r, q)
    if req.timeout_s[q] < np.inf:
        heap_push(qs.ab_t, qs.ab_id, qs.ab_n, ta + req.timeout_s[q], q)


@jit(inline="always")
def _abort(q, a, cfg, req, st):
    """The client of request q gives up at a (README "Client timeouts"): a request still
    waiting or running is aborted (out of its queue, blocks freed) and its follow-ups go."""
    out = st.out
    if out.status[q] != Status.PENDING:  # already done (in time, or too late: TIMED_OUT then)
        return
    r = out.replica[q]
    if st.rs.slot[q] >= 0:
        abort_running(q, r, cfg, req, st)
    else:
        wq_remove(st.qs, r, q)
    out.status[q] = Status.TIMED_OUT
    release_followups(st.qs, req, q, a)


@jit(inline="always")
def _step(r, t, cfg, req, st):
    """One engine step on replica r starting at t (README "One step"). Returns
    ``(duration, num_decode, num_tokens)``; duration -1 when nothing was scheduled.

    With async scheduling (README "Async scheduling", ``async_sched.py``) a step that starts
    as the last one ends was scheduled when that one started: it is scheduled with that
    view, then the last step's outputs are applied; if it scheduled nothing, vLLM schedules
    again once they are in."""
    pool, qs = st.pool, st.qs
    asy = cfg.async_scheduling and t == qs.last_end[r]
    if cfg.async_scheduling and not asy and qs.held_len[r] > 0:
        apply_last_outputs(r, 0, 0, cfg, req, st)
    cutoff = qs.last_start[r] if asy else np.inf
    while True:
        nb, nsch, nrun = _schedule(r, t, cutoff, 1 if asy else 0, cfg, req, st)
        if not asy:
            break
        apply_last_outputs(r, nrun, qs.act_len[r] - (nsch - nrun), cfg, req, st)
        if nsch > 0 or nb > 0:
            break
        asy = False
        cutoff = np.inf
    if nsch == 0 and nb == 0:
        qs.last_end[r] = np.nan
        return -1.0, 0, 0
    out = st.out
    if st.host.enabled:
        offload_scheduled(nsch, r, cfg, req, st)
    out.counters[Counter.STEPS.value] += 1
    out.counters[Counter.COHORT_REQUEST_STEPS.value] += nb
    out.counters[Counter.ACTIVE_REQUEST_STEPS.value] += nsch
    dt, num_decode, num_tokens = _price(r, nb, nsch, cfg, req, st)
    if st.host.enabled:
        dt += take_load_s(st.host, r)  # host loads complete before the forward pass
    if st.lora.on:   # adapter loads before the forward pass, punica kernels in it
        dt += lora_step_s(st.lora, r, nsch, st.sc.sch_req, st.sc.sch_new)
    t_end = t + dt
    qs.busy_until[r] = t_end
    qs.last_start[r] = t
    qs.last_end[r] = t_end
    used = num_used(pool, r)  # blocks held during the step (after its allocations)
    out.kv_integral[r] += used * dt
    if used > out.kv_max[r]:
        out.kv_max[r] = used
    _end_step(r, t, t_end, nb, nsch, cfg, req, st)
    return dt, num_decode, num_tokens


@jit(inline="always")
def _schedule(r, t, cutoff, lag, cfg, req, st):
    """vLLM ``Scheduler.schedule()`` on replica r at t: the cohort, the active running
    requests, then admissions of requests that arrived by ``cutoff``. Returns ``(cohort
    members scheduled, active requests scheduled, of which running before)``."""
    pool, qs, coh, out = st.pool, st.qs, st.coh, st.out
    bs = cfg.block_size
    # the cohort takes one token each, unless that could starve or preempt somebody
    nb = coh.rp[r, NUM]
    kb = r * bs + (-coh.rp[r, J]) % bs  # the bucket of members that need a block this step
    if nb > 0:
        if cfg.spec_k > 0:  # the speculative cohort: each member verifies 1 + k tokens
            fits = spec_cohort_fits(r, cfg, req, st)
        elif qs.act_len[r] > 0:
            fits = cohort_fits(r, kb, cfg, req, st)
        else:
            fits = nb <= cfg.max_num_batched_tokens and coh.bk[kb, CNT] <= num_free(pool, r)
        if not fits:
            materialize_cohort(r, t, cfg, req, st)
            out.counters[Counter.COHORT_MATERIALIZATIONS.value] += 1
            nb = 0
    if nb > 0:
        if cfg.spec_k > 0:
            spec_schedule_cohort(r, cfg, st)
        else:
            schedule_cohort(r, kb, cfg, st)
    # running requests, then admissions; vLLM input_budget - draft_slots, less the members'
    # tokens and draft slots
    nsch = 0
    budget = cfg.max_num_batched_tokens - cfg.spec_draft_slots - nb * (1 + cfg.spec_k + cfg.spec_draft_slots)
    preempted = False
    if qs.act_len[r] > 0:
        nsch, budget, preempted = schedule_active(r, budget, lag, cfg, req, st)
    elif pool.caching and nb > 0 and fill_bucket(cfg, coh, r, lag) >= 0:
        cache_cohort(r, lag, cfg, req, st)  # the members that fill a block register it now
    nrun = nsch
    if not preempted and qs.wq_len[r] > 0:
        nsch = schedule_waiting(r, t, cutoff, budget, nsch, nb, cfg, req, st)
    return nb, nsch, nrun


@jit(inline="always")
def _price(r, nb, nsch, cfg, req, st):
    """The step's aggregates (README "Step aggregates") and its duration; returns
    ``(duration, num_decode, num_tokens)``. The ``nb`` cohort members decode one token each
    (num_computed = base + J), or with speculative decoding verify 1 + k tokens each
    (``spec_cohort.spec_price``)."""
    rs, sc, rp = st.rs, st.sc, st.coh.rp
    if cfg.spec_k > 0:  # the speculative cohort's members verify 1 + k tokens each
        num_tokens, num_emit, attn_units, prefill_ctx, num_propose, propose_ctx = spec_price(r, nb, cfg, st)
        num_decode = 0
        decode_ctx = 0.0
    else:
        num_tokens = nb
        num_emit = nb
        num_decode = nb
        decode_ctx = float(rp[r, SUM] + nb * (rp[r, J] + 1))
        attn_units = 0.0
        prefill_ctx = 0.0
        num_propose = 0  # sequences that emit (and so propose drafts)
        propose_ctx = 0.0
    for k in range(nsch):
        q = sc.sch_req[k]
        c = sc.sch_new[k]
        p0 = rs.num_computed[q]
        known = req.prompt[q] + rs.generated[q]
        num_tokens += c
        if c == 1 and p0 > 0 and p0 + 1 == known:
            num_decode += 1
            decode_ctx += p0 + 1
        else:  # a prefill chunk, or a verification of drafts (1 + drafts query tokens)
            attn_units += c * (p0 + (c + 1) / 2.0)
            prefill_ctx += p0
        if p0 + c >= known:  # the LM head runs on the last known token and every draft
            num_emit += p0 + c - known + 1
            num_propose += 1
            propose_ctx += p0 + c
    dt = step_time_s(cfg.cost_params, num_tokens, num_emit, num_decode, decode_ctx, attn_units, prefill_ctx)
    if cfg.spec_k > 0:
        dt += draft_time_s(cfg.draft_params, cfg.spec_k, num_tokens, num_decode, decode_ctx, attn_units, prefill_ctx,
                           num_propose, propose_ctx)
    return dt, num_decode, num_tokens


@jit(inline="always")
def _end_step(r, t, t_end, nb, nsch, cfg, req, st):
    """The step's end: the cohort's tokens (one each, gap t_end - t; with speculative
    decoding accepted + 1 each, ``spec_cohort.spec_end_step``), then the active requests'
    tokens, completions in running order, and new cohort members."""
    coh, out = st.coh, st.out
    w = cfg.ring
    gap = t_end - t
    jpre = coh.rp[r, J]
    coh.rp[r, J] = jpre + 1
    coh.dtlog[r * w + (jpre & (w - 1))] = gap
    if nb > 0 and coh.rp[r, NPOST] > 0:
        out.itl_hist[itl_bin(gap, cfg, out.itl_hist.shape[0])] += coh.rp[r, NPOST]
    if cfg.spec_k > 0 and nb > 0:
        spec_end_step(r, jpre, nb, cfg, st)
    if nsch > 0:
        finish_active(r, t_end, nsch, cfg, req, st)
    if nsch > 0 or coh.cl[r * w + ((jpre + 1) & (w - 1))] >= 0:
        finish_completions(r, t_end, nsch, cfg, req, st)
    if st.qs.act_len[r] > 0:
        join_active(r, cfg, req, st)


@jit(inline="always")
def _record_step(row, r, t, dt, num_decode, num_tokens, cfg, st):
    """One row of the steps table (STEP_COLUMNS order), state after the step."""
    row[0] = r
    row[1] = t
    row[2] = dt
    row[3] = num_decode
    row[4] = num_tokens - num_decode
    row[5] = cfg.max_num_seqs - st.rs.slot_top[r]
    row[6] = st.qs.wq_len[r]
    row[7] = num_used(st.pool, r)
    row[8] = num_hashed(st.pool, r)


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


def _readonly(a, dtype) -> np.ndarray:
    """``a`` as a C-contiguous, read-only array of ``dtype`` (no copy when it already is one)."""
    v = np.ascontiguousarray(a, dtype).view()
    v.flags.writeable = False
    return v


def _writable(a, dtype) -> np.ndarray:
    """``a`` as a C-contiguous, writable array of ``dtype`` (copied only when it is not)."""
    return np.require(a, dtype, ("C", "W"))


def _requests(inputs: EngineInputs) -> tuple[Requests, int]:
    """The :data:`Requests` record of the inputs and the number of sessions.

    Every field has one array type whatever the inputs' flags: the request columns the engine
    only reads are read-only views, the rest writable (copied if an input was read-only, e.g.
    a zero-copy Arrow column). Numba compiles one machine-code version per argument type, so a
    read-only column would otherwise cost a second full compile of the engine."""
    parent = _readonly(inputs.parent, np.int64)
    arrival = _writable(inputs.arrival_s, np.float64)
    static = np.flatnonzero(parent < 0)
    static = static[np.lexsort((static, arrival[static]))].astype(np.int64)
    child_off, child_ids = _children_csr(parent)
    session = _readonly(inputs.session, np.int64)
    uniq, inv = np.unique(session, return_inverse=True)
    sess_idx = np.where(session >= 0, inv - np.count_nonzero(uniq < 0), -1).astype(np.int32)
    req = Requests(arrival_s=arrival, prompt=_readonly(inputs.prompt_tokens, np.int32),
                   output=_readonly(inputs.output_tokens, np.int32), session=session,
                   turn=_readonly(inputs.turn, np.int32), parent=parent,
                   think_s=_readonly(inputs.think_s, np.float64), static_order=static,
                   child_off=child_off, child_ids=child_ids, sess_idx=sess_idx,
                   hash_off=_writable(inputs.hash_offsets, np.int64),
                   hashes=_writable(inputs.hashes, np.uint64),
                   timeout_s=np.full(len(inputs), np.inf) if inputs.timeout_s is None
                   else _writable(inputs.timeout_s, np.float64),
                   spec_thr=spec_thresholds(inputs.config.spec_acceptance if inputs.config.num_speculative_tokens > 0
                                            else ()),
                   spec_keys=spec_keys(inputs.config.spec_seed))
    return req, int(np.count_nonzero(uniq >= 0))


def _config(inputs: EngineInputs) -> Config:
    """The :data:`Config` record: the engine settings plus sizes derived from the requests."""
    cfg = inputs.config
    bs = int(cfg.block_size)
    total = inputs.prompt_tokens.astype(np.int64) + inputs.output_tokens
    fits = total <= cfg.max_model_len
    m = int(inputs.max_blocks()[fits].max()) if fits.any() else 1
    ring = 4
    while ring < int(inputs.output_tokens.max(initial=0)) + 2:
        ring *= 2
    return Config(num_replicas=np.int64(cfg.num_replicas), router=np.int64(cfg.router), block_size=np.int64(bs),
                  max_num_seqs=np.int64(cfg.max_num_seqs), max_blocks_per_request=np.int64(m),
                  max_num_batched_tokens=np.int64(cfg.max_num_batched_tokens),
                  max_model_len=np.int64(cfg.max_model_len), enable_chunked_prefill=bool(cfg.enable_chunked_prefill),
                  scheduler_reserve_full_isl=bool(cfg.scheduler_reserve_full_isl),
                  enable_prefix_caching=bool(cfg.enable_prefix_caching), record_steps=bool(cfg.record_steps),
                  async_scheduling=bool(cfg.async_scheduling),
                  ring=np.int64(ring), itl_min_s=float(ITL_MIN_S), itl_bins_per_decade=float(ITL_BINS_PER_DECADE),
                  itl_from_s=float(cfg.warm_up_s), cost_params=np.ascontiguousarray(inputs.cost_params, np.float64),
                  host_kv_blocks=np.int64(cfg.host_kv_blocks), host_load_s_per_block=float(cfg.host_load_s_per_block),
                  host_load_latency_s=float(cfg.host_load_latency_s),
                  spec_k=np.int64(cfg.num_speculative_tokens), spec_lookahead=np.int64(cfg.spec_num_lookahead_tokens),
                  spec_draft_slots=np.int64(cfg.spec_draft_slots),
                  draft_params=np.zeros(0) if inputs.draft_cost_params is None
                  else np.ascontiguousarray(inputs.draft_cost_params, np.float64))


def run_engine(inputs: EngineInputs) -> EngineOutputs:
    """Simulate one framework configuration over a workload (see oracle/engine/README.md)."""
    req, num_sessions = _requests(inputs)
    cfg = _config(inputs)
    lora = new_lora(inputs.lora_adapter, int(cfg.num_replicas), int(inputs.config.max_loras),
                    int(inputs.config.max_cpu_loras), inputs.lora_params, len(inputs))
    st = new_state(req, cfg, inputs.resolved_num_gpu_blocks(), num_sessions, lora)
    steps, num_steps = _simulate(req, cfg, st)
    return engine_outputs(st, steps, num_steps, cfg.record_steps)


def engine_outputs(st, steps: np.ndarray, num_steps: int, record_steps: bool) -> EngineOutputs:
    """The :class:`EngineOutputs` of a finished run's state and steps matrix."""
    out, c = st.out, st.out.counters
    step_table = None
    if record_steps:
        rows = steps[:num_steps]  # in (start time, replica) order, as the loop ran them
        step_table = {name: rows[:, j].copy() for j, name in enumerate(STEP_COLUMNS)}
        for name in STEP_COLUMNS:
            if name not in ("start_s", "duration_s"):
                step_table[name] = step_table[name].astype(np.int64)
        step_table["replica"] = step_table["replica"].astype(np.int32)
    return EngineOutputs(replica=out.replica, admitted_s=out.admitted_s, first_token_s=out.first_token_s,
                         completion_s=out.completion_s, arrival_s=out.arrival_s, cached_tokens=out.cached_tokens,
                         computed_tokens=out.computed_tokens, preemptions=out.preemptions,
                         cache_event=out.cache_event, max_itl_s=out.max_itl_s, status=out.status,
                         prefix_cache_queries=int(c[Counter.PREFIX_CACHE_QUERIES.value]),
                         prefix_cache_hits=int(c[Counter.PREFIX_CACHE_HITS.value]),
                         preempted_requests=int(c[Counter.PREEMPTED_REQUESTS.value]),
                         preempted_prefix_cache_queries=int(c[Counter.PREEMPTED_PREFIX_CACHE_QUERIES.value]),
                         preempted_prefix_cache_hits=int(c[Counter.PREEMPTED_PREFIX_CACHE_HITS.value]),
                         spec_drafts=int(c[Counter.SPEC_DRAFTS.value]), spec_accepted=int(c[Counter.SPEC_ACCEPTED.value]),
                         spec_verifications=int(c[Counter.SPEC_VERIFICATIONS.value]),
                         itl_hist=out.itl_hist, num_steps=int(num_steps), steps=step_table,
                         diagnostics={k.name.lower(): int(c[k]) for k in DIAGNOSTICS},
                         kv_used_integral=out.kv_integral, kv_used_max=out.kv_max,
                         sim_end_s=float(np.nanmax(out.completion_s)) if np.isfinite(out.completion_s).any() else 0.0,
                         host_cached_tokens=st.host.host_tokens,
                         host={k.name.lower(): int(st.host.counts[k]) for k in HostCounter},
                         host_load_s=float(st.host.load_s[0]),
                         lora=lora_outputs(st.lora))
