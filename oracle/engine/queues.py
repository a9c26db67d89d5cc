"""Waiting queues (ring buffers with push-front and removal) and the event heaps (follow-up
arrivals, client aborts), over a ``state.Queues`` record ``qs``."""

from __future__ import annotations

from oracle.kernels._jit import jit


@jit(inline="always")
def _wcap(qs):
    """Capacity of one replica's waiting ring."""
    return qs.wq.shape[0] // qs.wq_len.shape[0]


@jit(inline="always")
def wq_push_back(qs, r, q):
    wcap = _wcap(qs)
    qs.wq[r * wcap + (qs.wq_head[r] + qs.wq_len[r]) % wcap] = q
    qs.wq_len[r] += 1


@jit(inline="always")
def wq_push_front(qs, r, q):
    wcap = _wcap(qs)
    qs.wq_head[r] = (qs.wq_head[r] - 1 + wcap) % wcap
    qs.wq[r * wcap + qs.wq_head[r]] = q
    qs.wq_len[r] += 1


@jit(inline="always")
def wq_front(qs, r):
    return qs.wq[r * _wcap(qs) + qs.wq_head[r]]


@jit(inline="always")
def wq_pop_front(qs, r):
    qs.wq_head[r] = (qs.wq_head[r] + 1) % _wcap(qs)
    qs.wq_len[r] -= 1


@jit(inline="always")
def wq_remove(qs, r, q):
    """Take request q out of replica r's waiting queue (the others keep their order).
    O(queue length): only aborts use it."""
    wcap = _wcap(qs)
    base = r * wcap
    n = qs.wq_len[r]
    k = 0
    while qs.wq[base + (qs.wq_head[r] + k) % wcap] != q:
        k += 1
    for j in range(k, n - 1):
        qs.wq[base + (qs.wq_head[r] + j) % wcap] = qs.wq[base + (qs.wq_head[r] + j + 1) % wcap]
    qs.wq_len[r] -= 1


@jit(inline="always")
def heap_push(hp_t, hp_id, hp_n, t, q):
    """Binary min-heap on (t, id); ``hp_n[0]`` is its size."""
    i = hp_n[0]
    hp_n[0] += 1
    while i > 0:
        p = (i - 1) >> 1
        if hp_t[p] < t or (hp_t[p] == t and hp_id[p] < q):
            break
        hp_t[i] = hp_t[p]
        hp_id[i] = hp_id[p]
        i = p
    hp_t[i] = t
    hp_id[i] = q


@jit(inline="always")
def heap_pop(hp_t, hp_id, hp_n):
    """Remove the least (t, id) of the heap."""
    n = hp_n[0] - 1
    hp_n[0] = n
    t = hp_t[n]
    q = hp_id[n]
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and (hp_t[c + 1] < hp_t[c] or (hp_t[c + 1] == hp_t[c] and hp_id[c + 1] < hp_id[c])):
            c += 1
        if t < hp_t[c] or (t == hp_t[c] and q < hp_id[c]):
            break
        hp_t[i] = hp_t[c]
        hp_id[i] = hp_id[c]
        i = c
    hp_t[i] = t
    hp_id[i] = q


@jit(inline="always")
def release_followups(qs, req, q, t):
    """Follow-ups of ``q`` arrive ``think_s`` after ``q`` ends at time ``t``."""
    for k in range(req.child_off[q], req.child_off[q + 1]):
        c = req.child_ids[k]
        heap_push(qs.hp_t, qs.hp_id, qs.hp_n, t + req.think_s[c], c)
