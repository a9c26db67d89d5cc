"""Routers: which replica a request goes to, from the replicas' state at its arrival (README "Router")."""

from __future__ import annotations

from oracle.kernels._jit import jit, kernel
from oracle.kernels.blockpool import cdiv
from oracle.kernels.kvcache import match_prefix


@jit(inline="always")
def _load(r, wq_len, s_max, slot_top):
    """4 x waiting + running (a running request holds one of the replica's s_max slots)."""
    return 4 * wq_len[r] + s_max - slot_top[r]


@jit(inline="always")
def _least_loaded(num_replicas, wq_len, s_max, slot_top):
    best = 0
    for r in range(1, num_replicas):
        if _load(r, wq_len, s_max, slot_top) < _load(best, wq_len, s_max, slot_top):
            best = r
    return best


@kernel
def _route(q, router, num_replicas, rr_counter, sess_idx, sess_rep, prompt, hash_off, hashes, bs, n, cmask,
           caching, hm, num_free, wq_len, s_max, slot_top, hit_scratch, parent, o_replica, counters):
    """Replica for request ``q`` (see README "Router"). rr_counter: 1-element array;
    ``counters[8]`` counts the prefix-aware router's hash-map probes."""
    if router == 0:  # round_robin
        r = rr_counter[0] % num_replicas
        rr_counter[0] += 1
        return r
    if router == 1:  # least_loaded
        return _least_loaded(num_replicas, wq_len, s_max, slot_top)
    if router == 2:  # session_affinity
        s = sess_idx[q]
        if s >= 0 and sess_rep[s] >= 0:
            return sess_rep[s]
        r = _least_loaded(num_replicas, wq_len, s_max, slot_top)
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
        load = _load(r, wq_len, s_max, slot_top)
        if best >= 0:
            lower = (cdiv(p, bs) - max_hit) + used
            if lower > best_cost or (lower == best_cost and (load > best_load or (load == best_load and r > best))):
                continue
        hit = 0
        if caching:
            hit = match_prefix(hashes, hash_off[q], max_hit, r * (cmask + 1), cmask, hm, hit_scratch)
            counters[8] += hit + (hit < max_hit)
        cost = (cdiv(p, bs) - hit) + used
        if best < 0 or cost < best_cost or (cost == best_cost and (load < best_load
                                                                    or (load == best_load and r < best))):
            best = r
            best_cost = cost
            best_load = load
    return best
