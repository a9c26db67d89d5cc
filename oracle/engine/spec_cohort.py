"""The speculative decode cohort: a replica's decoding requests kept lazily when speculative
decoding is on (``specdec.py``; the plain cohort is ``cohort.py``).

A running request that emitted in a step holds ``k`` drafts and ``num_computed = known - 1``.
While the token budget and the free blocks are ample, each of its following steps verifies
``1 + k`` query tokens (its known token and the k drafts), accepts ``a`` drafts (a pure
function of ``(seed, request, generated)``: ``specdec.accepted_drafts``) and emits ``a + 1`` tokens:

    num_computed += 1 + a      generated += 1 + a (the last step clipped by the output)
    num_blocks = max(num_blocks, cdiv(min(num_computed + 1 + k + lookahead, max_model_len), bs))

So its whole trajectory is known when it joins (after the step it emitted in), and a step
need not visit it. At the join the trajectory is walked once: the member's calendar step
(it completes when the replica's step counter ``J`` reaches ``JJOIN + steps``) and its state
then (``NCEND``, ``NBEND``), and per step of its life its new blocks and its ``1 + a`` go
into the replica's rings ``sp[:, DBLK]`` and ``sp[:, DNC]`` (``sp`` row ``r * W + j % W`` for
step number j). A step then needs only
O(1) numbers: the members ``NUM``, the sum of their ``num_computed`` ``SNC`` (``rp``
columns), and the two ring entries of the step; its aggregates are those of ``NUM``
verifications of ``1 + k`` tokens at contexts summing to ``SNC`` (exact: every term is an
integer or a half-integer far below 2**53, so float sums in any order are the same).
A member's per-request state stays frozen at the join; completing sets it from
``NCEND`` / ``NBEND``, and leaving early (materialization before an exact step, abort)
replays the trajectory. ``generated`` advances with ``num_computed`` (both by ``1 + a``).

Used only with prefix caching off (so blocks are a count: which block a request gets does
not matter), without async scheduling, a host tier or LoRA (``spec_lazy``); a request whose
verifications could be clipped by ``max_model_len`` (``p + o + k > max_model_len``) does
not join. Members are linked as plain
cohort members with base 0 (bucket 0, the calendar; ``cohort.coh_link``), so
materialization and completions walk them the same way.
"""

from __future__ import annotations

import numpy as np

from oracle.engine.cohort import JDONE, JJOIN, MAXSEQ, NBEND, NCEND, NUM, REQ, SEQ, SNC, J, coh_link, coh_max_itl
from oracle.engine.specdec import accepted_drafts, accepted_of_bits, mixed_bits, spec_running_tokens
from oracle.engine.state import Counter
from oracle.kernels._jit import jit
from oracle.kernels.blockpool import cdiv
from oracle.kernels.kvcache import allocate, num_free

# sp columns: per step, the members' sum of (1 + accepted drafts), and their new blocks
DNC, DBLK = range(2)


@jit(inline="always")
def spec_lazy(cfg, st):
    """Are decoding requests kept in the speculative cohort? (Speculative decoding on; prefix
    caching, async scheduling, the host tier and LoRA off.)"""
    return (cfg.spec_k > 0 and not st.pool.caching and not cfg.async_scheduling and not st.host.enabled
            and not st.lora.on)


@jit(inline="always")
def _accepted(q, gen, cfg, req):
    """Drafts request q accepts when it verifies k of them with ``gen`` tokens generated."""
    return min(accepted_drafts(q, gen, req.spec_thr, req.spec_keys), cfg.spec_k)


@jit(inline="always")
def _blocks_after(nc, nb, cfg):
    """Blocks of a member holding ``nb`` after it verifies at num_computed ``nc`` (vLLM
    ``allocate_slots`` with the drafter's lookahead; blocks of rejected drafts are kept)."""
    return max(nb, cdiv(min(nc + 1 + cfg.spec_k + cfg.spec_lookahead, cfg.max_model_len), cfg.block_size))


@jit(inline="always")
def spec_join(r, gs, q, post, cfg, req, st):
    """Make running request q (in global slot ``gs``; ``post``: counted in the ITL histogram),
    which emitted in the replica's step just ended, a member: walk its trajectory into the
    rings and link it. Returns False (q stays in the active list) if a verification could be
    clipped by ``max_model_len`` (vLLM schedules at most ``max_model_len - num_computed - 1``
    tokens; a member's num_computed stays below ``p + o - 1``)."""
    rs, coh = st.rs, st.coh
    k = cfg.spec_k
    nc0 = rs.num_computed[q]
    gen = rs.generated[q]
    o = req.output[q]
    if rs.num_spec[q] != k or nc0 + 1 != req.prompt[q] + gen or req.prompt[q] + o + k > cfg.max_model_len:
        return False
    bits = st.sc.spec_bits
    gen0 = gen
    keys = req.spec_keys
    salt, golden, mix1, mix2 = keys[0], keys[1], keys[2], keys[3]
    hi = np.uint64(q) << np.uint64(32)
    for g in range(gen0, o):  # the uniforms first: independent hashes (vectorized), then the walk
        bits[g - gen0] = mixed_bits((hi | np.uint64(g)) ^ salt, golden, mix1, mix2)
    w = cfg.ring
    j = coh.rp[r, J]
    sp = coh.sp
    nc = nc0
    nb = rs.num_blocks[q]
    steps = 0
    while gen < o:
        x = r * w + ((j + steps) & (w - 1))
        nb1 = _blocks_after(nc, nb, cfg)
        sp[x, DBLK] += nb1 - nb
        nb = nb1
        a = min(accepted_of_bits(bits[gen - gen0], req.spec_thr), k)
        sp[x, DNC] += 1 + a
        nc += 1 + a
        gen += 1 + a
        steps += 1
    coh.sl[gs, NCEND] = nc
    coh.sl[gs, NBEND] = nb
    coh.rp[r, SNC] += nc0
    coh_link(coh, r, gs, 0, j + steps, post, cfg.block_size)
    return True


@jit(inline="always")
def spec_materialize(r, gs, t_last, cfg, req, st):
    """Bring member ``gs``'s per-request state up to the replica's step counter (its state at
    completion, or its trajectory replayed from the join); its last token came at ``t_last``.
    At its last step the emission is clipped by its output (vLLM trims num_computed to its
    tokens). Returns its num_computed before that clip (its term in ``SNC``)."""
    rs, coh, out = st.rs, st.coh, st.out
    sl = coh.sl
    q = sl[gs, REQ]
    j0 = sl[gs, JJOIN]
    j1 = coh.rp[r, J]
    nc0 = rs.num_computed[q]
    if j1 <= j0:
        return nc0
    gen0 = rs.generated[q]
    if j1 >= sl[gs, JDONE]:
        nc = sl[gs, NCEND]
        nb = sl[gs, NBEND]
    else:
        nc = nc0
        nb = rs.num_blocks[q]
        for _ in range(j1 - j0):
            nb = _blocks_after(nc, nb, cfg)
            nc += 1 + _accepted(q, gen0 + nc - nc0, cfg, req)
    unclipped = nc
    gen = gen0 + nc - nc0
    o = req.output[q]
    if gen > o:
        nc -= gen - o
        gen = o
    rs.num_computed[q] = nc
    rs.generated[q] = gen
    rs.num_blocks[q] = nb
    out.computed_tokens[q] += (j1 - j0) * (1 + cfg.spec_k)
    rs.last_token_s[q] = t_last
    coh_max_itl(coh.dtlog, r, cfg.ring, j0, j1, q, out.max_itl_s)
    return unclipped


@jit(inline="always")
def spec_clear(r, jd_max, cfg, coh):
    """The cohort of replica r was dissolved (its members' last calendar step ``jd_max``):
    clear the rings' entries of the steps still to come."""
    w = cfg.ring
    for j in range(coh.rp[r, J], jd_max):
        x = r * w + (j & (w - 1))
        coh.sp[x, DNC] = 0
        coh.sp[x, DBLK] = 0
    coh.rp[r, SNC] = 0


@jit(inline="always")
def spec_cohort_fits(r, cfg, req, st):
    """Can every member verify ``1 + k`` tokens this step, with no preemption and no request
    starved by the budget? As ``scheduler.cohort_fits``: the members (first in running order,
    each taking ``1 + k`` tokens and ``spec_draft_slots``) fit the budget, and with the active
    requests' tokens (all of them, if one precedes a member) the free blocks."""
    rs, qs, coh = st.rs, st.qs, st.coh
    ds = cfg.spec_draft_slots
    budget_max = cfg.max_num_batched_tokens
    nb = coh.rp[r, NUM]
    per = 1 + cfg.spec_k + ds
    if nb * per > budget_max:
        return False
    need = coh.sp[r * cfg.ring + (coh.rp[r, J] & (cfg.ring - 1)), DBLK]
    al = qs.act_len[r]
    if al > 0:
        abase = r * cfg.max_num_seqs
        if coh.sl[abase + rs.slot[qs.act[abase]], SEQ] < coh.rp[r, MAXSEQ]:
            # an active request may precede a member: only safe if the budget covers everybody
            tot = nb * per
            for i in range(al):
                q = qs.act[abase + i]
                nc = rs.num_computed[q]
                tot += min(req.prompt[q] + rs.generated[q] + rs.num_spec[q] - nc, cfg.max_model_len - nc - 1) + ds
            if tot > budget_max:
                return False
        b = budget_max - ds - nb * per
        for i in range(al):
            if b <= 0:
                break
            q = qs.act[abase + i]
            num_new, nd = spec_running_tokens(q, req.prompt[q] + rs.generated[q], b, cfg, rs)
            need += nd
            b -= num_new + ds
    return need <= num_free(st.pool, r)


@jit(inline="always")
def spec_schedule_cohort(r, cfg, st):
    """The members verify: take the blocks they need this step (a count: caching is off)."""
    x = r * cfg.ring + (st.coh.rp[r, J] & (cfg.ring - 1))
    allocate(st.pool, r, st.coh.sp[x, DBLK], st.rs.table, 0)
    st.coh.sp[x, DBLK] = 0


@jit(inline="always")
def spec_price(r, nb, cfg, st):
    """The step aggregates of the ``nb`` members (``scheduler._price``'s terms of a
    verification of c = 1 + k tokens at context p0, summed): ``(num_tokens, num_emit,
    attn_units, prefill_ctx, num_propose, propose_ctx)``."""
    c = 1 + cfg.spec_k
    snc = st.coh.rp[r, SNC]
    return nb * c, nb * c, float(c * snc + nb * (c * (c + 1) // 2)), float(snc), nb, float(snc + nb * c)


@jit(inline="always")
def spec_end_step(r, j, nb, cfg, st):
    """End of step number ``j`` with ``nb`` members: their num_computed advance by their
    accepted drafts + 1, and the drafts are counted (k verified by each)."""
    coh, counters = st.coh, st.out.counters
    x = r * cfg.ring + (j & (cfg.ring - 1))
    d = coh.sp[x, DNC]
    coh.sp[x, DNC] = 0
    coh.rp[r, SNC] += d
    counters[Counter.SPEC_DRAFTS.value] += nb * cfg.spec_k
    counters[Counter.SPEC_ACCEPTED.value] += d - nb
    counters[Counter.SPEC_VERIFICATIONS.value] += nb


@jit(inline="always")
def spec_max_jdone(sl, members, cnt):
    """The latest calendar step of ``members[:cnt]``."""
    jd = 0
    for i in range(cnt):
        if sl[members[i], JDONE] > jd:
            jd = sl[members[i], JDONE]
    return jd
