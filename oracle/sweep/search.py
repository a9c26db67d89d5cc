"""``oracle search``: the largest arrival rate, or the fewest replicas, that meets the SLOs.

A value *passes* when the goodput fraction (requests finishing within both the TTFT and the
TPOT objective, ``summary["goodput"]["fraction"]``) is at least ``goodput``. The SLOs given
replace the scenario's ``[slo]`` table for the search.

* ``vary="rate"``: a multiplier ``m`` of the offered load. Every client's own arrival rate
  and the workload-level shared ``[workload].arrival`` rate are multiplied by ``m``; a trace's
  ``time_scale`` is divided by ``m``. Starting at ``lo`` (default 1 = the scenario as written),
  ``m`` is doubled while it passes (or halved while it fails), then the bracket
  ``pass < fail`` is bisected until ``(fail - pass) <= tolerance * pass``. The answer is the
  largest passing ``m``; the smallest failing ``m`` measured is just above it.
* ``vary="replicas"``: replicas of one framework, doubling from ``lo`` (default 1) until a
  count passes, then integer bisection; the answer is the fewest passing replicas, and
  ``answer - 1`` was measured and fails (unless the answer is ``lo``).
* ``vary="prefill_replicas"`` / ``"decode_replicas"``: the same over one pool of a
  disaggregated framework (``prefill = { replicas }`` / ``decode = { replicas }``), the other
  pool as written.

Every simulation uses the scenario's seed, so the measured curve compares like with like
(common random numbers). Goodput is not strictly monotone in load; bisection assumes it is
and reports the points it measured so that a user can see any wiggle.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import polars as pl

from oracle.api import load_workload, simulate
from oracle.errors import OracleError, ScenarioError
from oracle.scenario import Scenario, apply_overrides, load_scenario, scenario_from_dict
from oracle.sweep.task import METRICS, _summary_row

VARY = ("rate", "replicas", "prefill_replicas", "decode_replicas")  # the last two: disaggregated pools
MAX_RATE_MULTIPLIER = 2.0 ** 16
MIN_RATE_MULTIPLIER = 2.0 ** -16
MAX_STEPS = 200


@dataclass
class SearchResult:
    """``answer``: the largest passing rate multiplier / the fewest passing replicas, or None.

    ``status``: ``"found"``; ``"lo_fails"`` (even the lowest value tried fails: no answer);
    ``"hi_passes"`` (rate: still passes at ``hi`` or the built-in cap, the answer is a lower
    bound); ``"hi_fails"`` (replicas: even ``hi`` replicas fail: no answer).
    ``above``/``below``: the nearest measured value on the other side of the answer (fails).
    """

    vary: str
    framework: str
    target: float
    slo: dict[str, float | None]
    answer: float | int | None
    status: str
    neighbour: float | int | None
    base_session_rate: float | None
    points: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0
    scenario: Scenario | None = field(default=None, repr=False)   # the base scenario, as loaded

    @property
    def table(self):
        """The measured curve, sorted by value (polars DataFrame)."""
        schema = {"value": pl.Int64 if self.vary != "rate" else pl.Float64, "order": pl.Int64,
                  "offered_sessions_per_s": pl.Float64, "passed": pl.Boolean,
                  **{m: (pl.Int64 if k == "i" else pl.Float64) for m, _, k in METRICS}}
        rows = sorted(self.points, key=lambda p: p["value"])
        return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)

    def to_dict(self) -> dict[str, Any]:
        return {"vary": self.vary, "framework": self.framework, "goodput_target": self.target, "slo": self.slo,
                "answer": self.answer, "status": self.status, "neighbour": self.neighbour,
                "answer_sessions_per_s": None if self.answer is None or self.base_session_rate is None
                or self.vary != "rate" else self.base_session_rate * float(self.answer),
                "wall_time_s": self.wall_time_s,
                "points": sorted(({k: p.get(k) for k in ("value", "order", "passed", "goodput_fraction",
                                                         "ttft_p99_ms", "tpot_p99_ms", "throughput_rps")}
                                  for p in self.points), key=lambda p: p["value"])}


def rate_overrides(raw: dict, multiplier: float) -> dict[str, Any]:
    """Dotted-key overrides that scale every arrival rate of a scenario dict by ``multiplier``."""
    wl = raw.get("workload") or {}
    out: dict[str, Any] = {}
    if isinstance(wl.get("trace"), dict):
        out["workload.trace.time_scale"] = float(wl["trace"].get("time_scale", 1.0)) / multiplier
    if isinstance(wl.get("arrival"), dict) and "rate" in wl["arrival"]:
        out["workload.arrival.rate"] = float(wl["arrival"]["rate"]) * multiplier
    for i, c in enumerate(wl.get("clients") or []):
        if isinstance(c, dict) and isinstance(c.get("arrival"), dict) and "rate" in c["arrival"]:
            out[f"workload.clients.{i}.arrival.rate"] = float(c["arrival"]["rate"]) * multiplier
    return out


def session_rate(sc: Scenario) -> float | None:
    """Offered sessions (first turns) per second of a generated workload; None for traces."""
    wl = sc.workload
    if getattr(wl, "trace", None) is not None:
        return None
    total = 0.0
    if getattr(wl, "arrival", None) is not None:
        total += float(wl.arrival.rate)
    for c in wl.clients:
        if c.arrival is not None:
            total += float(c.arrival.rate)
    return total


class _Evaluator:
    def __init__(self, raw: dict, base_dir: Path, file, fw_index: int, fw_name: str, slo: dict,
                 target: float, vary: str, progress: Callable[[str], None] | None) -> None:
        self.raw, self.base_dir, self.file = raw, base_dir, file
        self.fw_index, self.fw_name, self.slo, self.target, self.vary = fw_index, fw_name, slo, target, vary
        self.progress = progress
        self.points: dict[float, dict] = {}
        self._workload = None

    def scenario(self, value) -> Scenario:
        ov: dict[str, Any] = {"slo": dict(self.slo)}
        if self.vary == "rate":
            ov.update(rate_overrides(self.raw, float(value)))
        elif self.vary == "replicas":
            ov[f"frameworks.{self.fw_index}.replicas"] = int(value)
        else:   # prefill_replicas / decode_replicas: one pool of a disaggregated framework
            ov[f"frameworks.{self.fw_index}.{self.vary.split('_')[0]}.replicas"] = int(value)
        raw = apply_overrides(self.raw, ov, file=self.file)
        raw.pop("output", None)
        try:
            return scenario_from_dict(raw, base_dir=self.base_dir, file=self.file)
        except OracleError as exc:
            what = f"rate multiplier {value:g}" if self.vary == "rate" else f"{value} {self.vary.replace('_', ' ')}"
            raise exc.each(lambda p: ScenarioError(f"at {what}: {p.reason}", file=p.file, key=p.key)) from None

    def __call__(self, value) -> bool:
        if value in self.points:
            return self.points[value]["passed"]
        if self.progress is not None:
            label = f"rate x{value:.4g}" if self.vary == "rate" else f"{value} {self.vary.replace('_', ' ')}"
            self.progress(f"step {len(self.points) + 1}: simulating {label}")
        sc = self.scenario(value)
        wl = None
        if self.vary != "rate":   # the workload does not depend on the replica count
            if self._workload is None:
                self._workload = load_workload(sc)
            wl = self._workload
        res = simulate(sc, workload=wl, frameworks=[self.fw_name], record_steps=False)
        summary = res.frameworks[self.fw_name].summary
        frac = float(summary["goodput"]["fraction"])
        sr = session_rate(sc)
        row = {"value": value, "order": len(self.points), "offered_sessions_per_s": sr,
               "passed": frac >= self.target, **_summary_row(summary)}
        self.points[value] = row
        return row["passed"]


def search(scenario: str | Path | Scenario, *, vary: str, slo_ttft_ms: float | None = None,
           slo_tpot_ms: float | None = None, goodput: float = 0.99, framework: str | None = None,
           lo: float | None = None, hi: float | None = None, tolerance: float = 0.05,
           progress: Callable[[str], None] | None = None) -> SearchResult:
    """Find the largest rate multiplier / the fewest replicas meeting the SLOs (module doc)."""
    t0 = time.perf_counter()
    if vary not in VARY:
        raise OracleError(f"--vary must be one of {', '.join(VARY)}, got {vary!r}")
    if not 0.0 < goodput <= 1.0:
        raise OracleError(f"--goodput must be in (0, 1], got {goodput:g}")
    if not 0.0 < tolerance < 1.0:
        raise OracleError(f"--tolerance must be in (0, 1), got {tolerance:g}")
    for name, v in (("--lo", lo), ("--hi", hi), ("--slo-ttft-ms", slo_ttft_ms), ("--slo-tpot-ms", slo_tpot_ms)):
        if v is not None and not (math.isfinite(v) and v > 0):
            raise OracleError(f"{name} must be > 0, got {v:g}")
    if lo is not None and hi is not None and hi < lo:
        raise OracleError(f"--hi ({hi:g}) must be >= --lo ({lo:g})")
    if vary != "rate":
        for name, v in (("--lo", lo), ("--hi", hi)):
            if v is not None and float(v) != int(v):
                raise OracleError(f"{name} must be a whole number of replicas with --vary replicas, got {v:g}")

    if isinstance(scenario, Scenario):
        sc0 = scenario
    else:
        file = Path(scenario)
        if file.suffix.lower() in (".yaml", ".yml", ".json"):
            raise OracleError("search needs a TOML scenario (convert a legacy config first)", file=file)
        sc0 = load_scenario(file)
    raw, file = sc0.raw, sc0.path
    base_dir = sc0.base_dir
    fw_name = framework or sc0.frameworks[0].name
    sc0.framework(fw_name)   # raises with the available names
    fw_index = [f.name for f in sc0.frameworks].index(fw_name)
    if vary != "rate" and sc0.frameworks[fw_index].disaggregated != (vary != "replicas"):
        raise OracleError(f"--vary {vary} needs " + ("an aggregated framework (disaggregated ones: --vary "
                          "prefill_replicas or decode_replicas)" if vary == "replicas" else
                          "a framework with prefill/decode pools") + f"; {fw_name!r} is not one", file=sc0.path)
    slo = {"ttft_ms": slo_ttft_ms if slo_ttft_ms is not None else sc0.slo.ttft_ms,
           "tpot_ms": slo_tpot_ms if slo_tpot_ms is not None else sc0.slo.tpot_ms}
    slo = {k: v for k, v in slo.items() if v is not None}
    if not slo:
        raise OracleError("give --slo-ttft-ms and/or --slo-tpot-ms (the scenario has no [slo] either)", file=file)
    if vary == "rate" and not rate_overrides(raw, 1.0):
        raise OracleError("the workload has no arrival rate to scale", file=file, key="workload")

    ev = _Evaluator(raw, base_dir, file, fw_index, fw_name, slo, goodput, vary, progress)
    if vary == "rate":
        answer, status, neighbour = _search_rate(ev, lo, hi, tolerance)
    else:
        answer, status, neighbour = _search_replicas(ev, int(lo) if lo else None, int(hi) if hi else None)
    return SearchResult(vary=vary, framework=fw_name, target=goodput, slo=slo, answer=answer, status=status,
                        neighbour=neighbour, base_session_rate=session_rate(sc0),
                        points=list(ev.points.values()), wall_time_s=time.perf_counter() - t0, scenario=sc0)


def _search_rate(ev: _Evaluator, lo: float | None, hi: float | None, tol: float):
    cap = hi if hi is not None else MAX_RATE_MULTIPLIER
    floor = lo if lo is not None else MIN_RATE_MULTIPLIER
    start = lo if lo is not None else min(1.0, cap)
    if ev(start):  # double until it fails
        good, bad = _walk(ev, start, True, lambda x: min(x * 2.0, cap), lambda x: x >= cap)
        if bad is None:
            return good, "hi_passes", None
    else:  # halve until it passes
        bad, good = _walk(ev, start, False, lambda x: max(x / 2.0, floor), lambda x: x <= floor)
        if good is None:
            return None, "lo_fails", None
    good, bad = _bisect(ev, good, bad, lambda g, b: (g + b) / 2.0, lambda g, b: b - g <= tol * g)
    return good, "found", bad


def _search_replicas(ev: _Evaluator, lo: int | None, hi: int | None):
    cap = hi if hi is not None else 4096
    start = lo if lo is not None else 1
    if ev(start):
        return start, "found", None
    bad, good = _walk(ev, start, False, lambda x: min(x * 2, cap), lambda x: x >= cap)  # double until it passes
    if good is None:
        return None, "hi_fails", None
    good, bad = _bisect(ev, good, bad, lambda g, b: (g + b) // 2, lambda g, b: g - b <= 1)
    return good, "found", bad


def _walk(ev: _Evaluator, x, outcome: bool, step, done):
    """From ``x`` (``ev(x) == outcome``), apply ``step`` until the outcome changes or ``done(x)``.

    Returns (the last value with ``outcome``, the first without it, or None if ``done`` first).
    """
    while not done(x):
        nxt = step(x)
        if ev(nxt) != outcome:
            return x, nxt
        x = nxt
    return x, None


def _bisect(ev: _Evaluator, good, bad, midpoint, close):
    """Narrow ``good`` (passes) and ``bad`` (fails) at ``midpoint`` until ``close(good, bad)``
    (or :data:`MAX_STEPS` evaluations)."""
    steps = 0
    while not close(good, bad) and steps < MAX_STEPS:
        mid = midpoint(good, bad)
        if ev(mid):
            good = mid
        else:
            bad = mid
        steps += 1
    return good, bad
