"""Prefill/decode disaggregation: two pools of replicas in one event loop (README
"Prefill/decode disaggregation").

A request is prefilled on a prefill replica (its prompt, ``max_tokens = 1``), its prompt's KV
is pulled by a decode replica over a modelled link, and it decodes there. Both pools are
ordinary engine states (``state.State``, each with its own ``Config`` and cost parameters)
stepped by the kernels of ``loop.py``; this module only interleaves them in time order and
runs the transfers between them. Follow-ups are released by the decode pool (their parent
ends there), so both pools must run in one loop.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from oracle.engine.disagg import PDInputs, check_pd_inputs, combine_outputs, prefill_view
from oracle.engine.inputs import LEAST_KV_TRANSFER, Status
from oracle.engine.loop import (NUM_STEP_COLUMNS, _arrive, _config, _enqueue, _next_arrival, _next_step, _record_step,
                                _requests, _step, engine_outputs, grow_steps)
from oracle.engine.queues import heap_pop, heap_push, release_followups
from oracle.engine.router import _load, route
from oracle.engine.state import Counter, new_state
from oracle.kernels._jit import jit, kernel
from oracle.kernels.kvcache import match_prefix

Transfers = namedtuple("Transfers", [
    "replica",        # i4[n] decode replica of the request (-1: none yet)
    "prefill_end_s",  # f8[n] the prefill pool's token (NaN: not prefilled)
    "start_s",        # f8[n] the transfer starts on the link (after earlier ones to that replica)
    "end_s",          # f8[n] its KV is in the decode replica
    "tokens",         # i8[n] prompt tokens whose KV is sent (not in the decode replica's cache)
    "bytes",          # f8[n]
    "x_t", "x_id", "x_n",  # heap of transfers in flight on (end, id); x_n i8[1] its size
    "link_free",      # f8[D] when each decode replica's link is free again
    "link",           # f8[4] bytes per token, bandwidth (B/s), latency (s), overhead (s)
    "busy_p", "busy_d",  # f8[P], f8[D] time each replica spent in steps
])


@jit
def _simulate_pd(rp, cp, sp, rd, cd, sd, xf):
    """Run a disaggregated simulation; like ``loop._simulate`` (steps of both pools in one
    matrix, decode replicas numbered from P)."""
    steps = np.empty((1024 if cp.record_steps else 0, NUM_STEP_COLUMNS), np.float64)
    pos = np.zeros(2, np.int64)
    while not _run_pd(rp, cp, sp, rd, cd, sd, xf, steps, pos):
        steps = grow_steps(steps, pos[1])
    return steps, pos[1]


@kernel
def _run_pd(rp, cp, sp, rd, cd, sd, xf, steps, pos):
    """Arrivals, transfer completions, prefill steps and decode steps in time order (ties in
    that order; among steps of a pool the lowest replica). Returns False when the steps table
    is full (``pos`` says where to resume), True at the end."""
    qd = sd.qs
    si, num_steps = pos[0], pos[1]
    num_p = cp.num_replicas
    while True:
        if cp.record_steps and num_steps + 1 >= steps.shape[0]:
            pos[0], pos[1] = si, num_steps
            return False
        q, ta, from_heap = _next_arrival(si, rd.static_order, rd.arrival_s, qd.hp_t, qd.hp_id, qd.hp_n)
        tx = xf.x_t[0] if xf.x_n[0] > 0 else np.inf
        r_p, t_p = _next_step(cp.max_num_seqs, sp.qs.wq_len, sp.rs.slot_top, sp.qs.busy_until)
        r_d, t_d = _next_step(cd.max_num_seqs, qd.wq_len, sd.rs.slot_top, qd.busy_until)
        t_steps = min(t_p if r_p >= 0 else np.inf, t_d if r_d >= 0 else np.inf)
        if q >= 0 and ta <= tx and ta <= t_steps:
            if from_heap:
                heap_pop(qd.hp_t, qd.hp_id, qd.hp_n)
            else:
                si += 1
            _arrive_pd(q, ta, rp, cp, sp, rd, cd, sd)
            continue
        if xf.x_n[0] > 0 and tx <= t_steps:
            qx = xf.x_id[0]
            heap_pop(xf.x_t, xf.x_id, xf.x_n)
            _receive(qx, tx, rp, sp, rd, cd, sd, xf)
            continue
        if r_p >= 0 and (r_d < 0 or t_p <= t_d):
            dt, num_decode, num_tokens = _pool_step(r_p, t_p, cp, rp, sp)
            if dt < 0:
                continue
            xf.busy_p[r_p] += dt
            if cp.record_steps:
                _record_step(steps[num_steps], r_p, t_p, dt, num_decode, num_tokens, cp, sp)
            num_steps += 1
            _start_transfers(t_p + dt, rp, cp, sp, rd, cd, sd, xf)
            continue
        if r_d < 0:
            break
        dt, num_decode, num_tokens = _pool_step(r_d, t_d, cd, rd, sd)
        if dt < 0:
            continue
        xf.busy_d[r_d] += dt
        if cp.record_steps:
            _record_step(steps[num_steps], r_d, t_d, dt, num_decode, num_tokens, cd, sd)
            steps[num_steps, 0] += num_p
        num_steps += 1
    pos[0], pos[1] = si, num_steps
    return True


@kernel
def _pool_step(r, t, cfg, req, st):
    """``loop._step`` on a replica of either pool, as a function of its own: the step is
    most of the engine's code, so ``_run_pd``'s two call sites share this one compiled copy.
    (Inlined at both, ``_run_pd`` took 1,465 s to compile instead of 497 s; one inlined call
    site fed by a choice between the pools' records on every step made the P/D engine about
    1.17x slower.)"""
    return _step(r, t, cfg, req, st)


@jit(inline="always")
def _arrive_pd(q, ta, rp, cp, sp, rd, cd, sd):
    """Request q arrives at ta: rejected if either pool could never hold it (its follow-ups
    then leave at ta), else routed to a prefill replica."""
    total = rd.prompt[q] + rd.output[q]
    sd.out.arrival_s[q] = ta
    if total > cd.max_model_len or (total + cd.block_size - 1) // cd.block_size > sd.pool.n - 1:
        sd.out.status[q] = Status.REJECTED
        sp.out.status[q] = Status.REJECTED
        release_followups(sd.qs, rd, q, ta)
        return
    _arrive(q, ta, cp, rp, sp)
    if sp.out.status[q] == Status.REJECTED:
        sd.out.status[q] = Status.REJECTED
        release_followups(sd.qs, rd, q, ta)


@jit(inline="always")
def _start_transfers(t_end, rp, cp, sp, rd, cd, sd, xf):
    """The prefill requests that completed in the step ending at t_end (in schedule order)
    are routed to a decode replica and their KV transfers queued on its link. A prefill
    request never joins the decode cohort (it completes with its first token), so the step's
    scheduled requests are all in ``sp.sc.sch_req``; entries of earlier steps are either
    still running or already sent."""
    link = xf.link
    bs = cd.block_size
    for k in range(cp.max_num_seqs):
        q = sp.sc.sch_req[k]
        if q < 0 or sp.out.status[q] != Status.FINISHED or not np.isnan(xf.prefill_end_s[q]):
            continue
        xf.prefill_end_s[q] = t_end
        d = _route_decode(q, cd, rd, sd)
        hit = 0
        if cd.enable_prefix_caching:
            hit = match_prefix(sd.pool, d, rd.hashes, rd.hash_off[q], (rd.prompt[q] - 1) // bs, sd.sc.hit_blocks)
        tokens = rd.prompt[q] - hit * bs
        nbytes = tokens * link[0]
        start = max(t_end, xf.link_free[d])
        xf.link_free[d] = start + link[3] + nbytes / link[1]
        xf.replica[q] = d
        xf.start_s[q] = start
        xf.end_s[q] = xf.link_free[d] + link[2]
        xf.tokens[q] = tokens
        xf.bytes[q] = nbytes
        heap_push(xf.x_t, xf.x_id, xf.x_n, xf.end_s[q], q)


@jit(inline="always")
def _route_decode(q, cd, rd, sd):
    """Decode replica of request q: ``least_kv_transfer`` picks the one holding the longest
    prefix of its prompt (ties: the lower load, then the lower replica); the other routers
    as in an aggregated run."""
    if cd.router != LEAST_KV_TRANSFER:
        return route(q, cd, rd, sd)
    best = 0
    best_hit = -1
    best_load = 0
    max_hit = (rd.prompt[q] - 1) // cd.block_size
    for r in range(cd.num_replicas):
        hit = 0
        if cd.enable_prefix_caching:
            hit = match_prefix(sd.pool, r, rd.hashes, rd.hash_off[q], max_hit, sd.sc.hit_blocks)
        load = _load(sd.qs, sd.rs, cd.max_num_seqs, r)
        if hit > best_hit or (hit == best_hit and load < best_load):
            best = r
            best_hit = hit
            best_load = load
    return best


@jit(inline="always")
def _receive(q, t, rp, sp, rd, cd, sd, xf):
    """Request q's KV is in its decode replica at t: it joins that replica's waiting queue
    with ``num_computed = p - 1`` (vLLM recomputes the last prompt token to sample the next)."""
    sd.rs.num_computed[q] = rd.prompt[q] - 1
    _enqueue(q, xf.replica[q], t, cd, rd, sd)


# ---------------------------------------------------------------------------------------------
def run_pd_engine(inputs: PDInputs):
    """Simulate a disaggregated deployment (see oracle/engine/README.md); returns one
    :class:`~oracle.engine.inputs.EngineOutputs` whose ``pd`` holds the per-request prefill and
    transfer columns (``oracle.engine.disagg.combine_outputs``)."""
    check_pd_inputs(inputs)
    p_in = prefill_view(inputs.prefill)
    rp, _ = _requests(p_in)
    cp = _config(p_in)
    rd, num_sessions = _requests(inputs.decode)
    cd = _config(inputs.decode)
    sp = new_state(rp, cp, p_in.resolved_num_gpu_blocks(), num_sessions)
    sp.sc.sch_req[:] = -1
    sd = new_state(rd, cd, inputs.decode.resolved_num_gpu_blocks(), num_sessions)
    n = len(inputs)
    xf = Transfers(replica=np.full(n, -1, np.int32), prefill_end_s=np.full(n, np.nan),
                   start_s=np.full(n, np.nan), end_s=np.full(n, np.nan), tokens=np.zeros(n, np.int64),
                   bytes=np.zeros(n, np.float64), x_t=np.empty(n + 1, np.float64), x_id=np.empty(n + 1, np.int64),
                   x_n=np.zeros(1, np.int64), link_free=np.zeros(int(cd.num_replicas), np.float64),
                   link=inputs.link.as_array(), busy_p=np.zeros(int(cp.num_replicas), np.float64),
                   busy_d=np.zeros(int(cd.num_replicas), np.float64))
    steps, num_steps = _simulate_pd(rp, cp, sp, rd, cd, sd, xf)
    record = bool(cp.record_steps)
    rows = steps[:num_steps]
    is_p = rows[:, 0] < cp.num_replicas
    out_p = engine_outputs(sp, rows[is_p], int(is_p.sum()), record)
    out_d = engine_outputs(sd, rows[~is_p], int((~is_p).sum()), record)
    out_p.num_steps = int(sp.out.counters[Counter.STEPS.value])
    out_d.num_steps = int(sd.out.counters[Counter.STEPS.value])
    if record:
        out_d.steps["replica"] -= int(cp.num_replicas)
    out = combine_outputs(out_p, out_d, {"prefill_end_s": xf.prefill_end_s, "start_s": xf.start_s,
                                         "end_s": xf.end_s, "tokens": xf.tokens, "bytes": xf.bytes},
                          int(cp.num_replicas))
    out.pd["pools"]["prefill"]["busy_s"] = xf.busy_p
    out.pd["pools"]["decode"]["busy_s"] = xf.busy_d
    return out
