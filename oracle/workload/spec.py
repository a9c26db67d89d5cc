"""The scenario's ``[workload]`` table -> frozen dataclasses (DESIGN §3.3, §3.4, §7).

Either generated clients::

    [workload]                       # optional: one arrival process split between clients
    arrival = { process = "poisson", rate = 10.0 }
    [[workload.clients]]
    name = "chat"
    share = 0.7                      # with [workload].arrival; default: equal shares
    arrival = { process = "gamma", rate = 4.0, cv = 2.0 }   # or: the client's own process
    prompt_tokens = { dist = "lognormal", mean = 600, sigma = 0.9, max = 8192 }
    output_tokens = { dist = "lognormal", mean = 220, sigma = 0.7, max = 2048 }
    conversation = { turns = { dist = "uniform", min = 1, max = 8 }, think_time_s = 5 }
    system_prompt_tokens = 600
    num_system_prompts = 8

or a trace: ``[workload.trace]`` with ``path``, ``format``, ``time_scale``, ``limit``, ``start_s``.

Keys and defaults:

* ``[[workload.clients]]``: ``name`` ("client<i>"), ``arrival`` (required unless
  ``[workload].arrival`` is given), ``share`` (1.0; only for clients without their own
  arrival; shares are normalised), ``prompt_tokens`` and ``output_tokens`` (required),
  ``conversation`` (absent: single requests, session -1), ``system_prompt_tokens`` (0),
  ``num_system_prompts`` (1), ``system_prompt_popularity`` ("uniform" | "zipf"),
  ``system_prompt_zipf_exponent`` (1.0, zipf only: P(g) ~ (g+1)**-s),
  ``system_prompt_pool`` (the client's name; clients naming the same pool share prompts).
* ``arrival``: ``process`` ("poisson" | "gamma" | "constant"; default "poisson"), ``rate``
  (required, > 0: **sessions** per second, i.e. first turns; follow-ups come on top),
  ``cv`` (gamma only, required: coefficient of variation of the gaps), ``first_arrival``
  ("zero": the first session arrives at t = 0, the default; "gap": it arrives after one
  inter-arrival gap, as in the original LLMPerfOracle, so constant arrivals at rate 0.5 come
  at 2, 4, 6, ... s).
* ``conversation``: ``pattern`` ("chat" | "agent" | "branch"; default "chat"), ``turns``
  (required for chat/branch; agent: uniform 4..16; at most 4096), ``think_time_s`` (seconds
  after the previous turn completes; chat/branch: 5, agent: 0.5), ``branch_prob`` (branch
  only, 0.3: chance that turn k >= 2 forks from a uniformly chosen turn < k-1),
  ``tool_output_tokens`` (agent only; lognormal mean 300, sigma 1, max 8192: each follow-up
  appends a tool output instead of a user message; ``output_tokens`` is the model's reply),
  ``think_from`` ("completion", the default: a follow-up arrives ``think_time_s`` after the
  previous turn *completes*; "arrival": ``think_time_s`` after the previous turn *arrived*,
  whether or not it has finished, as in the original LLMPerfOracle. Such follow-ups have fixed
  arrival times, so with ``duration_s`` the turns arriving at or after it are dropped, like
  any arrival).
  The first turn's new input is drawn from ``prompt_tokens``; so is a chat/branch follow-up's
  new user message: a request's ``prompt_tokens`` (in the table) is system prompt + history
  + that new input.
* ``[workload.trace]``: ``path`` (required; relative to the scenario file), ``format``
  (inferred from the extension / first record), ``time_scale`` (1.0), ``limit`` (none),
  ``start_s`` (0.0). See ``oracle.workload.traces``.

Distributions (``{ dist = ..., min = ..., max = ... }``; a bare number means ``constant``):

==============  =====================================================================
``constant``    ``value``
``uniform``     ``min``, ``max`` (integers: both ends included)
``normal``      ``mean``, ``std``
``lognormal``   ``mean`` *or* ``median``, and ``sigma`` (the sigma of ln X). ``mean`` is the
                mean of X itself: ``mu = ln(mean) - sigma**2 / 2``; ``median`` gives
                ``mu = ln(median)``.
``exponential`` ``mean``
``zipf``        ``exponent`` (s > 0, default 1), ``min`` (default 1), ``max`` (required):
                P(k) proportional to k**-s on the integers min..max
``empirical``   ``values`` (+ optional ``weights``), or ``path`` + ``column`` of a
                CSV / JSONL / Parquet file (relative to the scenario file); values are
                drawn with replacement
==============  =====================================================================

Token counts (``prompt_tokens``, ``output_tokens``, ``turns``, ``tool_output_tokens``) are
rounded to integers and clipped to ``[max(min, 1), max]``; times (``think_time_s``) are
clipped to ``[max(min, 0), max]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from oracle._config import Table
from oracle.errors import OracleError, TraceError
from oracle.lora import LoraWorkloadSpec, parse_lora_workload
from oracle.workload.traces import TRACE_FORMATS, TraceSpec, infer_format, read_column

DISTS = ("constant", "uniform", "normal", "lognormal", "exponential", "zipf", "empirical")
PROCESSES = ("poisson", "gamma", "constant")
PATTERNS = ("chat", "agent", "branch")
FIRST_ARRIVAL = ("zero", "gap")
THINK_FROM = ("completion", "arrival")
POPULARITY = ("uniform", "zipf")
MAX_TURNS = 4096          # hard cap on turns per session (history is copied per turn)
MAX_ZIPF_SUPPORT = 1 << 24
MAX_TOKENS = 2**31 - 1    # token counts are int32 in the engine
MAX_SIGMA = 100.0         # lognormal sigma: exp(sigma * z) stays finite for |z| < 7


@dataclass(frozen=True)
class DistSpec:
    """A length or time distribution, with clipping bounds.

    ``integer`` distributions give whole token counts >= max(min, 1); others give floats
    >= max(min, 0). Unused parameters are None. ``data`` holds the values of an
    ``empirical`` distribution (inline or read from ``path``/``column``).
    """

    dist: str = "constant"
    integer: bool = True
    value: float | None = None
    mean: float | None = None
    median: float | None = None
    std: float | None = None
    sigma: float | None = None
    exponent: float | None = None
    min: float | None = None
    max: float | None = None
    weights: tuple[float, ...] | None = None
    path: str | None = None
    column: str | None = None
    data: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def lo(self) -> float:
        """Effective lower clip: max(min, 1) for token counts, max(min, 0) for times."""
        floor = 1.0 if self.integer else 0.0
        return max(self.min, floor) if self.min is not None else floor

    @property
    def hi(self) -> float:
        return self.max if self.max is not None else math.inf

    def upper_bound(self) -> float | None:
        """Largest value a draw can take, or None if unbounded."""
        if self.dist == "constant":
            v = min(max(self.value, self.lo), self.hi)
        elif self.dist == "empirical":
            v = min(max(float(np.max(self.data)), self.lo), self.hi)
        elif self.max is not None:
            v = self.max
        else:
            return None
        return float(math.floor(v + 0.5)) if self.integer else float(v)


def constant(value: float, *, integer: bool = True) -> DistSpec:
    return DistSpec(dist="constant", integer=integer, value=float(value))


@dataclass(frozen=True)
class ArrivalSpec:
    """Arrival process of sessions (first turns): inter-arrival gaps of mean 1/rate."""

    process: str = "poisson"   # poisson | gamma | constant
    rate: float = 1.0          # sessions per second
    cv: float | None = None    # gamma only: coefficient of variation of the gaps (1 = Poisson)
    first_arrival: str = "zero"  # zero: the first session at t = 0 | gap: after one gap


@dataclass(frozen=True)
class ConversationSpec:
    """Multi-turn sessions: follow-ups come think time after the previous turn's completion
    (``think_from = "completion"``) or arrival (``"arrival"``)."""

    pattern: str = "chat"                     # chat | agent | branch
    turns: DistSpec = field(default_factory=lambda: constant(1))
    think_time_s: DistSpec = field(default_factory=lambda: constant(5.0, integer=False))
    branch_prob: float = 0.0                  # branch: chance a follow-up forks from an earlier turn
    tool_output_tokens: DistSpec | None = None  # agent: tokens each tool call appends
    think_from: str = "completion"            # completion | arrival (of the previous turn)


@dataclass(frozen=True)
class ClosedLoopSpec:
    """A closed-loop client: ``concurrency`` users, each sending its next request when its
    previous one ends (completes, is rejected or times out), after ``think_time_s``.

    User k sends its first request at ``k * ramp_up_s / concurrency``; request j of the client
    (0-based, in send order of a FIFO queue) belongs to user ``j % concurrency``. The client
    stops after ``num_requests`` requests (all users together; None: [simulation].num_requests)
    and sends none at or after [simulation].duration_s (see ``oracle.workload.closed_loop``).
    """

    concurrency: int
    num_requests: int | None = None
    think_time_s: DistSpec = field(default_factory=lambda: constant(0.0, integer=False))
    ramp_up_s: float = 0.0


@dataclass(frozen=True)
class ClientSpec:
    """One client class of generated traffic."""

    name: str
    prompt_tokens: DistSpec
    output_tokens: DistSpec
    arrival: ArrivalSpec | None = None        # None: a share of [workload].arrival
    share: float = 1.0
    conversation: ConversationSpec | None = None
    system_prompt_tokens: int = 0
    num_system_prompts: int = 1
    system_prompt_popularity: str = "uniform"  # uniform | zipf
    system_prompt_zipf_exponent: float = 1.0
    system_prompt_pool: str = ""               # clients with the same pool share prompts ("": own name)
    closed_loop: ClosedLoopSpec | None = None  # closed loop: N users instead of an arrival process

    @property
    def is_closed_loop(self) -> bool:
        return self.closed_loop is not None


@dataclass(frozen=True)
class WorkloadSpec:
    """Generated clients (``clients``, optional shared ``arrival``) or a ``trace``."""

    clients: tuple[ClientSpec, ...] = ()
    arrival: ArrivalSpec | None = None
    trace: TraceSpec | None = None
    timeout_s: float | None = None   # a client gives up this long after sending (None: never)
    lora: LoraWorkloadSpec | None = None   # the adapters the requests name (None: the base model only)


# -- parsing --------------------------------------------------------------------------------

def parse_workload(t: Table, *, base_dir: Path) -> WorkloadSpec:
    """Validate the ``[workload]`` table; paths are relative to ``base_dir`` (the scenario's dir).

    With a problem collector on ``t`` (see :mod:`oracle._config`) every problem is recorded and
    the parts that can still be checked are; the spec returned then may hold ``None`` parts."""
    base_dir = Path(base_dir)
    timeout_s = t.float("timeout_s", None, lo=0.0, lo_open=True)
    lora = None
    if t.has("lora"):
        with t.guard():
            lora = parse_lora_workload(t.table("lora"))
    if t.has("trace"):
        if t.has("clients"):
            t.report("trace", "give either [workload.trace] or [[workload.clients]], not both", required=True)
        trace = parse_trace(t.table("trace"), base_dir=base_dir)
        t.done()
        return WorkloadSpec(trace=trace, timeout_s=timeout_s, lora=lora)
    shared = None
    if t.has("arrival"):
        with t.guard():
            shared = _parse_arrival(t.table("arrival"))
    tables = t.tables("clients", None)
    if not tables:
        t.report("clients", "is required: at least one [[workload.clients]] entry (or a [workload.trace])",
                 required=True)
    clients: list[ClientSpec | None] = [None] * len(tables)
    for i, ct in enumerate(tables):
        with t.guard():
            clients[i] = _parse_client(ct, i, t.has("arrival"), base_dir)
    seen_names: list[str] = []
    for i, c in enumerate(clients):
        if c is None or not tables[i].ok("name"):
            continue
        if c.name in seen_names:
            tables[i].report("name", f"duplicate client name {c.name!r}")
        seen_names.append(c.name)
    if t.has("arrival") and all(ct.has("arrival") or ct.has("concurrency") for ct in tables):
        t.report("arrival", "is unused: every client has its own arrival")
    t.done()
    return WorkloadSpec(clients=tuple(clients), arrival=shared, timeout_s=timeout_s, lora=lora)


def parse_trace(t: Table, *, base_dir: Path) -> TraceSpec:
    path = None
    with t.guard():
        raw_path = t.str("path")
        path = Path(raw_path)
        if not path.is_absolute():
            path = base_dir / path
    fmt = t.str("format", None, choices=TRACE_FORMATS)
    if path is not None and t.ok("format"):
        if fmt is None:
            try:
                fmt = infer_format(path)
            except TraceError as exc:
                hint = (f"; set format = one of {', '.join(TRACE_FORMATS)}"
                        if exc.reason.startswith("cannot tell the trace format") else "")
                t.report("path", f"{exc.message}{hint}")
        elif not path.is_file():
            t.report("path", f"trace file not found: {path}")
    spec = TraceSpec(path=path, format=fmt,
                     time_scale=t.float("time_scale", 1.0, lo=0.0, lo_open=True),
                     limit=t.int("limit", None, lo=1),
                     start_s=t.float("start_s", 0.0, lo=0.0))
    t.done()
    return spec


#: Allowed coefficient of variation of gamma inter-arrival gaps.
CV_RANGE = (1e-6, 1e6)


def _parse_arrival(t: Table) -> ArrivalSpec:
    process = t.str("process", "poisson", choices=PROCESSES)
    rate = cv = None
    with t.guard():
        rate = t.float("rate", lo=0.0, lo_open=True)
    if not t.ok("process"):
        t.skip("cv")          # whether cv belongs here depends on the process
    elif process == "gamma":
        with t.guard():
            # the gamma shape 1/cv**2 and scale cv**2/rate stay finite and meaningful;
            # a cv near 0 is process = "constant"
            cv = t.float("cv", lo=CV_RANGE[0], hi=CV_RANGE[1])
    elif t.has("cv"):
        t.report("cv", f"only applies to process = 'gamma', not {process!r}")
    first = t.str("first_arrival", "zero", choices=FIRST_ARRIVAL)
    t.done()
    return ArrivalSpec(process=process, rate=rate, cv=cv, first_arrival=first)


def _parse_client(t: Table, i: int, have_shared: bool, base_dir: Path) -> ClientSpec:
    name = t.str("name", f"client{i}")
    if t.ok("name") and not name.strip():
        t.report("name", "must not be empty")
    arrival = None
    closed = t.has("concurrency")
    if t.has("arrival") and closed:
        t.report("arrival", "does not apply to a closed-loop client (concurrency): each user sends its next "
                            "request when its previous one ends")
    elif t.has("arrival"):
        with t.guard():
            arrival = _parse_arrival(t.table("arrival"))
    elif not have_shared and not closed:
        t.report("arrival", "is required (or give [workload].arrival and a share per client, or concurrency "
                            "for a closed loop)")
    if t.has("arrival") and t.has("share"):
        t.report("share", "only applies to clients that split [workload].arrival; this client has its own")
    elif closed and t.has("share"):
        t.report("share", "does not apply to a closed-loop client (concurrency)")
    closed_loop = _parse_closed_loop(t, base_dir)
    share = t.float("share", 1.0, lo=0.0, lo_open=True)
    prompt = output = conv = None
    with t.guard():
        prompt = parse_dist(t, "prompt_tokens", integer=True, base_dir=base_dir)
    with t.guard():
        output = parse_dist(t, "output_tokens", integer=True, base_dir=base_dir)
    if t.has("conversation") and closed:
        t.report("conversation", "does not apply to a closed-loop client (concurrency): its users send "
                                 "independent requests")
    elif t.has("conversation"):
        with t.guard():
            conv = _parse_conversation(t.table("conversation"), base_dir)
    sys_tokens = t.int("system_prompt_tokens", 0, lo=0, hi=MAX_TOKENS)
    num_sys = t.int("num_system_prompts", 1, lo=1, hi=1 << 20)
    popularity = t.str("system_prompt_popularity", "uniform", choices=POPULARITY)
    zipf_s = t.float("system_prompt_zipf_exponent", 1.0, lo=0.0, lo_open=True)
    if t.has("system_prompt_zipf_exponent") and t.ok("system_prompt_popularity") and popularity != "zipf":
        t.report("system_prompt_zipf_exponent", "only applies with system_prompt_popularity = 'zipf'")
    pool = t.str("system_prompt_pool", name)
    t.done()
    return ClientSpec(name=name, prompt_tokens=prompt, output_tokens=output, arrival=arrival, share=share,
                      conversation=conv, system_prompt_tokens=sys_tokens, num_system_prompts=num_sys,
                      system_prompt_popularity=popularity, system_prompt_zipf_exponent=zipf_s,
                      system_prompt_pool=pool, closed_loop=closed_loop)


CLOSED_LOOP_KEYS = ("num_requests", "think_time_s", "ramp_up_s")
MAX_CONCURRENCY = 1 << 20


def _parse_closed_loop(t: Table, base_dir: Path) -> ClosedLoopSpec | None:
    """The closed-loop keys of a client table (``concurrency`` and the keys that need it)."""
    if not t.has("concurrency"):
        for k in CLOSED_LOOP_KEYS:
            if t.has(k):
                t.report(k, "only applies to a closed-loop client (set concurrency = number of users)")
        return None
    n = t.int("concurrency", lo=1, hi=MAX_CONCURRENCY)
    num = t.int("num_requests", None, lo=1)
    think = constant(0.0, integer=False)
    with t.guard():
        think = parse_dist(t, "think_time_s", integer=False, base_dir=base_dir, default=think)
    ramp = t.float("ramp_up_s", 0.0, lo=0.0)
    return ClosedLoopSpec(concurrency=n, num_requests=num, think_time_s=think, ramp_up_s=ramp)


_PATTERN_DEFAULTS = {
    "chat": dict(think=5.0),
    "branch": dict(think=5.0),
    "agent": dict(think=0.5),
}


def _parse_conversation(t: Table, base_dir: Path) -> ConversationSpec:
    pattern = t.str("pattern", "chat", choices=PATTERNS)
    known = t.ok("pattern")   # a bad pattern: check the keys that are given, skip what depends on it
    if pattern == "agent" or not known:
        turns_default = DistSpec(dist="uniform", min=4, max=16)
    else:
        turns_default = None  # required
    turns = think = tool = None
    with t.guard():
        turns = parse_dist(t, "turns", integer=True, base_dir=base_dir, default=turns_default)
        if turns.max is not None and turns.max > MAX_TURNS:
            t.report("turns", f"max must be <= {MAX_TURNS}, got {turns.max:g}")
        if turns.max is None:
            turns = _replace(turns, max=float(MAX_TURNS))
    with t.guard():
        think = parse_dist(t, "think_time_s", integer=False, base_dir=base_dir,
                           default=constant(_PATTERN_DEFAULTS[pattern]["think"], integer=False))
    branch_prob = 0.0
    if pattern == "branch" or not known:
        branch_prob = t.float("branch_prob", 0.3, lo=0.0, hi=1.0)
    elif t.has("branch_prob"):
        t.report("branch_prob", f"only applies to pattern = 'branch', not {pattern!r}")
    if pattern == "agent" or (not known and t.has("tool_output_tokens")):
        with t.guard():
            tool = parse_dist(t, "tool_output_tokens", integer=True, base_dir=base_dir,
                              default=DistSpec(dist="lognormal", mean=300.0, sigma=1.0, max=8192.0))
    elif t.has("tool_output_tokens"):
        t.report("tool_output_tokens", f"only applies to pattern = 'agent', not {pattern!r}")
    think_from = t.str("think_from", "completion", choices=THINK_FROM)
    t.done()
    return ConversationSpec(pattern=pattern, turns=turns, think_time_s=think, branch_prob=branch_prob,
                            tool_output_tokens=tool, think_from=think_from)


def _replace(d: DistSpec, **kw) -> DistSpec:
    return dataclasses.replace(d, **kw)


def parse_dist(parent: Table, name: str, *, integer: bool, base_dir: Path,
               default: DistSpec | None = None) -> DistSpec:
    """Parse ``parent[name]``: a number (constant) or a ``{ dist = ..., ... }`` table."""
    if not parent.has(name):
        if default is None:
            parent.any(name)  # raises "is required"
        return _replace(default, integer=integer)
    raw = parent.raw[name]
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        v = parent.float(name, lo=1.0 if integer else 0.0, hi=MAX_TOKENS if integer else None)
        return DistSpec(dist="constant", integer=integer, value=v)
    t = parent.table(name)
    kind = t.str("dist", choices=DISTS)   # a bad kind: the other keys cannot be checked
    floor = 1.0 if integer else 0.0

    def num(k, *default, **kw):   # no default: required; a bad required value: reported, None
        with t.guard():
            return t.float(k, *default, **kw)
        return None

    lo = num("min", None, lo=floor)
    hi = num("max", None, lo=floor)
    if lo is not None and hi is not None and lo > hi:
        t.report("min", f"must be <= max, got min = {lo:g} > max = {hi:g}")
    if integer and hi is not None and hi >= MAX_TOKENS + 1:
        t.report("max", f"must be < 2**31 tokens, got {hi:g}")
    d: dict = dict(dist=kind, integer=integer, min=lo, max=hi)
    if kind == "constant":
        d["value"] = num("value", lo=floor, hi=MAX_TOKENS if integer else None)
    elif kind == "uniform":
        for k, v in (("min", lo), ("max", hi)):
            if v is None and t.ok(k):
                t.report(k, "is required for dist = 'uniform'")
    elif kind == "normal":
        d["mean"] = num("mean")
        d["std"] = num("std", lo=0.0)
    elif kind == "lognormal":
        if t.has("mean") == t.has("median"):
            t.report("mean", "give exactly one of mean (of X) or median (= exp(mu)) for dist = 'lognormal'")
            t.skip("median")
        else:
            key = "mean" if t.has("mean") else "median"
            d[key] = num(key, lo=0.0, lo_open=True)
        d["sigma"] = num("sigma", lo=0.0, hi=MAX_SIGMA)
    elif kind == "exponential":
        d["mean"] = num("mean", lo=0.0, lo_open=True)
    elif kind == "zipf":
        d["exponent"] = num("exponent", 1.0, lo=0.0, lo_open=True)
        if hi is None:
            if t.ok("max"):
                t.report("max", "is required for dist = 'zipf' (support min..max)")
        elif hi - max(lo or 1.0, 1.0) >= MAX_ZIPF_SUPPORT:
            t.report("max", f"zipf support min..max must have < {MAX_ZIPF_SUPPORT} values")
    elif kind == "empirical":
        d.update(_parse_empirical(t, base_dir))
        data = d.get("data")
        if integer and data is not None and data.size and np.isfinite(data).all() and data.max() >= MAX_TOKENS + 1:
            t.report("values" if t.has("values") else "path", f"must be < 2**31 tokens, got {data.max():g}")
    t.done()
    return DistSpec(**d)


def _parse_empirical(t: Table, base_dir: Path) -> dict:
    if t.has("values") == t.has("path"):
        t.report("values", "give either values = [...] or path + column for dist = 'empirical'")
        t.skip("path", "column", "weights")
        return {}
    if t.has("values"):
        values = t.any("values")
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
            t.report("values", "must be a non-empty array of numbers")
            t.skip("weights")
            return {}
        data = np.asarray(values, dtype=np.float64)
        if not np.isfinite(data).all():
            t.report("values", "must be finite numbers")
        weights = None
        if t.has("weights"):
            w = t.any("weights")
            if (not isinstance(w, list) or len(w) != len(values)
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in w)
                    or sum(w) <= 0):
                t.report("weights", f"must be {len(values)} non-negative numbers with a positive sum")
            else:
                weights = tuple(float(x) for x in w)
        return dict(data=data, weights=weights)
    raw_path = column = None
    with t.guard():
        raw_path = t.str("path")
    with t.guard():
        column = t.str("column")
    if raw_path is None or column is None:
        return {}
    path = Path(raw_path)
    if not path.is_absolute():
        path = base_dir / path
    try:
        data = read_column(path, column)
    except OracleError as exc:
        t.report("path", exc.message)
        return {}
    return dict(data=data, path=str(path), column=column)


# -- bounds for the scenario validator ---------------------------------------------------------

def _client_bounds(c: ClientSpec) -> tuple[float, float] | None:
    """(max prompt tokens, max prompt + output tokens) over all requests of a client."""
    p = c.prompt_tokens.upper_bound()
    o = c.output_tokens.upper_bound()
    if p is None or o is None:
        return None
    sys_t = float(c.system_prompt_tokens)
    conv = c.conversation
    if conv is None:
        return sys_t + p, sys_t + p + o
    turns = conv.turns.upper_bound()
    new_input = p
    if conv.pattern == "agent":
        tool = conv.tool_output_tokens.upper_bound()
        if tool is None:
            return None
        new_input = max(p, tool)
    # the last turn: system prompt + first (input + output) + later (input + output) + own input
    longest_prompt = sys_t + p
    if turns > 1:
        longest_prompt = sys_t + p + o + (turns - 2) * (new_input + o) + new_input
    return longest_prompt, longest_prompt + o


def max_prompt_tokens(spec: WorkloadSpec) -> int | None:
    """Upper bound on any request's prompt tokens (history included), or None if unbounded/trace."""
    if spec.trace is not None:
        return None
    bounds = [_client_bounds(c) for c in spec.clients]
    if any(b is None for b in bounds):
        return None
    return int(max(b[0] for b in bounds))


def max_total_tokens(spec: WorkloadSpec) -> int | None:
    """Upper bound on any request's prompt + output tokens, or None if unbounded/trace."""
    if spec.trace is not None:
        return None
    bounds = [_client_bounds(c) for c in spec.clients]
    if any(b is None for b in bounds):
        return None
    return int(max(b[1] for b in bounds))


def pool_id(pool: str) -> int:
    """A stable 40-bit id for a system-prompt pool name (blake2b; Python's hash() is salted)."""
    return int.from_bytes(hashlib.blake2b(pool.encode(), digest_size=5).digest(), "little")
