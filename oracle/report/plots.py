"""PNG plots of a simulate run folder (matplotlib, Agg backend, no display needed).

Each function returns a :class:`Plot` (file name, a caption that says what the picture
answers, the PNG bytes) or ``None`` when its data is missing. Colours are fixed per framework
(:func:`framework_colors`, in the scenario's order) across every picture of a report.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import polars as pl

from oracle.metrics.columns import STATUS_NAMES, Status
from oracle.metrics.compare import lookup
from oracle.report import series
from oracle.report.load import FrameworkRun, RunFolder
from oracle.report.tables import EVENT_LABELS

DPI = 100
TIME_BINS = 90  # about this many bins across the simulated time
WARM_UP_COLOUR = "0.92"
REFERENCE_COLOUR = "0.35"


@dataclass
class Plot:
    name: str      # file name, e.g. "latency_cdf.png"
    caption: str   # the question the picture answers
    png: bytes


RC = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
    "grid.linewidth": 0.6, "figure.facecolor": "white", "axes.facecolor": "white", "savefig.facecolor": "white",
}


def _style():
    """The report's matplotlib style, for the duration of one figure. Figures are plain
    ``Figure`` objects rendered by Agg: a report never touches pyplot or the caller's backend."""
    import matplotlib   # lazy: matplotlib (~0.35 s) only for --plots/--html
    return matplotlib.rc_context(RC)


def framework_colors(names: Sequence[str]) -> dict[str, Any]:
    """Fixed colour per framework: tab10 in order (tab20 past ten frameworks)."""
    import matplotlib   # lazy: see _style
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _figure(nrows: int, ncols: int, *, size: tuple[float, float], sharex: bool = False):
    from matplotlib.figure import Figure   # lazy: see _style
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg   # lazy: see _style
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _use_log(values: Sequence[np.ndarray]) -> bool:
    v = np.concatenate([x for x in values if x.size]) if any(x.size for x in values) else np.empty(0)
    if v.size == 0 or v.min() <= 0:
        return False
    lo, hi = np.percentile(v, [1, 99.9])
    return hi / max(lo, 1e-12) > 12


def _cdf_points(v: np.ndarray, max_points: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF (x sorted, y = i/n), thinned to ~max_points with the tail kept."""
    v = np.sort(v)
    n = v.size
    y = np.arange(1, n + 1) / n
    if n <= max_points:
        return v, y
    body = np.linspace(0, 0.99, max_points * 2 // 3)
    tail = 1 - np.logspace(-2, np.log10(1 / n), max_points // 3)
    idx = np.unique(np.clip(np.round(np.concatenate((body, tail)) * (n - 1)).astype(np.int64), 0, n - 1))
    return v[idx], y[idx]


def _framework_label(fr: FrameworkRun) -> str:
    return fr.name


def _finished_after_warm_up(df):
    cond = pl.col("status") == STATUS_NAMES[Status.FINISHED]
    if "warm_up" in df.columns:
        cond = cond & ~pl.col("warm_up")
    return df.filter(cond)


def plain_log_ticks(axis) -> None:
    """Log-axis labels as plain numbers (20, 50, 100, 1,000), never ``2×10^1``: ticks at 1-2-5
    steps over up to ~1.5 decades, 1-3 steps up to 3.5, powers of ten beyond."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter   # lazy: see _style
    lo, hi = sorted(axis.get_view_interval())
    decades = np.log10(hi / lo) if lo > 0 and hi > 0 else 10.0
    subs = (1.0, 2.0, 5.0) if decades <= 1.6 else (1.0, 3.0) if decades <= 3.5 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _stairs(ax, values: np.ndarray, edges: np.ndarray, **kw) -> None:
    """A binned series as steps (no drop to zero at the ends)."""
    ax.stairs(values, edges, baseline=None, **kw)


def _figure_legend(fig, ax, *, title: str | None = "framework") -> None:
    """One legend for the whole figure, below the plots (never over the data)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=legend_columns(labels, fig), title=title,
                   frameon=False)


def legend_columns(labels: Sequence[str], fig) -> int:
    """As many entries per row as fit the figure's width (about 12 legend characters per inch)."""
    width_chars = fig.get_figwidth() * 12
    per_entry = max(len(lab) for lab in labels) + 5
    return max(1, min(len(labels), int(width_chars // per_entry)))


def _mark_slo(ax, slo_ms: float, data_max: float, log: bool) -> None:
    """A dashed SLO line; when the SLO lies far beyond the data, a note at the right edge instead
    (stretching the axis would squash every curve against the left)."""
    far = slo_ms > data_max * (3.0 if log else 1.6)
    if not far:
        ax.axvline(slo_ms, color=REFERENCE_COLOUR, ls="--", lw=1.2)
        ax.annotate(f"SLO {slo_ms:g} ms", xy=(slo_ms, 0.04), xycoords=("data", "axes fraction"), xytext=(4, 0),
                    textcoords="offset points", fontsize=8.5, color=REFERENCE_COLOUR)
    else:
        ax.annotate(f"SLO {slo_ms:g} ms: beyond the axis,\nevery request is under it \u2192", xy=(0.98, 0.06),
                    xycoords="axes fraction", ha="right", fontsize=8.5, color=REFERENCE_COLOUR)


def thousands(axis) -> None:
    """Tick labels with thousands separators (25,000)."""
    from matplotlib.ticker import FuncFormatter   # lazy: see _style
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 1000 or v == int(v) else f"{v:g}"))


# ---------------------------------------------------------------------------------------------
def latency_cdf(run: RunFolder, colors: dict[str, Any]) -> Plot | None:
    """TTFT, TPOT and E2E CDFs, one line per framework, SLO marked."""
    frs = [fr for fr in run.frameworks if fr.has_requests]
    if not frs:
        return None
    panels = (("ttft_ms", "Time to first token", "ttft_ms"), ("tpot_ms", "Time per output token", "tpot_ms"),
              ("e2e_ms", "End-to-end latency", "e2e_ms"))
    data = {}
    for fr in frs:
        df = _finished_after_warm_up(fr.requests())
        data[fr.name] = {col: (lambda a: a[np.isfinite(a)])(df[col].to_numpy().astype(np.float64))
                         for col, _, _ in panels}
    slo = lookup(frs[0].summary, ("goodput", "slo")) or {}
    with _style():
        fig, axes = _figure(1, 3, size=(14, 4.6))
        for ax, (col, title, slo_key) in zip(axes[0], panels):
            vals = [data[fr.name][col] for fr in frs]
            log = _use_log(vals)
            for fr in frs:
                v = data[fr.name][col]
                if v.size == 0:
                    continue
                x, y = _cdf_points(v)
                ax.plot(x, y, color=colors[fr.name], lw=1.8, label=_framework_label(fr), drawstyle="steps-post")
            if log:
                ax.set_xscale("log")
                plain_log_ticks(ax.xaxis)
            for q, lab in ((0.5, "p50"), (0.99, "p99")):
                ax.axhline(q, color="0.6", lw=0.8, ls=":")
                ax.annotate(lab, xy=(0, q), xycoords=("axes fraction", "data"), xytext=(2, 2),
                            textcoords="offset points", fontsize=8, color="0.4")
            if slo.get(slo_key) is not None:
                _mark_slo(ax, float(slo[slo_key]), max((float(v.max()) for v in vals if v.size), default=0.0), log)
            ax.set_ylim(0, 1.01)
            ax.set_title(title)
            ax.set_xlabel(f"{title.lower()} (ms{', log scale' if log else ''})")
            ax.set_ylabel("share of requests at or below x")
        _figure_legend(fig, axes[0][0])
        fig.suptitle("How quickly are requests served? Latency CDFs per framework (finished requests after "
                     "warm-up)", fontsize=12)
        png = _png(fig)
    return Plot("latency_cdf.png", "Latency CDFs (TTFT, TPOT, E2E) per framework; further left = faster, "
                "dashed line = SLO.", png)


def _end_time(run: RunFolder) -> float:
    ends = [float(lookup(fr.summary, ("simulation", "total_duration_s")) or 0) for fr in run.frameworks]
    for fr in run.frameworks:
        if fr.has_requests:
            df = fr.requests()
            c = df["completion_s"].to_numpy().astype(np.float64)
            if np.isfinite(c).any():
                ends.append(float(np.nanmax(c)))
    return max(ends) if ends else 1.0


def _warm_up(run: RunFolder) -> float:
    return float(lookup(run.frameworks[0].summary, ("simulation", "warm_up_duration_s")) or 0.0)


def _shade_warm_up(ax, warm: float, *, label: bool) -> None:
    if warm > 0:
        ax.axvspan(0, warm, color=WARM_UP_COLOUR, zorder=0, label="warm-up (not in the summary)" if label else None)


def throughput_over_time(run: RunFolder, colors: dict[str, Any]) -> Plot | None:
    """Completed requests/s (with the arrival rate) and output tokens/s over simulated time."""
    frs = [fr for fr in run.frameworks if fr.has_requests]
    if not frs:
        return None
    edges = series.bin_edges(_end_time(run), target_bins=TIME_BINS)
    width = edges[1] - edges[0]
    warm = _warm_up(run)
    with _style():
        fig, axes = _figure(2, 1, size=(12, 7), sharex=True)
        ax_req, ax_tok = axes[0][0], axes[1][0]
        _shade_warm_up(ax_req, warm, label=True)
        _shade_warm_up(ax_tok, warm, label=False)
        first = frs[0].requests()
        _stairs(ax_req, series.event_rate(first["arrival_s"].to_numpy(), edges), edges, color=REFERENCE_COLOUR,
                lw=1.2, ls="--", label="arrivals (offered load)")
        for fr in frs:
            df = fr.requests()
            done = df.filter(df["status"] == STATUS_NAMES[Status.FINISHED])
            completed = series.event_rate(done["completion_s"].to_numpy(), edges)
            tokens = series.spread_rate(done["first_token_s"].to_numpy(), done["completion_s"].to_numpy(),
                                        done["output_tokens"].to_numpy(), edges)
            _stairs(ax_req, completed, edges, color=colors[fr.name], lw=1.6, label=fr.name)
            _stairs(ax_tok, tokens, edges, color=colors[fr.name], lw=1.6, label=fr.name)
        ax_req.set_ylabel("requests per second")
        to = f" to {frs[0].name}" if len(frs) > 1 else ""  # follow-up turns arrive after their parent ends
        ax_req.set_title(f"Completed requests per second; dashed: arrivals{to} ({width:g} s bins)")
        _figure_legend(fig, ax_req, title=None)
        ax_tok.set_ylabel("output tokens per second")
        ax_tok.set_title("Output tokens generated per second (each request's tokens spread over its decode)")
        ax_tok.set_xlabel("simulated time (s)")
        ax_tok.set_xlim(0, edges[-1])
        for ax in (ax_req, ax_tok):
            ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
            thousands(ax.yaxis)
        fig.suptitle("Is the deployment keeping up with the load? Throughput over simulated time", fontsize=12)
        png = _png(fig)
    return Plot("throughput_over_time.png", "Completed requests/s against the arrival rate, and output tokens/s, "
                "over simulated time.", png)


def _queue_series(fr: FrameworkRun, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    steps = fr.steps()
    if steps is not None and steps.height and {"num_waiting", "num_running"} <= set(steps.columns):
        at = steps["start_s"].to_numpy() + steps["duration_s"].to_numpy()
        rep = steps["replica"].to_numpy()
        return (series.step_state_mean(rep, at, steps["num_waiting"].to_numpy(), edges),
                series.step_state_mean(rep, at, steps["num_running"].to_numpy(), edges), "steps.parquet")
    df = fr.requests()
    arrival = df["arrival_s"].to_numpy().astype(np.float64)
    admitted = df["admitted_s"].to_numpy().astype(np.float64)
    completion = df["completion_s"].to_numpy().astype(np.float64)
    rejected = (df["status"] == STATUS_NAMES[Status.REJECTED]).to_numpy()
    wait_end = np.where(rejected, arrival, admitted)
    return (series.interval_mean(arrival, wait_end, edges), series.interval_mean(admitted, completion, edges),
            "requests.parquet")


def queue_over_time(run: RunFolder, colors: dict[str, Any]) -> Plot | None:
    """Requests waiting for admission and running in the batch, summed over replicas."""
    frs = [fr for fr in run.frameworks if fr.has_requests or fr.has_steps]
    if not frs:
        return None
    edges = series.bin_edges(_end_time(run), target_bins=TIME_BINS)
    warm = _warm_up(run)
    with _style():
        fig, axes = _figure(2, 1, size=(12, 7), sharex=True)
        ax_w, ax_r = axes[0][0], axes[1][0]
        _shade_warm_up(ax_w, warm, label=True)
        _shade_warm_up(ax_r, warm, label=False)
        sources = set()
        for fr in frs:
            waiting, running, src = _queue_series(fr, edges)
            sources.add(src)
            _stairs(ax_w, waiting, edges, color=colors[fr.name], lw=1.6, label=fr.name)
            _stairs(ax_r, running, edges, color=colors[fr.name], lw=1.6, label=fr.name)
        ax_w.set_ylabel("requests waiting")
        ax_w.set_title("Queue: requests waiting for admission (incl. preempted ones), all replicas"
                       if sources == {"steps.parquet"} else
                       "Queue: requests between arrival and first admission, all replicas")
        ax_r.set_ylabel("requests running")
        ax_r.set_title("Batch: requests admitted and running, all replicas")
        ax_r.set_xlabel("simulated time (s)")
        ax_r.set_xlim(0, edges[-1])
        for ax in (ax_w, ax_r):
            ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))  # "no queue" stays flat, not a magnified blip
            thousands(ax.yaxis)
        _figure_legend(fig, ax_w, title=None)
        fig.suptitle("Is a queue building up? Time-averaged queue and batch size over simulated time "
                     f"(from {', '.join(sorted(sources))})", fontsize=12)
        png = _png(fig)
    return Plot("queue_over_time.png", "Requests waiting and running over simulated time; a waiting line that "
                "keeps rising means the deployment is overloaded.", png)


def kv_over_time(run: RunFolder, colors: dict[str, Any]) -> Plot | None:
    """KV blocks used and cached over time (needs steps.parquet), with capacity lines."""
    frs = [fr for fr in run.frameworks if fr.has_steps and fr.steps().height]
    if not frs:
        return None
    edges = series.bin_edges(_end_time(run), target_bins=TIME_BINS)
    warm = _warm_up(run)
    with _style():
        fig, axes = _figure(2, 1, size=(12, 7), sharex=True)
        ax_u, ax_c = axes[0][0], axes[1][0]
        _shade_warm_up(ax_u, warm, label=True)
        _shade_warm_up(ax_c, warm, label=False)
        capacity_shown = False
        for fr in frs:
            st = fr.steps()
            at = st["start_s"].to_numpy() + st["duration_s"].to_numpy()
            rep = st["replica"].to_numpy()
            _stairs(ax_u, series.step_state_mean(rep, at, st["kv_blocks_used"].to_numpy(), edges), edges,
                        color=colors[fr.name], lw=1.6, label=fr.name)
            _stairs(ax_c, series.step_state_mean(rep, at, st["kv_blocks_cached"].to_numpy(), edges), edges,
                        color=colors[fr.name], lw=1.6, label=fr.name)
            blocks = lookup(fr.summary, ("kv_cache", "num_gpu_blocks"))
            replicas = lookup(fr.summary, ("config", "replicas")) or len(np.unique(rep))
            if blocks and not lookup(fr.summary, ("kv_cache", "unlimited")):
                cap = (int(blocks) - 1) * int(replicas)
                for ax in (ax_u, ax_c):
                    ax.axhline(cap, color=colors[fr.name], ls="--", lw=1.0, alpha=0.8)
                capacity_shown = True
        if capacity_shown:
            ax_u.plot([], [], color="0.3", ls="--", lw=1.0, label="capacity (usable blocks)")
        ax_u.set_ylabel("KV blocks in use")
        ax_u.set_title("Blocks held by running requests, all replicas")
        ax_c.set_ylabel("KV blocks with a cached prefix")
        ax_c.set_title("Blocks holding a reusable prefix hash (in use or evictable), all replicas")
        ax_c.set_xlabel("simulated time (s)")
        ax_c.set_xlim(0, edges[-1])
        for ax in (ax_u, ax_c):
            ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
            thousands(ax.yaxis)
        _figure_legend(fig, ax_u, title=None)
        fig.suptitle("How full is the KV cache? Blocks in use and cached over simulated time", fontsize=12)
        png = _png(fig)
    return Plot("kv_cache_over_time.png", "KV-cache blocks in use and holding cached prefixes over simulated "
                "time; dashed lines = capacity.", png)


def cache_events(run: RunFolder, colors: dict[str, Any]) -> Plot | None:
    """Prefix-cache outcome per admitted request: grouped horizontal bars, one per framework."""
    counts = {fr.name: {k: int(lookup(fr.summary, ("prefix_caching", "event_counts", k)) or 0) for k in EVENT_LABELS}
              for fr in run.frameworks}
    if not any(sum(c.values()) for c in counts.values()):
        return None
    names = list(counts)
    events = list(EVENT_LABELS)
    n = len(names)
    height = 0.8 / n
    with _style():
        fig, axes = _figure(1, 1, size=(12, 1.6 + 0.9 * len(events) * max(1.0, n / 2.5)))
        ax = axes[0][0]
        ymax = 0.0
        for i, name in enumerate(names):
            total = max(sum(counts[name].values()), 1)
            shares = np.array([100 * counts[name][e] / total for e in events])
            ys = np.arange(len(events)) - 0.4 + height * (i + 0.5)
            ax.barh(ys, shares, height=height * 0.92, color=colors[name], label=name)
            for y, s, e in zip(ys, shares, events):
                share = f"{s:.1f} %" if s >= 0.1 or s == 0 else "<0.1 %"
                ax.annotate(f"{counts[name][e]:,} ({share})", xy=(s, y), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=8)
            ymax = max(ymax, shares.max())
        ax.set_yticks(np.arange(len(events)), [EVENT_LABELS[e] for e in events])
        ax.invert_yaxis()
        ax.set_xlim(0, ymax * 1.2 + 8)  # room for the labels
        ax.set_xlabel("share of admitted requests after warm-up (%)")
        ax.grid(axis="y", visible=False)
        _figure_legend(fig, ax)
        ax.set_title("How did the prefix cache serve each request? Outcome at admission (count and share)",
                     fontsize=12)
        png = _png(fig)
    return Plot("cache_events.png", "Prefix-cache outcome per admitted request, per framework.", png)


def run_plots(run: RunFolder, colors: dict[str, Any] | None = None) -> list[Plot]:
    """Every picture that the folder's files allow, in reading order."""
    if not run.frameworks:
        return []
    colors = colors or framework_colors([fr.name for fr in run.frameworks])
    from oracle.report.disagg import ttft_split
    from oracle.report.replica_plots import prefix_hit_rate_over_time, replica_plots
    plots = [latency_cdf(run, colors), throughput_over_time(run, colors), queue_over_time(run, colors),
             kv_over_time(run, colors), prefix_hit_rate_over_time(run, colors), cache_events(run, colors),
             ttft_split(run, colors)]
    return [p for p in plots if p is not None] + replica_plots(run)
