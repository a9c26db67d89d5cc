"""``oracle report RUN_DIR``: tables, JSON, plots and an HTML page for a results folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oracle.errors import OracleError

from oracle.commands import user_errors
from oracle.commands._options import JsonOpt

RunDirArg = Annotated[list[Path], typer.Argument(help="Results folder written by `oracle simulate` (or one "
                                                      "framework's folder in it, or an `oracle sweep` folder); or "
                                                      "`vllm bench serve` result JSON files to put side by side "
                                                      "(the first is the baseline).", show_default=False)]


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
        latency/goodput plots against each swept variable. JSON files in the layout of `vllm
        bench serve --save-result` (a real run's, or vllm_bench.json from `oracle simulate
        --format vllm-bench`) are shown side by side, the first as the baseline.

        Examples:
          oracle report runs/chat
          oracle report runs/chat --plots
          oracle report runs/chat --json > report.json
          oracle report runs/sweep-rate --html
          oracle report measured.json runs/bench/vllm/vllm_bench.json
        """
        with user_errors():
            from oracle.report.bench import is_bench_file   # lazy: polars, rich (see oracle.commands)
            if any(is_bench_file(p) for p in run_dir):
                bad = [p for p in run_dir if not is_bench_file(p)]
                if bad:
                    raise OracleError("give either one results folder or vllm bench serve JSON files, not both",
                                      file=bad[0])
                if plots or html:
                    raise OracleError("--plots and --html apply to results folders, not to JSON files",
                                      file=run_dir[0])
                from oracle.report.bench import report_bench
                report_bench(run_dir, json_out=json_out)
                return
            if len(run_dir) > 1:
                raise OracleError("one results folder at a time (several JSON files can be compared)",
                                  file=run_dir[1])
            from oracle.report import report_run   # lazy: polars, rich (see oracle.commands)
            report_run(run_dir[0], plots=plots, json_out=json_out, html=html)
