"""Per-request table and ``summary.json`` from the engine's outputs (DESIGN.md §6).

Times inside are seconds; the table and the summary report latencies in milliseconds and say
so in the key (``ttft_ms``). Requests that arrive before ``warm_up_s`` are simulated but left
out of every summary figure (they stay in the table with ``warm_up = true``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from oracle.engine.inputs import ITL_BINS_PER_DECADE, CacheEvent, EngineOutputs, Status, itl_bin_edges_s
from oracle.metrics.columns import CACHE_EVENT_NAMES, PERCENTILES, STATUS_NAMES, STEP_COLUMNS


def request_table(workload, out: EngineOutputs, *, warm_up_s: float, kv_offload: bool = False) -> pl.DataFrame:
    """One row per request (columns: ``oracle.metrics.columns.REQUEST_COLUMNS``; with a KV
    offload tier also ``host_cached_tokens``, the tokens loaded from host memory at the
    request's first admission, after its ``cached_tokens`` GPU prefix hit)."""
    n = len(workload)
    prompt = np.asarray(workload.prompt_tokens, np.int64)
    output = np.asarray(workload.output_tokens, np.int64)
    finished = out.status == int(Status.FINISHED)
    with np.errstate(invalid="ignore", divide="ignore"):
        ttft_ms = (out.first_token_s - out.arrival_s) * 1e3
        e2e_ms = (out.completion_s - out.arrival_s) * 1e3
        tpot_ms = np.where(output > 1, (out.completion_s - out.first_token_s) / (output - 1) * 1e3, np.nan)
    prefilled = np.where(finished, out.computed_tokens - np.maximum(output - 1, 0), 0)
    clients = [str(c) for c in workload.client_names] or ["default"]
    client_idx = np.asarray(workload.client, np.int64)
    df = pl.DataFrame({
        "request_id": np.arange(n, dtype=np.int64),
        "client": _labels(dict(enumerate(clients)), client_idx),
        "session": np.asarray(workload.session, np.int64),
        "turn": np.asarray(workload.turn, np.int32),
        "replica": out.replica.astype(np.int32),
        "arrival_s": out.arrival_s,
        "admitted_s": out.admitted_s,
        "first_token_s": out.first_token_s,
        "completion_s": out.completion_s,
        "prompt_tokens": prompt.astype(np.int32),
        "cached_tokens": out.cached_tokens.astype(np.int32),
        "output_tokens": output.astype(np.int32),
        "preemptions": out.preemptions.astype(np.int32),
        "cache_event": _labels(CACHE_EVENT_NAMES, out.cache_event),
        "ttft_ms": ttft_ms,
        "tpot_ms": tpot_ms,
        "e2e_ms": e2e_ms,
        "max_itl_ms": out.max_itl_s * 1e3,
        "status": _labels(STATUS_NAMES, out.status),
        "computed_tokens": out.computed_tokens.astype(np.int64),
        "prefilled_tokens": prefilled.astype(np.int64),
        "warm_up": out.arrival_s < warm_up_s,
        **({"lora_adapter": out.lora["adapter"].astype(np.int32)} if out.lora is not None else {}),
    })
    if kv_offload:
        df = df.with_columns(pl.Series("host_cached_tokens", out.host_cached_tokens.astype(np.int32)))
    return df if out.pd is None else df.with_columns(**_pd_columns(out))


def _pd_columns(out: EngineOutputs) -> dict[str, np.ndarray]:
    """The PD_REQUEST_COLUMNS of a disaggregated run (times on the engine's clock, as admitted_s;
    the four TTFT parts add up to ttft_ms)."""
    pd = out.pd
    cols = {k: pd[k] for k in ("prefill_replica", "prefill_admitted_s", "prefill_end_s", "transfer_start_s",
                               "transfer_end_s", "transfer_tokens", "transfer_bytes", "decode_admitted_s")}
    with np.errstate(invalid="ignore"):
        cols["ttft_queue_ms"] = (pd["prefill_admitted_s"] - out.arrival_s) * 1e3
        cols["ttft_prefill_ms"] = (pd["prefill_end_s"] - pd["prefill_admitted_s"]) * 1e3
        cols["ttft_transfer_ms"] = (pd["transfer_end_s"] - pd["prefill_end_s"]) * 1e3
        cols["ttft_decode_ms"] = (out.first_token_s - pd["transfer_end_s"]) * 1e3
    return {k: pl.Series(k, np.asarray(v)) for k, v in cols.items()}


def _labels(names: dict[int, str], codes: np.ndarray) -> pl.Series:
    """``names[code]`` for every code (the codes run from ``min(names)`` to ``max(names)``).

    The labels are gathered by index in polars: a NumPy object -> str array is ~20x slower.
    """
    lo, hi = min(names), max(names)
    return pl.Series([names[k] for k in range(lo, hi + 1)], dtype=pl.Utf8).gather(np.asarray(codes, np.int64) - lo)


def step_table(out: EngineOutputs) -> pl.DataFrame | None:
    if out.steps is None:
        return None
    return pl.DataFrame({c: out.steps[c] for c in STEP_COLUMNS})


def _sum(col: pl.Series) -> int:
    """Exact integer sum: polars sums Int32 columns in Int32 (wrapping past 2**31), so widen first."""
    return int(col.cast(pl.Int64).sum() or 0)


def _pkey(p: float) -> str:
    return f"p{p:g}".replace(".", "_")


def _stats(values: np.ndarray, pcts=PERCENTILES) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"mean": None, **{_pkey(p): None for p in pcts}, "max": None}
    res: dict[str, float | None] = {"mean": float(v.mean())}
    qs = np.percentile(v, list(pcts))
    for p, q in zip(pcts, qs):
        res[_pkey(p)] = float(q)
    res["max"] = float(v.max())
    return res


def _hist_stats(hist: np.ndarray, max_value_ms: float | None, pcts=PERCENTILES) -> dict[str, float | None]:
    """Mean/percentiles of the ITL histogram (bin values = geometric bin centres), in ms."""
    total = int(hist.sum())
    if total == 0:
        return _stats(np.empty(0), pcts)
    lower = itl_bin_edges_s()
    upper = np.append(lower[1:], lower[-1] * 10 ** (1 / ITL_BINS_PER_DECADE))
    centre = np.where(lower > 0, np.sqrt(np.maximum(lower, 1e-300) * upper), upper / 2) * 1e3
    cum = np.cumsum(hist)
    res: dict[str, float | None] = {"mean": float((hist * centre).sum() / total)}
    for p in pcts:
        k = int(np.searchsorted(cum, math.ceil(p / 100 * total)))
        res[_pkey(p)] = float(min(centre[k], max_value_ms) if max_value_ms is not None else centre[k])
    res["max"] = max_value_ms
    return res


def build_summary(scenario, fw, requests: pl.DataFrame, out: EngineOutputs, *, num_gpu_blocks: int,
                  kv_bytes_per_token: float, wall_time_s: float) -> dict[str, Any]:
    """The ``summary.json`` dict for one framework (keys as DESIGN.md §6)."""
    warm = scenario.simulation.warm_up_s
    pcts = tuple(sorted(set(PERCENTILES) | set(scenario.output.percentiles or ())))
    # only the columns used below (filtering copies every column it keeps)
    df = requests.select("status", "ttft_ms", "tpot_ms", "e2e_ms", "max_itl_ms", "cache_event", "turn",
                         "cached_tokens", "prompt_tokens", "prefilled_tokens", "output_tokens", "preemptions",
                         "warm_up")
    if df["warm_up"].any():
        df = df.filter(~pl.col("warm_up"))
    total = df.height
    ok = df.select("status", "ttft_ms", "tpot_ms", "e2e_ms", "prompt_tokens", "prefilled_tokens",
                   "output_tokens").filter(pl.col("status") == STATUS_NAMES[Status.FINISHED])
    successful = ok.height
    end = max(out.sim_end_s, scenario.simulation.duration_s or 0.0)
    effective = max(end - warm, 1e-12)

    slo = scenario.slo
    meets = pl.col("status") == STATUS_NAMES[Status.FINISHED]
    if slo.ttft_ms is not None:
        meets = meets & (pl.col("ttft_ms") <= slo.ttft_ms)
    if slo.tpot_ms is not None:
        meets = meets & (pl.col("tpot_ms").fill_nan(0.0) <= slo.tpot_ms)
    if slo.e2e_ms is not None:
        meets = meets & (pl.col("e2e_ms") <= slo.e2e_ms)
    good = int(df.select(meets.sum()).item())

    events = {CACHE_EVENT_NAMES[int(e)]: 0 for e in CacheEvent if e != CacheEvent.NONE}
    for name, count in df.group_by("cache_event").len().iter_rows():
        if name in events:
            events[name] = int(count)
    admitted = df.select("cache_event", "turn", "cached_tokens").filter(
        pl.col("cache_event") != CACHE_EVENT_NAMES[CacheEvent.NONE])
    n_adm = admitted.height
    follow_ups = admitted.filter(pl.col("turn") >= 1).height
    with_hit = admitted.filter(pl.col("cached_tokens") > 0)
    prompt_sum = _sum(ok["prompt_tokens"])
    prefilled_sum = _sum(ok["prefilled_tokens"])
    max_itl = df["max_itl_ms"].drop_nans().drop_nulls()

    kv_capacity = (num_gpu_blocks - 1) if num_gpu_blocks > 0 else None
    kv_used_integral, kv_used_max = out.kv_used_integral, out.kv_used_max
    if out.pd is not None:   # disaggregated: this section is the decode pool's (both in "disaggregation")
        kv_used_integral = out.pd["pools"]["decode"]["kv_used_integral"]
        kv_used_max = out.pd["pools"]["decode"]["kv_used_max"]
    kv_mean_used = float(kv_used_integral.sum() / max(out.sim_end_s, 1e-12) / len(kv_used_integral)) \
        if kv_used_integral is not None else None

    def rate(num: float, den: float) -> float:
        return float(num / den) if den else 0.0

    summary = {
        "scenario": scenario.name,
        "framework": fw.name,
        "seed": scenario.seed,
        "simulation": {
            "total_duration_s": float(end),
            "warm_up_duration_s": float(warm),
            "effective_duration_s": float(effective),
            "wall_time_s": float(wall_time_s),
            "num_steps": int(out.num_steps),
        },
        "requests": {
            "total": total,
            "successful": successful,
            "failed": total - successful,
            "timed_out": int((df["status"] == "timed_out").sum()),  # clients that gave up
            "success_rate": rate(successful, total),
            "warm_up_excluded": requests.height - total,
        },
        "throughput": {
            "requests_per_second": rate(successful, effective),
            "output_tokens_per_second": rate(_sum(ok["output_tokens"]), effective),
            "input_tokens_per_second": rate(prompt_sum, effective),
        },
        "latency": {
            "time_to_first_token_ms": _stats(ok["ttft_ms"].to_numpy(), pcts),
            "time_per_output_token_ms": _stats(ok["tpot_ms"].to_numpy(), pcts),
            "inter_token_latency_ms": _hist_stats(out.itl_hist, float(max_itl.max()) if max_itl.len() else None,
                                                  pcts),
            "end_to_end_latency_ms": _stats(ok["e2e_ms"].to_numpy(), pcts),
        },
        "goodput": {
            "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "e2e_ms": slo.e2e_ms},
            "requests_per_second": rate(good, effective),
            "fraction": rate(good, total),
        },
        "kv_cache": {
            "block_size": fw.block_size,
            "num_gpu_blocks": None if num_gpu_blocks < 0 else int(num_gpu_blocks),
            "unlimited": num_gpu_blocks < 0 or fw.num_gpu_blocks == "unlimited",
            "kv_bytes_per_token": float(kv_bytes_per_token),
            "capacity_tokens_per_replica": None if kv_capacity is None else int(kv_capacity * fw.block_size),
            "mean_blocks_used": kv_mean_used,
            "peak_blocks_used": int(kv_used_max.max()) if kv_used_max is not None else None,
            "mean_utilization": (kv_mean_used / kv_capacity) if (kv_capacity and kv_mean_used is not None) else None,
            "peak_utilization": (float(kv_used_max.max()) / kv_capacity)
            if (kv_capacity and kv_used_max is not None) else None,
        },
        "preemptions": _sum(df["preemptions"]),
        "prefix_caching": {
            "enabled": bool(fw.enable_prefix_caching),
            "prefix_cache_queries": int(out.prefix_cache_queries),
            "prefix_cache_hits": int(out.prefix_cache_hits),
            # vLLM PrefixCacheStats: re-admissions after a preemption, counted apart
            "preempted_requests": int(out.preempted_requests),
            "preempted_prefix_cache_queries": int(out.preempted_prefix_cache_queries),
            "preempted_prefix_cache_hits": int(out.preempted_prefix_cache_hits),
            "overall_hit_rate": rate(with_hit.height, n_adm),
            "conversational_hit_rate": rate(events[CACHE_EVENT_NAMES[CacheEvent.CONVERSATIONAL_HIT]], follow_ups),
            "cross_request_hit_rate": rate(events[CACHE_EVENT_NAMES[CacheEvent.CROSS_REQUEST_HIT]], n_adm),
            "token_hit_rate": rate(out.prefix_cache_hits, out.prefix_cache_queries),
            "prefill_reduction_ratio": 1.0 - rate(prefilled_sum, prompt_sum) if prompt_sum else 0.0,
            "total_tokens_saved": _sum(admitted["cached_tokens"]),
            "average_cached_prefix_length": float(with_hit["cached_tokens"].mean()) if with_hit.height else 0.0,
            "event_counts": events,
        },
        **({"kv_offload": kv_offload_summary(scenario, fw, out, requests)} if fw.kv_offload is not None else {}),
        "config": {
            "model": scenario.model_of(fw).name, "gpu": scenario.gpu.name, "tp": fw.tp, "pp": fw.pp,
            "replicas": fw.replicas, "num_gpus": fw.num_gpus, "router": fw.router,
            "max_num_seqs": fw.max_num_seqs, "max_num_batched_tokens": fw.max_num_batched_tokens,
            "enable_chunked_prefill": fw.enable_chunked_prefill,
            "enable_prefix_caching": fw.enable_prefix_caching,
            "scheduler_reserve_full_isl": fw.scheduler_reserve_full_isl,
            **architecture_config(scenario, fw),
        },
    }
    if out.pd is not None:
        from oracle.metrics.disagg import disaggregation_summary   # only disaggregated frameworks
        summary["disaggregation"] = disaggregation_summary(scenario, fw, requests, out, pcts)
        d = summary["disaggregation"]
        summary["config"].update(replicas=d["prefill"]["replicas"] + d["decode"]["replicas"],
                                 disaggregated=d["p_to_d_ratio"],
                                 router=f"{d['prefill']['router']} / {d['decode']['router']}")
    if fw.speculative is not None:  # only with speculative decoding on: other summaries keep their keys
        summary["speculative_decoding"] = _speculative(fw.speculative, out, _sum(ok["output_tokens"]))
    if out.lora is not None:   # frameworks with enable_lora and a workload naming adapters
        from oracle.metrics.lora import lora_summary
        summary["lora"] = lora_summary(scenario, fw, requests, out)
    return summary


def architecture_config(scenario, fw) -> dict[str, Any]:
    """Summary ``config`` keys for the architectures of issue 17, present only when a run uses
    one (existing summaries keep their keys): ``architecture`` (:meth:`ModelSpec.describe`),
    ``precision`` (weights and KV dtypes, with the FP4/FP8 peak used), ``expert_parallel_size``,
    ``data_parallel_size``, ``expert_imbalance``, and ``kv_cache_groups`` for windowed models
    (vLLM's hybrid KV cache groups, ``oracle.memory.kv_cache_groups``)."""
    from oracle.catalog import FP4_DTYPES
    from oracle.memory import kv_cache_groups
    from oracle.scenario import framework_dtypes
    model, gpu = scenario.model_of(fw), scenario.gpu
    dtype, kv_dtype = framework_dtypes(scenario, fw)
    if not (model.uses_new_architecture or fw.expert_parallel or dtype in FP4_DTYPES):
        return {}
    peak = {"fp8": gpu.peak_tflops_fp8, **dict.fromkeys(FP4_DTYPES, gpu.peak_tflops_fp4)}.get(dtype)
    precision = f"{dtype} weights, {kv_dtype} KV cache"
    if peak is not None:
        precision += f", {peak:g} TF/s peak" if peak else ", weight-only (no tensor cores for it): 16-bit peak"
    out: dict[str, Any] = {"architecture": model.describe(), "precision": precision,
                           "expert_parallel_size": fw.ep_size, "data_parallel_size": fw.data_parallel_size,
                           "expert_imbalance": fw.expert_imbalance}
    if model.sliding_window:
        size, full, window = kv_cache_groups(model, fw.pp)
        out["kv_cache_groups"] = (f"{full} full-attention + {window} windowed group(s) of {size} layers; the engine "
                                  "charges the full-attention blocks only (approximation)")
    return out


def kv_offload_summary(scenario, fw, out: EngineOutputs, requests: pl.DataFrame) -> dict[str, Any]:
    """The ``kv_offload`` section: the host tier, GPU vs host prefix hits, bytes moved over the
    host link (loads = host-hit blocks x block bytes; writes = blocks stored x block bytes)."""
    from oracle.kv_offload import host_block_bytes, host_tier_params   # lazy: with a tier only
    blocks, s_per_block, latency = host_tier_params(scenario, fw)
    block_bytes = host_block_bytes(scenario, fw)
    h = out.host
    bs = fw.block_size
    host_hit = h.get("hit_blocks", 0)
    gpu_hits = int(out.prefix_cache_hits) + int(out.preempted_prefix_cache_hits)
    df = requests.filter(~pl.col("warm_up")) if requests["warm_up"].any() else requests
    with_host = int((df["host_cached_tokens"] > 0).sum()) if "host_cached_tokens" in df.columns else 0
    return {
        "host_blocks_per_replica": int(blocks),
        "host_bytes_per_replica": int(blocks) * block_bytes,
        "block_bytes": block_bytes,
        "load_s_per_block": s_per_block,
        "load_latency_s": latency,
        "gpu_hit_tokens": gpu_hits,
        "host_hit_tokens": int(host_hit * bs),
        "host_hit_blocks": int(host_hit),
        "host_queries_tokens": int(h.get("queries", 0)),
        "host_token_hit_rate": float(host_hit * bs / h["queries"]) if h.get("queries") else 0.0,
        "requests_with_host_hit": with_host,
        "loads": int(h.get("loads", 0)),
        "load_time_s": float(out.host_load_s),
        "bytes_loaded": int(host_hit) * block_bytes,
        "blocks_stored": int(h.get("stored_blocks", 0)),
        "bytes_written": int(h.get("stored_blocks", 0)) * block_bytes,
        "blocks_evicted": int(h.get("evicted_blocks", 0)),
        "refused_stores": int(h.get("failed_stores", 0)),
    }


def _speculative(spec, out: EngineOutputs, finished_output_tokens: int) -> dict[str, Any]:
    """vLLM's ``SpecDecodingStats`` over the run (``vllm/v1/spec_decode/metrics.py``): draft
    tokens verified and accepted, acceptance rate (accepted / drafts), mean acceptance length
    (1 + accepted per verification), and output tokens of finished requests per engine step."""
    drafts, accepted, verifications = int(out.spec_drafts), int(out.spec_accepted), int(out.spec_verifications)
    return {
        "method": spec.method,
        "num_speculative_tokens": spec.num_speculative_tokens,
        "draft_model": spec.draft_model.name if spec.draft_model is not None else None,
        "acceptance_per_position": list(spec.acceptance),
        "acceptance_source": spec.acceptance_source,
        "num_draft_tokens": drafts,
        "num_accepted_tokens": accepted,
        "num_verifications": verifications,
        "acceptance_rate": accepted / drafts if drafts else 0.0,
        "mean_acceptance_length": 1.0 + accepted / verifications if verifications else 1.0,
        "output_tokens_per_step": finished_output_tokens / out.num_steps if out.num_steps else 0.0,
    }
