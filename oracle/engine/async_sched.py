"""vLLM's async scheduling (``AsyncScheduler`` driven by ``EngineCore.step_with_batch_queue``)
on one replica: README "Async scheduling".

With a step in flight, vLLM schedules the next one at once, before that step's outputs
exist: it sees the requests received by then, and each output of the step in flight as a
placeholder. The engine schedules a back-to-back step when the last one ends (its outputs
applied), so it reproduces that view: admissions stop at the first request that arrived
after the last step started (``schedule_waiting``'s cutoff); a request that completed in the
last step keeps its slot and blocks until the next schedule is done (``scheduler._complete``
puts it on the replica's held list; it can still be the preemption victim,
``scheduler._preempt_held``); a request that emitted in the last step registers the block
its placeholder would fill one step late (``lag``). Then the last step's outputs reach the
scheduler (``update_from_output``): :func:`apply_last_outputs`.
"""

from __future__ import annotations

from oracle.engine.cohort import SEQ
from oracle.engine.scheduler import _cache_upto, _free_request
from oracle.kernels._jit import jit


@jit(inline="always")
def apply_last_outputs(r, first, last, cfg, req, st):
    """The outputs of replica r's last step reach the scheduler (vLLM ``update_from_output``,
    in that step's schedule order, which is running order): a request that emitted in it and
    was not scheduled again since (the running requests ``act[first:last]``, and those that
    completed: the held list) registers its blocks up to its computed tokens
    (``cache_blocks(num_computed - num_in_flight)``); those that completed free their slot and
    blocks (unless preempted meanwhile)."""
    rs, qs, sl = st.rs, st.qs, st.coh.sl
    abase = r * cfg.max_num_seqs
    bs = cfg.block_size
    caching = st.pool.caching
    i = first
    k = 0
    nh = qs.held_len[r]
    while i < last or k < nh:
        take_held = False
        if k < nh:
            h = qs.held[abase + k]
            if rs.slot[h] < 0:  # preempted as the last running request: nothing left
                k += 1
                continue
            take_held = i >= last or sl[abase + rs.slot[h], SEQ] < sl[abase + rs.slot[qs.act[abase + i]], SEQ]
        if take_held:
            if caching:
                _cache_upto(h, abase + rs.slot[h], rs.num_computed[h] // bs, r, cfg, req, st.pool, rs)
            _free_request(h, r, cfg, st.pool, rs, st.lora)
            k += 1
        else:
            q = qs.act[abase + i]
            if caching and rs.ph[q] == 1:
                _cache_upto(q, abase + rs.slot[q], rs.num_computed[q] // bs, r, cfg, req, st.pool, rs)
            rs.ph[q] = 0
            i += 1
    qs.held_len[r] = 0
