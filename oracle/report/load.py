"""Reading a results folder for the report: simulate output or sweep output.

A folder is one of (checked in this order, several may apply):

- a simulate run folder: ``RUN_DIR/<framework>/summary.json`` (+ ``requests.parquet``,
  ``steps.parquet``), with ``comparison.parquet`` and ``scenario.toml`` beside them;
- one framework's folder: ``RUN_DIR/summary.json`` directly;
- a sweep folder: ``RUN_DIR/sweep.parquet`` (one row per point x framework x seed).

Framework order (the first one is the baseline of every comparison) is the scenario's
``[[frameworks]]`` order, read from ``comparison.parquet`` or ``scenario.toml``; folder names
sorted alphabetically only when neither exists.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from oracle.errors import OracleError

SUMMARY = "summary.json"
REQUESTS = "requests.parquet"
STEPS = "steps.parquet"
SWEEP = "sweep.parquet"
SWEEP_JSON = "sweep.json"
COMPARISON = "comparison.parquet"
SCENARIO = "scenario.toml"


@dataclass
class FrameworkRun:
    """One framework's results: its summary and (lazily) its request and step tables."""

    name: str
    folder: Path
    summary: dict[str, Any]
    _requests: pl.DataFrame | None = field(default=None, repr=False)
    _steps: pl.DataFrame | None = field(default=None, repr=False)

    @property
    def has_requests(self) -> bool:
        return (self.folder / REQUESTS).is_file()

    @property
    def has_steps(self) -> bool:
        return (self.folder / STEPS).is_file()

    def requests(self) -> pl.DataFrame | None:
        if self._requests is None and self.has_requests:
            self._requests = _read_parquet(self.folder / REQUESTS)
        return self._requests

    def steps(self) -> pl.DataFrame | None:
        if self._steps is None and self.has_steps:
            self._steps = _read_parquet(self.folder / STEPS)
        return self._steps


@dataclass
class RunFolder:
    """Everything the report reads from one results folder."""

    path: Path
    frameworks: list[FrameworkRun]
    sweep: pl.DataFrame | None = None

    @property
    def scenario_name(self) -> str | None:
        if self.sweep is not None and (self.path / SWEEP_JSON).is_file():
            try:
                name = json.loads((self.path / SWEEP_JSON).read_text(encoding="utf-8")).get("name")
            except (OSError, ValueError, AttributeError):
                name = None
            if name:
                return str(name)
        for fr in self.frameworks:
            if fr.summary.get("scenario"):
                return str(fr.summary["scenario"])
        return None

    @property
    def summaries(self) -> dict[str, dict[str, Any]]:
        return {fr.name: fr.summary for fr in self.frameworks}


def load_run(run_dir: str | Path) -> RunFolder:
    """Read ``run_dir``; raise :class:`OracleError` (naming the file) when there is nothing to report."""
    path = Path(run_dir)
    if not path.exists():
        raise OracleError("no such results folder", file=path)
    if not path.is_dir():
        raise OracleError("not a results folder (expected a folder written by `oracle simulate` or "
                          "`oracle sweep`)", file=path)
    frameworks: list[FrameworkRun] = []
    if (path / SUMMARY).is_file():
        summary = _read_summary(path / SUMMARY)
        frameworks.append(FrameworkRun(name=str(summary.get("framework") or path.name), folder=path,
                                       summary=summary))
    else:
        subdirs = {d.name: d for d in path.iterdir()
                   if d.is_dir() and not d.name.startswith(".") and (d / SUMMARY).is_file()}
        for name in _framework_order(path, list(subdirs)):
            frameworks.append(FrameworkRun(name=name, folder=subdirs[name],
                                           summary=_read_summary(subdirs[name] / SUMMARY)))
    sweep = _read_parquet(path / SWEEP) if (path / SWEEP).is_file() else None
    if not frameworks and sweep is None:
        raise OracleError(f"no {SUMMARY} here or in its sub-folders (and no {SWEEP}); pass the folder "
                          "`oracle simulate` wrote", file=path / SUMMARY)
    return RunFolder(path=path, frameworks=frameworks, sweep=sweep)


def _framework_order(path: Path, names: list[str]) -> list[str]:
    """The scenario's framework order; unknown names last, alphabetically."""
    order: list[str] = []
    if (path / COMPARISON).is_file():
        try:
            order = [str(v) for v in pl.read_parquet(path / COMPARISON, columns=["framework"])["framework"]]
        except Exception:  # noqa: BLE001 - a damaged extra file only loses the order
            order = []
    if not order and (path / SCENARIO).is_file():
        try:
            doc = tomllib.loads((path / SCENARIO).read_text(encoding="utf-8"))
            order = [str(fw.get("name")) for fw in doc.get("frameworks", []) if isinstance(fw, dict)]
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError):
            order = []
    known = [n for n in order if n in names]
    return known + sorted(n for n in names if n not in known)


def _read_summary(file: Path) -> dict[str, Any]:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OracleError(f"cannot read: {exc.strerror}", file=file) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OracleError(f"not valid JSON ({exc})", file=file) from None
    if not isinstance(doc, dict) or "latency" not in doc:
        raise OracleError("not a summary.json written by `oracle simulate` (no \"latency\" section)", file=file)
    return doc


def _read_parquet(file: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(file)
    except OSError as exc:
        raise OracleError(f"cannot read: {exc.strerror or exc}", file=file) from None
    except Exception as exc:  # noqa: BLE001 - polars raises several types for damaged files
        raise OracleError(f"not a readable Parquet file ({type(exc).__name__})", file=file) from None
