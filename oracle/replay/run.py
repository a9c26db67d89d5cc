"""Simulate a :class:`~oracle.replay.common.ReplayPlan` and compare it with what was measured.

The plan becomes an ordinary scenario: the server as one ``[[frameworks]]`` entry, the GPU,
and the workload as the project's own Parquet request table (``[workload.trace] format =
"parquet"``). The generated ``[[workload.clients]]`` cannot say "request i sends prompt
i mod P" (they draw a fresh question per request and a system prompt at random) nor "gaps
scaled to sum to the duration", so the converter writes the request table itself; with
``--out`` the scenario and the table are saved, and ``oracle simulate DIR/scenario.toml``
gives the same results.

Stages run back to back: stage k+1 starts a fixed gap after stage k's last request finished
(or was refused, or was given up on at the client's timeout),
which only the simulation knows. So the stages are simulated cumulatively: stages 0..k,
then stages 0..k+1 placed after the simulated end of stage k, and so on. The engine is
deterministic and a later stage arrives after every earlier request finished, so earlier
stages come out the same each time; the last run holds every stage and is the one reported.

Per stage, the predicted figures are those of the requests a client would have counted as
successes: finished within the plan's ``timeout_s``. The client's timeout is simulated
(``[workload] timeout_s``): a request the client abandons is aborted and its KV blocks
freed, as vLLM does, so the requests that do finish see the same load as on the real
server. A stage where requests timed out (measured or predicted) is marked *overloaded*:
its figures compare successes only and it is left out of the error medians (the issue's
overloaded-run target is reported apart).

Per-token ITL per stage comes from the steps table: every decoding request waits one step
for its next token, so the stage's ITL samples are its step durations weighted by the
number of decoding requests in each step.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from oracle.replay.common import (LATENCY_METRICS, STATS, ReplayPlan, signed_error_pct, stats_ms,
                                  weighted_quantile)
from oracle.workload.spec import pool_id
from oracle.workload.table import KIND_OUTPUT, KIND_SYSTEM, KIND_USER, Workload

#: metrics whose per-stage errors are summarised (median over non-overloaded stages)
SUMMARY_KEYS = (("ttft", "mean"), ("tpot", "mean"), ("itl", "mean"), ("e2e", "mean"), ("ttft", "p50"), ("ttft", "p90"),
                ("ttft", "p99"),
                ("tpot", "p99"), ("e2e", "p99"), ("throughput", "requests_per_s"))
_QUESTION_BASE = 1 << 40   # question j of the prompt table: KIND_USER key (1 << 40) | j


@dataclass
class ReplayResult:
    """A simulated replay: the plan, the scenario that ran, the final simulation, the comparison."""

    plan: ReplayPlan
    scenario_raw: dict
    workload: Workload
    simulation: Any                      # oracle.api.SimulationResult of the last (all-stage) run
    comparison: dict[str, Any]
    wall_time_s: float = 0.0
    stage_origins_s: list[float] = field(default_factory=list)


def build_workload(plan: ReplayPlan, origins_s: list[float]) -> Workload:
    """The request table of stages ``0 .. len(origins_s) - 1``, stage k shifted to ``origins_s[k]``.

    Segments per request: [group prefix][question] for prompt-table prompts (shared keys, so
    repeats hit the prefix cache), [prompt] for unique ones, then [output] (its own key).
    """
    stages = plan.stages[:len(origins_s)]
    arrival = np.concatenate([o + st.arrival_s for o, st in zip(origins_s, stages)])
    pid = np.concatenate([st.prompt_id for st in stages]).astype(np.int64)
    prompt = np.concatenate([st.prompt_tokens for st in stages]).astype(np.int64)
    output = np.concatenate([st.output_tokens for st in stages]).astype(np.int64)
    client = np.concatenate([np.full(st.num_requests, k, np.int64) for k, st in enumerate(stages)])
    n = arrival.shape[0]
    ids = np.arange(n, dtype=np.int64)
    keys = np.zeros((n, 3), np.uint64)
    lens = np.zeros((n, 3), np.int64)
    table = pid >= 0
    if table.any():
        pt = plan.prompts
        g = pt.group[pid[table]]
        keys[table, 0] = (np.uint64(KIND_SYSTEM << 60) | (np.uint64(pool_id("oracle-replay")) << np.uint64(20))
                          | g.astype(np.uint64))
        lens[table, 0] = pt.prefix_tokens[g]
        keys[table, 1] = np.uint64(KIND_USER << 60) | np.uint64(_QUESTION_BASE) | pid[table].astype(np.uint64)
        lens[table, 1] = pt.question_tokens[pid[table]]
        if np.any(lens[table, 0] + lens[table, 1] != prompt[table]):
            raise AssertionError("prompt table and prompt_tokens disagree")
    keys[~table, 1] = np.uint64(KIND_USER << 60) | ids[~table].astype(np.uint64)
    lens[~table, 1] = prompt[~table]
    keys[:, 2] = np.uint64(KIND_OUTPUT << 60) | ids.astype(np.uint64)
    lens[:, 2] = output
    used = lens > 0
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(used.sum(axis=1), out=offsets[1:])
    wl = Workload(arrival_s=arrival, prompt_tokens=prompt, output_tokens=output, session=np.full(n, -1),
                  turn=np.zeros(n), parent=np.full(n, -1), think_s=np.zeros(n), client=client,
                  seg_offsets=offsets, seg_key=keys[used], seg_len=lens[used],
                  client_names=[st.label for st in stages], source=f"oracle replay of {plan.source}")
    return wl.validate()


def scenario_dict(plan: ReplayPlan, *, gpu: str, seed: int, workload_path: str = "workload.parquet",
                  gpu_table: dict | None = None, framework_keys: dict | None = None) -> dict:
    """The replay scenario (TOML structure); the workload is the Parquet request table.

    ``gpu_table``: an inline ``[hardware.gpu]`` table instead of the catalog GPU ``gpu`` (the
    end-to-end calibration tries factors this way); ``framework_keys``: extra ``[[frameworks]]``
    keys (e.g. ``api_server_s``)."""
    return {
        "name": plan.name,
        "description": f"oracle replay of {plan.kind} result {plan.source}",
        "seed": int(seed),
        "model": {"name": plan.server.model},
        "hardware": {"gpu": gpu_table if gpu_table is not None else gpu},
        "workload": {"trace": {"path": workload_path, "format": "parquet"}, "timeout_s": float(plan.timeout_s)},
        "frameworks": [{**plan.server.framework_table(), **(framework_keys or {})}],
        "output": {"steps": True},
    }


def simulate_plan(plan: ReplayPlan, *, gpu: str = "h100-sxm", seed: int = 0,
                  progress: Callable[[str], None] | None = None, gpu_table: dict | None = None,
                  framework_keys: dict | None = None) -> ReplayResult:
    """Simulate every stage (cumulatively, see the module docstring) and compare
    (``gpu_table``, ``framework_keys``: see :func:`scenario_dict`)."""
    from oracle.api import simulate
    from oracle.scenario import scenario_from_dict

    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    raw = scenario_dict(plan, gpu=gpu, seed=seed, gpu_table=gpu_table, framework_keys=framework_keys)
    origins: list[float] = []
    res = wl = None
    with tempfile.TemporaryDirectory(prefix="oracle-replay-") as tmp:
        for k, st in enumerate(plan.stages):
            if k == 0:
                origins.append(-float(st.arrival_s[0]))   # the first request arrives at t = 0
            else:
                # the load generator moves on once every request of the stage ended for the
                # client: completed, rejected, or abandoned at its timeout
                sel = wl.client == k - 1
                ends = client_ends(res.requests["arrival_s"].to_numpy()[sel],
                                   res.requests["completion_s"].to_numpy()[sel],
                                   res.requests["status"].to_numpy()[sel], plan.timeout_s)
                origins.append(float(ends.max()) + plan.stage_gap_s)
            wl = build_workload(plan, origins)
            wl.to_parquet(Path(tmp) / "workload.parquet")
            sc = scenario_from_dict(raw, base_dir=Path(tmp))
            say(f"simulating {st.label} ({len(wl):,} requests in stages 0..{k})")
            res = simulate(sc, record_steps=True)
    comparison = compare(plan, res, wl, origins, gpu=gpu, seed=seed)
    wall = time.perf_counter() - t0
    comparison["simulation"]["wall_time_s"] = wall
    return ReplayResult(plan=plan, scenario_raw=raw, workload=wl, simulation=res, comparison=comparison,
                        wall_time_s=wall, stage_origins_s=origins)


# -- predicted figures and the comparison ---------------------------------------------------------

def client_ends(arrival_s: np.ndarray, completion_s: np.ndarray, status: np.ndarray, timeout_s: float) -> np.ndarray:
    """When each request ended for its client: a rejected one at once, else its completion,
    or its timeout if that came first or it never completed (aborted)."""
    limit = arrival_s + timeout_s
    ends = np.where(np.isfinite(completion_s), np.minimum(completion_s, limit), limit)
    return np.where(status == "rejected", arrival_s, ends)


def predicted_stage(plan: ReplayPlan, k: int, requests, steps, wl: Workload, origin_s: float) -> dict[str, Any]:
    """The simulation's figures for stage k, counted as the load generator counts them."""
    sel = wl.client == k
    arr = requests["arrival_s"].to_numpy()[sel]
    comp = requests["completion_s"].to_numpy()[sel]
    status = requests["status"].to_numpy()[sel]
    e2e = requests["e2e_ms"].to_numpy()[sel]
    ok = (status == "finished") & (e2e <= plan.timeout_s * 1e3)
    out = {}
    for metric, col in (("ttft", "ttft_ms"), ("tpot", "tpot_ms"), ("e2e", "e2e_ms")):
        out[metric] = stats_ms(requests[col].to_numpy()[sel][ok])
    ends = client_ends(arr, comp, status, plan.timeout_s)
    start = float(arr.min()) if plan.throughput_from == "first_request" else origin_s
    span = float(ends.max()) - start
    n_ok = int(ok.sum())
    out_tok = float(requests["output_tokens"].to_numpy()[sel][ok].sum())
    in_tok = float(requests["prompt_tokens"].to_numpy()[sel][ok].sum())
    prompt_sum = float(requests["prompt_tokens"].to_numpy()[sel].sum())
    cached = float(requests["cached_tokens"].to_numpy()[sel].sum())
    itl_vals, itl_w = _stage_itl_samples(steps, float(arr.min()), float(np.nanmax(comp)) if np.isfinite(comp).any()
                                         else float(arr.max()))
    itl = {"mean": float(np.average(itl_vals, weights=itl_w)) if itl_w.sum() > 0 else None}
    for stat, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        itl[stat] = weighted_quantile(itl_vals, itl_w, q)
    out["itl"] = itl
    rejected = status == "rejected"      # longer than max_model_len or the KV cache: vLLM refuses them too
    return {"latency_ms": out, "itl_samples": (itl_vals, itl_w), "successes": n_ok,
            "timeouts": int((~ok & ~rejected).sum()), "rejected": int(rejected.sum()),
            "requests_per_s": n_ok / span if span > 0 else None,
            "output_tokens_per_s": out_tok / span if span > 0 else None,
            "input_tokens_per_s": in_tok / span if span > 0 else None,
            "prefix_cache_token_hit_rate": cached / prompt_sum if prompt_sum else None,
            "first_arrival_s": float(arr.min()), "last_completion_s": float(np.nanmax(comp))
            if np.isfinite(comp).any() else None}


def _stage_itl_samples(steps, t_from: float, t_to: float) -> tuple[np.ndarray, np.ndarray]:
    """Step durations (ms) in [t_from, t_to], weighted by their decoding requests."""
    if steps is None or steps.height == 0:
        return np.zeros(0), np.zeros(0)
    start = steps["start_s"].to_numpy()
    dur = steps["duration_s"].to_numpy()
    dec = steps["num_decode"].to_numpy().astype(np.float64)
    inside = (start >= t_from - 1e-9) & (start + dur <= t_to + 1e-9)
    return dur[inside] * 1e3, dec[inside]


def compare(plan: ReplayPlan, res, wl: Workload, origins: list[float], *, gpu: str, seed: int) -> dict[str, Any]:
    """The replay's JSON document: settings, notes, per-stage measured vs predicted, medians."""
    fr = res.first
    stages = []
    for k, st in enumerate(plan.stages):
        pred = predicted_stage(plan, k, fr.requests, fr.steps, wl, origins[k])
        meas = st.measured
        metrics: dict[str, Any] = {}
        for metric in LATENCY_METRICS:
            rows = {}
            for stat in STATS:
                m = meas.latency_ms.get(metric, {}).get(stat)
                p = pred["latency_ms"][metric].get(stat)
                if metric == "itl" and stat != "mean" and meas.itl_token_quantiles:
                    q = meas.itl_token_quantiles.get(stat)
                    p = weighted_quantile(*pred["itl_samples"], q) if q is not None else None
                row = {"measured": m, "recorded": meas.recorded_ms.get(metric, {}).get(stat), "predicted": p,
                       "error_pct": signed_error_pct(p, m)}
                if metric == "itl" and stat != "mean" and meas.itl_token_quantiles:
                    row["token_quantile"] = meas.itl_token_quantiles.get(stat)
                rows[stat] = row
            metrics[f"{metric}_ms"] = rows
        throughput = {
            "requests_per_s": _row(meas.requests_per_s, pred["requests_per_s"]),
            "output_tokens_per_s": {**_row(meas.output_tokens_per_s, pred["output_tokens_per_s"]),
                                    "recorded": meas.recorded_output_tokens_per_s},
            "input_tokens_per_s": _row(meas.input_tokens_per_s, pred["input_tokens_per_s"]),
        }
        overloaded = meas.count_failed > 0 or pred["timeouts"] > 0
        note = None
        if overloaded:
            note = (f"overloaded: {meas.count_failed} measured and {pred['timeouts']} predicted requests exceeded "
                    f"the {plan.timeout_s:g} s client timeout (simulated: abandoned requests are aborted and "
                    "their blocks freed). Figures compare successes only; left out of the medians")
        stages.append({
            "index": k, "label": st.label, "rate": st.rate, "duration_s": st.duration_s,
            "num_requests": st.num_requests, "origin_s": origins[k],
            "measured": {"successes": meas.count_ok, "failures": meas.count_failed,
                         "prompt_len_mean": meas.prompt_len_mean, "notes": meas.notes},
            "predicted": {"successes": pred["successes"], "timeouts": pred["timeouts"], "rejected": pred["rejected"],
                          "prompt_tokens_mean": float(st.prompt_tokens.mean()),
                          "prefix_cache_token_hit_rate": pred["prefix_cache_token_hit_rate"],
                          "first_arrival_s": pred["first_arrival_s"],
                          "last_completion_s": pred["last_completion_s"]},
            "overloaded": overloaded, "overload_note": note,
            "tpot_conversion": meas.conversion,
            "metrics": metrics, "throughput": throughput,
        })
    s = plan.server
    summary = fr.summary
    return {
        "kind": plan.kind, "source": str(plan.source), "name": plan.name, "gpu": gpu, "seed": seed,
        "timeout_s": plan.timeout_s,
        "server": {"model": s.model, "model_source": s.model_source, "tp": s.tp, "max_num_seqs": s.max_num_seqs,
                   "max_num_batched_tokens": s.max_num_batched_tokens, "max_model_len": s.max_model_len,
                   "gpu_memory_utilization": s.gpu_memory_utilization,
                   "num_gpu_blocks": summary["kv_cache"]["num_gpu_blocks"], "block_size": s.block_size,
                   "enable_prefix_caching": s.enable_prefix_caching,
                   "enable_chunked_prefill": s.enable_chunked_prefill, "sources": dict(s.sources)},
        "load_generator": plan.details,
        "notes": list(plan.notes),
        "stages": stages,
        "medians": medians(stages),
        "simulation": {"requests": len(wl), "preemptions": summary["preemptions"], "wall_time_s": None},
    }


def add_seed_spread(comparison: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    """Add to ``comparison`` (the replay with its own seed) the spread over other arrival draws.

    ``others`` are the comparisons of the same plan replayed with other seeds (other arrival
    gaps and prompt order; the measured figures are the same). Every row with a prediction
    gets ``predicted_range`` and ``error_pct_range`` ([min, max] over all the draws, this one
    included) and ``error_pct_by_seed``; each stage gets ``overloaded_by_seed``; the document
    gets ``seeds`` and ``medians_by_seed``. The real load generator's arrivals were one draw
    too (inference-perf's timer is unseeded), so a stage's error means as much as its range
    is narrow."""
    draws = [comparison, *others]

    def spread(row: dict, rows: list[dict]) -> None:
        for key, out in (("predicted", "predicted_range"), ("error_pct", "error_pct_range")):
            vals = [r[key] for r in rows if r.get(key) is not None]
            row[out] = [min(vals), max(vals)] if vals else None
        row["error_pct_by_seed"] = [r.get("error_pct") for r in rows]

    for k, st in enumerate(comparison["stages"]):
        sts = [c["stages"][k] for c in draws]
        for metric, rows in st["metrics"].items():
            for stat, row in rows.items():
                spread(row, [x["metrics"][metric][stat] for x in sts])
        for key, row in st["throughput"].items():
            spread(row, [x["throughput"][key] for x in sts])
        st["overloaded_by_seed"] = [bool(x["overloaded"]) for x in sts]
    comparison["seeds"] = [c["seed"] for c in draws]
    comparison["medians_by_seed"] = [{"seed": c["seed"], "medians": c["medians"]} for c in draws]
    return comparison


def _row(measured: float | None, predicted: float | None) -> dict[str, float | None]:
    return {"measured": measured, "predicted": predicted, "error_pct": signed_error_pct(predicted, measured)}


def medians(stages: list[dict]) -> dict[str, Any]:
    """Median signed and absolute % error per summary metric over the non-overloaded stages."""
    out: dict[str, Any] = {}
    for metric, stat in SUMMARY_KEYS:
        errs = []
        for st in stages:
            if st["overloaded"]:
                continue
            row = st["throughput"][stat] if metric == "throughput" else st["metrics"][f"{metric}_ms"][stat]
            if row.get("error_pct") is not None:
                errs.append(row["error_pct"])
        key = f"{metric}_{stat}" if metric != "throughput" else stat
        out[key] = {"stages": len(errs),
                    "median_error_pct": statistics.median(errs) if errs else None,
                    "median_abs_error_pct": statistics.median(abs(e) for e in errs) if errs else None}
    return out
