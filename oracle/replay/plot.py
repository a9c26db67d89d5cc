"""``oracle replay --plot FILE``: predicted vs measured, one panel per metric (matplotlib, Agg).

Each point is one statistic (mean, p50, p90, p99) of one stage; the diagonal is a perfect
prediction and the grey band +-25 %. Overloaded stages are drawn hollow. Axes are
logarithmic when a panel spans more than a factor of 20.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from oracle.replay.common import LATENCY_METRICS, METRIC_LABELS, STATS

_MARKERS = {"mean": "o", "p50": "s", "p90": "^", "p99": "D"}
_PANELS = [(f"{m}_ms", f"{METRIC_LABELS[m]} (ms" + (", per token)" if m in ("tpot", "itl") else ")"))
           for m in LATENCY_METRICS] + [("throughput", "throughput (req/s)")]


def replay_figure_png(comparison: dict[str, Any]) -> bytes:
    """The figure as PNG bytes."""
    import matplotlib
    from matplotlib.figure import Figure
    from oracle.report.plots import RC

    stages = comparison["stages"]
    cmap = matplotlib.colormaps["tab10"]
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(15, 3.6), layout="constrained")
        axes = fig.subplots(1, len(_PANELS), squeeze=False)[0]
        for ax, (key, title) in zip(axes, _PANELS):
            xs, ys = [], []
            for i, st in enumerate(stages):
                colour = cmap(i % 10)
                rows = ({"mean": st["throughput"]["requests_per_s"]} if key == "throughput"
                        else st["metrics"][key])
                for stat in STATS:
                    row = rows.get(stat)
                    if not row or row.get("measured") is None or row.get("predicted") is None:
                        continue
                    m, p = row["measured"], row["predicted"]
                    if m <= 0 or p <= 0:
                        continue
                    ax.scatter([m], [p], marker=_MARKERS[stat], s=36,
                               facecolors="none" if st["overloaded"] else colour, edgecolors=colour,
                               label=None)
                    xs.append(m)
                    ys.append(p)
            ax.set_title(title)
            ax.set_xlabel("measured")
            if key == "ttft_ms":
                ax.set_ylabel("predicted")
            if not xs:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                continue
            lo, hi = min(xs + ys), max(xs + ys)
            log = hi / lo > 20
            if log:
                ax.set_xscale("log")
                ax.set_yscale("log")
                lo, hi = lo / 1.5, hi * 1.5
            else:
                pad = 0.1 * (hi - lo) or 0.1 * hi
                lo, hi = max(lo - pad, 0.0), hi + pad
            grid = [lo, hi]
            ax.fill_between(grid, [g * 0.75 for g in grid], [g * 1.25 for g in grid], color="0.9", zorder=0)
            ax.plot(grid, grid, color="0.35", lw=0.8, zorder=1)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        handles = [matplotlib.lines.Line2D([], [], ls="", marker=_MARKERS[s], color="0.3", label=s) for s in STATS]
        handles += [matplotlib.lines.Line2D([], [], ls="", marker="o", color=cmap(i % 10),
                                            label=st["label"] + (" (overloaded)" if st["overloaded"] else ""))
                    for i, st in enumerate(stages)]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
        fig.suptitle(f"oracle replay: {comparison['name']} ({comparison['server']['model']}, tp "
                     f"{comparison['server']['tp']}, {comparison['gpu']}): predicted vs measured (band: +-25 %)")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_plot(comparison: dict[str, Any], path: str | Path) -> Path:
    """Write the figure atomically to ``path`` (PNG)."""
    from oracle.metrics.writers import atomic_write  # lazy: keeps `oracle replay --help` light
    return atomic_write(Path(path), replay_figure_png(comparison))
