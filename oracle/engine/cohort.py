"""The decode cohort: a replica's running requests that are decoding, kept lazily.

A running request that emitted a token in a step decodes one token in every following
step until it completes, is preempted, or the replica takes an exact (materialized) step.
Its per-token state is therefore a function of the replica's step counter ``J``:

    num_computed = base + J        generated and computed_total advance with J as well

so a step does not touch it, except when its block state changes: it needs a new block when
``(base + J) % bs == 0`` and fills (registers, when the step is scheduled) one when
``(base + J + 1) % bs == 0``. Members are
kept in ``bs`` buckets by ``base % bs`` (each bucket a doubly linked list in running order),
and in a calendar ring by the step counter at which they complete. A step costs
O(1 + batch / block_size) instead of O(batch). Inter-token gaps of the replica's steps are
kept in a ring (``dtlog``) so a member's largest gap is found when it leaves.

Arrays (a ``state.Cohort`` record; indexed by the *global slot* ``gs = r * s_max + slot``, so
they stay small):

* ``sl`` i8[R * s_max, NUM_SLOT_FIELDS]: per slot, columns REQ .. EMIT below.
* ``bk`` i8[R * bs, 3]: per (replica, bucket) HEAD, TAIL, CNT.
* ``cl`` i8[R * W]: calendar heads (W a power of two above the longest output).
* ``dtlog`` f8[R * W]: the gap of the replica's step number j at ``r * W + j % W``.
* ``rp`` i8[R, NUM_REPLICA_FIELDS]: per replica, columns J .. SNC below.
* ``sp`` i8[R * W, 2]: the speculative cohort's rings (``spec_cohort.py``): per replica and
  step number j at ``r * W + j % W``, columns DNC, DBLK there.
"""

from __future__ import annotations

import math

import numpy as np

from oracle.kernels._jit import jit

# sl columns (NCEND, NBEND: a speculative member's num_computed, before the last step's
# clip, and blocks when it completes; ``spec_cohort.py``)
REQ, SEQ, BASE, JJOIN, JDONE, BKP, BKN, CLP, CLN, POST, EMIT, NCEND, NBEND = range(13)
NUM_SLOT_FIELDS = 13
# bk columns
HEAD, TAIL, CNT = range(3)
# rp columns: step counter, members, sum of bases, members counted in the ITL histogram,
# the largest running-order number that ever joined, the next running-order number, and
# (speculative cohort) the members' num_computed summed at the current step.
J, NUM, SUM, NPOST, MAXSEQ, NEXTSEQ, SNC = range(7)
NUM_REPLICA_FIELDS = 7


def new_cohort(num_replicas: int, s_max: int, bs: int, w: int):
    """Fresh, empty cohort arrays ``(sl, bk, cl, dtlog, rp, sp)`` (see the module docstring)."""
    sl = np.full((num_replicas * s_max, NUM_SLOT_FIELDS), -1, np.int64)
    bk = np.full((num_replicas * bs, 3), -1, np.int64)
    bk[:, CNT] = 0
    cl = np.full(num_replicas * w, -1, np.int64)
    dtlog = np.zeros(num_replicas * w, np.float64)
    rp = np.zeros((num_replicas, NUM_REPLICA_FIELDS), np.int64)
    rp[:, MAXSEQ] = -1
    sp = np.zeros((num_replicas * w, 2), np.int64)
    return sl, bk, cl, dtlog, rp, sp


@jit(inline="always")
def coh_join(coh, r, gs, nc, gen, out_q, post, bs):
    """Make the request in slot ``gs`` (num_computed ``nc``, ``gen`` of ``out_q`` tokens
    generated, ``post``: counted in the ITL histogram) a member, after the replica's step."""
    j = coh.rp[r, J]
    coh_link(coh, r, gs, nc - j, j + out_q - gen, post, bs)


@jit(inline="always")
def coh_link(coh, r, gs, base, jd, post, bs):
    """Link slot ``gs`` into the bucket of ``base % bs`` (in running order) and the calendar
    list of step ``jd`` (it completes when the step counter reaches ``jd``); it joins at the
    replica's current step counter."""
    sl, bk, cl, rp = coh.sl, coh.bk, coh.cl, coh.rp
    w = cl.shape[0] // rp.shape[0]
    j = rp[r, J]
    sl[gs, BASE] = base
    sl[gs, JJOIN] = j
    sl[gs, POST] = post
    seq = sl[gs, SEQ]
    kb = r * bs + base % bs
    after = bk[kb, TAIL]
    while after >= 0 and sl[after, SEQ] > seq:  # keep the bucket in running order
        after = sl[after, BKP]
    if after < 0:
        nxt = bk[kb, HEAD]
        bk[kb, HEAD] = gs
    else:
        nxt = sl[after, BKN]
        sl[after, BKN] = gs
    sl[gs, BKP] = after
    sl[gs, BKN] = nxt
    if nxt < 0:
        bk[kb, TAIL] = gs
    else:
        sl[nxt, BKP] = gs
    bk[kb, CNT] += 1
    sl[gs, JDONE] = jd
    c = r * w + (jd & (w - 1))
    h = cl[c]
    sl[gs, CLP] = -1
    sl[gs, CLN] = h
    if h >= 0:
        sl[h, CLP] = gs
    cl[c] = gs
    rp[r, NUM] += 1
    rp[r, SUM] += base
    rp[r, NPOST] += post
    if seq > rp[r, MAXSEQ]:
        rp[r, MAXSEQ] = seq


@jit(inline="always")
def coh_unlink(coh, r, gs, bs):
    """Take slot ``gs`` out of its bucket and calendar list (state not materialized)."""
    sl, bk, cl, rp = coh.sl, coh.bk, coh.cl, coh.rp
    w = cl.shape[0] // rp.shape[0]
    base = sl[gs, BASE]
    kb = r * bs + base % bs
    p = sl[gs, BKP]
    nx = sl[gs, BKN]
    if p >= 0:
        sl[p, BKN] = nx
    else:
        bk[kb, HEAD] = nx
    if nx >= 0:
        sl[nx, BKP] = p
    else:
        bk[kb, TAIL] = p
    bk[kb, CNT] -= 1
    c = r * w + (sl[gs, JDONE] & (w - 1))
    p = sl[gs, CLP]
    nx = sl[gs, CLN]
    if p >= 0:
        sl[p, CLN] = nx
    else:
        cl[c] = nx
    if nx >= 0:
        sl[nx, CLP] = p
    rp[r, NUM] -= 1
    rp[r, SUM] -= base
    rp[r, NPOST] -= sl[gs, POST]
    sl[gs, JJOIN] = -1


@jit(inline="always")
def coh_materialize(coh, r, gs, t_last, bs, rs, out):
    """Bring the per-token state of member ``gs`` (``rs``: the RequestState, ``out``: the
    Outputs) up to the replica's step counter (its last token came at ``t_last``, the end of
    the replica's last step). ``num_blocks`` is only kept up to date by the steps when prefix
    caching is on; it is restored here."""
    sl, dtlog, rp = coh.sl, coh.dtlog, coh.rp
    num_computed, generated, num_blocks, last_token_s = rs.num_computed, rs.generated, rs.num_blocks, rs.last_token_s
    computed_total, o_max_itl = out.computed_tokens, out.max_itl_s
    w = dtlog.shape[0] // rp.shape[0]
    q = sl[gs, REQ]
    j0 = sl[gs, JJOIN]
    j1 = rp[r, J]
    k = j1 - j0
    if k <= 0:
        return
    num_computed[q] += k
    generated[q] += k
    computed_total[q] += k
    num_blocks[q] = -(-num_computed[q] // bs)
    last_token_s[q] = t_last
    coh_max_itl(dtlog, r, w, j0, j1, q, o_max_itl)


@jit(inline="always")
def coh_max_itl(dtlog, r, w, j0, j1, q, o_max_itl):
    """A member that took part in the replica's steps ``j0 .. j1 - 1`` (one token each):
    raise ``o_max_itl[q]`` (f8[n], NaN: no gap yet) to the largest of their gaps."""
    mx = dtlog[r * w + (j0 & (w - 1))]
    for j in range(j0 + 1, j1):
        g = dtlog[r * w + (j & (w - 1))]
        if g > mx:
            mx = g
    if math.isnan(o_max_itl[q]) or mx > o_max_itl[q]:
        o_max_itl[q] = mx


@jit(inline="always")
def sort_slots_by_seq(slots, cnt, sl):
    """In-place heapsort of ``slots[:cnt]`` by running order (no allocation)."""
    for start in range(cnt // 2 - 1, -1, -1):
        _sift_down(slots, start, cnt, sl)
    for end in range(cnt - 1, 0, -1):
        g = slots[0]
        slots[0] = slots[end]
        slots[end] = g
        _sift_down(slots, 0, end, sl)


@jit(inline="always")
def _sift_down(slots, i, size, sl):
    while True:
        c = 2 * i + 1
        if c >= size:
            return
        if c + 1 < size and sl[slots[c + 1], SEQ] > sl[slots[c], SEQ]:
            c += 1
        if sl[slots[i], SEQ] >= sl[slots[c], SEQ]:
            return
        g = slots[i]
        slots[i] = slots[c]
        slots[c] = g
        i = c
