"""Closed-loop clients: ``concurrency`` users, each sending its next request when the previous ends.

This is the load of ``vllm bench serve --max-concurrency N --request-rate inf``, GuideLLM's
``concurrent`` / ``synchronous`` profiles and inference-perf's concurrency load: N requests
in flight at all times, a new one sent the moment one ends (after an optional think time).

How it is expressed without an engine change: the engine already releases a follow-up
request ``think_s`` after its ``parent`` ends (completes, is rejected, or its client times
out). A client of N users becomes N chains; the client's request j (0-based) belongs to user
``k = j % N`` and is the child of request ``j - N``::

    user 0:  r0 ──> r3 ──> r6 ──> ...      (N = 3; each arrow = "ends, then think_time_s")
    user 1:  r1 ──> r4 ──> r7 ──> ...
    user 2:  r2 ──> r5 ──> r8 ──> ...

User k sends its first request at ``k * ramp_up_s / N`` (all at 0 by default). The requests
are independent (``session = -1``, ``turn = 0``): routers treat them as single requests, and
the prefix cache shares only what their contents share (a system prompt).

A benchmark tool's pool of N workers takes the *next request of its list* whenever any
worker frees up (a FIFO semaphore), while the chains above give request j to user j % N.
With lengths drawn independently per request (every generated workload) the two are the same
load in distribution: which slot a request lands in does not depend on its draw.

Stop conditions:

* a count: ``num_requests`` on the client (default ``[simulation].num_requests``) requests
  in all, so each user sends ``ceil`` or ``floor`` of ``num_requests / N``;
* a duration: with ``[simulation].duration_s``, no request is sent at or after it. When a
  request is sent depends on the engine, so the workload is fixed per framework by
  :func:`simulate_closed_loop`: it simulates chains long enough that every user is past the
  duration, then drops the requests sent at or after it and simulates once more (the engine
  is causal: dropping later arrivals changes nothing before them, so the requests kept are
  sent at the same times).

Draws are made in blocks of :data:`BLOCK` requests, each from its own generator seeded by
``(seed, client index, block)``, so a longer chain starts with the same requests.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np

from oracle.errors import ScenarioError
from oracle.workload.dists import sample, zipf_ranks
from oracle.workload.spec import ClientSpec, WorkloadSpec, pool_id
from oracle.workload.table import COLUMNS, KIND_OUTPUT, KIND_SYSTEM, KIND_USER, Workload, content_keys

BLOCK = 4096                 # requests per independent draw block
INITIAL_ROUNDS = 16          # requests per user in the first duration-limited guess
MAX_RESOLVE_RUNS = 12        # engine runs to find chains long enough for the duration
_SEED_TAG = 0x636C6F73       # "clos": keeps these draws apart from the open-loop streams
_ID_BASE = 1 << 59           # closed-loop content ids: bit 59 + client index << 40 + request


def closed_clients(spec: WorkloadSpec) -> list[int]:
    """Indices of the closed-loop clients of ``spec`` (none for a trace)."""
    return [i for i, c in enumerate(spec.clients) if c is not None and c.closed_loop is not None]


def needs_resolution(spec: WorkloadSpec, duration_s: float | None) -> bool:
    """True when the workload depends on the engine: closed-loop clients stopped by a duration."""
    return duration_s is not None and bool(closed_clients(spec))


def client_count(c: ClientSpec, num_requests: int | None) -> int | None:
    """Requests a closed-loop client sends at most (None: only the duration stops it)."""
    return c.closed_loop.num_requests if c.closed_loop.num_requests is not None else num_requests


def build_with_closed_loop(spec: WorkloadSpec, *, duration_s: float | None, num_requests: int | None,
                           seed: int, rounds: int | None = None) -> Workload:
    """Open-loop clients (``oracle.workload.generate``) plus closed-loop chains, merged.

    ``rounds``: requests per user of duration-limited closed-loop clients (the chains are cut
    later, see :func:`simulate_closed_loop`); default :data:`INITIAL_ROUNDS`.
    """
    from oracle.workload.generate import generate
    closed = closed_clients(spec)
    opened = [i for i in range(len(spec.clients)) if i not in closed]
    parts: list[tuple[Workload, np.ndarray]] = []
    if opened:
        sub = dataclasses.replace(spec, clients=tuple(spec.clients[i] for i in opened))
        wl = generate(sub, duration_s=duration_s, num_requests=num_requests, seed=seed)
        wl.client = np.asarray(opened, np.int16)[wl.client]
        parts.append((wl, _root_arrivals(wl)))
    for ci in closed:
        c = spec.clients[ci]
        count = client_count(c, num_requests)
        n = c.closed_loop.concurrency
        if duration_s is not None:
            cap = n * (rounds or INITIAL_ROUNDS)
            count = cap if count is None else min(count, cap)
        if count is None:
            raise ScenarioError("a closed-loop client needs num_requests, or [simulation] num_requests or "
                                "duration_s, to stop", key=f"workload.clients.{ci}")
        wl = closed_client_requests(c, ci, count, seed=seed)
        j = np.arange(count, dtype=np.int64)
        parts.append((wl, (j % n) * (c.closed_loop.ramp_up_s / n)))
    merged = _merge(parts, [c.name for c in spec.clients])
    names = ", ".join(c.name for c in spec.clients)
    merged.source = (f"generated (clients: {names}; closed loop: {', '.join(spec.clients[i].name for i in closed)}; "
                     f"seed {seed}; duration_s {duration_s}; num_requests {num_requests})")
    return merged


def closed_client_requests(c: ClientSpec, ci: int, count: int, *, seed: int) -> Workload:
    """The first ``count`` requests of closed-loop client ``c`` (index ``ci``), in send order.

    Request j: user ``j % N``; parent ``j - N`` (none for the first N); ``think_s`` drawn from
    ``think_time_s`` (0 for a first request); ``arrival_s`` ``k * ramp_up_s / N`` for user k's
    first request, NaN for the others; segments ``[system prompt] + input + output``.
    """
    cl = c.closed_loop
    n_users = cl.concurrency
    count = int(count)
    inp, out, think, group = _draws(c, ci, count, seed)
    j = np.arange(count, dtype=np.int64)
    first = j < n_users
    arrival = np.where(first, (j % n_users) * (cl.ramp_up_s / n_users), np.nan)
    parent = np.where(first, -1, j - n_users)
    think_s = np.where(first, 0.0, think)
    sys_len = int(c.system_prompt_tokens)
    has_sys = sys_len > 0
    per = 3 if has_sys else 2
    ids = (np.uint64(_ID_BASE) | (np.uint64(ci) << np.uint64(40)) | j.astype(np.uint64))
    seg_key = np.empty((count, per), np.uint64)
    seg_len = np.empty((count, per), np.int32)
    col = 0
    if has_sys:
        pool = np.uint64(pool_id(c.system_prompt_pool or c.name))
        seg_key[:, 0] = np.uint64(KIND_SYSTEM << 60) | (pool << np.uint64(20)) | group.astype(np.uint64)
        seg_len[:, 0] = sys_len
        col = 1
    seg_key[:, col] = content_keys(KIND_USER, ids)
    seg_len[:, col] = inp
    seg_key[:, col + 1] = content_keys(KIND_OUTPUT, ids)
    seg_len[:, col + 1] = out
    prompt = inp.astype(np.int64) + sys_len
    if count and prompt.max() >= 2**31 - 1 - int(out.max()):
        raise ScenarioError("a request would have 2**31 tokens or more; set a max on prompt_tokens / output_tokens",
                            key=f"workload.clients.{ci}")
    return Workload(arrival_s=arrival, prompt_tokens=prompt, output_tokens=out,
                    session=np.full(count, -1, np.int64), turn=np.zeros(count, np.int32), parent=parent,
                    think_s=think_s, client=np.full(count, ci, np.int16),
                    seg_offsets=np.arange(count + 1, dtype=np.int64) * per, seg_key=seg_key.reshape(-1),
                    seg_len=seg_len.reshape(-1), client_names=[c.name])


def _draws(c: ClientSpec, ci: int, count: int, seed: int):
    """Input, output, think time and system-prompt group of requests ``0..count-1``, drawn
    block by block (:data:`BLOCK`) so that a prefix does not depend on ``count``."""
    nblocks = max(1, math.ceil(count / BLOCK))
    inp, out, think, group = [], [], [], []
    for b in range(nblocks):
        rng = np.random.default_rng([int(seed), _SEED_TAG, ci, b])
        inp.append(sample(c.prompt_tokens, rng, BLOCK))
        out.append(sample(c.output_tokens, rng, BLOCK))
        think.append(sample(c.closed_loop.think_time_s, rng, BLOCK))
        if c.system_prompt_tokens > 0 and c.num_system_prompts > 1:
            if c.system_prompt_popularity == "zipf":
                group.append(zipf_ranks(rng, c.num_system_prompts, c.system_prompt_zipf_exponent, BLOCK))
            else:
                group.append(rng.integers(0, c.num_system_prompts, size=BLOCK))
        else:
            group.append(np.zeros(BLOCK, np.int64))
    cut = slice(0, count)
    return (np.concatenate(inp)[cut], np.concatenate(out)[cut], np.concatenate(think)[cut],
            np.concatenate(group)[cut])


def _root_arrivals(wl: Workload) -> np.ndarray:
    """Arrival time of each request's root (itself for a request without parent)."""
    root = wl.arrival_s.copy()
    follow = np.flatnonzero(wl.parent >= 0)
    while follow.size:     # parent < child: one pass per depth level
        root[follow] = root[wl.parent[follow]]
        follow = follow[np.isnan(root[follow])]
    return root


def _merge(parts: list[tuple[Workload, np.ndarray]], client_names: list[str]) -> Workload:
    """Concatenate workloads and order them by (root arrival, part, id) so that roots keep
    non-decreasing arrivals and every parent comes before its children."""
    if not parts:
        raise ScenarioError("the workload has no clients", key="workload.clients")
    cols = {c: [] for c in COLUMNS}
    keys, lens, counts, root, part_of, local = [], [], [], [], [], []
    base = 0
    for p, (wl, r) in enumerate(parts):
        n = len(wl)
        for c in COLUMNS:
            cols[c].append(getattr(wl, c))
        cols["parent"][-1] = np.where(wl.parent >= 0, wl.parent + base, -1)
        keys.append(wl.seg_key)
        lens.append(wl.seg_len)
        counts.append(np.diff(wl.seg_offsets))
        root.append(r)
        part_of.append(np.full(n, p, np.int64))
        local.append(np.arange(n, dtype=np.int64))
        base += n
    arrays = {c: np.concatenate(v) for c, v in cols.items()}
    counts_all = np.concatenate(counts)
    offsets = np.concatenate([[0], np.cumsum(counts_all)])
    wl = Workload(**arrays, seg_offsets=offsets, seg_key=np.concatenate(keys), seg_len=np.concatenate(lens),
                  client_names=client_names)
    if len(parts) == 1:
        return wl
    order = np.lexsort((np.concatenate(local), np.concatenate(part_of), np.concatenate(root)))
    return reorder(wl, order)


def reorder(wl: Workload, order: np.ndarray) -> Workload:
    """The requests of ``wl`` in the order ``order`` (a permutation), parents renumbered."""
    order = np.asarray(order, np.int64)
    n = len(wl)
    new_id = np.empty(n, np.int64)
    new_id[order] = np.arange(n, dtype=np.int64)
    cols = {c: getattr(wl, c)[order] for c in COLUMNS}
    cols["parent"] = np.where(cols["parent"] >= 0, new_id[np.maximum(cols["parent"], 0)], -1)
    counts = np.diff(wl.seg_offsets)[order]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    idx = np.repeat(wl.seg_offsets[:-1][order] - offsets[:-1], counts) + np.arange(int(offsets[-1]), dtype=np.int64)
    return Workload(**cols, seg_offsets=offsets, seg_key=wl.seg_key[idx], seg_len=wl.seg_len[idx],
                    client_names=list(wl.client_names), source=wl.source)


# -- per framework: chains long enough for the duration, then cut ------------------------------

def simulate_closed_loop(spec: WorkloadSpec, workload: Workload | None, *, duration_s: float,
                         num_requests: int | None, seed: int, run: Callable) -> tuple[Workload, object]:
    """``(workload, run(workload, True))`` with closed-loop users stopped at ``duration_s``.

    ``run(workload, final)`` simulates and returns the engine outputs (``final``: the run whose
    outputs are kept). ``workload`` is the first guess (:func:`build_with_closed_loop` with
    the default rounds) or None. Chains are lengthened until every user that could still send
    has a request sent at or after ``duration_s`` (or has sent its count), then the requests
    sent at or after it are dropped (their descendants are later still) and the rest is
    simulated once more; with nothing to drop, the last run is kept.
    """
    closed = closed_clients(spec)
    rounds = INITIAL_ROUNDS
    wl = workload if workload is not None else build_with_closed_loop(
        spec, duration_s=duration_s, num_requests=num_requests, seed=seed, rounds=rounds)
    for _ in range(MAX_RESOLVE_RUNS):
        out = run(wl, False)
        short, reached = _short_chains(spec, closed, wl, out, duration_s=duration_s, num_requests=num_requests,
                                       rounds=rounds)
        if not short:
            break
        grow = duration_s / max(reached, 1e-3) * 1.25 if reached > 0 else 8.0
        rounds = int(min(max(2 * rounds, math.ceil(rounds * grow)), rounds * 64))
        if rounds * sum(spec.clients[i].closed_loop.concurrency for i in closed) > 500_000_000:
            raise ScenarioError("closed-loop clients would send more than 500,000,000 requests before duration_s; "
                                "lower the concurrency or duration_s, or set num_requests", key="simulation")
        wl = build_with_closed_loop(spec, duration_s=duration_s, num_requests=num_requests, seed=seed,
                                    rounds=rounds)
    else:  # pragma: no cover - each run at least doubles the chains; 12 doublings is 65k per user
        raise ScenarioError("could not size the closed-loop chains for duration_s", key="simulation")
    is_closed = np.isin(wl.client, np.asarray(closed, np.int16))
    late = is_closed & ~(out.arrival_s < duration_s)
    if not late.any():
        return wl, run(wl, True)
    kept = wl.take(~late)
    return kept, run(kept, True)


def _short_chains(spec, closed, wl: Workload, out, *, duration_s: float, num_requests: int | None,
                  rounds: int) -> tuple[bool, float]:
    """Whether some user's chain ended before ``duration_s`` while it could still send, and
    the earliest time such a chain ended (to size the next guess)."""
    has_child = np.zeros(len(wl), bool)
    has_child[wl.parent[wl.parent >= 0]] = True
    short = False
    reached = math.inf
    for ci in closed:
        c = spec.clients[ci]
        count = client_count(c, num_requests)
        if count is not None and count <= c.closed_loop.concurrency * rounds:
            continue   # the client sent its whole count
        last = np.flatnonzero((wl.client == ci) & ~has_child)
        end = _end_times(out, last, spec.timeout_s)
        gap = c.closed_loop.think_time_s.lo
        need = ~(end + gap >= duration_s)    # NaN end: unknown, extend
        if need.any():
            short = True
            reached = min(reached, float(np.nanmin(end[need])) if np.isfinite(end[need]).any() else 0.0)
    return short, (0.0 if math.isinf(reached) else reached)


def _end_times(out, ids: np.ndarray, timeout_s: float | None) -> np.ndarray:
    """When each request ended for its client: its completion or its client's deadline,
    whichever is first; a request never completed without a timeout was rejected on arrival."""
    arr = out.arrival_s[ids]
    end = np.where(np.isfinite(out.completion_s[ids]), out.completion_s[ids], np.inf)
    if timeout_s is not None:
        end = np.minimum(end, arr + timeout_s)
    return np.where(np.isfinite(end), end, arr)
