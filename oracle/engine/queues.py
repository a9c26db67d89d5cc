"""Waiting queues (ring buffers with push-front), the follow-up heap and its release, for the engine loop."""

from __future__ import annotations

from oracle.kernels._jit import jit


@jit(inline="always")
def _wq_push_back(r, q, wcap, wq, wq_head, wq_len):
    wq[r * wcap + (wq_head[r] + wq_len[r]) % wcap] = q
    wq_len[r] += 1


@jit(inline="always")
def _wq_push_front(r, q, wcap, wq, wq_head, wq_len):
    wq_head[r] = (wq_head[r] - 1 + wcap) % wcap
    wq[r * wcap + wq_head[r]] = q
    wq_len[r] += 1


@jit(inline="always")
def _wq_front(r, wcap, wq, wq_head):
    return wq[r * wcap + wq_head[r]]


@jit(inline="always")
def _wq_pop_front(r, wcap, wq_head, wq_len):
    wq_head[r] = (wq_head[r] + 1) % wcap
    wq_len[r] -= 1


@jit(inline="always")
def _heap_push(t, q, hp_t, hp_id, hp_n):
    """Binary min-heap on (t, id); hp_n is a 1-element array holding the size."""
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
def _heap_pop(hp_t, hp_id, hp_n):
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
def _release_children(q, t, child_off, child_ids, think_s, hp_t, hp_id, hp_n):
    """Follow-ups of ``q`` arrive ``think_s`` after ``q`` ends at time ``t``."""
    for k in range(child_off[q], child_off[q + 1]):
        c = child_ids[k]
        _heap_push(t + think_s[c], c, hp_t, hp_id, hp_n)
