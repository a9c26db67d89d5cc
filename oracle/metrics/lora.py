"""The ``lora`` section of ``summary.json`` (frameworks with ``enable_lora``; oracle.lora)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from oracle.engine.inputs import Status
from oracle.metrics.columns import STATUS_NAMES

#: adapters listed one by one in the summary (the most requested first)
TOP_ADAPTERS = 10


def lora_summary(scenario, fw, requests: pl.DataFrame, out) -> dict[str, Any]:
    """Adapter loads and load time, admissions skipped by ``max_loras``, and per adapter
    (the :data:`TOP_ADAPTERS` most requested): requests, GPU loads, median TTFT. Requests
    of the warm-up are left out of the per-adapter counts, as in the rest of the summary."""
    spec = scenario.workload.lora
    df = requests.select("lora_adapter", "status", "ttft_ms", "warm_up").filter(~pl.col("warm_up"))
    named = df.filter(pl.col("lora_adapter") >= 0)
    loads = out.lora["loads_by_adapter"]
    per = (named.group_by("lora_adapter")
           .agg(pl.len().alias("requests"),
                pl.col("ttft_ms").filter(pl.col("status") == STATUS_NAMES[Status.FINISHED]).median().alias("p50"))
           .sort(["requests", "lora_adapter"], descending=[True, False]))
    top = [{"adapter": int(a), "requests": int(n), "gpu_loads": int(loads[a]) if a < loads.shape[0] else 0,
            "ttft_p50_ms": None if p50 is None or np.isnan(p50) else float(p50)}
           for a, n, p50 in per.head(TOP_ADAPTERS).iter_rows()]
    return {
        "max_loras": fw.max_loras,
        "max_cpu_loras": fw.max_cpu_loras or fw.max_loras,
        "max_lora_rank": fw.max_lora_rank,
        "adapters": spec.adapters if spec else 0,
        "rank": spec.rank if spec else None,
        "popularity": spec.popularity if spec else None,
        "requests_with_adapter": named.height,
        "distinct_adapters_requested": int(per.height),
        "adapter_loads": int(out.lora["gpu_loads"]),     # host -> GPU slot copies
        "disk_loads": int(out.lora["disk_loads"]),       # disk -> CPU cache reads
        "load_time_s": float(out.lora["load_s"]),        # step time spent loading, all replicas
        "skipped_admissions": int(out.lora["skipped_admissions"]),   # waiting requests passed over, per step
        "top_adapters": top,
    }
