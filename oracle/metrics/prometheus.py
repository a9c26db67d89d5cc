"""``metrics.prom``: a run's time series under vLLM's Prometheus metric names (OpenMetrics text).

What a Prometheus server scraping each vLLM engine of the run every ``interval_s`` seconds
would have stored, written as OpenMetrics text with a timestamp on every sample, so that

    promtool tsdb create-blocks-from openmetrics metrics.prom data/
    prometheus --storage.tsdb.path=data/ ...

loads it and vLLM's Grafana dashboard shows the simulated run. Names, label sets, help texts
and histogram bucket boundaries are vLLM 0.33.0's (``vllm/v1/metrics/loggers.py``
``PrometheusStatLogger``, ``vllm/v1/metrics/buckets.py``); counters are exposed as
``<name>_total`` and bucket bounds are formatted as ``prometheus_client`` formats them.
Every series has the labels ``model_name`` (the scenario's model; ``model/framework`` when the
scenario has several frameworks, so they can share one Prometheus) and ``engine`` (the
replica: vLLM's data-parallel engine index).

Sources (t = seconds of simulated time; the wall clock is ``start_time_s + t``):

=============================================  ============================================================
gauges ``num_requests_running``, ``_waiting``  the engine's state after its last step ended at or before
(``_by_reason``: all ``capacity``),            the sample (steps.parquet), as vLLM logs scheduler stats
``kv_cache_usage_perc``                        once per step; usage = blocks in use / (num_gpu_blocks - 1)
``prefix_cache_queries`` / ``_hits``           at a request's first admission: its prompt tokens / the
                                               tokens found in the cache (vLLM ``PrefixCacheStats``;
                                               none with prefix caching off)
``prompt_tokens``, ``prompt_tokens_cached``    at the first token (vLLM counts a prompt when prefill ends)
``generation_tokens``,                         at each token (``oracle.metrics.token_times``)
``inter_token_latency_seconds``
``time_to_first_token_seconds``                at the first token: first token - arrival
``iteration_tokens_total``                     at each step end: prefill tokens + decodes + first tokens
                                               emitted in the step
``request_success{finished_reason}``           at completion: ``length`` (the simulated requests always
                                               run to their max tokens); a request its client aborted:
                                               ``abort``, at the deadline
``e2e_request_latency``, ``queue_time``        at completion: vLLM's ``FinishedRequestStats`` phases
(admission - arrival), ``prefill_time``        (first token - admission), ``decode_time``, ``inference_time``,
``request_time_per_output_token``, token       ``request_prompt_tokens`` / ``generation_tokens`` /
counts, ``num_preemptions``                    ``params_max_tokens`` / ``max_num_generation_tokens`` (the
                                               output length), ``params_n`` (1),
                                               ``prefill_kv_computed_tokens`` (prompt - cached)
``num_preemptions``                            the request's preemptions, counted at its completion (the
                                               engine does not record when they happened)
=============================================  ============================================================

Samples are taken every ``interval_s`` (default: 1 s, coarser for long runs so that there are at
most :data:`MAX_SAMPLES` per series) from t = 0 to the end of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import polars as pl

from oracle.metrics.token_times import token_times

MAX_SAMPLES = 1000
NICE_INTERVALS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")   # vllm.v1.engine.FINISH_REASON_STRINGS

# vllm/v1/metrics/buckets.py
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                           120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TIME_TO_FIRST_TOKEN_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                               7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
INTER_TOKEN_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                               10.0, 20.0, 40.0, 80.0)
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
REQUEST_PARAMS_N_BUCKETS = (1, 2, 5, 10, 20)
REQUEST_NUM_PREEMPTIONS_BUCKETS = (1, 2, 3, 4, 5, 10, 20)


def request_tokens_buckets(max_model_len: int) -> tuple[int, ...]:
    """vLLM ``build_1_2_5_buckets(max_model_len)``: 1, 2, 5, 10, 20, 50, ... <= max_model_len."""
    out, e = [], 0
    while True:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if v > max_model_len:
                return tuple(out)
            out.append(v)
        e += 1


# name -> (type, help); help texts are vLLM's
HELP = {
    "vllm:num_requests_running": ("gauge", "Number of requests in model execution batches."),
    "vllm:num_requests_waiting": ("gauge", "Number of requests waiting to be processed."),
    "vllm:num_requests_waiting_by_reason": ("gauge", "Number of waiting requests by reason. Reason labels: "
                                            "'capacity' = waiting for scheduling capacity; 'deferred' = deferred by "
                                            "transient constraints (LoRA budget, KV transfer, blocked status). Sum of "
                                            "all reasons equals vllm:num_requests_waiting."),
    "vllm:engine_sleep_state": ("gauge", "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means "
                                "engine is awake; weights_offloaded = 1 means sleep level 1; discard_all = 1 means "
                                "sleep level 2."),
    "vllm:kv_cache_usage_perc": ("gauge", "KV-cache usage. 1 means 100 percent usage."),
    "vllm:prefix_cache_queries": ("counter", "Prefix cache queries, in terms of number of queried tokens."),
    "vllm:prefix_cache_hits": ("counter", "Prefix cache hits, in terms of number of cached tokens."),
    "vllm:num_preemptions": ("counter", "Cumulative number of preemption from the engine."),
    "vllm:prompt_tokens": ("counter", "Number of prefill tokens processed."),
    "vllm:prompt_tokens_cached": ("counter", "Number of cached prompt tokens (local + external)."),
    "vllm:generation_tokens": ("counter", "Number of generation tokens processed."),
    "vllm:request_success": ("counter", "Count of successfully processed requests."),
    "vllm:request_prompt_tokens": ("histogram", "Number of prefill tokens processed."),
    "vllm:request_generation_tokens": ("histogram", "Number of generation tokens processed."),
    "vllm:iteration_tokens_total": ("histogram", "Histogram of number of tokens per engine_step."),
    "vllm:request_max_num_generation_tokens": ("histogram", "Histogram of maximum number of requested generation "
                                               "tokens."),
    "vllm:request_params_n": ("histogram", "Histogram of the n request parameter."),
    "vllm:request_params_max_tokens": ("histogram", "Histogram of the max_tokens request parameter."),
    "vllm:time_to_first_token_seconds": ("histogram", "Histogram of time to first token in seconds."),
    "vllm:inter_token_latency_seconds": ("histogram", "Histogram of inter-token latency in seconds."),
    "vllm:request_time_per_output_token_seconds": ("histogram", "Histogram of time_per_output_token_seconds per "
                                                   "request."),
    "vllm:e2e_request_latency_seconds": ("histogram", "Histogram of e2e request latency in seconds."),
    "vllm:request_queue_time_seconds": ("histogram", "Histogram of time spent in WAITING phase for request."),
    "vllm:request_inference_time_seconds": ("histogram", "Histogram of time spent in RUNNING phase for request."),
    "vllm:request_prefill_time_seconds": ("histogram", "Histogram of time spent in PREFILL phase for request."),
    "vllm:request_decode_time_seconds": ("histogram", "Histogram of time spent in DECODE phase for request."),
    "vllm:request_num_preemptions": ("histogram", "Histogram of the number of times a request was preempted."),
    "vllm:request_prefill_kv_computed_tokens": ("histogram", "Histogram of new KV tokens computed during prefill "
                                                "(excluding cached tokens)."),
}


def float_to_go_string(d: float) -> str:
    """``prometheus_client.utils.floatToGoString``: how bucket bounds (``le``) are written."""
    d = float(d)
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return s


def sample_interval_s(end_s: float) -> float:
    """1 s, or the smallest of :data:`NICE_INTERVALS_S` giving at most :data:`MAX_SAMPLES` samples."""
    for iv in NICE_INTERVALS_S:
        if end_s / iv <= MAX_SAMPLES:
            return float(iv)
    return float(math.ceil(end_s / MAX_SAMPLES))


@dataclass
class _Series:
    """One sampled series: label values beyond (model_name, engine) and values per sample."""

    extra: tuple[tuple[str, str], ...]
    values: np.ndarray                   # [K] (gauge/counter) or [K, B] cumulative buckets (histogram)
    sums: np.ndarray | None = None       # histogram: [K] sum of observations


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(x: float) -> str:
    x = float(x)
    if x.is_integer() and abs(x) < 2**53:
        return str(int(x))
    return repr(x)


class _Grid:
    """Sample times and the per-sample cumulative sums of events."""

    def __init__(self, end_s: float, interval_s: float) -> None:
        self.interval = float(interval_s)
        k = max(1, int(math.ceil(end_s / self.interval - 1e-9)))
        self.t = np.arange(k + 1, dtype=np.float64) * self.interval

    def index(self, times: np.ndarray) -> np.ndarray:
        """The first sample at or after each event time."""
        return np.searchsorted(self.t, np.asarray(times, np.float64), side="left")

    def counter(self, times, weights=None) -> np.ndarray:
        times = np.asarray(times, np.float64)
        w = np.ones(times.shape[0]) if weights is None else np.asarray(weights, np.float64)
        keep = np.isfinite(times)
        per = np.bincount(self.index(times[keep]), weights=w[keep], minlength=self.t.shape[0] + 1)
        return np.cumsum(per[:self.t.shape[0]])

    def gauge(self, at_s, values) -> np.ndarray:
        """Value recorded by the last event at or before each sample (0 before the first)."""
        at_s = np.asarray(at_s, np.float64)
        order = np.argsort(at_s, kind="stable")
        at, v = at_s[order], np.asarray(values, np.float64)[order]
        k = np.searchsorted(at, self.t, side="right") - 1
        return np.where(k >= 0, v[np.maximum(k, 0)], 0.0)

    def histogram(self, times, values, bounds) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative bucket counts [K, len(bounds) + 1] (the last is +Inf) and sums [K]."""
        times = np.asarray(times, np.float64)
        values = np.asarray(values, np.float64)
        keep = np.isfinite(times) & np.isfinite(values)
        times, values = times[keep], values[keep]
        k = self.index(times)
        inside = k < self.t.shape[0]
        k, values = k[inside], values[inside]
        b = np.searchsorted(np.asarray(bounds, np.float64), values, side="left")   # le: value <= bound
        grid = np.zeros((self.t.shape[0], len(bounds) + 1), np.float64)
        np.add.at(grid, (k, b), 1.0)
        sums = np.bincount(k, weights=values, minlength=self.t.shape[0])
        return np.cumsum(np.cumsum(grid, axis=0), axis=1), np.cumsum(sums)


def openmetrics_text(scenario, fr, *, model_name: str, start_time_s: float, num_gpu_blocks: int,
                     interval_s: float | None = None) -> str:
    """The OpenMetrics document of one framework's results ``fr`` (module docstring)."""
    return "".join(_lines(scenario, fr, model_name=model_name, start_time_s=start_time_s,
                          num_gpu_blocks=num_gpu_blocks, interval_s=interval_s))


def _lines(scenario, fr, *, model_name, start_time_s, num_gpu_blocks, interval_s) -> Iterator[str]:
    fw = scenario.framework(fr.name)
    req = fr.requests
    steps = fr.steps
    if steps is None:
        raise ValueError("the Prometheus export needs the steps table (record_steps)")
    step_end = steps["start_s"].to_numpy() + steps["duration_s"].to_numpy()
    step_rep = steps["replica"].to_numpy().astype(np.int64)
    comp = req["completion_s"].to_numpy()
    end_s = float(np.nanmax(np.concatenate([step_end, comp[np.isfinite(comp)], [1e-9]])))
    grid = _Grid(end_s, interval_s or sample_interval_s(end_s))
    families: dict[str, list[tuple[int, _Series]]] = {name: [] for name in HELP}

    rep = req["replica"].to_numpy().astype(np.int64)
    arrival = req["arrival_s"].to_numpy()
    admitted = req["admitted_s"].to_numpy()
    first = req["first_token_s"].to_numpy()
    prompt = req["prompt_tokens"].to_numpy().astype(np.float64)
    output = req["output_tokens"].to_numpy().astype(np.float64)
    cached = req["cached_tokens"].to_numpy().astype(np.float64)
    preempt = req["preemptions"].to_numpy().astype(np.float64)
    status = req["status"].to_numpy()
    done = np.isfinite(comp) & (rep >= 0)                        # the server finished it (length)
    timeout = scenario.workload.timeout_s
    aborted = (status == "timed_out") & ~done & (rep >= 0)
    abort_t = arrival + (timeout if timeout is not None else np.nan)
    tt_status = np.where(done, "finished", "other")
    offsets, times, _ = token_times({"status": tt_status, "replica": rep, "first_token_s": first,
                                     "completion_s": comp, "output_tokens": output.astype(np.int64)},
                                    steps, max_num_batched_tokens=fw.max_num_batched_tokens)
    tok_owner = np.repeat(np.arange(rep.shape[0]), np.diff(offsets))
    gaps = np.diff(times)
    gap_ok = np.diff(tok_owner) == 0      # gaps within one request
    usable = max(num_gpu_blocks - 1, 1) if num_gpu_blocks > 0 else None
    tok_buckets = request_tokens_buckets(int(fw.max_model_len or scenario.model.max_context))

    engines = sorted(set(int(r) for r in range(fw.replicas)))
    for r in engines:
        m = rep == r
        ms = step_rep == r
        sr = steps.filter(pl.Series(ms))
        at = step_end[ms]
        running = grid.gauge(at, sr["num_running"].to_numpy())
        waiting = grid.gauge(at, sr["num_waiting"].to_numpy())
        kv = grid.gauge(at, sr["kv_blocks_used"].to_numpy() / usable) if usable else np.zeros(grid.t.shape[0])
        add = families
        add["vllm:num_requests_running"].append((r, _Series((), running)))
        add["vllm:num_requests_waiting"].append((r, _Series((), waiting)))
        add["vllm:num_requests_waiting_by_reason"].append((r, _Series((("reason", "capacity"),), waiting)))
        add["vllm:num_requests_waiting_by_reason"].append((r, _Series((("reason", "deferred"),),
                                                                      np.zeros_like(waiting))))
        ones = np.ones(grid.t.shape[0])
        for state, v in (("awake", ones), ("weights_offloaded", 0 * ones), ("discard_all", 0 * ones)):
            add["vllm:engine_sleep_state"].append((r, _Series((("sleep_state", state),), v)))
        add["vllm:kv_cache_usage_perc"].append((r, _Series((), kv)))
        adm = m & np.isfinite(admitted)
        pc_q = prompt[adm] if fw.enable_prefix_caching else np.zeros(int(adm.sum()))
        pc_h = cached[adm] if fw.enable_prefix_caching else np.zeros(int(adm.sum()))
        add["vllm:prefix_cache_queries"].append((r, _Series((), grid.counter(admitted[adm], pc_q))))
        add["vllm:prefix_cache_hits"].append((r, _Series((), grid.counter(admitted[adm], pc_h))))
        fin = m & done
        add["vllm:num_preemptions"].append((r, _Series((), grid.counter(comp[fin], preempt[fin]))))
        ft = m & np.isfinite(first)
        add["vllm:prompt_tokens"].append((r, _Series((), grid.counter(first[ft], prompt[ft]))))
        add["vllm:prompt_tokens_cached"].append((r, _Series((), grid.counter(first[ft], cached[ft]))))
        mine = m[tok_owner] if tok_owner.size else np.zeros(0, bool)
        add["vllm:generation_tokens"].append((r, _Series((), grid.counter(times[mine]))))
        for reason in FINISH_REASONS:
            if reason == "length":
                v = grid.counter(comp[fin])
            elif reason == "abort":
                v = grid.counter(abort_t[m & aborted])
            else:
                v = np.zeros(grid.t.shape[0])
            add["vllm:request_success"].append((r, _Series((("finished_reason", reason),), v)))

        def hist(name, t, x, bounds):
            counts, sums = grid.histogram(t, x, bounds)
            add[name].append((r, _Series(tuple(bounds), counts, sums)))

        # iteration tokens: prefill + decode tokens scheduled, plus the first tokens emitted in the step
        firsts = np.zeros(at.shape[0])
        if ft.any() and at.size:
            order = np.argsort(at, kind="stable")
            pos = np.searchsorted(at[order], first[ft], side="left")
            pos = np.minimum(pos, at.shape[0] - 1)
            hitm = np.abs(at[order][pos] - first[ft]) <= 1e-9 * np.maximum(1.0, np.abs(first[ft]))
            np.add.at(firsts, order[pos[hitm]], 1.0)
        iter_tokens = sr["num_decode"].to_numpy() + sr["num_prefill_tokens"].to_numpy() + firsts
        hist("vllm:iteration_tokens_total", at, iter_tokens, ITERATION_TOKENS_BUCKETS)
        hist("vllm:time_to_first_token_seconds", first[ft], (first - arrival)[ft], TIME_TO_FIRST_TOKEN_BUCKETS)
        gm = mine[1:] & gap_ok if gaps.size else np.zeros(0, bool)
        hist("vllm:inter_token_latency_seconds", times[1:][gm], gaps[gm], INTER_TOKEN_LATENCY_BUCKETS)
        ct = comp[fin]
        decode = (comp - first)[fin]
        tpot = np.where(output[fin] > 1, decode / np.maximum(output[fin] - 1, 1), 0.0)
        hist("vllm:request_time_per_output_token_seconds", ct, tpot, INTER_TOKEN_LATENCY_BUCKETS)
        hist("vllm:e2e_request_latency_seconds", ct, (comp - arrival)[fin], REQUEST_LATENCY_BUCKETS)
        hist("vllm:request_queue_time_seconds", ct, (admitted - arrival)[fin], REQUEST_LATENCY_BUCKETS)
        hist("vllm:request_inference_time_seconds", ct, (comp - admitted)[fin], REQUEST_LATENCY_BUCKETS)
        hist("vllm:request_prefill_time_seconds", ct, (first - admitted)[fin], REQUEST_LATENCY_BUCKETS)
        hist("vllm:request_decode_time_seconds", ct, decode, REQUEST_LATENCY_BUCKETS)
        hist("vllm:request_num_preemptions", ct, preempt[fin], REQUEST_NUM_PREEMPTIONS_BUCKETS)
        hist("vllm:request_prefill_kv_computed_tokens", ct, (prompt - cached)[fin], tok_buckets)
        hist("vllm:request_prompt_tokens", ct, prompt[fin], tok_buckets)
        hist("vllm:request_generation_tokens", ct, output[fin], tok_buckets)
        hist("vllm:request_max_num_generation_tokens", ct, output[fin], tok_buckets)
        hist("vllm:request_params_max_tokens", ct, output[fin], tok_buckets)
        hist("vllm:request_params_n", ct, np.ones(int(fin.sum())), REQUEST_PARAMS_N_BUCKETS)

    ts = [f"{start_time_s + t:.3f}" for t in grid.t]
    base = f'model_name="{_escape(model_name)}",engine="{{engine}}"'
    for name, series in families.items():
        kind, text = HELP[name]
        family = name
        yield f"# TYPE {family} {kind}\n# HELP {family} {text}\n"
        for r, s in series:
            labels = base.format(engine=r)
            if kind == "histogram":
                les = [float_to_go_string(b) for b in s.extra] + ["+Inf"]
                for k, stamp in enumerate(ts):
                    row = s.values[k]
                    for j, le in enumerate(les):
                        yield f'{name}_bucket{{{labels},le="{le}"}} {_num(row[j])} {stamp}\n'
                    yield f"{name}_count{{{labels}}} {_num(row[-1])} {stamp}\n"
                    yield f"{name}_sum{{{labels}}} {_num(s.sums[k])} {stamp}\n"
                continue
            extra = "".join(f',{k}="{_escape(v)}"' for k, v in s.extra)
            sample = f"{name}_total" if kind == "counter" else name
            for k, stamp in enumerate(ts):
                yield f"{sample}{{{labels}{extra}}} {_num(s.values[k])} {stamp}\n"
    yield "# EOF\n"
