"""Writing a :class:`~oracle.api.SimulationResult` to disk (atomically, see ``writers``), by
default under :func:`default_out_dir`."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from oracle.metrics.columns import LEGACY_CSV_COLUMNS, STATUS_NAMES, Status
from oracle.metrics.writers import atomic_write, dumps, make_staging_dir, publish, write_text


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


def write_framework(fr, folder: Path, *, fmt: str, steps: bool, style: str = "default") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fr.requests.write_parquet(folder / "requests.parquet", **PARQUET_OPTIONS)
    if steps and fr.steps is not None:
        fr.steps.write_parquet(folder / "steps.parquet", **PARQUET_OPTIONS)
    if fmt == "csv":
        legacy_csv_frame(fr.requests, style=style).write_csv(folder / "requests.csv")
    write_text(folder / "summary.json", dumps(fr.summary))


def default_out_dir(sc) -> Path:
    """Where a scenario's results go without ``--out``: ``[output].dir`` (relative to the
    working directory), else ``runs/<scenario name>``."""
    if sc.output.dir:
        d = Path(sc.output.dir)
        return d if d.is_absolute() else (Path.cwd() / d)
    return Path.cwd() / "runs" / sc.name


def write_results(result, *, out_dir: str | Path | None = None, format: str | None = None) -> Path:
    """Write ``out_dir/<framework>/{summary.json, requests.parquet[, steps.parquet, requests.csv]}``
    and, with several frameworks, ``out_dir/comparison.parquet``. Returns ``out_dir``."""
    sc = result.scenario
    dest = Path(out_dir) if out_dir is not None else default_out_dir(sc)
    fmt = format or sc.output.format
    staging = make_staging_dir(dest)
    names = []
    try:
        for name, fr in result.frameworks.items():
            write_framework(fr, staging / name, fmt=fmt, steps=fr.steps is not None, style=sc.output.style)
            names.append(name)
        if len(result.frameworks) > 1:
            result.comparison().write_parquet(staging / "comparison.parquet")
            names.append("comparison.parquet")
        if sc.path is not None and sc.path.suffix == ".toml" and sc.path.exists():
            write_text(staging / "scenario.toml", sc.path.read_text(encoding="utf-8"))
            names.append("scenario.toml")
        publish(staging, dest, names)  # holds Ctrl-C/SIGTERM while it swaps; removes the staging folder
    except BaseException:  # also a signal that lands between writing and publishing
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _write_extra_copies(result, fmt)
    return dest


def _write_extra_copies(result, fmt: str) -> None:
    """``[output].summary_json`` / ``requests_csv``: copies of the first framework's results at
    the paths an original-LLMPerfOracle config names (each written atomically)."""
    out = result.scenario.output
    fr = result.first
    if out.summary_json:
        atomic_write(Path(out.summary_json), dumps(fr.summary))
    if out.requests_csv:
        atomic_write(Path(out.requests_csv), lambda p: legacy_csv_frame(fr.requests, style=out.style).write_csv(p))
