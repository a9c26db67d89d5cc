"""``oracle simulate SCENARIO``: run a scenario and write its results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from oracle.commands import user_errors
from oracle.commands._options import JsonOpt, OutDirOpt, QuietOpt, ScenarioArg, SeedOpt
from oracle.errors import ScenarioError


def register(app: typer.Typer) -> None:
    @app.command("simulate")
    def simulate(
        scenario: ScenarioArg,
        out: OutDirOpt = None,
        seed: SeedOpt = None,
        format: Annotated[Optional[str], typer.Option("--format", help="Output format: parquet (default) or csv "
                                                      "(adds requests.csv in the original tool's layout).")] = None,
        json_out: JsonOpt = False,
        quiet: QuietOpt = False,
        steps: Annotated[Optional[bool], typer.Option("--steps/--no-steps", help="Write steps.parquet (one row "
                                                      "per engine step); default from \\[output].steps.")] = None,
        report: Annotated[bool, typer.Option("--report", help="Print the full report (and write plots) at the "
                                             "end.")] = False,
        max_memory: Annotated[Optional[float], typer.Option("--max-memory", help="Refuse runs estimated to need "
                                                            "more than this many GiB.")] = None,
    ) -> None:
        """Simulate every framework of a scenario over one shared workload.

        Writes DIR/<framework>/summary.json and requests.parquet (steps.parquet with --steps,
        requests.csv with --format csv) atomically, and comparison.parquet with several frameworks.

        Examples:
          oracle simulate scenarios/quickstart.toml
          oracle simulate scenarios/chat_prefix_cache.toml --out runs/chat --json
          oracle simulate old_experiment.yaml --format csv
        """
        with user_errors():
            _run(scenario, out, seed, format, json_out, quiet, steps, report, max_memory)


def _run(scenario, out, seed, fmt, json_out, quiet, steps, report, max_memory) -> None:
    # lazy: numpy, polars (~0.4 s) and, for the engine, numba (see oracle.commands)
    from oracle.api import as_scenario, simulate
    from oracle.metrics.output import default_out_dir
    from oracle.metrics.writers import dumps
    if fmt is not None and fmt not in ("parquet", "csv"):
        raise ScenarioError(f"--format must be parquet or csv, got {fmt!r}")
    if max_memory is not None and not 0 < max_memory < float("inf"):
        raise ScenarioError(f"--max-memory must be a positive number of GiB, got {max_memory:g}")
    sc = as_scenario(scenario, seed=seed)
    show_progress = not (quiet or json_out) and sys.stderr.isatty()
    dest = Path(out) if out is not None else default_out_dir(sc)
    if show_progress:
        from rich.console import Console   # lazy: rich (~0.05 s)
        console = Console(stderr=True)
        with console.status("starting") as status:
            res = simulate(sc, out_dir=dest, format=fmt, record_steps=steps,
                           max_memory_bytes=int(max_memory * 2**30) if max_memory is not None else None,
                           progress=lambda msg: status.update(msg))
    else:
        res = simulate(sc, out_dir=dest, format=fmt, record_steps=steps,
                       max_memory_bytes=int(max_memory * 2**30) if max_memory is not None else None)
    if json_out:
        typer.echo(dumps(res.summary if len(res.frameworks) == 1 else res.summaries), nl=False)
    elif not quiet:
        from oracle.commands._tables import print_summary   # lazy: rich
        print_summary(res, dest)
    if report:
        from oracle.report import report_run   # lazy: polars, rich
        report_run(dest, plots=True, json_out=False)
