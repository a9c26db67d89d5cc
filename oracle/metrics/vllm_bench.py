"""``vllm_bench.json``: a run in the JSON layout ``vllm bench serve --save-result --save-detailed`` writes.

The keys and their meaning are vLLM 0.33.0's (``vllm/benchmarks/serve.py``: ``benchmark``,
``calculate_metrics``, ``main_async``), so a simulated run and a measured one load with the
same code (``oracle report real.json sim.json``, or any script written for vLLM's files):

* setup: ``date``, ``endpoint_type`` / ``backend`` (``"openai"``, vLLM's default), ``label``
  (``"oracle-simulate"``), ``model_id`` / ``tokenizer_id`` (the scenario's model),
  ``num_prompts``, ``request_rate`` (``"inf"`` or req/s), ``burstiness``, ``max_concurrency``
  — read back from the workload: one closed-loop client of N users is ``--max-concurrency N
  --request-rate inf``; one open-loop client at rate λ is ``--request-rate λ`` with
  ``burstiness = 1 / cv**2`` (Poisson: 1; constant gaps: ``"inf"``); anything else: the total
  session rate and burstiness 1 (the ``oracle`` key says so);
* results: ``duration`` (s from the start to the last request's end), ``completed``,
  ``failed``, ``total_input_tokens`` / ``total_output_tokens`` (completed requests),
  ``request_throughput``, ``request_goodput`` (with ``[slo]``; else null),
  ``output_throughput``, ``total_token_throughput``, ``max_output_tokens_per_s`` and
  ``max_concurrent_requests`` (vLLM's one-second buckets), ``rtfx`` (0);
* per request, in send order: ``input_lens``, ``output_lens`` (0: failed), ``ttfts`` (s),
  ``itls`` (lists of s, one per output token after the first: see
  ``oracle.metrics.token_times``), ``latencies`` (s), ``start_times`` (s from the start),
  ``queue_times`` (client-side wait: 0, the simulated clients have no semaphore),
  ``generated_texts`` (empty), ``errors`` (``""`` or why the request failed);
* statistics in ms: ``mean_/median_/std_/pNN_`` of ``ttft``, ``tpot``, ``itl``, ``e2el``
  for the percentiles of ``[output] percentiles`` (default 99, vLLM's ``--metric-percentiles``),
  computed as vLLM does (NumPy over the completed requests, TPOT over those with more than one
  output token).

Requests that arrive during ``[simulation] warm_up_s`` are left out (as vLLM's
``--num-warmups`` requests are), and the duration starts at ``warm_up_s``. A rejected request
(longer than ``max_model_len``) and one whose client timed out count as failed, as in vLLM.
One extra key, ``oracle``, names the scenario, framework and every approximation.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import numpy as np

from oracle.metrics.token_times import token_times

DEFAULT_PERCENTILES = (99.0,)
METRICS = ("ttft", "tpot", "itl", "e2el")


def bench_settings(scenario) -> tuple[dict[str, Any], list[str]]:
    """``num_prompts``-independent traffic keys (request_rate, burstiness, max_concurrency) read
    back from the workload (module docstring), and notes on what could not be."""
    wl = scenario.workload
    notes: list[str] = []
    if wl.trace is not None:
        notes.append("a trace workload: request_rate is the trace's mean rate, burstiness 1")
        return {"request_rate": None, "burstiness": 1.0, "max_concurrency": None}, notes
    clients = list(wl.clients)
    closed = [c for c in clients if c.closed_loop is not None]
    if len(clients) == 1 and closed:
        return {"request_rate": "inf", "burstiness": 1.0, "max_concurrency": closed[0].closed_loop.concurrency}, notes
    if len(clients) == 1:
        arr = clients[0].arrival or wl.arrival
        if arr.process == "poisson":
            burst: Any = 1.0
        elif arr.process == "gamma":
            burst = 1.0 / arr.cv ** 2
        else:
            burst = "inf"
        return {"request_rate": float(arr.rate), "burstiness": burst, "max_concurrency": None}, notes
    rate = sum(c.arrival.rate for c in clients if c.arrival is not None)
    if wl.arrival is not None and any(c.arrival is None and c.closed_loop is None for c in clients):
        rate += wl.arrival.rate
    notes.append(f"{len(clients)} clients: request_rate is the open-loop clients' total session rate, "
                 "burstiness 1" + (", max_concurrency the closed-loop users in all" if closed else ""))
    return {"request_rate": float(rate) if rate else "inf", "burstiness": 1.0,
            "max_concurrency": sum(c.closed_loop.concurrency for c in closed) or None}, notes


def vllm_bench_result(scenario, fr, *, max_num_batched_tokens: int, date: str | None = None) -> dict[str, Any]:
    """The ``vllm bench serve`` result dict of one framework's results ``fr`` (a
    :class:`~oracle.api.FrameworkResult` or anything with ``name``, ``requests``, ``steps``)."""
    import polars as pl
    req = fr.requests
    if req["warm_up"].any():
        req = req.filter(~pl.col("warm_up"))
    req = req.sort(["arrival_s", "request_id"])
    steps = fr.steps if fr.steps is not None else {"replica": [], "start_s": [], "duration_s": [],
                                                      "num_decode": [], "num_prefill_tokens": []}
    offsets, times, approx = token_times(req, steps, max_num_batched_tokens=max_num_batched_tokens)
    status = req["status"].to_numpy()
    ok = status == "finished"
    arrival = req["arrival_s"].to_numpy()
    first = req["first_token_s"].to_numpy()
    comp = req["completion_s"].to_numpy()
    prompt = req["prompt_tokens"].to_numpy().astype(np.int64)
    output = req["output_tokens"].to_numpy().astype(np.int64)
    timeout = scenario.workload.timeout_s
    end = np.where(np.isfinite(comp), comp, arrival + (timeout if timeout is not None else 0.0))
    t0 = float(scenario.simulation.warm_up_s)
    duration = float(np.max(end) - t0) if end.size else 0.0
    dur = max(duration, 1e-12)

    ttfts = np.where(ok, first - arrival, 0.0)
    lat = np.where(ok, comp - arrival, 0.0)
    itls = [np.diff(times[offsets[i]:offsets[i + 1]]).tolist() if ok[i] else [] for i in range(req.height)]
    out_lens = np.where(ok, output, 0)
    errors = [""] * req.height
    for i in np.flatnonzero(~ok):
        errors[i] = {"rejected": "rejected by the server: the request does not fit max_model_len or the KV cache",
                     "timed_out": "the client timed out ([workload] timeout_s)"}.get(status[i], str(status[i]))

    completed = int(ok.sum())
    total_in = int(prompt[ok].sum())
    total_out = int(out_lens.sum())
    tpots = ((lat - ttfts) / np.maximum(out_lens - 1, 1))[ok & (out_lens > 1)]
    all_itls = np.concatenate([np.asarray(x) for x in itls]) if completed else np.zeros(0)
    settings, notes = bench_settings(scenario)
    if settings["request_rate"] is None:
        settings["request_rate"] = float(req.height / max(np.max(arrival) - t0, 1e-12)) if req.height > 1 else "inf"
    good = None
    slo = scenario.slo
    if slo.ttft_ms is not None or slo.tpot_ms is not None or slo.e2e_ms is not None:
        meets = ok.copy()
        tpot_all = np.where(out_lens > 1, (lat - ttfts) / np.maximum(out_lens - 1, 1), 0.0)
        if slo.ttft_ms is not None:
            meets &= ttfts * 1e3 <= slo.ttft_ms
        if slo.tpot_ms is not None:
            meets &= tpot_all * 1e3 <= slo.tpot_ms
        if slo.e2e_ms is not None:
            meets &= lat * 1e3 <= slo.e2e_ms
        good = int(meets.sum()) / dur
    peak_tok, peak_conc = _peaks(arrival[ok], lat[ok], times, offsets, ok)
    if approx:
        notes.append(f"itls: {approx} request(s) had more steps than tokens in their decode (preempted, or "
                     "behind a prefill that used the whole token budget); their gaps are approximated")
    if fr.steps is None:
        notes.append("itls: no steps table (run with --steps): gaps spread evenly over each request's decode")
    pcts = tuple(scenario.output.percentiles or DEFAULT_PERCENTILES)
    res: dict[str, Any] = {
        "date": date or datetime.datetime.now().strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": "openai", "backend": "openai", "label": "oracle-simulate",
        "model_id": scenario.model.name, "tokenizer_id": scenario.model.name,
        "num_prompts": int(req.height),
        **settings,
        "duration": duration,
        "completed": completed,
        "failed": int(req.height - completed),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": completed / dur,
        "request_goodput": good,
        "output_throughput": total_out / dur,
        "total_token_throughput": (total_in + total_out) / dur,
        "input_lens": prompt.tolist(),
        "output_lens": out_lens.tolist(),
        "ttfts": ttfts.tolist(),
        "itls": itls,
        "latencies": lat.tolist(),
        "start_times": (arrival - t0).tolist(),
        "queue_times": [0.0] * req.height,
        "generated_texts": [""] * req.height,
        "errors": errors,
        "max_output_tokens_per_s": peak_tok,
        "max_concurrent_requests": peak_conc,
        "rtfx": 0.0,
    }
    values = {"ttft": ttfts[ok], "tpot": tpots, "itl": all_itls, "e2el": lat[ok]}
    for m in METRICS:
        res.update(_stats(m, values[m], pcts))
    res["oracle"] = {"scenario": scenario.name, "framework": fr.name, "simulated": True, "notes": notes}
    return res


def _stats(metric: str, v: np.ndarray, pcts) -> dict[str, float]:
    """vLLM's ``process_one_metric``: mean, median, std and each percentile in ms (0 if empty)."""
    x = v if v.size else np.zeros(1)
    out = {f"mean_{metric}_ms": float(np.mean(x) * 1000), f"median_{metric}_ms": float(np.median(x) * 1000),
           f"std_{metric}_ms": float(np.std(x) * 1000)}
    for p in pcts:
        word = str(int(p)) if int(p) == p else str(p)
        out[f"p{word}_{metric}_ms"] = float(np.percentile(x, p) * 1000)
    return out


def _peaks(start: np.ndarray, lat: np.ndarray, times: np.ndarray, offsets: np.ndarray, ok: np.ndarray):
    """vLLM's ``max_output_tokens_per_s`` / ``max_concurrent_requests`` (one-second buckets
    from the first start of a completed request)."""
    if start.size == 0:
        return 0.0, 0
    t_min = float(start.min())
    nsec = int(math.ceil(float((start + lat).max()) - t_min)) + 1
    tok = np.concatenate([times[offsets[i]:offsets[i + 1]] for i in np.flatnonzero(ok)])
    b = (tok - t_min).astype(np.int64)
    b = b[(b >= 0) & (b < nsec)]
    per_sec = np.bincount(b, minlength=nsec)
    s0 = (start - t_min).astype(np.int64)
    s1 = (start + lat - t_min).astype(np.int64)
    conc = np.zeros(nsec + 1, np.int64)
    np.add.at(conc, s0, 1)
    np.add.at(conc, s1 + 1, -1)
    return float(per_sec.max()), int(np.cumsum(conc)[:nsec].max())
