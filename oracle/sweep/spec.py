"""Sweep files: a base scenario plus overrides, expanded into validated points (DESIGN.md §10).

A sweep file (TOML)::

    name = "replicas-x-rate"          # optional; default: the file's stem
    base = "sweep_base.toml"          # the scenario, relative to this file
    repeats = 2                       # optional: run each point with seeds base, base+1, ...

    [grid]                            # full cartesian product, in the order written
    "frameworks.0.replicas" = [1, 2, 4]
    "workload.clients.0.arrival.rate" = [2.0, 4.0, 8.0]

    [[points]]                        # and/or explicit points (each a table of key -> value)
    "hardware.gpu" = "h100-sxm"
    "frameworks.0.tp" = 1
    [[points]]
    "hardware.gpu" = "h200"
    "frameworks.0.tp" = 2

    [output]
    dir = "runs/replicas-x-rate"      # relative to the working directory, like [output].dir

Keys are dotted paths into the scenario's TOML structure; list indices are numbers
(``frameworks.0``). A quoted key containing dots is one full path and its value replaces
whatever is there (also a whole table); unquoted nested tables (``frameworks.0.replicas = ...``
written without quotes) are walked down to their leaves. With both ``[grid]`` and
``[[points]]``, every explicit point is combined with every grid combination (points outer).
With neither, the sweep has one point: the base scenario.

Point ``i`` (0-based, in expansion order) with repeat ``r`` runs with seed
``(seed of the point's scenario) + r``. Every point is validated before anything runs; every
problem is reported (once, for the first point that has it), naming the sweep file, the point,
the key and the reason.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oracle import __version__
from oracle._config import Table, _type_name, key_position
from oracle.errors import OracleError, Problems, ScenarioError, Skip
from oracle.scenario import Scenario, apply_overrides, read_toml, scenario_from_dict

MAX_POINTS = 1_000_000
MAX_SEED = 2**63 - 1
RESERVED_COLUMNS = ("point", "repeat", "seed", "framework")


@dataclass(frozen=True)
class SweepPoint:
    """One point: its index, the overrides that define it, and the validated scenario."""

    index: int
    overrides: dict[str, Any]
    scenario: Scenario = field(repr=False, compare=False)


@dataclass(frozen=True)
class SweepTask:
    """One simulation to run: a point at one repeat (its own seed).

    ``raw`` is the complete scenario dict (overrides and seed applied); ``key`` is a hash of
    it (plus the base folder and the package version) and names the per-point result file,
    so ``--resume`` reuses exactly the results of identical scenarios.
    """

    point: int
    repeat: int
    seed: int
    key: str
    raw: dict = field(repr=False)
    base_dir: str = ""
    file: str | None = None


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep file (points not yet expanded/validated: see :func:`expand_points`)."""

    name: str
    base: Path
    base_raw: dict = field(repr=False)
    keys: tuple[str, ...]                      # every overridden key, in first-seen order
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    points: tuple[dict[str, Any], ...]
    repeats: int = 1
    out_dir: str | None = None
    path: Path | None = None

    @property
    def num_points(self) -> int:
        n = max(len(self.points), 1)
        for _, values in self.grid:
            n *= len(values)
        return n


def load_sweep(path: str | Path, *, raw: dict | None = None) -> SweepSpec:
    """Read a sweep file and its base scenario (not yet validated point by point).

    ``raw``: the file's parsed TOML, when the caller has read it already.
    """
    path = Path(path)
    if raw is None:
        raw = read_toml(path)
    try:
        return sweep_from_dict(raw, base_dir=path.parent, file=path)
    except OracleError as exc:
        raise exc.with_context(file=path) from None


def sweep_from_dict(raw: dict, *, base_dir: Path | None = None, file: str | Path | None = None) -> SweepSpec:
    """Validate a sweep file's dict; every problem is reported (see :func:`oracle.errors.combine`)."""
    problems = Problems()
    spec = None
    with problems.guard():
        spec = _parse_sweep(raw, Path(base_dir) if base_dir is not None else Path.cwd(), file, problems)
    problems.items.sort(key=lambda exc: key_position(raw, exc.key))
    problems.raise_if_any()
    return spec


def _parse_sweep(raw: dict, base_dir: Path, file, problems: Problems) -> SweepSpec:
    top = Table(raw, problems=problems)
    name = top.str("name", Path(file).stem if file else "sweep")
    if top.ok("name") and (not name.strip() or "/" in name):
        top.report("name", f"must be a non-empty name usable as a folder, got {name!r}")
    top.str("description", "")
    base = None
    with problems.guard():
        base_rel = top.str("base")
        base = Path(base_rel) if Path(base_rel).is_absolute() else base_dir / base_rel
    repeats = top.int("repeats", 1, lo=1, hi=100_000)

    grid: list[tuple[str, tuple[Any, ...]]] = []
    top.any("grid", None)   # mark as known (for "did you mean" on typos)
    if top.has("grid"):
        with problems.guard():
            g = top.table("grid")
            for key, values in _flatten(g.raw, ""):
                if not isinstance(values, list):
                    problems.add(ScenarioError(f"must be an array of values to sweep, got {_type_name(values)} "
                                               f"{values!r}", key=f"grid.{key}"))
                elif not values:
                    problems.add(ScenarioError("must list at least one value", key=f"grid.{key}"))
                else:
                    grid.append((key, tuple(values)))

    points: list[dict[str, Any]] = []
    with problems.guard():
        for i, t in enumerate(top.tables("points", [])):
            point = dict(_flatten(t.raw, ""))
            if not point:
                problems.add(ScenarioError("is empty; give at least one key = value", key=f"points.{i}"))
            points.append(point)

    out_dir = None
    with problems.guard():
        out_t = top.table("output", {})
        out_dir = out_t.str("dir", None)
        out_t.done()
    top.done()

    keys: list[str] = []
    for p in points:
        for k in p:
            if k not in keys:
                keys.append(k)
    for k, _ in grid:
        if k in keys:
            problems.add(ScenarioError("is set both in [grid] and in [[points]]; set it in one place",
                                       key=f"grid.{k}"))
            continue
        keys.append(k)
    for k in keys:
        with problems.guard():
            _check_key(k)

    base_raw = None
    if base is not None:
        with problems.guard():
            base_raw = read_toml(base)
    num_points = max(len(points), 1) * math.prod(len(v) for _, v in grid)
    if num_points > MAX_POINTS:
        problems.add(ScenarioError(f"expands to {num_points:,} points, more than the limit of {MAX_POINTS:,}",
                                   key="grid"))
    if problems:
        raise Skip()
    return SweepSpec(name=name, base=base, base_raw=base_raw, keys=tuple(keys), grid=tuple(grid),
                     points=tuple(points), repeats=repeats, out_dir=out_dir,
                     path=Path(file) if file else None)


def _flatten(raw: dict, prefix: str):
    """Yield (dotted key, value); nested tables are walked unless the key itself has a dot."""
    for k, v in raw.items():
        path = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and "." not in str(k) and v:
            yield from _flatten(v, path)
        else:
            yield path, v


def _check_key(key: str) -> None:
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise ScenarioError("is not a valid dotted key path (empty part)", key=key)
    if parts[0] == "output":
        raise ScenarioError("cannot be swept: [output] does not change results (use the sweep's [output])",
                            key=key)


def iter_overrides(spec: SweepSpec):
    """Yield each point's overrides (dict, in key order), explicit points outer, grid inner."""
    grid_keys = [k for k, _ in spec.grid]
    combos = itertools.product(*(v for _, v in spec.grid))
    points = spec.points or ({},)
    if not spec.grid:
        yield from (dict(p) for p in points)
        return
    combos = list(combos)
    for p in points:
        for combo in combos:
            yield {**p, **dict(zip(grid_keys, combo))}


def expand_points(spec: SweepSpec, *, progress=None) -> list[SweepPoint]:
    """Expand and validate every point. Every problem is reported once, naming the first point
    that has it (``point 3: frameworks.0.replicas: ...``); a problem all points share (a bad
    base) is one line."""
    base_dir = spec.base.parent
    out = []
    seen: dict[str, Scenario | OracleError] = {}
    problems = Problems()
    reported: set[tuple] = set()

    def report(index: int, exc: OracleError) -> None:
        for p in exc.problems:
            sig = (p.file, p.line, p.key, p.reason)
            if sig not in reported:
                reported.add(sig)
                problems.add(point_error(spec, index, p))

    for i, ov in enumerate(iter_overrides(spec)):
        try:
            raw = _apply(spec, ov)
            h = _hash(raw)
            sc = seen.get(h)
            if sc is None:
                try:
                    sc = scenario_from_dict(raw, base_dir=base_dir, file=spec.base)
                except OracleError as exc:
                    sc = exc
                seen[h] = sc
            if isinstance(sc, OracleError):
                raise sc
            if sc.seed + spec.repeats - 1 > MAX_SEED:
                raise ScenarioError(f"seed {sc.seed} + {spec.repeats - 1} repeats exceeds {MAX_SEED}",
                                    file=spec.path, key="seed")
            out.append(SweepPoint(index=i, overrides=ov, scenario=sc))
        except OracleError as exc:
            report(i, exc)
        if progress is not None:
            progress(i + 1)
    problems.raise_if_any()
    return out


def apply_point(spec: SweepSpec, overrides: dict[str, Any], index: int) -> dict:
    """The base scenario's dict with one point's overrides applied (errors name the point)."""
    try:
        return _apply(spec, overrides)
    except OracleError as exc:
        raise exc.each(lambda p: point_error(spec, index, p)) from None


def _apply(spec: SweepSpec, overrides: dict[str, Any]) -> dict:
    try:
        return apply_overrides(spec.base_raw, overrides, file=spec.base)
    except (TypeError, AttributeError, KeyError):
        bad = next(iter(overrides), "")
        for k in overrides:   # find the key that cannot be applied (a path through a scalar)
            try:
                apply_overrides(spec.base_raw, {k: overrides[k]})
            except Exception:  # noqa: BLE001
                bad = k
                break
        raise ScenarioError("cannot be set: the path runs through a value that is not a table or array",
                            file=spec.path, key=bad) from None


def point_error(spec: SweepSpec, index: int, exc: OracleError) -> ScenarioError:
    """``sweep.toml: point 3: frameworks.0.replicas: must be >= 1, got 0 (base: base.toml)``."""
    if len(exc.problems) > 1:
        return exc.each(lambda p: point_error(spec, index, p))  # type: ignore[return-value]
    key = f"point {index}: {exc.key}" if exc.key else f"point {index}"
    reason = exc.reason
    if exc.file and spec.path and Path(exc.file) != Path(spec.path):
        reason += f" (in {exc.file}{':' + str(exc.line) if exc.line else ''})"
    return ScenarioError(reason, file=spec.path, key=key)


def make_tasks(spec: SweepSpec, points: list[SweepPoint]) -> list[SweepTask]:
    """One task per point x repeat, with its seed and content key."""
    tasks = []
    base_dir = str(spec.base.parent.resolve())
    for p in points:
        for r in range(spec.repeats):
            seed = int(p.scenario.seed) + r
            raw = dict(p.scenario.raw)
            raw["seed"] = seed
            raw.pop("output", None)   # never write anything from a worker; does not change results
            key = _hash({"scenario": raw, "base_dir": base_dir, "version": __version__})
            tasks.append(SweepTask(point=p.index, repeat=r, seed=seed, key=key, raw=raw, base_dir=base_dir,
                                   file=str(spec.base)))
    return tasks


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def _hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:24]
