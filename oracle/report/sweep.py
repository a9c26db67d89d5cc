"""Report of a sweep folder (``sweep.parquet``: one row per point x framework x seed).

The table is read generically: every column with a dotted name (``workload.clients.0.arrival.rate``)
is an override; those whose values vary are the swept variables. Metric columns are the
numeric columns without a dot (``ttft_p50_ms``, ``goodput_fraction``, ...). Seeds (and any other
repeated rows) are averaged; the plots shade their min-max range.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from oracle.report.plots import (REFERENCE_COLOUR, Plot, _figure, _png, _style, framework_colors, legend_columns,
                                 plain_log_ticks)
from oracle.report.tables import Cell, Table, fmt_float

FRAMEWORK = "framework"
ID_COLUMNS = {"seed", "repeat", "point", "point_id", "point_index", "index", "run", "run_id"}

# metric column -> (label, kind); the order is the table's column order
KNOWN_METRICS = {
    "throughput_rps": ("req/s", "float"),
    "output_tokens_per_s": ("out tok/s", "float"),
    "ttft_p50_ms": ("TTFT p50 (ms)", "float"),
    "ttft_p99_ms": ("TTFT p99 (ms)", "float"),
    "tpot_p50_ms": ("TPOT p50 (ms)", "float"),
    "tpot_p99_ms": ("TPOT p99 (ms)", "float"),
    "itl_p99_ms": ("ITL p99 (ms)", "float"),
    "e2e_p50_ms": ("E2E p50 (ms)", "float"),
    "e2e_p99_ms": ("E2E p99 (ms)", "float"),
    "goodput_rps": ("goodput req/s", "float"),
    "goodput_fraction": ("goodput", "pct"),
    "token_hit_rate": ("token hit", "pct"),
    "host_token_hit_rate": ("host hit", "pct"),
    "preemptions": ("preempt.", "count"),
}
TABLE_METRICS = ("throughput_rps", "ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "e2e_p99_ms",
                 "goodput_fraction", "token_hit_rate", "preemptions")
LATENCY_FAMILIES = (("ttft", "Time to first token", "slo.ttft_ms"), ("tpot", "Time per output token", "slo.tpot_ms"),
                    ("e2e", "End-to-end latency", "slo.e2e_ms"))
MAX_PANEL_ROWS = 4   # small multiples: one row of panels per value of the other swept variables
MAX_SERIES = 8       # one framework: one line per value of the other swept variable


def swept_variables(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if "." in c and df[c].drop_nulls().n_unique() > 1]


def constant_overrides(df: pl.DataFrame) -> dict[str, Any]:
    return {c: df[c].drop_nulls()[0] for c in df.columns
            if "." in c and df.height and df[c].drop_nulls().n_unique() == 1}


def metric_columns(df: pl.DataFrame) -> list[str]:
    cols = [c for c in df.columns if "." not in c and c != FRAMEWORK and c.lower() not in ID_COLUMNS
            and df.schema[c].is_numeric()]
    known = [c for c in KNOWN_METRICS if c in cols]
    return known + [c for c in cols if c not in known]


def frameworks(df: pl.DataFrame) -> list[str]:
    if FRAMEWORK not in df.columns:
        return ["run"]
    return [str(v) for v in df[FRAMEWORK].unique(maintain_order=True)]


def aggregate(df: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Mean / min / max of every metric over the rows sharing ``by`` (seeds), plus ``n_rows``."""
    if FRAMEWORK not in df.columns:
        df = df.with_columns(pl.lit("run").alias(FRAMEWORK))
    keys = [*by, FRAMEWORK]
    metrics = metric_columns(df)
    aggs = [pl.len().alias("n_rows")]
    for m in metrics:
        aggs += [pl.col(m).cast(pl.Float64).mean().alias(m), pl.col(m).cast(pl.Float64).min().alias(f"{m}__min"),
                 pl.col(m).cast(pl.Float64).max().alias(f"{m}__max")]
    out = df.group_by(keys, maintain_order=True).agg(aggs)
    return out.sort(by, maintain_order=True) if by else out


def sweep_json(df: pl.DataFrame) -> dict[str, Any]:
    swept = swept_variables(df)
    agg = aggregate(df, swept)
    metrics = metric_columns(df)
    return {
        "rows": df.height,
        "swept_variables": swept,
        "fixed_overrides": {k: _plain(v) for k, v in constant_overrides(df).items()},
        "frameworks": frameworks(df),
        "metrics": metrics,
        "points": [{**{k: _plain(r[k]) for k in [*swept, FRAMEWORK]}, "n_rows": int(r["n_rows"]),
                    **{m: _plain(r[m]) for m in metrics}} for r in agg.iter_rows(named=True)],
    }


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _fmt_cell(v: Any, kind: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "\u2013"
    if kind == "var":
        return f"{v:g}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if kind == "pct":
            return f"{100 * v:.1f} %"
        if kind == "count" and float(v).is_integer():
            return f"{int(v):,}"
        return fmt_float(float(v))
    return str(v)


def sweep_table(df: pl.DataFrame, *, max_rows: int | None = None) -> Table:
    swept = swept_variables(df)
    agg = aggregate(df, swept)
    metrics = [m for m in TABLE_METRICS if m in agg.columns] or metric_columns(df)[:8]
    seeds = int(agg["n_rows"].max()) if agg.height else 0
    t = Table(title=f"Sweep: {agg.height} point x framework rows"
                    + (f" (mean of {seeds} seeds each)" if seeds > 1 else ""),
              columns=[*short_names(swept), FRAMEWORK, *[KNOWN_METRICS.get(m, (m, "float"))[0] for m in metrics]],
              caption=f"Swept: {', '.join(swept) or 'nothing varies'}. Metrics: mean over seeds.")
    rows = list(agg.iter_rows(named=True))
    shown = rows if max_rows is None else rows[:max_rows]
    for r in shown:
        cells = [Cell(_fmt_cell(r[v], "var"), r[v]) for v in swept] + [Cell(str(r[FRAMEWORK]), style="bold")]
        cells += [Cell(_fmt_cell(r[m], KNOWN_METRICS.get(m, (m, "float"))[1]), r[m]) for m in metrics]
        t.add_row(cells)
    if len(shown) < len(rows):
        t.caption = (t.caption or "") + f" {len(rows) - len(shown)} more rows not shown; see sweep.parquet."
    return t


def short_names(names: list[str]) -> list[str]:
    """The shortest dotted suffix of each name that is still unique (``arrival.rate``)."""
    parts = [n.split(".") for n in names]
    out = []
    for p in parts:
        k = 1
        while k < len(p) and sum(q[-k:] == p[-k:] for q in parts) > 1:
            k += 1
        while k < len(p) and p[-k].isdigit():  # "0.tp" says less than "frameworks.0.tp"
            k += 1
        out.append(".".join(p[-k:]))
    return out


def _var_label(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    unit = ("requests/s" if last == "rate" else "s" if last.endswith("_s") else "ms" if last.endswith("_ms")
            else "tokens" if last.endswith("tokens") else None)
    return f"{name} ({unit})" if unit else name


def _x_positions(values: list[Any]) -> tuple[np.ndarray, list[str] | None, bool]:
    """Numeric x (log when it spans > 20x) or categorical positions with labels."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        x = np.asarray(values, np.float64)
        log = bool(x.size and x.min() > 0 and x.max() / x.min() >= 10)
        return x, None, log
    labels = [str(v) for v in values]
    return np.arange(len(values), dtype=np.float64), labels, False


def sweep_plots(df: pl.DataFrame) -> list[Plot]:
    """One picture per swept variable: P50/P99 latency and goodput vs the variable."""
    swept = swept_variables(df)
    if not swept or df.height == 0:
        return []
    names = frameworks(df)
    colors = framework_colors(names)
    fixed = constant_overrides(df)
    return [p for p in (_sweep_plot(df, var, [v for v in swept if v != var], names, colors, fixed) for var in swept)
            if p is not None]


def _panels(df: pl.DataFrame) -> list[tuple[str, str, list[tuple[str, str]], str | None]]:
    """(title, y label, [(column, linestyle)], SLO column) for the metrics present."""
    panels = []
    families = [f for f in LATENCY_FAMILIES if f"{f[0]}_p50_ms" in df.columns or f"{f[0]}_p99_ms" in df.columns]
    if len(families) > 2:  # TTFT and TPOT say what the SLO judges; E2E only stands in for a missing one
        families = [f for f in families if f[0] != "e2e"]
    for fam, title, slo in families:
        cols = [(f"{fam}_p50_ms", "-"), (f"{fam}_p99_ms", "--")]
        cols = [c for c in cols if c[0] in df.columns]
        if cols:
            panels.append((f"{title}: P50 (solid), P99 (dashed)", "ms", cols, slo))
    if "goodput_fraction" in df.columns:
        panels.append(("Goodput: share of requests meeting the SLO", "% of requests", [("goodput_fraction", "-")],
                       None))
    elif "goodput_rps" in df.columns:
        panels.append(("Goodput: requests/s meeting the SLO", "requests/s", [("goodput_rps", "-")], None))
    return panels


def _wide_range(agg: pl.DataFrame, cols: list[str]) -> bool:
    """Latency spanning more than 30x (a saturating point) reads better on a log axis."""
    v = np.concatenate([agg[c].to_numpy().astype(np.float64) for c in cols])
    v = v[np.isfinite(v)]
    return bool(v.size and v.min() > 0 and v.max() / v.min() > 30)


def _line_groups(df: pl.DataFrame, names: list[str], colors: dict[str, Any], others: list[str]):
    """(rows of panels, lines per panel, variables averaged over, legend title).

    Lines are one per framework (its fixed colour). With a single framework and one other
    swept variable of few values, lines are one per value of that variable instead (a
    sequential colour map), so a 2-D grid reads as one row of panels.
    """
    if len(names) == 1 and len(others) == 1:
        values = df[others[0]].drop_nulls().unique().sort().to_list()
        if 1 < len(values) <= MAX_SERIES:
            import matplotlib   # lazy: see oracle.report.plots._style
            cmap = matplotlib.colormaps["viridis"]
            short = short_names([others[0]])[0]
            lines = [(f"{short} = {_fmt_cell(v, 'var')}", cmap(0.9 * k / max(1, len(values) - 1)), {others[0]: v})
                     for k, v in enumerate(values)]
            return [{}], lines, [], others[0]
    lines = [(n, colors[n], {FRAMEWORK: n} if FRAMEWORK in df.columns else {}) for n in names]
    if others:
        uniq = df.select(others).unique(maintain_order=True).sort(others)
        if uniq.height <= MAX_PANEL_ROWS:
            return list(uniq.iter_rows(named=True)), lines, [], "framework"
        return [{}], lines, others, "framework"
    return [{}], lines, [], "framework"


def _where(df: pl.DataFrame, cond: dict[str, Any]) -> pl.DataFrame:
    for k, v in cond.items():
        df = df.filter(pl.col(k) == v)
    return df


def _sweep_plot(df, var, others, names, colors, fixed) -> Plot | None:
    panels = _panels(df)
    if not panels:
        return None
    rows, lines, aggregated_over, legend_title = _line_groups(df, names, colors, others)
    from matplotlib.lines import Line2D   # lazy: see oracle.report.plots._style
    with _style():
        fig, axes = _figure(len(rows), len(panels), size=(4.6 * len(panels) + 0.6, 3.9 * len(rows) + 0.8))
        for i, row in enumerate(rows):
            sub = _where(df, row)
            for j, (title, ylabel, cols, slo_col) in enumerate(panels):
                ax = axes[i][j]
                shown = []
                for label, colour, cond in lines:
                    part = aggregate(_where(sub, cond), [var])
                    if part.height == 0:
                        continue
                    shown.append(part)
                    x, labels, log = _x_positions(part[var].to_list())
                    order = np.argsort(x, kind="stable")
                    for col, ls in cols:
                        scale = 100.0 if col == "goodput_fraction" else 1.0
                        y = part[col].to_numpy().astype(np.float64)[order] * scale
                        ax.plot(x[order], y, ls=ls, marker="o", ms=3.5, lw=1.7, color=colour,
                                label=label if ls == "-" else None)
                        if int(part["n_rows"].max()) > 1:
                            lo = part[f"{col}__min"].to_numpy().astype(np.float64)[order] * scale
                            hi = part[f"{col}__max"].to_numpy().astype(np.float64)[order] * scale
                            ax.fill_between(x[order], lo, hi, color=colour, alpha=0.12, lw=0)
                    if log:
                        ax.set_xscale("log")
                        ax.minorticks_off()
                    if labels is not None:
                        ax.set_xticks(x, labels, rotation=20)
                    elif log or x.size <= 8:
                        ax.set_xticks(x, [f"{v:g}" for v in x])
                if slo_col and fixed.get(slo_col) is not None:
                    ax.axhline(float(fixed[slo_col]), color=REFERENCE_COLOUR, ls=":", lw=1.2)
                    ax.annotate(f"SLO {float(fixed[slo_col]):g} ms", xy=(0.01, float(fixed[slo_col])),
                                xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points",
                                fontsize=8, color=REFERENCE_COLOUR)
                if cols[0][0] == "goodput_fraction":
                    ax.set_ylim(-2, 105)
                elif shown and _wide_range(pl.concat(shown), [c for c, _ in cols]):
                    ax.set_yscale("log")
                    plain_log_ticks(ax.yaxis)
                    ylabel += ", log scale"
                else:
                    ax.set_ylim(bottom=0)
                condition = ", ".join(f"{k} = {_fmt_cell(v, 'var')}" for k, v in row.items())
                if i == 0:  # the metric once per column, then only what changes from row to row
                    ax.set_title(f"{title}\n{condition}" if condition else title, fontsize=10)
                else:
                    ax.set_title(condition, fontsize=10)
                ax.set_ylabel(ylabel)
                if i == len(rows) - 1:
                    ax.set_xlabel(_var_label(var))
        handles, labels = axes[0][0].get_legend_handles_labels()
        if any(len(cols) > 1 for _, _, cols, _ in panels):
            handles += [Line2D([], [], color="0.3", ls="-"), Line2D([], [], color="0.3", ls="--")]
            labels += ["P50", "P99"]
        fig.legend(handles, labels, loc="outside lower center", ncols=legend_columns(labels, fig), frameon=False,
                   title=None if legend_title == "framework" and len(lines) > 1 else
                   (f"{legend_title} ({names[0]})" if legend_title != "framework" else None))
        note = f" (averaged over {', '.join(aggregated_over)})" if aggregated_over else ""
        fig.suptitle(f"How do latency and goodput change with {var}?{note}", fontsize=12)
        png = _png(fig)
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in var)
    per = "framework" if legend_title == "framework" else legend_title
    return Plot(f"sweep_{safe}.png", f"P50/P99 latency and goodput vs {var}, one line per {per}.", png)
