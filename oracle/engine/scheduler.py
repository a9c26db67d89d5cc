"""One vLLM v1 scheduler step on one replica: running requests first (with preemption), then
FCFS admission with prefix-cache lookups, and the step's end (tokens, ITL, completions).
See README "One step on replica r at time t"; blocks are reached only through
``oracle.kernels.kvcache`` (the scheduler never touches the pool's arrays).

A replica's running requests are split in two: the *decode cohort* (``cohort.py``: requests
that emitted a token in the replica's last step, kept lazily) and the *active list* (every
other running request: prefilling, recomputing, or just admitted), in running order. A step
touches only the active list and the cohort members whose block state changes. When the
cohort could not simply take one token each (the token budget or the free blocks would run
out, so a preemption or a starved request could follow), the cohort is first materialized
back into the active list and the step runs the exact per-request loop.

Kernels take the records of ``oracle.engine.state``: ``cfg`` (Config), ``req`` (Requests)
and ``st`` (State: out, pool, rs, qs, coh, sc). They are inlined into the loop's step and
abort kernels (``oracle.engine.loop``), which are compiled without reference counting: a
call that passed the records would copy every array's struct (hundreds of words) per call,
and an inlined function in a function without reference counting takes no references.
"""

from __future__ import annotations

import math

from oracle.engine.cohort import (BASE, BKN, CLN, CNT, EMIT, HEAD, JDONE, JJOIN, MAXSEQ, NEXTSEQ, NPOST, NUM, REQ, SEQ,
                                  SNC, SUM, TAIL, J, coh_join, coh_materialize, coh_unlink, sort_slots_by_seq)
from oracle.engine.inputs import CacheEvent, Status
from oracle.engine.offload import host_admit, host_lookup
from oracle.engine.lora import SKIPS, lora_blocked, lora_join, lora_leave
from oracle.engine.queues import release_followups, wq_front, wq_pop_front, wq_push_front
from oracle.engine.spec_cohort import spec_clear, spec_join, spec_lazy, spec_materialize, spec_max_jdone
from oracle.engine.specdec import spec_finish, spec_pad, spec_running_tokens, spec_scheduled
from oracle.engine.state import Counter
from oracle.kernels._jit import jit
from oracle.kernels import arith
from oracle.kernels.blockpool import cdiv
from oracle.kernels.kvcache import (AHEAD, allocate, cache_block, count_evictable_hits, free_blocks, match_prefix,
                                    num_free, prefetch_registration, producing_session, touch_hits)


@jit(inline="always")
def _row(cfg, r, slot):
    """Start of the block-table row of a slot of replica r."""
    return (r * cfg.max_num_seqs + slot) * cfg.max_blocks_per_request


@jit(inline="always")
def _free_request(q, r, cfg, pool, rs, lo):
    """Free all blocks of running request q (reverse order) and give its slot back (and,
    with LoRA, stop counting its adapter as running)."""
    if lo.on:
        lora_leave(lo, r, q)
    free_blocks(pool, r, rs.table, _row(cfg, r, rs.slot[q]), rs.num_blocks[q])
    rs.num_blocks[q] = 0
    rs.slot_free[r * cfg.max_num_seqs + rs.slot_top[r]] = rs.slot[q]
    rs.slot_top[r] += 1
    rs.slot[q] = -1


# ------------------------------------------------------------------------------- cohort
@jit(inline="always")
def cohort_fits(r, kb, cfg, req, st):
    """Can the cohort take one token each this step, with no preemption and no request
    starved by the budget? (Then its members need not be visited.) ``kb``: the bucket row of
    the members that need a block this step."""
    rs, qs, coh = st.rs, st.qs, st.coh
    bs, s_max, budget_max = cfg.block_size, cfg.max_num_seqs, cfg.max_num_batched_tokens
    nb = coh.rp[r, NUM]
    if nb > budget_max:
        return False
    need = coh.bk[kb, CNT]
    al = qs.act_len[r]
    if al > 0:
        abase = r * s_max
        if coh.sl[abase + rs.slot[qs.act[abase]], SEQ] < coh.rp[r, MAXSEQ]:
            # an active request may precede a member in running order: only safe if the
            # budget covers everybody (then the order does not matter)
            tot = nb
            for i in range(al):
                q = qs.act[abase + i]
                tot += req.prompt[q] + rs.generated[q] - rs.num_computed[q]
            if tot > budget_max:
                return False
        b = budget_max - nb
        for i in range(al):
            if b <= 0:
                break
            q = qs.act[abase + i]
            num_new = min(req.prompt[q] + rs.generated[q] - rs.num_computed[q], b)
            need += cdiv(rs.num_computed[q] + num_new, bs) - rs.num_blocks[q]
            b -= num_new
    return need <= num_free(st.pool, r)


@jit(inline="always")
def materialize_cohort(r, t_last, cfg, req, st):
    """Dissolve the cohort: bring every member up to date and merge them into the active
    list in running order (before an exact step)."""
    rs, qs, coh, sc = st.rs, st.qs, st.coh, st.sc
    sl, bk, cl, rp = coh.sl, coh.bk, coh.cl, coh.rp
    bs = cfg.block_size
    w = cl.shape[0] // rp.shape[0]
    members, merged = sc.members, sc.merged
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
    if cfg.spec_k > 0:
        spec_clear(r, spec_max_jdone(sl, members, cnt), cfg, coh)
    abase = r * cfg.max_num_seqs
    al = qs.act_len[r]
    a = 0
    out = 0
    for i in range(cnt):
        g = members[i]
        if cfg.spec_k > 0:
            spec_materialize(r, g, t_last, cfg, req, st)
        else:
            coh_materialize(coh, r, g, t_last, bs, rs, st.out)
        rs.ph[sl[g, REQ]] = 1  # a member emitted in the replica's last step
        cl[r * w + (sl[g, JDONE] & (w - 1))] = -1
        sl[g, JJOIN] = -1
        while a < al and sl[abase + rs.slot[qs.act[abase + a]], SEQ] < sl[g, SEQ]:
            merged[out] = qs.act[abase + a]
            out += 1
            a += 1
        merged[out] = sl[g, REQ]
        out += 1
    while a < al:
        merged[out] = qs.act[abase + a]
        out += 1
        a += 1
    for i in range(out):
        qs.act[abase + i] = merged[i]
    qs.act_len[r] = out
    rp[r, NUM] = 0
    rp[r, SUM] = 0
    rp[r, NPOST] = 0


@jit(inline="always")
def schedule_cohort(r, kb, cfg, st):
    """Every member takes one token; those at a block boundary (bucket row ``kb``) get a
    new block. Without caching only the number of free blocks changes; members' block
    counts are brought up to date when they leave the cohort."""
    pool, rs, coh = st.pool, st.rs, st.coh
    if not pool.caching:
        allocate(pool, r, coh.bk[kb, CNT], rs.table, 0)
        return
    m = cfg.max_blocks_per_request
    new = st.sc.cohort_blocks  # one pop of them all: the same blocks, in the same order
    allocate(pool, r, coh.bk[kb, CNT], new, 0)
    g = coh.bk[kb, HEAD]
    i = 0
    while g >= 0:
        q = coh.sl[g, REQ]
        rs.table[g * m + rs.num_blocks[q]] = new[i]
        i += 1
        rs.num_blocks[q] += 1
        g = coh.sl[g, BKN]


# ------------------------------------------------------------------------------ caching
@jit(inline="always")
def _cache_upto(q, gs, upto, r, cfg, req, pool, rs):
    """Register the full blocks of request q (in global slot gs) below block ``upto``
    (README "Caching": at scheduling, vLLM ``allocate_slots`` -> ``cache_blocks``)."""
    if upto > rs.num_cached[q]:
        row = gs * cfg.max_blocks_per_request
        label = req.session[q] if req.session[q] >= 0 else -2 - q
        h0 = req.hash_off[q]
        b0 = rs.num_cached[q]
        for b in range(b0, min(upto, b0 + AHEAD)):
            prefetch_registration(pool, r, rs.table[row + b], req.hashes[h0 + b])
        for b in range(b0, upto):
            if b + AHEAD < upto:
                prefetch_registration(pool, r, rs.table[row + b + AHEAD], req.hashes[h0 + b + AHEAD])
            cache_block(pool, r, rs.table[row + b], req.hashes[h0 + b], label)
        rs.num_cached[q] = upto


@jit(inline="always")
def _cache_member(x, jc, lag, r, cfg, req, st):
    """Cohort member in slot x fills a block in the step numbered jc (it computes token
    ``base + jc``): register it. ``lag`` 1 (async scheduling, the step scheduled while the
    last one ran): the member's last token is a placeholder, so the block it filled in the
    last step is registered now instead (README "Async scheduling")."""
    q = st.coh.sl[x, REQ]
    _cache_upto(q, x, (st.coh.sl[x, BASE] + jc + 1 - lag) // cfg.block_size, r, cfg, req, st.pool, st.rs)


@jit(inline="always")
def fill_bucket(cfg, coh, r, lag):
    """First member (running order) of the bucket that fills a block in the coming step
    (``lag`` 1: that filled one in the last step)."""
    return coh.bk[r * cfg.block_size + (-coh.rp[r, J] - 1 + lag) % cfg.block_size, HEAD]


@jit(inline="always")
def cache_cohort(r, lag, cfg, req, st):
    """Register the blocks the cohort fills in the coming step (a step with no active
    request; at scheduling, before admissions)."""
    jc = st.coh.rp[r, J]
    x = fill_bucket(cfg, st.coh, r, lag)
    while x >= 0:
        _cache_member(x, jc, lag, r, cfg, req, st)
        x = st.coh.sl[x, BKN]


# ---------------------------------------------------------------------- running requests
@jit(inline="always")
def _preempt_held(r, cfg, st):
    """Async scheduling: if the last running request is one that completed in the step in
    flight (still holding its blocks), it is the victim: its blocks are freed and it counts a
    preemption, but it never waits again (its output finishes it). Returns whether it was."""
    rs, qs, sl = st.rs, st.qs, st.coh.sl
    abase = r * cfg.max_num_seqs
    for i in range(qs.held_len[r] - 1, -1, -1):
        h = qs.held[abase + i]
        if rs.slot[h] < 0:
            continue
        last = qs.act[abase + qs.act_len[r] - 1]
        if sl[abase + rs.slot[h], SEQ] < sl[abase + rs.slot[last], SEQ]:
            return False
        _free_request(h, r, cfg, st.pool, rs, st.lora)
        st.out.preemptions[h] += 1
        return True
    return False


@jit(inline="always")
def schedule_active(r, budget, lag, cfg, req, st):
    """vLLM v1 pass over the active running requests; returns (num_scheduled, budget_left,
    preempted). Preemption (victim: the last running request) only happens with an empty
    cohort, when the active list is the whole running list (and, with async scheduling, the
    requests that completed in the step in flight). ``lag`` 1: a request that emitted in the
    last step registers blocks only up to its known tokens less that placeholder.

    With prefix caching, each scheduled request registers the blocks it fills in this step
    right after its allocation (vLLM ``allocate_slots`` -> ``cache_blocks``); the cohort
    members that fill a block this step register theirs in between, by running order (the
    order decides which of two equal blocks a later lookup finds)."""
    pool, rs, qs, coh, sc, out = st.pool, st.rs, st.qs, st.coh, st.sc, st.out
    bs = cfg.block_size
    jc = coh.rp[r, J]
    x = -1  # the next cohort member (running order) that fills a block this step
    if pool.caching and coh.rp[r, NUM] > 0:
        x = fill_bucket(cfg, coh, r, lag)
    abase = r * cfg.max_num_seqs
    nsch = 0
    preempted = False
    i = 0
    while i < qs.act_len[r] and budget > 0:
        q = qs.act[abase + i]
        known = req.prompt[q] + rs.generated[q]
        if cfg.spec_k > 0:
            num_new, need = spec_running_tokens(q, known, budget, cfg, rs)
        else:
            num_new = min(known - rs.num_computed[q], budget)
            need = cdiv(rs.num_computed[q] + num_new, bs) - rs.num_blocks[q]
        can_schedule = True
        while need > num_free(pool, r):
            if cfg.async_scheduling and _preempt_held(r, cfg, st):
                preempted = True
                continue
            qs.act_len[r] -= 1
            v = qs.act[abase + qs.act_len[r]]
            _free_request(v, r, cfg, pool, rs, st.lora)
            rs.num_computed[v] = 0
            rs.num_cached[v] = 0
            rs.num_spec[v] = 0
            out.preemptions[v] += 1
            wq_push_front(qs, r, v)
            preempted = True
            if v == q:
                can_schedule = False
                break
        if not can_schedule:
            break
        gs = abase + rs.slot[q]
        if need > 0:
            allocate(pool, r, need, rs.table, gs * cfg.max_blocks_per_request + rs.num_blocks[q])
            rs.num_blocks[q] += need
        if pool.caching:
            while x >= 0 and coh.sl[x, SEQ] < coh.sl[gs, SEQ]:
                _cache_member(x, jc, lag, r, cfg, req, st)
                x = coh.sl[x, BKN]
            _cache_upto(q, gs, min(rs.num_computed[q] + num_new - lag * rs.ph[q], known) // bs, r, cfg, req, pool, rs)
        if cfg.spec_k > 0:
            spec_scheduled(q, nsch, known, num_new, cfg, req, rs, sc)
        sc.sch_req[nsch] = q
        sc.sch_new[nsch] = num_new
        nsch += 1
        budget -= num_new + cfg.spec_draft_slots
        i += 1
    while x >= 0:
        _cache_member(x, jc, lag, r, cfg, req, st)
        x = coh.sl[x, BKN]
    return nsch, budget, preempted


# ----------------------------------------------------------------------------- admission
@jit(inline="always")
def _classify(q, hit, row, r, cfg, req, pool, rs):
    """Cache event of a request at its first admission (README "Cache event")."""
    if not pool.caching:
        return CacheEvent.MISS_FULL
    if hit == 0:
        return CacheEvent.CONVERSATIONAL_MISS_EVICTED if req.turn[q] >= 1 else CacheEvent.MISS_FULL
    if req.turn[q] >= 1 and req.session[q] >= 0 and \
            producing_session(pool, r, rs.table[row + hit - 1]) == req.session[q]:
        return CacheEvent.CONVERSATIONAL_HIT
    if hit == (req.prompt[q] - 1) // cfg.block_size:
        return CacheEvent.FULL_HIT_NO_PREFILL_NEEDED
    return CacheEvent.CROSS_REQUEST_HIT


@jit(inline="always")
def schedule_waiting(r, t, cutoff, budget, nsch, nb, cfg, req, st):
    """Admit waiting requests FCFS until one does not fit (they join the active list) or
    arrived after ``cutoff`` (async scheduling: after this step was scheduled); returns
    num_scheduled (``nsch`` active requests and ``nb`` cohort members already scheduled).
    With ``scheduler_reserve_full_isl`` the free blocks must cover
    the request's whole known sequence, not just this step's chunk (vLLM
    ``allocate_slots(full_sequence_must_fit=True)``). With LoRA, a request whose adapter
    would exceed ``max_loras`` is passed over and put back at the head afterwards, in order
    (``oracle.engine.lora``)."""
    pool, rs, qs, coh, sc, out, lo = st.pool, st.rs, st.qs, st.coh, st.sc, st.out, st.lora
    nskip = 0
    sl, rp = coh.sl, coh.rp
    bs, s_max = cfg.block_size, cfg.max_num_seqs
    counters = out.counters
    nrun = nsch  # running requests scheduled this step
    while qs.wq_len[r] > 0 and budget > 0 and rs.slot_top[r] > 0:
        q = wq_front(qs, r)
        if out.arrival_s[q] > cutoff:
            break
        if lo.on and lora_blocked(lo, r, q):
            lo.skipped[nskip] = q
            nskip += 1
            lo.stats[SKIPS] += 1
            wq_pop_front(qs, r)
            continue
        num_tokens = req.prompt[q] + rs.generated[q]
        hit = 0
        counters[Counter.ADMISSION_ATTEMPTS.value] += 1
        if pool.caching:
            hit = match_prefix(pool, r, req.hashes, req.hash_off[q], (num_tokens - 1) // bs, sc.hit_blocks)
            counters[Counter.ADMISSION_HIT_BLOCKS.value] += hit
        hit_tokens = hit * bs
        num_host = 0  # blocks loaded from the host tier after the GPU hit (offload.py)
        if st.host.enabled:
            num_host = host_lookup(q, r, hit, (num_tokens - 1) // bs, req, st.host)
        # a waiting request's num_computed is 0, or the tokens whose KV a prefill instance
        # sent it (README "Prefill/decode disaggregation"; 0 again after a preemption)
        start = max(hit_tokens + num_host * bs, rs.num_computed[q])
        num_new = num_tokens - start
        padded = False
        if cfg.spec_k > 0:
            num_new, padded, stop = spec_pad(num_new, start, nrun, nb, budget, cfg, sc)
            if stop:
                break
        if not cfg.enable_chunked_prefill and num_new > budget:
            break
        num_new = min(num_new, budget)
        evictable = 0
        if hit > 0:
            evictable = count_evictable_hits(pool, r, sc.hit_blocks, hit)
        if cfg.scheduler_reserve_full_isl and cdiv(num_tokens, bs) - hit + evictable > num_free(pool, r):
            counters[Counter.FAILED_ADMISSIONS.value] += 1
            break
        need = cdiv(start + num_new, bs) - hit
        if cfg.spec_k > 0:  # the drafter's lookahead slots (vLLM allocate_slots)
            need = cdiv(min(start + num_new + cfg.spec_lookahead, cfg.max_model_len), bs) - hit
        if need + evictable > num_free(pool, r):
            counters[Counter.FAILED_ADMISSIONS.value] += 1
            break
        rs.slot_top[r] -= 1
        rs.slot[q] = rs.slot_free[r * s_max + rs.slot_top[r]]
        gs = r * s_max + rs.slot[q]
        row = gs * cfg.max_blocks_per_request
        if pool.caching:
            touch_hits(pool, r, sc.hit_blocks, hit, rs.table, row)
        allocate(pool, r, need, rs.table, row + hit)
        rs.num_blocks[q] = hit + need
        rs.num_computed[q] = start
        rs.num_cached[q] = hit
        if st.host.enabled:
            host_admit(q, r, hit, num_host, num_tokens, math.isnan(out.admitted_s[q]), cfg, req, st.host)
        if pool.caching:
            _cache_upto(q, gs, min(start + num_new, num_tokens) // bs, r, cfg, req, pool, rs)
            if out.preemptions[q] > 0:  # vLLM PrefixCacheStats: re-admissions counted apart
                counters[Counter.PREEMPTED_REQUESTS.value] += 1
                counters[Counter.PREEMPTED_PREFIX_CACHE_QUERIES.value] += num_tokens
                counters[Counter.PREEMPTED_PREFIX_CACHE_HITS.value] += hit_tokens
            else:
                counters[Counter.PREFIX_CACHE_QUERIES.value] += num_tokens
                counters[Counter.PREFIX_CACHE_HITS.value] += hit_tokens
        wq_pop_front(qs, r)
        if lo.on:
            lora_join(lo, r, q)
        qs.act[r * s_max + qs.act_len[r]] = q
        qs.act_len[r] += 1
        sl[gs, REQ] = q
        sl[gs, SEQ] = rp[r, NEXTSEQ]
        rp[r, NEXTSEQ] += 1
        sl[gs, JJOIN] = -1
        sl[gs, EMIT] = 0
        rs.ph[q] = 0
        if math.isnan(out.admitted_s[q]):
            out.admitted_s[q] = t
            out.cached_tokens[q] = hit_tokens
            out.cache_event[q] = _classify(q, hit, row, r, cfg, req, pool, rs)
        sc.sch_req[nsch] = q
        sc.sch_new[nsch] = num_new
        sc.sch_draft[nsch] = 0
        sc.sch_rej[nsch] = cfg.spec_k if padded else 0  # padding drafts: all rejected
        nsch += 1
        budget -= num_new + cfg.spec_draft_slots
    for k in range(nskip - 1, -1, -1):   # vLLM: waiting.prepend_requests(step_skipped_waiting)
        wq_push_front(qs, r, lo.skipped[k])
    return nsch


# ------------------------------------------------------------------------------ step end
_log_bin = jit(inline="always")(arith.log_bin)  # compiled twin of oracle.kernels.arith.log_bin


@jit(inline="always")
def itl_bin(gap, cfg, num_bins):
    """Histogram bin of an inter-token gap (oracle.engine.inputs.itl_bin)."""
    return _log_bin(gap, cfg.itl_min_s, cfg.itl_bins_per_decade, num_bins)


@jit(inline="always")
def finish_active(r, t_end, nsch, cfg, req, st):
    """Tokens and ITL of the step's active requests, in schedule order (their blocks were
    registered when they were scheduled)."""
    rs, sl, sc, out = st.rs, st.coh.sl, st.sc, st.out
    num_bins = out.itl_hist.shape[0]
    memo_gap = -1.0
    memo_bin = 0
    for k in range(nsch):
        q = sc.sch_req[k]
        known = req.prompt[q] + rs.generated[q]
        rs.num_computed[q] += sc.sch_new[k]
        out.computed_tokens[q] += sc.sch_new[k]
        emitted = rs.num_computed[q] >= known
        n_emit = 1
        if cfg.spec_k > 0:  # rejected drafts rolled back; accepted + 1 tokens
            n_emit = spec_finish(q, k, known, emitted, cfg, req, rs, sc, out.counters)
        if emitted:
            rs.generated[q] += n_emit
            if rs.generated[q] == n_emit:
                out.first_token_s[q] = t_end
            else:
                gap = t_end - rs.last_token_s[q]
                if out.arrival_s[q] >= cfg.itl_from_s:
                    if gap != memo_gap:  # most requests in a step share their gap: one log10 per step
                        memo_gap = gap
                        memo_bin = itl_bin(gap, cfg, num_bins)
                    out.itl_hist[memo_bin] += 1
                if math.isnan(out.max_itl_s[q]) or gap > out.max_itl_s[q]:
                    out.max_itl_s[q] = gap
            rs.last_token_s[q] = t_end
            if cfg.spec_k > 0 and st.pool.caching:  # vLLM update_from_output -> cache_blocks(num_computed)
                _cache_upto(q, r * cfg.max_num_seqs + rs.slot[q],
                            min(rs.num_computed[q], req.prompt[q] + rs.generated[q]) // cfg.block_size,
                            r, cfg, req, st.pool, rs)
        # a request that emitted joins the cohort (the speculative one: spec_cohort.py)
        sl[r * cfg.max_num_seqs + rs.slot[q], EMIT] = 1 if emitted and (cfg.spec_k == 0 or spec_lazy(cfg, st)) else 0
        rs.ph[q] = 1 if emitted else 0


@jit(inline="always")
def _complete(q, r, t_end, cfg, req, st):
    """Request q generated its last token at t_end: record it, free it, release follow-ups.
    Past its client's deadline it is TIMED_OUT, and its follow-ups go from the deadline."""
    st.out.completion_s[q] = t_end
    deadline = st.out.arrival_s[q] + req.timeout_s[q]
    if t_end <= deadline:
        st.out.status[q] = Status.FINISHED
        release_followups(st.qs, req, q, t_end)
    else:
        st.out.status[q] = Status.TIMED_OUT
        release_followups(st.qs, req, q, deadline)
    if cfg.async_scheduling:  # slot and blocks held until the next schedule (async_sched.py)
        qs = st.qs
        qs.held[r * cfg.max_num_seqs + qs.held_len[r]] = q
        qs.held_len[r] += 1
    else:
        _free_request(q, r, cfg, st.pool, st.rs, st.lora)


@jit(inline="always")
def finish_completions(r, t_end, nsch, cfg, req, st):
    """Completions at the end of a step, in running order: cohort members whose last token
    this was (the calendar list of the new step counter) and active requests that finished."""
    rs, coh, comp = st.rs, st.coh, st.sc.comp
    sl, cl, rp = coh.sl, coh.cl, coh.rp
    bs = cfg.block_size
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
            q = st.sc.sch_req[k]
            if rs.generated[q] != req.output[q]:
                continue
            seq_q = sl[r * cfg.max_num_seqs + rs.slot[q], SEQ]
        while i < ncomp and (q < 0 or sl[comp[i], SEQ] < seq_q):
            g = comp[i]
            if cfg.spec_k > 0:
                rp[r, SNC] -= spec_materialize(r, g, t_end, cfg, req, st)
            else:
                coh_materialize(coh, r, g, t_end, bs, rs, st.out)
            coh_unlink(coh, r, g, bs)
            _complete(sl[g, REQ], r, t_end, cfg, req, st)
            i += 1
        if q >= 0:
            _complete(q, r, t_end, cfg, req, st)


@jit(inline="always")
def join_active(r, cfg, req, st):
    """Active requests that emitted in the step (and go on) join the cohort; the others stay
    in the active list, in order."""
    rs, qs, coh, out = st.rs, st.qs, st.coh, st.out
    abase = r * cfg.max_num_seqs
    j = 0
    for i in range(qs.act_len[r]):
        q = qs.act[abase + i]
        if out.status[q] != Status.PENDING:  # completed in this step
            continue
        gs = abase + rs.slot[q]
        if coh.sl[gs, EMIT] == 1 and not st.lora.on:   # LoRA: no cohort (every step visits each request)
            coh.sl[gs, EMIT] = 0
            post = 1 if out.arrival_s[q] >= cfg.itl_from_s else 0
            if cfg.spec_k == 0:
                coh_join(coh, r, gs, rs.num_computed[q], rs.generated[q], req.output[q], post, cfg.block_size)
                continue
            if spec_join(r, gs, q, post, cfg, req, st):
                continue
        qs.act[abase + j] = q
        j += 1
    qs.act_len[r] = j


# ---------------------------------------------------------------------------------- aborts
@jit(inline="always")
def abort_running(q, r, cfg, req, st):
    """Running request q of replica r is aborted (its client gave up; vLLM
    ``Scheduler.finish_requests(FINISHED_ABORTED)``): it leaves the running requests (the
    cohort is materialized first if q is a member) and its blocks are freed."""
    rs, qs, coh = st.rs, st.qs, st.coh
    abase = r * cfg.max_num_seqs
    if coh.sl[abase + rs.slot[q], JJOIN] >= 0:  # a cohort member: back to exact per-request state
        materialize_cohort(r, qs.busy_until[r], cfg, req, st)  # the replica's last step ended then
        st.out.counters[Counter.COHORT_MATERIALIZATIONS.value] += 1
    j = 0
    for i in range(qs.act_len[r]):
        x = qs.act[abase + i]
        if x != q:
            qs.act[abase + j] = x
            j += 1
    qs.act_len[r] = j
    _free_request(q, r, cfg, st.pool, rs, st.lora)
