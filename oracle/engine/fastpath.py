"""The decode fast path: many steps of a replica whose batch is all decoding, at a cost of
O(1 + batch / block_size) per step. Exact: same results as the normal step path."""

from __future__ import annotations

import math

import numpy as np

from oracle.engine.scheduler import _itl_bin
from oracle.kernels._jit import jit
from oracle.kernels.cost import step_time_s
from oracle.kernels.kvcache import allocate, cache_block


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
