"""What one side of a conformance run produced, and the comparison of two sides.

A :class:`Trace` is the same record for every simulator (vLLM's scheduler driven by
``vllm_driver``, the jitted engine, the plain-Python reference): one :class:`ReqRow` per
request (row = request id), one :class:`StepRow` per step that scheduled something, and the
prefix-cache counters. :func:`compare` returns ``None`` when two traces agree (integers
exactly, times to ``TIME_ATOL_S``) and otherwise a report meant for a person debugging the
engine: the counters that differ, the first differing step of both sides (time, what was
scheduled, blocks used/free/cached, running/waiting) with the step before it, and the first
differing requests with all their fields.

Nothing here imports vLLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

TIME_ATOL_S = 1e-9

REQ_TIME_FIELDS = ("admitted_s", "first_token_s", "completion_s")
REQ_INT_FIELDS = ("status", "cached_tokens", "computed_tokens", "preemptions")
STEP_TIME_FIELDS = ("start_s", "duration_s")
STEP_INT_FIELDS = ("num_scheduled", "num_decode", "num_prefill_tokens", "num_running",
                   "num_waiting", "kv_blocks_used", "kv_blocks_cached")
#: Counters every side must report.
COUNTERS = ("queries", "hits")
#: vLLM's re-admission counters (``PrefixCacheStats.preempted_*``); a side that does not
#: report them differs only if the other side's value is non-zero.
PREEMPTED_COUNTERS = ("preempted_requests", "preempted_queries", "preempted_hits")

FINISHED, REJECTED, TIMED_OUT = 1, 2, 3  # oracle.engine.inputs.Status


@dataclass
class ReqRow:
    """Per-request results (times in seconds of simulated time, NaN = never)."""

    status: int = 0               # FINISHED 1 / REJECTED 2 / TIMED_OUT 3
    admitted_s: float = math.nan  # start of the step that first scheduled it
    first_token_s: float = math.nan
    completion_s: float = math.nan
    cached_tokens: int = 0        # prefix-cache hit at first admission (tokens)
    computed_tokens: int = 0      # sum of scheduled tokens over all steps (incl. recompute)
    preemptions: int = 0


@dataclass
class StepRow:
    """One step that scheduled at least one token. Queue sizes and block counts are taken
    after the step's outputs were applied (finished requests freed)."""

    start_s: float
    duration_s: float
    num_scheduled: int            # total tokens scheduled
    num_decode: int
    num_prefill_tokens: int
    num_running: int
    num_waiting: int
    kv_blocks_used: int           # N - 1 - free
    kv_blocks_cached: int         # blocks that carry a hash (duplicates counted, as the engine reports)
    # Debug detail, when the side can tell (vLLM, the reference; not the jitted engine):
    sched: tuple[tuple[int, int, int], ...] | None = None  # (request, tokens, computed before)
    preempted: tuple[int, ...] | None = None               # requests preempted in this step
    distinct_hashes: int | None = None                     # distinct hashes in the map (vLLM)


@dataclass
class Trace:
    source: str                   # "vllm 0.33.0", "oracle", "reference"
    num_gpu_blocks: int           # N, including the null block
    requests: list[ReqRow]
    steps: list[StepRow]
    counters: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.source.split()[0]


# ----------------------------------------------------------------------------- comparison
def _time_eq(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= TIME_ATOL_S


def req_diff(a: ReqRow, b: ReqRow) -> list[str]:
    """Names of the fields where two request rows differ."""
    out = [f for f in REQ_INT_FIELDS if int(getattr(a, f)) != int(getattr(b, f))]
    out += [f for f in REQ_TIME_FIELDS if not _time_eq(getattr(a, f), getattr(b, f))]
    return out


def step_diff(a: StepRow, b: StepRow) -> list[str]:
    """Names of the fields where two step rows differ (``sched`` when both sides have it)."""
    out = [f for f in STEP_TIME_FIELDS if not _time_eq(getattr(a, f), getattr(b, f))]
    out += [f for f in STEP_INT_FIELDS if int(getattr(a, f)) != int(getattr(b, f))]
    if a.sched is not None and b.sched is not None and a.sched != b.sched:
        out.append("sched")
    return out


def counter_diff(a: Trace, b: Trace) -> list[str]:
    out = [k for k in COUNTERS if a.counters.get(k) != b.counters.get(k)]
    for k in PREEMPTED_COUNTERS:
        va, vb = a.counters.get(k), b.counters.get(k)
        if va is None and vb is None:
            continue
        if va is None or vb is None:
            if (va or vb):   # missing on one side, non-zero on the other
                out.append(k)
        elif va != vb:
            out.append(k)
    return out


#: Kinds of difference, most telling first (see :func:`classify`).
KINDS = ("schedule", "requests", "cached_blocks", "counters")


def classify(a: Trace, b: Trace) -> str | None:
    """The most telling kind of difference between two traces, ``None`` if they agree:

    * ``schedule``: a step differs in what ran or when (tokens, queues, blocks used, times)
      or the number of steps differs;
    * ``requests``: some per-request result differs, with the same steps;
    * ``cached_blocks``: only ``kv_blocks_cached`` (how many blocks carry a hash) differs;
    * ``counters``: only the prefix-cache counters differ.
    """
    diffs = {f for sa, sb in zip(a.steps, b.steps) for f in step_diff(sa, sb)}
    if len(a.steps) != len(b.steps) or diffs - {"kv_blocks_cached"}:
        return "schedule"
    if len(a.requests) != len(b.requests) or any(req_diff(ra, rb) for ra, rb in zip(a.requests, b.requests)):
        return "requests"
    if diffs:
        return "cached_blocks"
    if counter_diff(a, b):
        return "counters"
    return None


def compare(a: Trace, b: Trace, *, max_requests: int = 5) -> str | None:
    """``None`` if ``a`` and ``b`` agree, else a readable report of where they differ."""
    lines: list[str] = []
    na, nb = a.name, b.name

    bad_counters = counter_diff(a, b)
    if bad_counters:
        lines.append("counters (prefix cache):")
        keys = [k for k in (*COUNTERS, *PREEMPTED_COUNTERS)
                if k in a.counters or k in b.counters]
        lines += _table(["counter", na, nb], [
            [k, _fmt(a.counters.get(k, "-")), _fmt(b.counters.get(k, "-")),
             "<-- differs" if k in bad_counters else ""] for k in keys])

    first = None
    for i, (sa, sb) in enumerate(zip(a.steps, b.steps)):
        if step_diff(sa, sb):
            first = i
            break
    if first is None and len(a.steps) != len(b.steps):
        first = min(len(a.steps), len(b.steps))
    if first is not None:
        if lines:
            lines.append("")
        lines.append(f"steps: {na} {len(a.steps)}, {nb} {len(b.steps)}; first difference at "
                     f"step #{first}")
        lines += _step_block(a, b, first)
        if first > 0:
            lines.append(f"  the step before (#{first - 1}):")
            lines += ["  " + s for s in _step_block(a, b, first - 1)]

    if len(a.requests) != len(b.requests):
        lines.append(f"requests: {na} has {len(a.requests)}, {nb} has {len(b.requests)}")
    bad_reqs = [(i, req_diff(ra, rb)) for i, (ra, rb) in enumerate(zip(a.requests, b.requests))]
    bad_reqs = [(i, d) for i, d in bad_reqs if d]
    if bad_reqs:
        if lines:
            lines.append("")
        lines.append(f"requests: {len(bad_reqs)} of {len(a.requests)} differ "
                     f"(first {min(len(bad_reqs), max_requests)} shown)")
        names = [f.name for f in fields(ReqRow)]
        header = ["request", "side", *names]
        rows = []
        for i, d in bad_reqs[:max_requests]:
            for side, r in ((na, a.requests[i]), (nb, b.requests[i])):
                rows.append([f"r{i}", side, *[_fmt(getattr(r, f)) for f in names]])
            rows.append(["", "", *["^^^" if f in d else "" for f in names]])
        lines += _table(header, rows)

    if not lines:
        return None
    head = f"{a.source} vs {b.source}: they differ"
    notes = [f"note ({t.name}): {n}" for t in (a, b) for n in t.notes]
    return "\n".join([head, *notes, *lines])


def _step_block(a: Trace, b: Trace, i: int) -> list[str]:
    sa = a.steps[i] if i < len(a.steps) else None
    sb = b.steps[i] if i < len(b.steps) else None
    diff = step_diff(sa, sb) if sa is not None and sb is not None else []
    names = ["start_s", "duration_s", *STEP_INT_FIELDS]
    rows = []
    for f in names:
        va = _fmt(getattr(sa, f)) if sa is not None else "(no step)"
        vb = _fmt(getattr(sb, f)) if sb is not None else "(no step)"
        rows.append([f, va, vb, "<--" if f in diff else ""])
    for t, s in ((a, sa), (b, sb)):
        free = t.num_gpu_blocks - 1 - s.kv_blocks_used if s is not None else None
        rows.append([f"kv_blocks_free ({t.name})", _fmt(free) if free is not None else "-", "", ""])
    out = _table(["field", a.name, b.name, ""], rows)
    for t, s in ((a, sa), (b, sb)):
        if s is None:
            continue
        if s.sched is None:
            out.append(f"  {t.name} scheduled: (per-request detail not recorded by this side)")
        else:
            out.append(f"  {t.name} scheduled [request:tokens@computed_before]: " +
                       (" ".join(f"r{r}:{c}@{p}" for r, c, p in s.sched) or "-"))
        if s.preempted:
            out.append(f"  {t.name} preempted this step: " + " ".join(f"r{r}" for r in s.preempted))
        if s.distinct_hashes is not None and s.distinct_hashes != s.kv_blocks_cached:
            out.append(f"  {t.name}: {s.kv_blocks_cached} blocks carry a hash for "
                       f"{s.distinct_hashes} distinct hashes (duplicates stay mapped)")
    return out


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.9f}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[k])) for r in [header, *rows] if k < len(r))
              for k in range(len(header))]
    out = []
    for r in [header, *rows]:
        out.append("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return out


def summary(t: Trace) -> str:
    """A few lines describing a trace (for the command-line runner)."""
    done = sum(r.status == FINISHED for r in t.requests)
    rej = sum(r.status == REJECTED for r in t.requests)
    end = max((s.start_s + s.duration_s for s in t.steps), default=0.0)
    return (f"{t.source}: {len(t.requests)} requests ({done} finished, {rej} rejected), "
            f"{len(t.steps)} steps, end {end:.6f} s, counters {t.counters}")


def steps_table(t: Trace, start: int = 0, stop: int | None = None) -> str:
    """The step rows ``[start, stop)`` of one trace as a table."""
    names = ["start_s", "duration_s", *STEP_INT_FIELDS]
    rows = []
    for i, s in enumerate(t.steps[start:stop], start=start):
        sched = "" if s.sched is None else " ".join(f"r{r}:{c}@{p}" for r, c, p in s.sched)
        pre = "" if not s.preempted else " preempt " + ",".join(f"r{r}" for r in s.preempted)
        rows.append([f"#{i}", *[_fmt(getattr(s, f)) for f in names], sched + pre])
    return "\n".join(_table(["step", *names, "scheduled"], rows))
