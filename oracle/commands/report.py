"""``oracle report RUN_DIR``: tables, JSON, plots and an HTML page for a results folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oracle.commands import user_errors
from oracle.commands._options import JsonOpt

RunDirArg = Annotated[Path, typer.Argument(help="Results folder written by `oracle simulate` (or one framework's "
                                                "folder in it, or an `oracle sweep` folder).", show_default=False)]


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        run_dir: RunDirArg,
        plots: Annotated[bool, typer.Option("--plots", help="Write PNG plots to RUN_DIR/plots/ and the HTML page "
                                            "RUN_DIR/report.html.")] = False,
        json_out: JsonOpt = False,
        html: Annotated[bool, typer.Option("--html", help="Write RUN_DIR/report.html (tables and plots on one "
                                           "self-contained page).")] = False,
    ) -> None:
        """Report on a results folder: latency percentiles, throughput, goodput, KV cache, prefix cache.

        With several frameworks, a comparison table shows each metric's relative difference vs
        the first framework. A sweep folder (sweep.parquet) gets a table of its points and
        latency/goodput plots against each swept variable.

        Examples:
          oracle report runs/chat
          oracle report runs/chat --plots
          oracle report runs/chat --json > report.json
          oracle report runs/sweep-rate --html
        """
        with user_errors():
            from oracle.report import report_run   # lazy: polars, rich (see oracle.commands)
            report_run(run_dir, plots=plots, json_out=json_out, html=html)
