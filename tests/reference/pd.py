"""Plain-Python reference of prefill/decode disaggregation (oracle/engine/README.md,
"Prefill/decode disaggregation"): two :class:`~reference.engine.ReferenceEngine` pools in one
event loop, with the KV transfers between them.

    out = run_reference_pd(inputs, step_time_prefill, step_time_decode)   # -> EngineOutputs
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from oracle.engine.disagg import PDInputs, check_pd_inputs, combine_outputs, prefill_view
from oracle.engine.inputs import LEAST_KV_TRANSFER, Status, cdiv

from .engine import ReferenceEngine, Replica, Request, Scheduled, StepTimeFn


class PrefillEngine(ReferenceEngine):
    """A prefill pool: remembers the requests that complete (their one token) in each step,
    in schedule order."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.just_finished: list[Request] = []

    def _finish_scheduled(self, rep: Replica, s: Scheduled, t_end: float) -> None:
        super()._finish_scheduled(rep, s, t_end)
        if s.req.status == Status.FINISHED:
            self.just_finished.append(s.req)


class ReferencePD:
    def __init__(self, inputs: PDInputs, step_time_prefill: StepTimeFn, step_time_decode: StepTimeFn,
                 debug: bool = False):
        check_pd_inputs(inputs)
        self.P = PrefillEngine(prefill_view(inputs.prefill), step_time_prefill, debug=debug)
        self.D = ReferenceEngine(inputs.decode, step_time_decode, debug=debug)
        self.link = inputs.link
        n = len(inputs)
        self.transfers = {"prefill_end_s": np.full(n, np.nan), "start_s": np.full(n, np.nan),
                          "end_s": np.full(n, np.nan), "tokens": np.zeros(n, np.int64),
                          "bytes": np.zeros(n, np.float64)}
        self.decode_replica = [-1] * n
        self.in_flight: list[tuple[float, int]] = []  # (transfer end, request)
        self.link_free = [0.0] * len(self.D.replicas)
        self.busy = {"prefill": np.zeros(len(self.P.replicas)), "decode": np.zeros(len(self.D.replicas))}

    @staticmethod
    def _next_stepper(engine: ReferenceEngine) -> Replica | None:
        with_work = [rep for rep in engine.replicas if rep.has_work]
        return min(with_work, key=lambda rep: (rep.busy_until, rep.index)) if with_work else None

    def run(self):
        """Arrivals, then transfer completions, then prefill steps, then decode steps, each
        at the earliest time (ties in that order)."""
        while True:
            arrival = self.D._peek_arrival()
            transfer = self.in_flight[0] if self.in_flight else None
            p_rep, d_rep = self._next_stepper(self.P), self._next_stepper(self.D)
            t_steps = min(rep.busy_until if rep else math.inf for rep in (p_rep, d_rep))
            if arrival is not None and (transfer is None or arrival[0] <= transfer[0]) and arrival[0] <= t_steps:
                self.D._pop_arrival()
                self._arrive(arrival[1], arrival[0])
            elif transfer is not None and transfer[0] <= t_steps:
                heapq.heappop(self.in_flight)
                self._receive(transfer[1], transfer[0])
            elif p_rep is not None and (d_rep is None or p_rep.busy_until <= d_rep.busy_until):
                self._step("prefill", self.P, p_rep)
                for req in self.P.just_finished:
                    self._send(req.rid, p_rep.busy_until)
                self.P.just_finished = []
            elif d_rep is not None:
                self._step("decode", self.D, d_rep)
            else:
                break
        return self._outputs()

    def _step(self, pool: str, engine: ReferenceEngine, rep: Replica) -> None:
        t = rep.busy_until
        engine._step(rep, t)
        self.busy[pool][rep.index] += rep.busy_until - t

    def _arrive(self, rid: int, a: float) -> None:
        """Rejected if either pool could never hold it; else to a prefill replica."""
        dreq, preq = self.D.requests[rid], self.P.requests[rid]
        dreq.arrival_s = a
        total = dreq.prompt + dreq.output
        if total > self.D.cfg.max_model_len or cdiv(total, self.D.bs) > self.D.N - 1:
            preq.arrival_s = a
            preq.status = dreq.status = int(Status.REJECTED)
            self.D._release_followups(dreq, a)
            return
        self.P._arrive(preq, a)
        if preq.status == Status.REJECTED:
            dreq.status = int(Status.REJECTED)
            self.D._release_followups(dreq, a)

    def _send(self, rid: int, t_end: float) -> None:
        """The prefill token of ``rid`` came at t_end: pick its decode replica and queue the
        KV of the prompt tokens that replica does not hold on its link."""
        req = self.D.requests[rid]
        d = self._route_decode(req)
        hit = len(self.D._lookup(self.D.replicas[d], req))
        tokens = req.prompt - hit * self.D.bs
        nbytes = tokens * self.link.bytes_per_token
        start = max(t_end, self.link_free[d])
        self.link_free[d] = start + self.link.overhead_s + nbytes / self.link.bandwidth_bytes_s
        end = self.link_free[d] + self.link.latency_s
        x = self.transfers
        x["prefill_end_s"][rid], x["start_s"][rid], x["end_s"][rid] = t_end, start, end
        x["tokens"][rid], x["bytes"][rid] = tokens, nbytes
        self.decode_replica[rid] = d
        heapq.heappush(self.in_flight, (end, rid))

    def _route_decode(self, req: Request) -> int:
        if int(self.D.cfg.router) != LEAST_KV_TRANSFER:
            return self.D.route(req)
        # the longest cached prefix of the prompt, then the lower load, then the lower index
        return min(self.D.replicas, key=lambda rep: (-len(self.D._lookup(rep, req)), rep.load, rep.index)).index

    def _receive(self, rid: int, t: float) -> None:
        """The KV is in the decode replica: the request waits there with p - 1 tokens in place
        (the last prompt token is recomputed to sample the first output token)."""
        req = self.D.requests[rid]
        req.remote_tokens = req.prompt - 1
        self.D._enqueue(req, self.D.replicas[self.decode_replica[rid]], t)

    def _outputs(self):
        out = combine_outputs(self.P._outputs(), self.D._outputs(), self.transfers, len(self.P.replicas))
        out.pd["pools"]["prefill"]["busy_s"] = self.busy["prefill"]
        out.pd["pools"]["decode"]["busy_s"] = self.busy["decode"]
        return out


def run_reference_pd(inputs: PDInputs, step_time_prefill: StepTimeFn, step_time_decode: StepTimeFn,
                     debug: bool = False):
    """Simulate a disaggregated ``inputs`` with the reference pools (``debug``: invariant checks)."""
    return ReferencePD(inputs, step_time_prefill, step_time_decode, debug=debug).run()
