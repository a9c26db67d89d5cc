"""Plots per replica and of the prefix-cache hit rate over simulated time.

* :func:`prefix_hit_rate_over_time`: per framework, the share of prompt tokens found in the
  prefix cache by the requests admitted in each time bin (vLLM's ``prefix_cache_hits /
  prefix_cache_queries`` over the bin);
* :func:`per_replica`: one picture per framework, one line per replica (vLLM's engine index):
  requests running, requests waiting, KV-cache usage (blocks in use / usable blocks, as
  ``vllm:kv_cache_usage_perc``) and the prefix-cache token hit rate. Needs steps.parquet for the
  first three (``oracle simulate --steps``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oracle.metrics.compare import lookup
from oracle.report import series
from oracle.report.load import FrameworkRun, RunFolder
from oracle.report.plots import (TIME_BINS, Plot, _end_time, _figure, _figure_legend, _png, _shade_warm_up,
                                  _stairs, _style, _warm_up, thousands)

MAX_REPLICAS_SHOWN = 16


def _hit_rate(df, edges: np.ndarray, mask=None, *, with_host: bool = False) -> np.ndarray:
    """Token hit rate of the requests first admitted in each bin (NaN where none was);
    ``with_host``: GPU hits plus the tokens loaded from a KV offload tier."""
    adm = df["admitted_s"].to_numpy().astype(np.float64)
    cached = df["cached_tokens"].to_numpy().astype(np.float64)
    if with_host:
        cached = cached + df["host_cached_tokens"].to_numpy().astype(np.float64)
    prompt = df["prompt_tokens"].to_numpy().astype(np.float64)
    keep = np.isfinite(adm) if mask is None else (np.isfinite(adm) & mask)
    hits, _ = np.histogram(adm[keep], bins=edges, weights=cached[keep])
    queries, _ = np.histogram(adm[keep], bins=edges, weights=prompt[keep])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(queries > 0, 100.0 * hits / queries, np.nan)


def prefix_hit_rate_over_time(run: RunFolder, colors: dict[str, Any]) -> Plot | None:
    frs = [fr for fr in run.frameworks if fr.has_requests and lookup(fr.summary, ("prefix_caching", "enabled"))]
    if not frs:
        return None
    edges = series.bin_edges(_end_time(run), target_bins=TIME_BINS)
    width = edges[1] - edges[0]
    with _style():
        fig, axes = _figure(1, 1, size=(12, 4.2))
        ax = axes[0][0]
        _shade_warm_up(ax, _warm_up(run), label=True)
        for fr in frs:
            req = fr.requests()
            _stairs(ax, _hit_rate(req, edges), edges, color=colors[fr.name], lw=1.6, label=fr.name)
            if "host_cached_tokens" in req.columns:  # a KV offload tier: GPU + host hits, dashed
                _stairs(ax, _hit_rate(req, edges, with_host=True), edges, color=colors[fr.name], lw=1.2,
                        ls="--", label=f"{fr.name}: GPU + host tier")
        ax.set_ylim(0, 100)
        ax.set_xlim(0, edges[-1])
        ax.set_ylabel("prompt tokens from the cache (%)")
        ax.set_xlabel("simulated time (s)")
        ax.set_title(f"Prefix-cache token hit rate of the requests admitted in each {width:g} s bin "
                     "(prefix_cache_hits / prefix_cache_queries)")
        _figure_legend(fig, ax, title=None)
        fig.suptitle("Is the prefix cache paying off? Token hit rate over simulated time", fontsize=12)
        png = _png(fig)
    return Plot("prefix_hit_rate_over_time.png", "Share of prompt tokens served from the prefix cache over "
                "simulated time, per framework.", png)


def _replica_colors(n: int):
    import matplotlib
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(0.1 + 0.8 * i / max(n - 1, 1)) for i in range(n)]


def per_replica(run: RunFolder, fr: FrameworkRun) -> Plot | None:
    """Running, waiting, KV usage and prefix hit rate per replica of one framework."""
    steps = fr.steps() if fr.has_steps else None
    if steps is None or not steps.height:
        return None
    rep = steps["replica"].to_numpy().astype(np.int64)
    replicas = sorted(int(r) for r in np.unique(rep))
    shown = replicas[:MAX_REPLICAS_SHOWN]
    edges = series.bin_edges(_end_time(run), target_bins=TIME_BINS)
    at = steps["start_s"].to_numpy() + steps["duration_s"].to_numpy()
    blocks = lookup(fr.summary, ("kv_cache", "num_gpu_blocks"))
    usable = (int(blocks) - 1) if blocks and not lookup(fr.summary, ("kv_cache", "unlimited")) else None
    req = fr.requests() if fr.has_requests else None
    cols = _replica_colors(len(shown))
    rows = 4 if req is not None and lookup(fr.summary, ("prefix_caching", "enabled")) else 3
    with _style():
        fig, axes = _figure(rows, 1, size=(12, 2.6 * rows + 1), sharex=True)
        axs = [a[0] for a in axes]
        warm = _warm_up(run)
        for i, ax in enumerate(axs):
            _shade_warm_up(ax, warm, label=i == 0)
        for r, c in zip(shown, cols):
            m = rep == r
            one = np.zeros(m.sum(), np.int64)
            label = f"replica {r}"
            _stairs(axs[0], series.step_state_mean(one, at[m], steps["num_running"].to_numpy()[m], edges), edges,
                    color=c, lw=1.3, label=label)
            _stairs(axs[1], series.step_state_mean(one, at[m], steps["num_waiting"].to_numpy()[m], edges), edges,
                    color=c, lw=1.3)
            used = series.step_state_mean(one, at[m], steps["kv_blocks_used"].to_numpy()[m], edges)
            if usable:
                _stairs(axs[2], 100.0 * used / usable, edges, color=c, lw=1.3)
            else:
                _stairs(axs[2], used, edges, color=c, lw=1.3)
            if rows == 4:
                mask = req["replica"].to_numpy() == r
                _stairs(axs[3], _hit_rate(req, edges, mask), edges, color=c, lw=1.3)
        axs[0].set_ylabel("running")
        axs[0].set_title("vllm:num_requests_running: requests in the batch")
        axs[1].set_ylabel("waiting")
        axs[1].set_title("vllm:num_requests_waiting: requests queued for admission")
        if usable:
            axs[2].set_ylabel("KV cache used (%)")
            axs[2].set_ylim(0, 100)
            axs[2].set_title("vllm:kv_cache_usage_perc: blocks in use / usable blocks")
        else:
            axs[2].set_ylabel("KV blocks in use")
            axs[2].set_title("KV blocks in use (unlimited cache)")
        if rows == 4:
            axs[3].set_ylabel("token hit rate (%)")
            axs[3].set_ylim(0, 100)
            axs[3].set_title("prefix_cache_hits / prefix_cache_queries of the requests admitted in each bin")
        for ax in axs[:2]:
            ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
            thousands(ax.yaxis)
        axs[-1].set_xlabel("simulated time (s)")
        axs[-1].set_xlim(0, edges[-1])
        _figure_legend(fig, axs[0], title=None)
        more = f" (the first {len(shown)} of {len(replicas)})" if len(shown) < len(replicas) else ""
        fig.suptitle(f"{fr.name}: each replica over simulated time{more}", fontsize=12)
        png = _png(fig)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in fr.name)
    return Plot(f"replicas_{safe}.png", f"{fr.name}: requests running and waiting, KV-cache usage and prefix-cache "
                "hit rate per replica (vLLM's engine index) over simulated time.", png)


def replica_plots(run: RunFolder) -> list[Plot]:
    return [p for p in (per_replica(run, fr) for fr in run.frameworks) if p is not None]
