"""Reports of results folders: terminal tables, a JSON document, PNG plots and ``report.html``.

    from oracle.report import report_run
    doc = report_run("runs/chat", plots=True, json_out=False)   # prints the tables, writes plots

``RUN_DIR`` is what ``oracle simulate`` wrote (``RUN_DIR/<framework>/summary.json`` ...), one
framework's folder, or what ``oracle sweep`` wrote (``RUN_DIR/sweep.parquet``). Files written:

- ``RUN_DIR/plots/*.png`` with ``plots=True``: latency CDFs, throughput / queue / KV cache over
  simulated time, prefix-cache events, and for a sweep one picture per swept variable;
- ``RUN_DIR/report.html`` with ``html=True`` or ``plots=True``: the tables and the plots
  (inlined as base64 PNG) on one self-contained page.

Every number comes from ``summary.json`` (or ``sweep.parquet``); the terminal only rounds it,
and the JSON document carries it unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from oracle.metrics.compare import lookup
from oracle.metrics.writers import atomic_write, dumps
from oracle.report.html import render_page
from oracle.report.load import load_run
from oracle.report.plots import run_plots
from oracle.report.sweep import sweep_json, sweep_plots, sweep_table
from oracle.report.tables import comparison_json, run_tables, to_rich

__all__ = ["report_run", "build_report"]

PLOTS_DIR = "plots"
HTML_NAME = "report.html"
SWEEP_ROWS_TERMINAL = 60   # rows of the sweep table printed (all are in the JSON document)
SWEEP_ROWS_HTML = 2000


def build_report(run_dir: str | Path) -> tuple[dict[str, Any], list, Any]:
    """Read ``run_dir``; return (JSON document, tables, the loaded folder). Writes nothing."""
    run = load_run(run_dir)
    summaries = run.summaries
    doc: dict[str, Any] = {
        "run_dir": str(run.path),
        "scenario": run.scenario_name,
        "frameworks": list(summaries),
        "baseline": next(iter(summaries), None),
        "summaries": summaries,
    }
    tables = run_tables(summaries) if summaries else []
    if len(summaries) > 1:
        doc["comparison"] = comparison_json(summaries)
    if run.sweep is not None:
        doc["sweep"] = sweep_json(run.sweep)
        tables.append(sweep_table(run.sweep, max_rows=SWEEP_ROWS_TERMINAL))
    return doc, tables, run


def report_run(run_dir: str | Path, *, plots: bool, json_out: bool, html: bool = False,
               console=None) -> dict[str, Any]:
    """Report on a results folder.

    Prints the tables (rich) or, with ``json_out``, one JSON document (the summaries unchanged,
    the comparison with relative differences vs the first framework, the sweep points) to
    stdout. ``plots`` writes ``RUN_DIR/plots/*.png`` and ``report.html``; ``html`` writes
    ``report.html`` alone. Returns the JSON document (with ``files``: what was written).
    Raises :class:`OracleError` when ``run_dir`` is missing or holds no results.
    """
    doc, tables, run = build_report(run_dir)
    files: dict[str, Any] = {"plots": [], "html": None}
    figures = []
    if plots or html:
        figures = run_plots(run)
        if run.sweep is not None:
            figures += sweep_plots(run.sweep)
    if plots:
        folder = run.path / PLOTS_DIR
        for p in figures:
            files["plots"].append(str(atomic_write(folder / p.name, p.png)))
    if plots or html:
        page_tables = tables
        if run.sweep is not None:
            page_tables = tables[:-1] + [sweep_table(run.sweep, max_rows=SWEEP_ROWS_HTML)]
        page = render_page(_title(doc), _meta(doc, run), page_tables, figures, scenario_text=_scenario_text(run))
        files["html"] = str(atomic_write(run.path / HTML_NAME, page.encode("utf-8")))
    doc["files"] = files
    if json_out:
        sys.stdout.write(dumps(doc))
        sys.stdout.flush()
    else:
        _print(tables, doc, run, files, console)
    return doc


def _scenario_text(run) -> str | None:
    """The run's scenario.toml (written by `oracle simulate`), shown beside the report."""
    from oracle.report.load import SCENARIO
    path = run.path / SCENARIO
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _title(doc: dict[str, Any]) -> str:
    return f"LLMPerfOracle report: {doc.get('scenario') or Path(doc['run_dir']).name}"


def _meta(doc: dict[str, Any], run) -> list[str]:
    lines = [f"Results folder: {doc['run_dir']}"]
    if run.frameworks:
        s = run.frameworks[0].summary
        model, gpu = lookup(s, ("config", "model")), lookup(s, ("config", "gpu"))
        head = f"{model} on {gpu}; " if model and gpu else ""
        lines.append(f"{head}frameworks: {', '.join(doc['frameworks'])} (first = baseline of comparisons); "
                     f"seed {s.get('seed')}.")
    if "sweep" in doc:
        sw = doc["sweep"]
        lines.append(f"Sweep: {sw['rows']} rows; swept: {', '.join(sw['swept_variables']) or 'nothing'}.")
    return lines


def _print(tables, doc, run, files, console) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or a pipe: no terminal to fit, keep one row per line
            console = Console(width=max(console.width, 240))
    console.print(f"[bold]{_title(doc)}[/bold]")
    for line in _meta(doc, run):
        console.print(line, highlight=False)
    for t in tables:
        console.print()
        console.print(to_rich(t))
    if files["plots"]:
        n = len(files["plots"])
        console.print(f"\n{n} plot{'s' if n != 1 else ''} in {run.path / PLOTS_DIR}", highlight=False)
    if files["html"]:
        console.print(f"report page: {files['html']}", highlight=False)
