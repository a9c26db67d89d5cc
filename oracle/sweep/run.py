"""Run a sweep: validate every point, run the missing ones, assemble ``sweep.parquet``.

Output folder (``--out``, else the sweep's ``[output].dir``, else ``runs/<sweep name>``)::

    points/<key>.json   one file per point x repeat (all frameworks), written atomically
                        (temporary file + rename) as soon as the point finishes
    sweep.parquet       one row per point x repeat x framework, assembled at the end
    sweep.json          what was run: sweep name, base, points and their overrides, timings

``<key>`` hashes the point's complete scenario (overrides and seed applied) and the package
version, so ``--resume`` reuses exactly the points whose scenario is unchanged, even when the
grid was extended or reordered. Without ``--resume`` every point runs again and its file is
replaced; files of other points are left alone (``points/`` is a cache keyed by content;
delete it to reclaim the space). An interrupted sweep leaves only whole point files behind and
the previous ``sweep.parquet`` (if any) untouched.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from oracle.errors import OracleError
from oracle.metrics.writers import atomic_write
from oracle.sweep.executors import TaskFailed, execute
from oracle.sweep.spec import RESERVED_COLUMNS, SweepSpec, SweepTask, expand_points, load_sweep, make_tasks
from oracle.sweep.task import METRICS, workload_key

POINTS_DIR = "points"
TABLE_NAME = "sweep.parquet"
MANIFEST_NAME = "sweep.json"


@dataclass
class SweepResult:
    """The assembled table and what it took.

    ``num_run``: tasks simulated now; ``num_reused``: tasks whose results ``--resume`` found.
    ``task_stats``: per simulated task, ``{point, repeat, pid, compiles, task_wall_s, parse_s,
    workload_s, simulate_s, simulate_cpu_s, workload_cached, worker_tasks, done_s}`` (``compiles``: numba
    signatures compiled from scratch; ``worker_tasks``: the task's rank in its worker;
    ``done_s``: when its result arrived, seconds after the executor started).
    """

    spec: SweepSpec
    table: Any                      # polars.DataFrame
    out_dir: Path
    path: Path
    num_points: int
    num_tasks: int
    num_run: int
    num_reused: int
    wall_time_s: float
    validate_s: float
    executor: str
    workers: int
    task_stats: list[dict] = field(default_factory=list, repr=False)


def default_sweep_out(spec: SweepSpec) -> Path:
    if spec.out_dir:
        d = Path(spec.out_dir)
        return d if d.is_absolute() else Path.cwd() / d
    return Path.cwd() / "runs" / spec.name


def run_sweep(sweep: str | Path | SweepSpec, *, out_dir: str | Path | None = None, workers: int | None = None,
              executor: str = "local", ray_address: str | None = None, resume: bool = False,
              progress: Callable[[int, int], None] | None = None,
              on_validated: Callable[[int, int], None] | None = None) -> SweepResult:
    """Validate all points, run those without results, write ``sweep.parquet``; see module doc.

    ``progress(done, total)`` is called after each finished task (``done`` counts reused
    ones); ``on_validated(num_points, num_tasks_to_run)`` once validation passed.
    """
    t0 = time.perf_counter()
    spec = sweep if isinstance(sweep, SweepSpec) else load_sweep(sweep)
    points = expand_points(spec)
    tasks = make_tasks(spec, points)
    validate_s = time.perf_counter() - t0

    out = Path(out_dir) if out_dir is not None else default_sweep_out(spec)
    pdir = out / POINTS_DIR
    try:
        pdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OracleError(f"cannot create the output folder: {exc.strerror}", file=out) from None
    _remove_temporaries(pdir)

    unique: dict[str, SweepTask] = {}
    for t in tasks:
        unique.setdefault(t.key, t)
    done_keys = {k for k in unique if _read_point(pdir, k) is not None} if resume else set()
    todo = [t for k, t in unique.items() if k not in done_keys]
    todo.sort(key=lambda t: workload_key(t.raw, t.base_dir))   # same workload back to back per worker
    if on_validated is not None:
        on_validated(len(points), len(todo))

    nworkers = workers or os.cpu_count() or 1
    if executor == "local":
        nworkers = max(1, min(nworkers, len(todo)))
    total, finished = len(unique), len(done_keys)
    if progress is not None:
        progress(finished, total)
    stats: list[dict] = []
    t_exec = time.perf_counter()
    if todo:
        try:
            for task, res in execute(todo, executor=executor, workers=workers, ray_address=ray_address):
                _write_point(pdir, task, res, spec)
                stats.append({"point": task.point, "repeat": task.repeat,
                              **{k: res.get(k) for k in ("pid", "compiles", "task_wall_s", "parse_s", "workload_s",
                                                         "simulate_s", "simulate_cpu_s", "workload_cached", "worker_tasks")},
                              "done_s": time.perf_counter() - t_exec})
                finished += 1
                if progress is not None:
                    progress(finished, total)
        except TaskFailed as exc:
            t = exc.task
            err = exc.error
            reason = err.reason if isinstance(err, OracleError) else f"{type(err).__name__}: {err}"
            raise OracleError(f"point {t.point} (repeat {t.repeat}, seed {t.seed}) failed: {reason}; "
                              f"{finished} finished point results kept in {pdir}, rerun with --resume to reuse them",
                              file=spec.path) from None

    table = assemble(spec, points, tasks, pdir)
    path = out / TABLE_NAME
    atomic_write(path, table.write_parquet)
    wall = time.perf_counter() - t0
    atomic_write(out / MANIFEST_NAME, json.dumps({
        "name": spec.name, "sweep_file": str(spec.path) if spec.path else None, "base": str(spec.base),
        "repeats": spec.repeats, "num_points": len(points), "num_tasks": len(tasks),
        "num_run": len(todo), "num_reused": len(done_keys), "executor": executor, "workers": nworkers,
        "wall_time_s": wall, "validate_s": validate_s,
        "points": [{"point": p.index, "overrides": p.overrides} for p in points],
        "tasks": [{"point": t.point, "repeat": t.repeat, "seed": t.seed, "key": t.key} for t in tasks],
    }, indent=1, default=str) + "\n")
    return SweepResult(spec=spec, table=table, out_dir=out, path=path, num_points=len(points), num_tasks=len(tasks),
                       num_run=len(todo), num_reused=len(done_keys), wall_time_s=wall, validate_s=validate_s,
                       executor=executor, workers=nworkers, task_stats=stats)


# -- per-point files -------------------------------------------------------------------------
def _point_path(pdir: Path, key: str) -> Path:
    return pdir / f"{key}.json"


def _write_point(pdir: Path, task: SweepTask, res: dict, spec: SweepSpec) -> None:
    doc = {"key": task.key, "point": task.point, "repeat": task.repeat, "seed": task.seed,
           "rows": res["rows"], "task_wall_s": res.get("task_wall_s")}
    atomic_write(_point_path(pdir, task.key), json.dumps(doc, default=str) + "\n")


def _read_point(pdir: Path, key: str) -> list[dict] | None:
    try:
        doc = json.loads(_point_path(pdir, key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if doc.get("key") != key or not isinstance(rows, list) or not rows:
        return None
    return rows


def _remove_temporaries(pdir: Path) -> None:
    for f in pdir.glob(".*.tmp-*"):
        f.unlink(missing_ok=True)


# -- the table -------------------------------------------------------------------------------
def _override_dtype(values: list[Any]):
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return pl.Boolean, values
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pl.Int64, values
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pl.Float64, [None if v is None else float(v) for v in values]
    if all(isinstance(v, str) for v in present):
        return pl.Utf8, values
    return pl.Utf8, [None if v is None else (v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str))
                     for v in values]


def override_columns(spec: SweepSpec) -> list[str]:
    """Overridden keys that get their own column (``seed`` is the ``seed`` column itself)."""
    return [k for k in spec.keys if k not in RESERVED_COLUMNS]


def assemble(spec: SweepSpec, points, tasks: list[SweepTask], pdir: Path):
    """Build the sweep table from the per-point files (every task must have one)."""
    by_point = {p.index: p for p in points}
    okeys = override_columns(spec)
    cols: dict[str, list] = {c: [] for c in (*RESERVED_COLUMNS, *okeys, *(m for m, _, _ in METRICS))}
    cache: dict[str, list[dict]] = {}
    for t in tasks:
        rows = cache.get(t.key)
        if rows is None:
            rows = _read_point(pdir, t.key)
            if rows is None:
                raise OracleError(f"results of point {t.point} (repeat {t.repeat}) are missing", file=pdir)
            cache[t.key] = rows
        ov = by_point[t.point].overrides
        for row in rows:
            cols["point"].append(t.point)
            cols["repeat"].append(t.repeat)
            cols["seed"].append(t.seed)
            cols["framework"].append(row.get("framework"))
            for k in okeys:
                cols[k].append(ov.get(k))
            for m, _, _ in METRICS:
                cols[m].append(row.get(m))
    series = [pl.Series("point", cols["point"], pl.Int64), pl.Series("repeat", cols["repeat"], pl.Int64),
              pl.Series("seed", cols["seed"], pl.UInt64 if any(s >= 2**63 for s in cols["seed"]) else pl.Int64),
              pl.Series("framework", cols["framework"], pl.Utf8)]
    for k in okeys:
        dt, vals = _override_dtype(cols[k])
        series.append(pl.Series(k, vals, dt))
    for m, _, kind in METRICS:
        vals = cols[m]
        if kind == "i":
            series.append(pl.Series(m, vals, pl.Int64))
        else:
            series.append(pl.Series(m, [None if v is None else float(v) for v in vals], pl.Float64))
    return pl.DataFrame(series)
