"""When each output token of a request was emitted, rebuilt from the steps table.

The engine reports per request its first-token and completion times and its largest gap; a
benchmark client's JSON (``vllm bench serve``: ``itls``) and the Prometheus ITL histogram need
every gap. They are rebuilt from ``steps.parquet``: a running request in its decode phase
takes one token in each step of its replica (vLLM v1 schedules running requests first), so
its tokens 2..o are emitted at the ends of the steps of its replica in
``(first_token_s, completion_s]``::

    replica r steps:   |--s1--|--s2--|--s3--|----s4----|--s5--|
    request i:             ^first token   ^      ^          ^  ^ completion (o = 5)
                                         s2 end  s3 end   s4 end s5 end  -> itls = 4 gaps

That is exact when the request took a token in every such step. It did not when a request
ahead of it in the running list used the whole token budget (a long prefill chunk) or when it
was preempted (waiting, then recomputing): then more steps than tokens lie in the interval.
Those steps are dropped, first the ones whose scheduled tokens filled the budget
(``num_decode + num_prefill_tokens >= max_num_batched_tokens``: the only steps where a
decode can be skipped without a preemption), then the earliest others; the last token is
always the completion. :func:`token_times` returns how many requests needed that.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-9   # step ends and completion times come from the same float sums; this absorbs rounding


def step_ends(steps) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per replica: (step end times ascending, tokens scheduled in each of those steps).
    ``steps``: the steps table (polars DataFrame or dict of arrays)."""
    rep = np.asarray(steps["replica"], np.int64)
    end = np.asarray(steps["start_s"], np.float64) + np.asarray(steps["duration_s"], np.float64)
    tokens = np.asarray(steps["num_decode"], np.int64) + np.asarray(steps["num_prefill_tokens"], np.int64)
    out = {}
    for r in np.unique(rep):
        m = rep == r
        order = np.argsort(end[m], kind="stable")
        out[int(r)] = (end[m][order], tokens[m][order])
    return out


def token_times(requests, steps, *, max_num_batched_tokens: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(offsets, times, num_approximated)``: the emission times (s) of every output token of
    every finished request, CSR by request row: ``times[offsets[i]:offsets[i+1]]`` holds
    ``output_tokens[i]`` times, the first one ``first_token_s``, the last ``completion_s``.
    Requests not finished get none. ``num_approximated``: requests whose interval held more
    steps than tokens (module docstring)."""
    status = np.asarray(requests["status"])
    finished = status == "finished"
    rep = np.asarray(requests["replica"], np.int64)
    first = np.asarray(requests["first_token_s"], np.float64)
    comp = np.asarray(requests["completion_s"], np.float64)
    out_tok = np.asarray(requests["output_tokens"], np.int64)
    n = first.shape[0]
    counts = np.where(finished, out_tok, 0)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    times = np.empty(int(offsets[-1]), np.float64)
    times[offsets[:-1][finished]] = first[finished]
    approximated = 0
    ends = step_ends(steps) if len(steps["replica"]) else {}
    for r, (e, tok) in ends.items():
        ids = np.flatnonzero(finished & (rep == r) & (out_tok > 1))
        if ids.size == 0:
            continue
        lo = np.searchsorted(e, first[ids] + _EPS, side="left")       # steps ending after the first token
        hi = np.searchsorted(e, comp[ids] + _EPS, side="right")       # ... up to the completion
        k = hi - lo
        need = out_tok[ids] - 1
        exact = k == need
        ex = ids[exact]
        if ex.size:
            m = need[exact]
            dest = np.repeat(offsets[ex] + 1, m) + _ranks(m)
            src = np.repeat(lo[exact], m) + _ranks(m)
            times[dest] = e[src]
        for j in np.flatnonzero(~exact):
            i = ids[j]
            times[offsets[i] + 1:offsets[i + 1]] = _fit(e[lo[j]:hi[j]], tok[lo[j]:hi[j]], int(need[j]),
                                                        first[i], comp[i], max_num_batched_tokens)
            approximated += 1
    missing = finished & (out_tok > 1) & ~np.isin(rep, list(ends))   # no steps recorded for the replica
    for i in np.flatnonzero(missing):
        times[offsets[i] + 1:offsets[i + 1]] = np.linspace(first[i], comp[i], int(out_tok[i]))[1:]
        approximated += 1
    return offsets, times, approximated


def _ranks(m: np.ndarray) -> np.ndarray:
    """``0..m[0]-1, 0..m[1]-1, ...`` (i8)."""
    total = int(m.sum())
    return np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(m) - m, m)


def _fit(ends: np.ndarray, tokens: np.ndarray, need: int, first: float, comp: float, budget: int) -> np.ndarray:
    """``need`` token times out of the step ends ``ends`` (module docstring)."""
    if ends.shape[0] < need or need == 0 or ends.shape[0] == 0:   # fewer steps than tokens: spread evenly
        return np.linspace(first, comp, need + 1)[1:]
    drop = ends.shape[0] - need
    keep = np.ones(ends.shape[0], bool)
    full = np.flatnonzero(tokens[:-1] >= budget)       # the last step (the completion) is always kept
    keep[full[:drop]] = False
    drop -= min(drop, full.shape[0])
    if drop:
        rest = np.flatnonzero(keep[:-1])
        keep[rest[:drop]] = False
    return ends[keep]
