"""Side-by-side comparison of several frameworks' summaries."""

from __future__ import annotations

from typing import Any

import polars as pl

# (column, path into summary.json)
COMPARISON_FIELDS = (
    ("requests_total", ("requests", "total")),
    ("success_rate", ("requests", "success_rate")),
    ("throughput_rps", ("throughput", "requests_per_second")),
    ("output_tokens_per_s", ("throughput", "output_tokens_per_second")),
    ("ttft_p50_ms", ("latency", "time_to_first_token_ms", "p50")),
    ("ttft_p99_ms", ("latency", "time_to_first_token_ms", "p99")),
    ("tpot_p50_ms", ("latency", "time_per_output_token_ms", "p50")),
    ("tpot_p99_ms", ("latency", "time_per_output_token_ms", "p99")),
    ("itl_p99_ms", ("latency", "inter_token_latency_ms", "p99")),
    ("e2e_p50_ms", ("latency", "end_to_end_latency_ms", "p50")),
    ("e2e_p99_ms", ("latency", "end_to_end_latency_ms", "p99")),
    ("goodput_rps", ("goodput", "requests_per_second")),
    ("goodput_fraction", ("goodput", "fraction")),
    ("token_hit_rate", ("prefix_caching", "token_hit_rate")),
    ("conversational_hit_rate", ("prefix_caching", "conversational_hit_rate")),
    ("prefill_reduction_ratio", ("prefix_caching", "prefill_reduction_ratio")),
    ("preemptions", ("preemptions",)),
    ("kv_peak_utilization", ("kv_cache", "peak_utilization")),
    ("num_gpus", ("config", "num_gpus")),
)
# Appended when a framework has a KV offload tier (summary "kv_offload"; null for the others).
OFFLOAD_COMPARISON_FIELDS = (
    ("host_token_hit_rate", ("kv_offload", "host_token_hit_rate")),
    ("host_bytes_loaded", ("kv_offload", "bytes_loaded")),
    ("host_bytes_written", ("kv_offload", "bytes_written")),
)


def lookup(summary: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = summary
    for k in path:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def comparison_table(summaries: dict[str, dict[str, Any]]) -> pl.DataFrame:
    """One row per framework: ``framework`` then the COMPARISON_FIELDS columns (float)."""
    fields = COMPARISON_FIELDS
    if any("kv_offload" in s for s in summaries.values()):
        fields += OFFLOAD_COMPARISON_FIELDS
    rows = []
    for name, s in summaries.items():
        row: dict[str, Any] = {"framework": name}
        for col, path in fields:
            v = lookup(s, path)
            row[col] = None if v is None else float(v)
        rows.append(row)
    schema = {"framework": pl.Utf8, **{c: pl.Float64 for c, _ in fields}}
    return pl.DataFrame(rows, schema=schema)
