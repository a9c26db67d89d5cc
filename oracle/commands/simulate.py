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
    @app.command("simulate", context_settings={"allow_extra_args": True})
    def simulate(
        ctx: typer.Context,
        scenario: ScenarioArg,
        out: OutDirOpt = None,
        seed: SeedOpt = None,
        format: Annotated[Optional[str], typer.Option("--format", help="Output formats, comma-separated: parquet "
                                                      "(default, always written), csv (adds requests.csv in the "
                                                      "original tool's layout), vllm-bench (adds vllm_bench.json, "
                                                      "the JSON `vllm bench serve` writes), prometheus (adds "
                                                      "metrics.prom: vLLM's metrics over time in OpenMetrics text, "
                                                      "for `promtool tsdb create-blocks-from openmetrics`).")] = None,
        json_out: JsonOpt = False,
        quiet: QuietOpt = False,
        steps: Annotated[Optional[bool], typer.Option("--steps/--no-steps", help="Write steps.parquet (one row "
                                                      "per engine step); default from \\[output].steps.")] = None,
        report: Annotated[bool, typer.Option("--report", help="Print the full report (and write plots) at the "
                                             "end.")] = False,
        max_memory: Annotated[Optional[float], typer.Option("--max-memory", help="Refuse runs estimated to need "
                                                            "more than this many GiB.")] = None,
        start_time: Annotated[Optional[str], typer.Option("--start-time", help="Wall-clock time of simulated t = 0 "
                                                          "in metrics.prom (ISO 8601 or Unix seconds); default: the "
                                                          "run ends now.")] = None,
    ) -> None:
        """Simulate every framework of a scenario over one shared workload.

        Writes DIR/<framework>/summary.json and requests.parquet (steps.parquet with --steps,
        requests.csv with --format csv, vllm_bench.json with --format vllm-bench, metrics.prom
        with --format prometheus) atomically, and comparison.parquet with several frameworks.

        Examples:
          oracle simulate scenarios/quickstart.toml
          oracle simulate scenarios/chat_prefix_cache.toml --out runs/chat --json
          oracle simulate old_experiment.yaml --format csv
          oracle simulate scenarios/closed_loop.toml --format vllm-bench,prometheus
          oracle simulate bench.sh                  # a file with a `vllm bench serve` command
          oracle simulate -- vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --num-prompts 200
        """
        with user_errors():
            from oracle.importers import detect, import_file, load_imported
            imp = None
            if ctx.args:
                imp = _command_import(scenario, ctx.args)
            elif detect(Path(scenario)) is not None:
                imp = import_file(Path(scenario))
            if imp is not None:
                if format is None and imp.tool == "vllm bench serve":
                    format = "vllm-bench"     # the result next to the real run's, in its format
                if imp.several:
                    _run_benchmarks(imp, out, seed, format, json_out, quiet)
                    return
                scenario = load_imported(imp)
            _run(scenario, out, seed, format, json_out, quiet, steps, report, max_memory, start_time)


def _command_import(first, rest: list[str]):
    """``oracle simulate -- vllm bench serve ...`` (or ``-- guidellm run ...``): the command's import."""
    from oracle.importers import import_args, is_command
    words = [str(first), *rest]
    if not is_command(words):
        raise ScenarioError(f"unexpected arguments {' '.join(rest)!r}: give a scenario file, or a command as "
                            "`oracle simulate -- vllm bench serve ...` or `-- guidellm run ...`")
    return import_args(words)


def _run_benchmarks(imp, out, seed, fmt, json_out, quiet) -> None:
    """Every benchmark of a spec (GuideLLM rate lists, sweeps) into OUT/<benchmark>/, one table."""
    from oracle.importers import load_imported
    from oracle.importers.runner import benchmarks_table, run_benchmarks
    from oracle.metrics.writers import dumps
    load_imported(imp)          # the warnings, and the first benchmark validated before anything runs
    name = imp.source.stem if imp.source is not None else "guidellm"
    dest = Path(out) if out is not None else Path.cwd() / "runs" / name
    say = None
    if not (quiet or json_out) and sys.stderr.isatty():
        say = lambda msg: typer.echo(msg, err=True)   # noqa: E731
    results = run_benchmarks(imp, out_dir=dest, format=fmt, seed=seed, progress=say)
    if json_out:
        typer.echo(dumps({label: res.summary for label, res in results}), nl=False)
    elif not quiet:
        from rich.console import Console

        from oracle.report.tables import to_rich
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 160))
        console.print(to_rich(benchmarks_table(results)))
        console.print(f"{len(results)} benchmarks; results in {dest}/<benchmark>/", highlight=False)


def parse_start_time(text: str | None) -> float | None:
    """Unix seconds from ``--start-time`` (a number, or ISO 8601; naive times are UTC)."""
    if text is None:
        return None
    import datetime
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ScenarioError(f"--start-time must be Unix seconds or an ISO 8601 time, got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


def _run(scenario, out, seed, fmt, json_out, quiet, steps, report, max_memory, start_time=None) -> None:
    # lazy: numpy, polars (~0.4 s) and, for the engine, numba (see oracle.commands)
    from oracle.api import as_scenario, simulate
    from oracle.metrics.output import NEEDS_STEPS, default_out_dir, parse_formats
    from oracle.metrics.writers import dumps
    if fmt is not None:
        fmt = parse_formats(fmt)
        if steps is False and set(fmt) & set(NEEDS_STEPS):
            raise ScenarioError("--format vllm-bench / prometheus are built from the steps table; drop --no-steps")
    start_s = parse_start_time(start_time)
    if max_memory is not None and not 0 < max_memory < float("inf"):
        raise ScenarioError(f"--max-memory must be a positive number of GiB, got {max_memory:g}")
    sc = as_scenario(scenario, seed=seed)
    show_progress = not (quiet or json_out) and sys.stderr.isatty()
    dest = Path(out) if out is not None else default_out_dir(sc)
    if show_progress:
        from rich.console import Console   # lazy: rich (~0.05 s)
        console = Console(stderr=True)
        with console.status("starting") as status:
            res = simulate(sc, out_dir=dest, format=fmt, record_steps=steps, start_time_s=start_s,
                           max_memory_bytes=int(max_memory * 2**30) if max_memory is not None else None,
                           progress=lambda msg: status.update(msg))
    else:
        res = simulate(sc, out_dir=dest, format=fmt, record_steps=steps, start_time_s=start_s,
                       max_memory_bytes=int(max_memory * 2**30) if max_memory is not None else None)
    if json_out:
        typer.echo(dumps(res.summary if len(res.frameworks) == 1 else res.summaries), nl=False)
    elif not quiet:
        from oracle.commands._tables import print_summary   # lazy: rich
        print_summary(res, dest)
    if report:
        from oracle.report import report_run   # lazy: polars, rich
        report_run(dest, plots=True, json_out=False)
