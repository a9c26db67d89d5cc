"""``oracle report`` for disaggregated frameworks: the pools, the KV transfers and the TTFT
split (``summary.json`` ``disaggregation``); aggregated frameworks of the run show dashes."""

from __future__ import annotations

from typing import Any

import numpy as np

from oracle.metrics.compare import lookup
from oracle.report.tables import RowSpec, Table, _metric_table

TTFT_PARTS = (("queue", "queue (arrival -> prefill admission)"), ("prefill", "prefill"),
              ("transfer", "KV transfer (link wait included)"), ("decode", "decode queue + first step"))

D = ("disaggregation",)
PD_ROWS: tuple[tuple[str, tuple[RowSpec, ...]], ...] = (
    ("Pools", (
        RowSpec("P:D replicas", D + ("p_to_d_ratio",), "text"),
        RowSpec("prefill GPUs", D + ("prefill", "num_gpus"), "count"),
        RowSpec("decode GPUs", D + ("decode", "num_gpus"), "count"),
        RowSpec("prefill busy (mean over replicas)", D + ("prefill", "busy_fraction"), "pct"),
        RowSpec("decode busy (mean over replicas)", D + ("decode", "busy_fraction"), "pct"),
        RowSpec("prefill KV mean utilization", D + ("prefill", "kv_mean_utilization"), "pct"),
        RowSpec("decode KV mean utilization", D + ("decode", "kv_mean_utilization"), "pct"),
        RowSpec("prefill token hit rate", D + ("prefill", "token_hit_rate"), "pct", True),
    )),
    ("KV transfer", (
        RowSpec("link", D + ("kv_transfer", "link"), "text"),
        RowSpec("transfers", D + ("kv_transfer", "transfers"), "count"),
        RowSpec("GB moved", D + ("kv_transfer", "total_gb"), "float"),
        RowSpec("prompt KV already on the decode replica", D + ("kv_transfer", "decode_prefix_saved_fraction"),
                "pct", True),
        RowSpec("transfer p50 (ms)", D + ("kv_transfer", "time_ms", "p50"), "float", False),
        RowSpec("transfer p99 (ms)", D + ("kv_transfer", "time_ms", "p99"), "float", False),
        RowSpec("link wait p99 (ms)", D + ("kv_transfer", "link_wait_ms", "p99"), "float", False),
    )),
    ("TTFT split, mean (ms)", tuple(RowSpec(label, D + ("ttft_breakdown_ms", part, "mean"), "float", False)
                                    for part, label in TTFT_PARTS)),
)


def disaggregation_table(summaries: dict[str, dict[str, Any]]) -> Table | None:
    """The pools / transfer / TTFT-split table, or None when no framework is disaggregated."""
    if not any(lookup(s, D) for s in summaries.values()):
        return None
    return _metric_table("Prefill/decode disaggregation", PD_ROWS, summaries,
                         caption="Busy = share of the simulated time in engine steps. TTFT = queue + prefill + "
                                 "transfer + decode (finished requests after warm-up).")


def ttft_split(run, colors: dict[str, Any]):
    """Mean TTFT split per disaggregated framework: stacked horizontal bars."""
    from oracle.report.plots import Plot, _figure, _png, _style
    rows = [(fr.name, [lookup(fr.summary, D + ("ttft_breakdown_ms", part, "mean")) or 0.0 for part, _ in TTFT_PARTS])
            for fr in run.frameworks if lookup(fr.summary, D)]
    if not rows:
        return None
    with _style():
        fig, axes = _figure(1, 1, size=(12, 1.8 + 0.6 * len(rows)))
        ax = axes[0][0]
        left = np.zeros(len(rows))
        for k, (_, label) in enumerate(TTFT_PARTS):
            vals = np.array([r[1][k] for r in rows])
            ax.barh(np.arange(len(rows)), vals, left=left, label=label, color=f"C{k}")
            left += vals
        ax.set_yticks(np.arange(len(rows)), [r[0] for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel("mean time to first token (ms)")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("Where does the time to first token go? Prefill/decode disaggregation", fontsize=12)
        png = _png(fig)
    return Plot("ttft_split.png", "Mean TTFT of each disaggregated framework, split into queue, prefill, KV "
                "transfer and the decode pool's first step.", png)
