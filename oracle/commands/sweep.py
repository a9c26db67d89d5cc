"""``oracle sweep SWEEP.toml`` and ``oracle search SCENARIO``: many simulations of one scenario."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from oracle.commands import user_errors
from oracle.commands._options import JsonOpt, QuietOpt, ScenarioArg

SweepArg = Annotated[Path, typer.Argument(help="Sweep file (TOML): base scenario + \\[grid] / \\[\\[points]] of "
                                               "overrides.", show_default=False)]
SweepOutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (overrides the sweep's "
                                                                          "\\[output].dir; default runs/<name>).")]


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep(
        sweep_file: SweepArg,
        out: SweepOutOpt = None,
        workers: Annotated[Optional[int], typer.Option("--workers", "-j", min=1, help="Worker processes (local) "
                                                       "or CPUs of a local Ray; default: all cores.")] = None,
        executor: Annotated[str, typer.Option("--executor", help="Where points run: local (process pool) or "
                                              "ray.")] = "local",
        ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster address "
                                                           "(ray.init(address=...)); default: a local Ray.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Skip points whose results are already in "
                                             "DIR/points/ (after an interruption or a grid extension).")] = False,
        json_out: JsonOpt = False,
        quiet: QuietOpt = False,
    ) -> None:
        """Run every point of a sweep (a grid or list of overrides over a base scenario).

        All points are validated first; a bad key or value names the point and exits 1 before
        anything runs. Each finished point is saved at once in DIR/points/; at the end
        DIR/sweep.parquet gets one row per point x repeat x framework (point, repeat, seed,
        framework, one column per overridden key, latency/throughput/goodput/cache metrics).

        Examples:
          oracle sweep scenarios/sweep_replicas_rate.toml
          oracle sweep scenarios/sweep_gpus.toml --workers 8 --out runs/gpus
          oracle sweep big.toml --resume
          oracle sweep big.toml --executor ray --ray-address auto
        """
        with user_errors():
            _run_sweep(sweep_file, out, workers, executor, ray_address, resume, json_out, quiet)

    @app.command("search")
    def search(
        scenario: ScenarioArg,
        vary: Annotated[str, typer.Option("--vary", help="What to search: rate (largest arrival-rate "
                                          "multiplier), replicas (fewest replicas), or prefill_replicas / decode_replicas (fewest replicas of one "
                                          "pool of a disaggregated framework).")] = "rate",
        slo_ttft_ms: Annotated[Optional[float], typer.Option("--slo-ttft-ms", help="TTFT objective in ms "
                                                             "(default: the scenario's \\[slo]).")] = None,
        slo_tpot_ms: Annotated[Optional[float], typer.Option("--slo-tpot-ms", help="TPOT objective in ms "
                                                             "(default: the scenario's \\[slo]).")] = None,
        goodput: Annotated[float, typer.Option("--goodput", help="Required fraction of requests meeting "
                                               "both objectives.")] = 0.99,
        framework: Annotated[Optional[str], typer.Option("--framework", help="Framework to search "
                                                         "(default: the first).")] = None,
        lo: Annotated[Optional[float], typer.Option("--lo", help="Lowest value to try (rate multiplier or "
                                                    "replicas; default 1).")] = None,
        hi: Annotated[Optional[float], typer.Option("--hi", help="Highest value to try.")] = None,
        tolerance: Annotated[float, typer.Option("--tolerance", help="Stop bisecting the rate when the "
                                                 "bracket is within this relative width.")] = 0.05,
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for search.parquet and "
                                                    "search.json (default runs/<scenario>-search-<vary>).")] = None,
        json_out: JsonOpt = False,
        quiet: QuietOpt = False,
    ) -> None:
        """Find the largest arrival rate (or the fewest replicas) whose goodput meets the SLOs.

        Doubles (or halves) until the goodput target is crossed, then bisects. Prints the
        answer and the measured curve, and writes search.parquet (one row per simulation)
        and search.json.

        Examples:
          oracle search scenarios/quickstart.toml --slo-ttft-ms 500 --slo-tpot-ms 50
          oracle search scenarios/quickstart.toml --slo-ttft-ms 500 --slo-tpot-ms 50 --vary replicas --lo 1 --hi 16
          oracle search scenarios/routers.toml --framework prefix-aware --goodput 0.95 --json
        """
        with user_errors():
            _run_search(scenario, vary, slo_ttft_ms, slo_tpot_ms, goodput, framework, lo, hi, tolerance, out,
                        json_out, quiet)


# -- sweep -----------------------------------------------------------------------------------
def _run_sweep(sweep_file, out, workers, executor, ray_address, resume, json_out, quiet) -> None:
    from oracle.metrics.writers import dumps   # lazy: numpy, polars (~0.4 s; see oracle.commands)
    from oracle.sweep.run import run_sweep
    show = not (quiet or json_out) and sys.stderr.isatty()
    try:
        if show:
            res = _with_progress(lambda progress, validated: run_sweep(
                sweep_file, out_dir=out, workers=workers, executor=executor, ray_address=ray_address,
                resume=resume, progress=progress, on_validated=validated))
        else:
            res = run_sweep(sweep_file, out_dir=out, workers=workers, executor=executor, ray_address=ray_address,
                            resume=resume)
    except KeyboardInterrupt:
        typer.echo("interrupted: finished points are kept in the output folder's points/; rerun with --resume "
                   "to continue", err=True)
        raise typer.Exit(code=130) from None
    if json_out:
        typer.echo(dumps({"name": res.spec.name, "out": str(res.out_dir), "table": str(res.path),
                          "points": res.num_points, "tasks": res.num_tasks, "rows": res.table.height,
                          "run": res.num_run, "reused": res.num_reused, "executor": res.executor,
                          "workers": res.workers, "wall_time_s": res.wall_time_s}), nl=False)
    elif not quiet:
        _print_sweep(res)


def _with_progress(fn):
    from rich.console import Console   # lazy: rich (~0.1 s with its progress bars)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn
    console = Console(stderr=True)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console,
                  transient=True) as bar:
        tid = bar.add_task("validating points", total=None)

        def validated(num_points: int, num_todo: int) -> None:
            bar.update(tid, description=f"{num_points} points; runs")

        def progress(done: int, total: int) -> None:
            bar.update(tid, completed=done, total=total)

        return fn(progress, validated)


def _print_sweep(res, max_rows: int = 20) -> None:
    from rich.console import Console   # lazy: rich, polars (see oracle.commands)
    from rich.table import Table

    from oracle.sweep.run import override_columns
    df = res.table
    shown = ["point", "repeat", "framework", *override_columns(res.spec), "ttft_p99_ms", "tpot_p99_ms",
             "throughput_rps", "goodput_fraction"]
    if df["repeat"].max() == 0:
        shown.remove("repeat")
    if df["framework"].n_unique() == 1:
        shown.remove("framework")
    labels = {"ttft_p99_ms": "TTFT p99", "tpot_p99_ms": "TPOT p99", "throughput_rps": "req/s",
              "goodput_fraction": "goodput"}
    table = Table(title=f"sweep {res.spec.name} (latencies in ms)")
    for c in shown:
        head = labels.get(c, _short(c))
        table.add_column(head, justify="right" if df[c].dtype.is_numeric() else "left", min_width=len(head))
    for row in df.head(max_rows).iter_rows(named=True):
        table.add_row(*(f"{100 * row[c]:.1f} %" if c == "goodput_fraction" and row[c] is not None
                        else _cell(row[c]) for c in shown))
    console = Console()
    console.print(table)
    if df.height > max_rows:
        console.print(f"... {df.height - max_rows} more rows")
    reused = f" ({res.num_reused} reused)" if res.num_reused else ""
    console.print(f"{res.num_points} points, {res.num_tasks} runs{reused}, {df.height} rows in "
                  f"{res.wall_time_s:.1f} s on {res.workers} {res.executor} worker(s); results in {res.path}")


def _short(column: str) -> str:
    """``workload.clients.0.arrival.rate`` -> ``arrival.rate`` (a narrow header)."""
    parts = [p for p in column.split(".") if not p.isdigit()]
    return ".".join(parts[-2:]) if len(parts) > 1 else column


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


# -- search ----------------------------------------------------------------------------------
def _run_search(scenario, vary, ttft, tpot, goodput, framework, lo, hi, tolerance, out, json_out, quiet) -> None:
    from oracle.metrics.writers import dumps   # lazy: numpy, polars (~0.4 s; see oracle.commands)
    from oracle.sweep.search import search
    show = not (quiet or json_out) and sys.stderr.isatty()
    kwargs = dict(vary=vary, slo_ttft_ms=ttft, slo_tpot_ms=tpot, goodput=goodput, framework=framework, lo=lo,
                  hi=hi, tolerance=tolerance)
    if show:
        from rich.console import Console   # lazy: rich (~0.05 s)
        with Console(stderr=True).status("searching") as status:
            res = search(scenario, progress=lambda msg: status.update(msg), **kwargs)
    else:
        res = search(scenario, **kwargs)
    dest = _write_search(res, out, vary)
    if json_out:
        typer.echo(dumps({**res.to_dict(), "out": str(dest)}), nl=False)
    elif not quiet:
        _print_search(res, dest)


def _write_search(res, out, vary) -> Path:
    from oracle.metrics.output import default_out_dir   # lazy: polars (see oracle.commands)
    from oracle.metrics.writers import atomic_write, dumps
    if out is None:
        base = default_out_dir(res.scenario)
        out = base.with_name(f"{base.name}-search-{vary}")
    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    atomic_write(dest / "search.parquet", res.table.write_parquet)
    atomic_write(dest / "search.json", dumps(res.to_dict()))
    return dest


def _print_search(res, dest: Path) -> None:
    from rich.console import Console   # lazy: rich (~0.05 s)
    from rich.table import Table
    console = Console()
    slo = ", ".join(f"{'TTFT' if k == 'ttft_ms' else 'TPOT'} <= {v:g} ms" for k, v in res.slo.items())
    goal = f"{slo}, goodput >= {100 * res.target:g} %"
    table = Table(title=f"{res.framework}: goodput vs {'rate multiplier' if res.vary == 'rate' else 'replicas'}")
    for c in ("value", "sessions/s", "goodput", "TTFT p99", "TPOT p99", "req/s", "GPUs", "ok"):
        table.add_column(c, justify="right")
    for r in res.table.iter_rows(named=True):
        table.add_row(f"{r['value']:.4g}" if res.vary == "rate" else str(r["value"]),
                      _cell(r["offered_sessions_per_s"]), f"{100 * r['goodput_fraction']:.2f} %",
                      _cell(r["ttft_p99_ms"]), _cell(r["tpot_p99_ms"]), _cell(r["throughput_rps"]),
                      _cell(r["num_gpus"]), "yes" if r["passed"] else "no")
    console.print(table)
    d = res.to_dict()
    if res.vary == "rate":
        if res.answer is None:
            console.print(f"no rate meets {goal}: even x{min(p['value'] for p in res.points):.4g} fails")
        else:
            rate = f" ({d['answer_sessions_per_s']:.4g} sessions/s)" if d["answer_sessions_per_s"] else ""
            bound = "at least " if res.status == "hi_passes" else ""
            nxt = f"; x{res.neighbour:.4g} fails" if res.neighbour is not None else ""
            console.print(f"largest rate meeting {goal}: {bound}x{res.answer:.4g}{rate}{nxt}")
    else:
        if res.answer is None:
            console.print(f"no replica count up to {max(p['value'] for p in res.points)} meets {goal}")
        else:
            nxt = f"; {res.neighbour} fail" if res.neighbour is not None else ""
            console.print(f"fewest replicas meeting {goal}: {res.answer}{nxt}")
    console.print(f"{len(res.points)} simulations in {res.wall_time_s:.1f} s; results in {dest}")
