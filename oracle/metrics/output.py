"""Writing a :class:`~oracle.api.SimulationResult` to disk (atomically, see ``writers``), by
default under :func:`default_out_dir`."""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import polars as pl

from oracle.errors import ScenarioError
from oracle.metrics.columns import LEGACY_CSV_COLUMNS, STATUS_NAMES, Status
from oracle.metrics.writers import atomic_write, dumps, dumps_compact, make_staging_dir, publish, write_text


def legacy_csv_frame(requests: pl.DataFrame, *, style: str = "default") -> pl.DataFrame:
    """The original LLMPerfOracle's per-request CSV columns, in order, then this project's extras.

    ``style = "original"``: the values as the original wrote them (``oracle.metrics.original``)."""
    legacy = requests.select(
        pl.col("request_id"),
        pl.col("client").alias("client_id"),
        pl.col("session").alias("session_id"),
        pl.col("prompt_tokens"),
        pl.col("output_tokens").alias("max_output_tokens"),
        pl.when(pl.col("status") == STATUS_NAMES[Status.FINISHED]).then(pl.col("output_tokens")).otherwise(0)
        .alias("output_tokens"),
        pl.col("arrival_s").alias("arrival_time"),
        pl.col("first_token_s").alias("first_token_time"),
        pl.col("completion_s").alias("completion_time"),
        pl.col("status"),
        pl.col("ttft_ms"),
        pl.col("tpot_ms"),
        pl.col("e2e_ms").alias("e2e_latency_ms"),
        pl.col("cache_event").alias("prefix_cache_event"),
        pl.col("cached_tokens").alias("cached_prefix_length"),
        pl.col("prefilled_tokens").alias("tokens_actually_prefilled"),
    )
    if style == "original":
        from oracle.metrics.original import csv_values
        legacy = csv_values(legacy, requests)
    assert tuple(legacy.columns) == LEGACY_CSV_COLUMNS
    extras = requests.select(["turn", "replica", "admitted_s", "preemptions", "max_itl_ms", "computed_tokens",
                              "warm_up"])
    return pl.concat([legacy, extras], how="horizontal")


# Zstandard at level 1: about twice as fast to write as polars' default level, and the
# files come out less than 1 % bigger (the per-request columns compress little either way).
PARQUET_OPTIONS = {"compression": "zstd", "compression_level": 1}


# --format values: parquet is always written; the others add files (see write_framework)
FORMATS = ("parquet", "csv", "vllm-bench", "prometheus")
NEEDS_STEPS = ("vllm-bench", "prometheus")   # built from the steps table (token times, gauges)
VLLM_BENCH_FILE = "vllm_bench.json"
PROMETHEUS_FILE = "metrics.prom"


def parse_formats(fmt) -> tuple[str, ...]:
    """``"csv,prometheus"`` or a list of names -> the formats, checked against :data:`FORMATS`."""
    items = fmt if isinstance(fmt, (list, tuple)) else [fmt]
    out: list[str] = []
    for item in items:
        for f in str(item).split(","):
            f = f.strip()
            if not f:
                continue
            if f not in FORMATS:
                raise ScenarioError(f"--format must be one of {', '.join(FORMATS)} (comma-separated), got {f!r}")
            if f not in out:
                out.append(f)
    return tuple(out) or ("parquet",)


def write_framework(fr, folder: Path, *, fmt, steps: bool, style: str = "default", scenario=None,
                    start_time_s: float | None = None, model_name: str | None = None) -> None:
    formats = parse_formats(fmt)
    folder.mkdir(parents=True, exist_ok=True)
    fr.requests.write_parquet(folder / "requests.parquet", **PARQUET_OPTIONS)
    if steps and fr.steps is not None:
        fr.steps.write_parquet(folder / "steps.parquet", **PARQUET_OPTIONS)
    if "csv" in formats:
        legacy_csv_frame(fr.requests, style=style).write_csv(folder / "requests.csv")
    if "vllm-bench" in formats:
        from oracle.metrics.vllm_bench import vllm_bench_result  # lazy: only with --format vllm-bench
        fw = scenario.framework(fr.name)
        write_text(folder / VLLM_BENCH_FILE, dumps_compact(vllm_bench_result(
            scenario, fr, max_num_batched_tokens=fw.max_num_batched_tokens)))
    if "prometheus" in formats:
        from oracle.metrics.prometheus import openmetrics_text  # lazy: only with --format prometheus
        blocks = fr.summary["kv_cache"]["num_gpu_blocks"]
        write_text(folder / PROMETHEUS_FILE, openmetrics_text(
            scenario, fr, model_name=model_name or scenario.model.name, start_time_s=float(start_time_s),
            num_gpu_blocks=-1 if blocks is None or fr.summary["kv_cache"]["unlimited"] else int(blocks)))
    write_text(folder / "summary.json", dumps(fr.summary))


def default_out_dir(sc) -> Path:
    """Where a scenario's results go without ``--out``: ``[output].dir`` (relative to the
    working directory), else ``runs/<scenario name>``."""
    if sc.output.dir:
        d = Path(sc.output.dir)
        return d if d.is_absolute() else (Path.cwd() / d)
    return Path.cwd() / "runs" / sc.name


def prometheus_start(result, start_time_s: float | None) -> float:
    """Unix time of simulated t = 0: as given, else so that the run ends now (whole seconds)."""
    if start_time_s is not None:
        return float(start_time_s)
    end = max((fr.summary["simulation"]["total_duration_s"] for fr in result.frameworks.values()), default=0.0)
    return float(math.floor(time.time() - end))


def write_results(result, *, out_dir: str | Path | None = None, format=None,
                  start_time_s: float | None = None) -> Path:
    """Write ``out_dir/<framework>/{summary.json, requests.parquet[, steps.parquet, requests.csv,
    vllm_bench.json, metrics.prom]}`` and, with several frameworks, ``out_dir/comparison.parquet``.
    ``format``: ``"parquet"`` (default), ``"csv"``, ``"vllm-bench"``, ``"prometheus"``, or several
    (comma-separated or a list). ``start_time_s``: Unix time of simulated t = 0 in
    ``metrics.prom`` (default: the run ends now). Returns ``out_dir``."""
    sc = result.scenario
    dest = Path(out_dir) if out_dir is not None else default_out_dir(sc)
    formats = parse_formats(format or sc.output.format)
    fmt = "csv" if "csv" in formats else "parquet"    # the legacy extra copies below
    start = prometheus_start(result, start_time_s) if "prometheus" in formats else None
    several = len(result.frameworks) > 1
    staging = make_staging_dir(dest)
    names = []
    try:
        for name, fr in result.frameworks.items():
            write_framework(fr, staging / name, fmt=formats, steps=fr.steps is not None, style=sc.output.style,
                            scenario=sc, start_time_s=start,
                            model_name=f"{sc.model.name}/{name}" if several else sc.model.name)
            names.append(name)
        if len(result.frameworks) > 1:
            result.comparison().write_parquet(staging / "comparison.parquet")
            names.append("comparison.parquet")
        if sc.path is not None and sc.path.suffix == ".toml" and sc.path.exists():
            write_text(staging / "scenario.toml", sc.path.read_text(encoding="utf-8"))
            names.append("scenario.toml")
        elif sc.raw:   # converted in memory (a benchmark tool's config, an original-tool config) or a dict
            write_text(staging / "scenario.toml", _scenario_toml(sc))
            names.append("scenario.toml")
        publish(staging, dest, names)  # holds Ctrl-C/SIGTERM while it swaps; removes the staging folder
    except BaseException:  # also a signal that lands between writing and publishing
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _write_extra_copies(result, fmt)
    return dest


def _scenario_toml(sc) -> str:
    """The scenario as simulated, for a run whose scenario did not come from a TOML file."""
    from oracle.legacy import toml_writer
    src = f" converted from {sc.path.name}" if sc.path is not None else ""
    try:
        return toml_writer.dumps(sc.raw, header=[f"The scenario of this run{src}, as simulated (written by "
                                                 "`oracle simulate`).", ""])
    except (TypeError, ValueError):   # a value TOML cannot hold: keep the run, skip the copy
        return f"# The scenario of this run{src} could not be written as TOML.\n"


def _write_extra_copies(result, fmt: str) -> None:
    """``[output].summary_json`` / ``requests_csv``: copies of the first framework's results at
    the paths an original-LLMPerfOracle config names (each written atomically)."""
    out = result.scenario.output
    fr = result.first
    if out.summary_json:
        atomic_write(Path(out.summary_json), dumps(fr.summary))
    if out.requests_csv:
        atomic_write(Path(out.requests_csv), lambda p: legacy_csv_frame(fr.requests, style=out.style).write_csv(p))
