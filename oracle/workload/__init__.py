"""Workloads: the request table the engine consumes, generators and trace importers (DESIGN §3).

* :class:`~oracle.workload.table.Workload`: struct-of-arrays + CSR content segments.
* :func:`~oracle.workload.spec.parse_workload`: the scenario's ``[workload]`` -> ``WorkloadSpec``.
* :func:`build_workload`: generate (``oracle.workload.generate``) or import
  (``oracle.workload.traces``) a workload for a spec.
* :func:`~oracle.workload.stats.workload_stats`: summary numbers incl. ideal prefix reuse.
"""

from __future__ import annotations

from oracle.workload.closed_loop import build_with_closed_loop, closed_clients
from oracle.workload.generate import generate
from oracle.workload.spec import (ArrivalSpec, ClientSpec, ConversationSpec, DistSpec, WorkloadSpec,
                                  max_prompt_tokens, max_total_tokens, parse_workload)
from oracle.workload.table import Workload
from oracle.workload.traces import TraceSpec, load_trace

__all__ = ["ArrivalSpec", "ClientSpec", "ConversationSpec", "DistSpec", "TraceSpec", "Workload",
           "WorkloadSpec", "build_workload", "max_prompt_tokens", "max_total_tokens", "parse_workload"]


def build_workload(spec: WorkloadSpec, *, duration_s: float | None, num_requests: int | None,
                   seed: int) -> Workload:
    """Generate (clients) or import (trace) the workload of ``spec``.

    Generated: sessions start in ``[0, duration_s)`` and/or the first ``num_requests``
    requests (all turns counted) are kept; at least one of the two is required. Closed-loop
    clients (``concurrency``) add chains of requests (``oracle.workload.closed_loop``); with
    ``duration_s`` their length is a first guess that ``oracle.simulate`` settles per framework.
    Trace: after the trace's own ``start_s``/``time_scale``/``limit``, requests (with their
    follow-ups) arriving at or after ``duration_s`` are dropped and at most ``num_requests``
    are kept. ``seed`` only matters for generated workloads.
    """
    if spec.trace is not None:
        wl = load_trace(spec.trace)
        if duration_s is not None:
            late = ~(wl.arrival_s < duration_s)  # NaN (follow-ups) follow their parent below
            if late.any():
                wl = wl.take(wl.with_descendants(~late))
        if num_requests is not None:
            wl = wl.slice(num_requests)
        return wl
    if closed_clients(spec):   # closed-loop users: chains of requests (see oracle.workload.closed_loop)
        return build_with_closed_loop(spec, duration_s=duration_s, num_requests=num_requests, seed=int(seed))
    return generate(spec, duration_s=duration_s, num_requests=num_requests, seed=int(seed))
