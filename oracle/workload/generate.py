"""Synthetic workloads from client specs: arrivals, lengths, sessions, shared prefixes (DESIGN §3.3).

How a workload is drawn (vectorised, Python loops only per chunk; the segment lists of step 5
are written by two jitted one-pass kernels, ``oracle.kernels.segments``):

1. *Streams.* Each client with its own ``arrival`` is one stream; clients without one split
   the shared ``[workload].arrival`` (one stream; each arrival picks its client with
   probability ``share``, so the aggregate keeps the process's burstiness). Every stream has
   its own generator, spawned from ``numpy.random.default_rng(seed)``.
2. *Sessions in chunks.* A stream draws sessions in chunks of 1024, 2048, ... (at most
   262144) sessions: inter-arrival gaps (the first session of a stream arrives at t = 0, or
   after one gap with ``first_arrival = "gap"``),
   the client, then per client: the number of turns, the system-prompt group, and per turn
   the new input length, the output length, the think time and (branch) the fork point.
   The chunk sizes do not depend on the totals, so a smaller workload is a prefix of a
   bigger one with the same seed (up to the truncated last session).
3. *Totals.* Streams are extended until they cover ``duration_s`` or hold ``num_requests``
   requests (all turns counted) before the earliest stream end; sessions are merged by start
   time (ties: stream, then draw order); sessions starting at or after ``duration_s`` are
   dropped, and so are the turns of ``think_from = "arrival"`` sessions that arrive at or
   after it; then the session that crosses ``num_requests`` is cut to hit it exactly.
4. *Requests.* Request ids are session-contiguous in merged order (a session's turns are
   consecutive ids), so finite arrivals are sorted in id order and ``parent = id - 1``.
   Follow-ups of ``think_from = "arrival"`` sessions get a fixed arrival (the previous turn's
   arrival + think time) and no parent; when there are any, the requests are renumbered in
   (arrival, id) order, a completion-released session staying together at its start time.
5. *Segments.* Turn 0 = ``[system prompt] + [input] + [output]``; turn k = the full segment
   list of its fork base (turn k-1, or an earlier turn for a branch) + ``[input] + [output]``.
   So turn k's prompt starts with turn k-1's whole sequence (chat/agent). The segment count
   grows linearly per turn (quadratically per session); turns are capped at 4096.

Content keys (``oracle.workload.table.KIND_*``): user input / tool output / model output of
request r get keys ``(kind << 60) | r``; system prompt g of pool P gets
``(4 << 60) | (pool_id(P) << 20) | g``. A client's pool defaults to its name, so two
clients share system prompts only if they name the same ``system_prompt_pool``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from oracle.errors import ScenarioError
from oracle.workload.dists import interarrival_gaps, sample, zipf_ranks
from oracle.workload.spec import ArrivalSpec, ClientSpec, WorkloadSpec, pool_id
from oracle.workload.table import (KIND_OUTPUT, KIND_SYSTEM, KIND_TOOL, KIND_USER, Workload,
                                   content_keys)

FIRST_CHUNK = 1024
MAX_CHUNK = 1 << 18
MAX_REQUESTS = 500_000_000  # refuse to generate more (memory), with a clear error


@dataclass
class _Stream:
    """One arrival process and the clients whose sessions it starts."""

    arrival: ArrivalSpec
    clients: list[int]
    probs: np.ndarray | None
    rng: np.random.Generator
    num_chunks: int = 0
    last_s: float = -np.inf
    num_turns: int = 0
    # per session (chunks)
    start_s: list = field(default_factory=list)
    client: list = field(default_factory=list)
    turns: list = field(default_factory=list)
    group: list = field(default_factory=list)
    turn_ptr: list = field(default_factory=list)
    # per turn (chunks)
    inp: list = field(default_factory=list)
    out: list = field(default_factory=list)
    think: list = field(default_factory=list)
    fork: list = field(default_factory=list)

    _cover: tuple | None = None  # (start_s, cumulative turns) of all chunks so far

    def coverage(self) -> tuple[np.ndarray, np.ndarray]:
        """Session start times and cumulative turn counts (cached until the next chunk)."""
        if self._cover is None:
            self._cover = (self.cat("start_s", np.float64), np.cumsum(self.cat("turns", np.int64)))
        return self._cover

    def cat(self, name: str, dtype) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def _streams(spec: WorkloadSpec, rng: np.random.Generator) -> list[_Stream]:
    groups: list[tuple[ArrivalSpec, list[int]]] = []
    shared: list[int] = []
    for i, c in enumerate(spec.clients):
        if c.arrival is not None:
            groups.append((c.arrival, [i]))
        else:
            if not shared:
                groups.append((spec.arrival, shared))
            shared.append(i)
    children = rng.spawn(len(groups))
    out = []
    for (arrival, members), child in zip(groups, children):
        probs = None
        if len(members) > 1:
            w = np.array([spec.clients[i].share for i in members], dtype=np.float64)
            probs = w / w.sum()
        out.append(_Stream(arrival=arrival, clients=list(members), probs=probs, rng=child))
    return out


def _extend(st: _Stream, clients: tuple[ClientSpec, ...]) -> None:
    """Draw the next chunk of sessions of one stream (see the module docstring, step 2)."""
    rng = st.rng
    m = min(FIRST_CHUNK << st.num_chunks, MAX_CHUNK)
    gaps = interarrival_gaps(st.arrival, rng, m)
    start = np.cumsum(gaps)
    if st.num_chunks > 0:
        start = st.last_s + start
    elif st.arrival.first_arrival == "zero":
        start = start - gaps[0]
    local = rng.choice(len(st.clients), size=m, p=st.probs) if st.probs is not None else np.zeros(m, np.int64)
    turns = np.ones(m, np.int32)
    group = np.zeros(m, np.int64)
    ptr = np.zeros(m, np.int64)
    base = st.num_turns
    for j, ci in enumerate(st.clients):
        idx = np.flatnonzero(local == j)
        if idx.size == 0:
            continue
        t = _draw_client(clients[ci], rng, idx.size, st)
        turns[idx], group[idx] = t
        ptr[idx] = base + np.cumsum(turns[idx], dtype=np.int64) - turns[idx]
        base += int(turns[idx].sum())
    st.num_turns = base
    st.start_s.append(start)
    st.client.append(np.asarray(st.clients, dtype=np.int64)[local])
    st.turns.append(turns)
    st.group.append(group)
    st.turn_ptr.append(ptr)
    st.last_s = float(start[-1])
    st.num_chunks += 1
    st._cover = None


def _draw_client(c: ClientSpec, rng: np.random.Generator, ns: int, st: _Stream) -> tuple[np.ndarray, np.ndarray]:
    """Per-session turns and system-prompt group of ``ns`` new sessions; per-turn draws go to ``st``."""
    conv = c.conversation
    turns = sample(conv.turns, rng, ns) if conv is not None else np.ones(ns, np.int32)
    if c.system_prompt_tokens > 0 and c.num_system_prompts > 1:
        if c.system_prompt_popularity == "zipf":
            group = zipf_ranks(rng, c.num_system_prompts, c.system_prompt_zipf_exponent, ns)
        else:
            group = rng.integers(0, c.num_system_prompts, size=ns)
    else:
        group = np.zeros(ns, np.int64)
    total = int(turns.sum(dtype=np.int64))
    k = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(turns, dtype=np.int64) - turns, turns)
    first = k == 0
    if conv is not None and conv.pattern == "agent":
        inp = np.empty(total, np.int32)
        inp[first] = sample(c.prompt_tokens, rng, ns)
        inp[~first] = sample(conv.tool_output_tokens, rng, total - ns)
    else:
        inp = sample(c.prompt_tokens, rng, total)
    out = sample(c.output_tokens, rng, total)
    think = np.zeros(total, np.float64)
    fork = (k - 1).astype(np.int32)
    if conv is not None and total > ns:
        think[~first] = sample(conv.think_time_s, rng, total - ns)
        if conv.pattern == "branch" and conv.branch_prob > 0:
            u = rng.random(total)
            r = rng.random(total)
            br = (k >= 2) & (u < conv.branch_prob)
            fork[br] = np.minimum(np.floor(r[br] * (k[br] - 1)), k[br] - 2).astype(np.int32)
    st.inp.append(inp)
    st.out.append(out)
    st.think.append(think)
    st.fork.append(fork)
    return turns, group


def _covered_requests(streams: list[_Stream], t: float) -> int:
    """Requests (all turns) of sessions starting at or before ``t``, over all streams."""
    total = 0
    for st in streams:
        start, cum = st.coverage()
        k = int(np.searchsorted(start, t, side="right"))
        total += int(cum[k - 1]) if k else 0
    return total


def generate(spec: WorkloadSpec, *, duration_s: float | None, num_requests: int | None,
             seed: int) -> Workload:
    """Draw a workload from generated clients (see the module docstring)."""
    if duration_s is None and num_requests is None:
        raise ScenarioError("set simulation.duration_s and/or simulation.num_requests for a generated workload",
                            key="simulation")
    clients = spec.clients
    rng = np.random.default_rng(seed)
    streams = _streams(spec, rng)
    while True:
        t = min(st.last_s for st in streams)
        if duration_s is not None and t >= duration_s:
            break
        if num_requests is not None and t > -np.inf and _covered_requests(streams, t) >= num_requests:
            break
        if sum(st.num_turns for st in streams) > MAX_REQUESTS:
            raise ScenarioError(f"the workload would have more than {MAX_REQUESTS:,} requests; "
                                "lower the rate, duration_s or num_requests", key="simulation")
        _extend(min(streams, key=lambda s: s.last_s), clients)
    sessions = _merge(streams, clients, duration_s, num_requests)
    wl = _build(spec, sessions)
    names = ", ".join(f"{c.name}" for c in clients)
    wl.source = (f"generated (clients: {names}; seed {seed}; duration_s {duration_s}; "
                 f"num_requests {num_requests})")
    return wl


def _merge(streams: list[_Stream], clients: tuple[ClientSpec, ...], duration_s: float | None,
           num_requests: int | None) -> dict:
    """Sessions of all streams in start order, cut to the totals; per-turn arrays concatenated."""
    cols = {k: [] for k in ("start_s", "client", "turns", "group", "turn_ptr", "stream", "seq")}
    turn_cols = {k: [] for k in ("inp", "out", "think", "fork")}
    turn_base = 0
    for si, st in enumerate(streams):
        n = sum(a.shape[0] for a in st.start_s)
        cols["start_s"].append(st.cat("start_s", np.float64))
        cols["client"].append(st.cat("client", np.int64))
        cols["turns"].append(st.cat("turns", np.int64))
        cols["group"].append(st.cat("group", np.int64))
        cols["turn_ptr"].append(st.cat("turn_ptr", np.int64) + turn_base)
        cols["stream"].append(np.full(n, si, np.int64))
        cols["seq"].append(np.arange(n, dtype=np.int64))
        for k in turn_cols:
            turn_cols[k].append(st.cat(k, {"inp": np.int32, "out": np.int32, "think": np.float64,
                                           "fork": np.int32}[k]))
        turn_base += st.num_turns
    s = {k: _cat(v) for k, v in cols.items()}
    start = s["start_s"]
    if len(streams) > 1 or np.any(start[1:] < start[:-1]):  # one stream's starts are already in order
        order = np.lexsort((s["seq"], s["stream"], start))
        s = {k: v[order] for k, v in s.items()}
    if duration_s is not None:
        keep = int(np.searchsorted(s["start_s"], duration_s, side="left"))
        s = {k: v[:keep] for k, v in s.items()}
    turns = {k: _cat(v) for k, v in turn_cols.items()}
    if duration_s is not None:
        _cut_late_turns(s, turns["think"], clients, duration_s)
    if num_requests is not None:
        cum = np.cumsum(s["turns"])
        last = int(np.searchsorted(cum, num_requests, side="left"))
        if last < cum.shape[0]:
            s = {k: v[:last + 1] for k, v in s.items()}
            s["turns"] = s["turns"].copy()
            s["turns"][-1] -= int(cum[last]) - num_requests
    s.update(turns)
    return s


def _from_arrival(clients: tuple[ClientSpec, ...]) -> np.ndarray:
    """Per client: its follow-ups are timed from the previous turn's arrival (bool[clients])."""
    return np.array([c.conversation is not None and c.conversation.think_from == "arrival" for c in clients],
                    dtype=bool)


def _cut_late_turns(s: dict, think: np.ndarray, clients: tuple[ClientSpec, ...], duration_s: float) -> None:
    """Sessions timed from arrivals lose the turns arriving at or after ``duration_s`` (in place).

    Turn k of such a session arrives at start + think_1 + ... + think_k, so the turns kept are
    a prefix of the session."""
    sel = np.flatnonzero(_from_arrival(clients)[s["client"]] & (s["turns"] > 1))
    if sel.size == 0:
        return
    n = s["turns"][sel]
    sess = np.repeat(np.arange(sel.size), n)
    k = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
    t = think[s["turn_ptr"][sel][sess] + k]
    t[k == 0] = 0.0
    arrival = s["start_s"][sel][sess] + _session_cumsum(t, np.cumsum(n) - n, sess)
    s["turns"] = s["turns"].copy()
    s["turns"][sel] = np.bincount(sess, weights=arrival < duration_s, minlength=sel.size).astype(np.int64)


def _session_cumsum(x: np.ndarray, first: np.ndarray, sess: np.ndarray) -> np.ndarray:
    """Running sums of ``x`` within each session (rows of a session are contiguous; ``first[j]``
    is session j's first row, ``sess`` each row's session); the first row's value counts."""
    cs = np.cumsum(x)
    return cs - (cs[first] - x[first])[sess]


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    """``np.concatenate``, without the copy of a single part."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _build(spec: WorkloadSpec, s: dict) -> Workload:
    """Request arrays and segments from merged sessions (module docstring, steps 4-5)."""
    clients = spec.clients
    turns = s["turns"]
    num_sessions = turns.shape[0]
    n = int(turns.sum())
    sess = np.repeat(np.arange(num_sessions), turns)
    first_id = np.cumsum(turns) - turns
    k = np.arange(n, dtype=np.int64) - first_id[sess]
    tidx = s["turn_ptr"][sess] + k
    inp = s["inp"][tidx].astype(np.int64)
    out = s["out"][tidx].astype(np.int64)
    fork_req = np.arange(n, dtype=np.int64) - k + s["fork"][tidx]
    client = s["client"][sess]

    conv = np.array([c.conversation is not None for c in clients], dtype=bool)
    sys_len_c = np.array([c.system_prompt_tokens for c in clients], dtype=np.int64)
    pool_c = np.array([pool_id(c.system_prompt_pool or c.name) for c in clients], dtype=np.uint64)
    agent_c = np.array([c.conversation is not None and c.conversation.pattern == "agent" for c in clients])
    sess_conv = conv[s["client"]]
    session_id = np.where(sess_conv, np.cumsum(sess_conv) - 1, -1)

    arrival = np.where(k == 0, s["start_s"][sess], np.nan)
    parent = np.where(k == 0, -1, np.arange(n, dtype=np.int64) - 1)
    think = np.where(k == 0, 0.0, s["think"][tidx])
    # follow-ups timed from the previous turn's arrival: fixed arrival times, no parent
    timed = _from_arrival(clients)[client] & (k > 0)
    if timed.any():
        fixed = _from_arrival(clients)[client]
        offset = _session_cumsum(think, first_id, sess)
        arrival = np.where(fixed, s["start_s"][sess] + offset, arrival)
        parent = np.where(fixed, -1, parent)
        think = np.where(fixed, 0.0, think)

    # segment counts and token totals, then the segments (kernels walk ids: a fork base comes first)
    from oracle.kernels.segments import fill_segments, segment_counts   # lazy: numba (~0.4 s); validate imports this
    sys_len = np.where(k == 0, sys_len_c[client], 0)
    has_sys = sys_len > 0
    nseg = np.empty(n, np.int64)
    total = np.empty(n, np.int64)
    segment_counts(k, fork_req, 2 + has_sys.astype(np.int64), sys_len + inp + out, inp, out, nseg, total)
    prompt = total - out
    if n and prompt.max() >= 2**31 - 1 - out.max():
        i = int(client[int(np.argmax(prompt + out))])
        raise ScenarioError("a request would have 2**31 tokens or more (system prompt + history + input + "
                            "output); set a max on prompt_tokens / output_tokens or bound the turns",
                            key=f"workload.clients.{i}")

    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(nseg, out=offsets[1:])
    seg_key = np.empty(int(offsets[-1]), np.uint64)
    seg_len = np.empty(int(offsets[-1]), np.int32)
    ids = np.arange(n, dtype=np.int64)
    in_kind_tool = agent_c[client] & (k > 0)
    in_key = np.where(in_kind_tool, content_keys(KIND_TOOL, ids), content_keys(KIND_USER, ids))
    out_key = content_keys(KIND_OUTPUT, ids)
    sys_key = np.zeros(n, np.uint64)   # only read where has_sys (turn 0 of a client with a system prompt)
    sys_key[has_sys] = (np.uint64(KIND_SYSTEM << 60) | (pool_c[client[has_sys]] << np.uint64(20))
                        | s["group"][sess[has_sys]].astype(np.uint64))
    fill_segments(k, fork_req, offsets, has_sys, sys_key, sys_len, in_key, inp, out_key, out, seg_key, seg_len)

    wl = Workload(arrival_s=arrival, prompt_tokens=prompt, output_tokens=out, session=session_id[sess],
                  turn=k, parent=parent, think_s=think, client=client, seg_offsets=offsets,
                  seg_key=seg_key, seg_len=seg_len, client_names=[c.name for c in clients])
    if timed.any():
        # requests with a fixed arrival must come in arrival order: sort by (arrival, id); a
        # session released by completions keeps its turns together, at its start time
        when = np.where(np.isnan(arrival), s["start_s"][sess], arrival)
        wl = _permute(wl, np.lexsort((np.arange(n), when)))
    return wl


def _permute(wl: Workload, order: np.ndarray) -> Workload:
    """The requests of ``wl`` renumbered: new id i is old id ``order[i]`` (parents remapped;
    the order must keep every parent before its follow-ups)."""
    new_id = np.empty_like(order)
    new_id[order] = np.arange(order.shape[0])
    cols = {c: getattr(wl, c)[order] for c in ("arrival_s", "prompt_tokens", "output_tokens", "session", "turn",
                                               "think_s", "client")}
    parent = wl.parent[order]
    cols["parent"] = np.where(parent >= 0, new_id[np.maximum(parent, 0)], -1)
    counts = np.diff(wl.seg_offsets)[order]
    offsets = np.zeros(order.shape[0] + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    idx = np.repeat(wl.seg_offsets[:-1][order] - offsets[:-1], counts) + np.arange(int(offsets[-1]), dtype=np.int64)
    return Workload(**cols, seg_offsets=offsets, seg_key=wl.seg_key[idx], seg_len=wl.seg_len[idx],
                    client_names=list(wl.client_names), source=wl.source)
