"""The ``disaggregation`` section of a disaggregated framework's ``summary.json``: per-pool
utilisation, the KV transfers and the TTFT split (README "Prefill/decode disaggregation")."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from oracle.engine.inputs import EngineOutputs, Status
from oracle.metrics.columns import STATUS_NAMES
from oracle.scenario import POOLS, pool_scenario


def disaggregation_summary(scenario, fw, requests: pl.DataFrame, out: EngineOutputs, pcts) -> dict[str, Any]:
    from oracle.metrics.summary import _stats   # one statistics helper for every section
    df = requests.filter(~pl.col("warm_up") & (pl.col("status") == STATUS_NAMES[Status.FINISHED]))
    span = max(out.sim_end_s, 1e-12)
    pools = {}
    for which in POOLS:
        sc_pool, pf = pool_scenario(scenario, fw, which)
        tot = out.pd["pools"][which]
        n_blocks = out.pd.get("num_gpu_blocks", {}).get(which, -1)
        cap = n_blocks - 1 if n_blocks > 0 else None
        busy = np.asarray(tot["busy_s"], np.float64)
        kv_int, kv_max = tot["kv_used_integral"], tot["kv_used_max"]
        pools[which] = {
            "replicas": pf.replicas, "tp": pf.tp, "pp": pf.pp, "gpu": sc_pool.gpu.name, "num_gpus": pf.num_gpus,
            "router": pf.router, "max_num_seqs": pf.max_num_seqs, "max_num_batched_tokens": pf.max_num_batched_tokens,
            "num_gpu_blocks": None if n_blocks < 0 else int(n_blocks),
            "num_steps": tot["num_steps"],
            "busy_fraction": float(busy.mean() / span),   # mean over the pool's replicas of time in steps
            "kv_mean_utilization": float(kv_int.mean() / span / cap) if cap and kv_int is not None else None,
            "kv_peak_utilization": float(kv_max.max() / cap) if cap and kv_max is not None else None,
            "prefix_cache_queries": tot["prefix_cache_queries"], "prefix_cache_hits": tot["prefix_cache_hits"],
            "token_hit_rate": tot["prefix_cache_hits"] / tot["prefix_cache_queries"]
            if tot["prefix_cache_queries"] else 0.0,
            "preemptions": tot["preemptions"],
        }
    x = fw.kv_transfer
    sent = np.asarray(out.pd["transfer_bytes"])[np.isfinite(np.asarray(out.pd["transfer_end_s"]))]
    prompt = int(df["prompt_tokens"].cast(pl.Int64).sum() or 0)
    moved = int(df["transfer_tokens"].sum() or 0)
    return {
        "prefill": pools["prefill"],
        "decode": pools["decode"],
        "p_to_d_ratio": f"{pools['prefill']['replicas']}:{pools['decode']['replicas']}",
        "kv_transfer": {
            "link": x.link, "bandwidth_gbps_per_gpu": x.bandwidth_gbps, "latency_s": x.latency_s,
            "overhead_s": x.overhead_s,
            "transfers": int(sent.size),
            "total_bytes": float(sent.sum()),
            "total_gb": float(sent.sum()) / 1e9,
            "mean_bytes": float(sent.mean()) if sent.size else 0.0,
            # prompt tokens a decode replica already held (prefix cache) and did not receive
            "decode_prefix_saved_fraction": 1.0 - moved / prompt if prompt else 0.0,
            "time_ms": _stats(((df["transfer_end_s"] - df["transfer_start_s"]) * 1e3).to_numpy(), pcts),
            "link_wait_ms": _stats(((df["transfer_start_s"] - df["prefill_end_s"]) * 1e3).to_numpy(), pcts),
        },
        "ttft_breakdown_ms": {part: _stats(df[f"ttft_{part}_ms"].to_numpy(), pcts)
                              for part in ("queue", "prefill", "transfer", "decode")},
    }
