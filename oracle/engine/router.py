"""Routers: which replica a request goes to, from the replicas' state at its arrival (README "Router")."""

from __future__ import annotations

from oracle.engine.inputs import Router
from oracle.engine.state import Counter
from oracle.kernels._jit import jit
from oracle.kernels.blockpool import cdiv
from oracle.kernels.kvcache import is_mapped, match_prefix, num_used


@jit(inline="always")
def _load(qs, rs, s_max, r):
    """4 x waiting + running (a running request holds one of the replica's s_max slots)."""
    return 4 * qs.wq_len[r] + s_max - rs.slot_top[r]


@jit(inline="always")
def _least_loaded(cfg, qs, rs):
    best = 0
    for r in range(1, cfg.num_replicas):
        if _load(qs, rs, cfg.max_num_seqs, r) < _load(qs, rs, cfg.max_num_seqs, best):
            best = r
    return best


@jit(inline="always")
def route(q, cfg, req, st):
    """Replica for request ``q`` (see README "Router"); updates the routers' own state.
    ``Counter.ROUTER_PROBES`` counts the prefix-aware router's hash-map probes."""
    pool, rs, qs, out, sc = st.pool, st.rs, st.qs, st.out, st.sc
    if cfg.router == Router.ROUND_ROBIN:
        r = qs.rr_counter[0] % cfg.num_replicas
        qs.rr_counter[0] += 1
        return r
    if cfg.router == Router.LEAST_LOADED:
        return _least_loaded(cfg, qs, rs)
    if cfg.router == Router.SESSION_AFFINITY:
        s = req.sess_idx[q]
        if s >= 0 and qs.sess_rep[s] >= 0:
            return qs.sess_rep[s]
        r = _least_loaded(cfg, qs, rs)
        if s >= 0:
            qs.sess_rep[s] = r
        return r
    # PREFIX_AWARE: new prefill blocks + blocks in use, ties to the lower load, then lower r.
    # The winner is the least (cost, load, r), whatever the order the replicas are visited
    # in; the order only decides how much is looked up. A replica needs at least ``need``
    # hits to beat the current winner: if that is more than the request's hashable blocks,
    # or if its block ``need - 1`` is not mapped (a leading run of ``need`` hits would
    # include it), it cannot win and is not walked (one probe instead of a walk). So the
    # likely winner goes first: the replica holding the parent turn (its conversation),
    # then the others by fewest blocks in use (with equal hits, e.g. only the shared system
    # prompt, the emptiest wins).
    bs = cfg.block_size
    p = req.prompt[q]
    max_hit = (p - 1) // bs
    num_blocks = cdiv(p, bs)
    order = sc.order
    first = -1
    if req.parent[q] >= 0:
        first = out.replica[req.parent[q]]
    n = 0
    if first >= 0:
        order[0] = first
        n = 1
    for r in range(cfg.num_replicas):  # insertion sort by (used, r) after ``first``
        if r == first:
            continue
        used = num_used(pool, r)
        i = n
        while i > (1 if first >= 0 else 0) and num_used(pool, order[i - 1]) > used:
            order[i] = order[i - 1]
            i -= 1
        order[i] = r
        n += 1
    best = -1
    best_cost = 0
    best_load = 0
    for k in range(cfg.num_replicas):
        r = order[k]
        used = num_used(pool, r)
        load = _load(qs, rs, cfg.max_num_seqs, r)
        if best >= 0:
            wins_tie = load < best_load or (load == best_load and r < best)
            need = num_blocks + used - best_cost + (0 if wins_tie else 1)  # cost <= / < best_cost
            if need > max_hit or (need > 0 and not cfg.enable_prefix_caching):
                continue
            if need > 0:
                out.counters[Counter.ROUTER_PROBES.value] += 1
                if not is_mapped(pool, r, req.hashes[req.hash_off[q] + need - 1]):
                    continue
        hit = 0
        if cfg.enable_prefix_caching:
            hit = match_prefix(pool, r, req.hashes, req.hash_off[q], max_hit, sc.hit_blocks)
            out.counters[Counter.ROUTER_PROBES.value] += hit + (hit < max_hit)
        cost = (num_blocks - hit) + used
        if best < 0 or cost < best_cost or (cost == best_cost and (load < best_load
                                                                    or (load == best_load and r < best))):
            best = r
            best_cost = cost
            best_load = load
    return best
