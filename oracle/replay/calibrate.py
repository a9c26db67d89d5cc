"""End-to-end calibration: fit a GPU's and a framework's free cost-model factors on real runs.

    oracle calibrate-e2e RUN [RUN ...] --gpu h100-sxm --lomo --out calibration.toml
    oracle calibrate-e2e RUN ... --update-catalog            # rewrite oracle/catalog/*.toml

The op-level fits (``oracle.calibrate``: GEMMs, small ops, attention and NCCL on Vidur's
profiles and the lent-GPU GEMM timings) stay; this fits what no op-level data covers, by
replaying whole serving benchmarks (:mod:`oracle.replay`) and comparing per-stage means:

==========================  ======  ==========================================================
factor                      where   what it is
==========================  ======  ==========================================================
``layer_overhead_s``        GPU     fixed GPU time per layer of the small kernels
``custom_ar_latency_s``     GPU     fixed time of one custom (one-shot / two-shot) all-reduce
``api_server_s``            frame.  per-request time outside the engine (HTTP, tokenization, ...)
``eff_attn_memory``         GPU     (``--fit-attention`` only) share of DRAM bandwidth decode
                                    attention reaches on KV reads; by default the catalog's
                                    measured value
==========================  ======  ==========================================================

Method, in two stages so that TTFT (which the engine's admission rule shapes) cannot bend
the step-time physics:

1. the GPU factors minimise the mean ``|log(predicted / measured)|`` of the per-stage
   mean TPOT (per token) and mean E2E over the runs' stages where the real server kept up
   (no failed request), by Nelder-Mead over whole replays (each evaluation simulates every
   run);
2. ``api_server_s`` minimises the same error on the per-stage mean and p90 TTFT, with the
   step factors fixed. It shifts every request's TTFT by itself (the engine sees the request
   that much later), so it is found on the replays made with ``api_server_s = 0``, then
   checked by one more replay.

Leave-one-model-out (``--lomo``): for each model among the runs, fit on the runs of the other
models and predict the held-out model's runs; the report gives in-sample and held-out errors
per stage and their medians. "Never tune to a single figure": every factor is shared by all
models and stages, and each stage counts as much as any other.

The result (``CalibrationResult``) is written as TOML with its provenance (``--out``), as JSON
(``--json-out``), or into the catalog (``--update-catalog``: the GPU's section of gpus.toml
with an ``e2e_calibration_note``, ``[defaults] custom_ar_latency_s``, and the framework's
``api_server_s`` in frameworks.toml).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from oracle.calibrate.catalog import update_catalog_text
from oracle.replay.common import ReplayError, ReplayPlan

#: step-time factors (stage 1): name -> (lower bound, upper bound, initial simplex step)
STEP_FACTORS = {
    "eff_attn_memory": (0.3, 1.0, 0.08),
    "layer_overhead_s": (0.0, 1e-4, 5e-6),
    "custom_ar_latency_s": (0.0, 1e-4, 5e-6),
}
#: the step-time factors fitted by default: the decode-attention bandwidth is a measured GPU
#: figure in the catalog (a streaming copy's share of the datasheet bandwidth); fitting it too
#: (``fit_attention``) lets runs whose KV traffic is small pull it anywhere
DEFAULT_FREE = ("layer_overhead_s", "custom_ar_latency_s")
#: per-request factor (stage 2)
REQUEST_FACTOR = "api_server_s"
REQUEST_BOUNDS = (0.0, 0.2)
#: per-stage statistics each stage fits: stage 1 (step time), stage 2 (request path)
STEP_METRICS = (("tpot", "mean"), ("e2e", "mean"))
REQUEST_METRICS = (("ttft", "mean"), ("ttft", "p90"))
#: statistics reported per stage
REPORT_METRICS = (("ttft", "mean"), ("ttft", "p50"), ("ttft", "p90"), ("tpot", "mean"), ("e2e", "mean"))


@dataclass
class Evaluation:
    """Replays of a set of runs under one set of factors: per run, the replay's comparison."""

    factors: dict[str, float]
    comparisons: dict[str, dict]          # run name -> oracle replay comparison
    wall_s: float = 0.0


@dataclass
class CalibrationResult:
    """Fitted factors, the errors they give, the leave-one-model-out check and the provenance."""

    gpu: str
    framework: str
    factors: dict[str, float]
    in_sample: dict[str, Any]              # errors per stage and medians, every run
    lomo: dict[str, Any] = field(default_factory=dict)   # model -> {factors, errors on its runs}
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- which runs, which model -------------------------------------------------------------------

def load_plans(paths: list[Path], *, seed: int = 0) -> dict[str, ReplayPlan]:
    """``{run name: plan}`` for every benchmark result folder/file (errors name the path)."""
    from oracle.replay import load_plan
    plans = {}
    for p in paths:
        plan = load_plan(p, seed=seed)
        if plan.name in plans:
            raise ReplayError(f"two runs are named {plan.name!r}", file=p)
        plans[plan.name] = plan
    if not plans:
        raise ReplayError("no runs given")
    return plans


def kept_up(plan: ReplayPlan) -> bool:
    """Every stage of the run finished every request (the server kept up): usable for the fit."""
    return all(st.measured.count_failed == 0 and st.measured.count_ok > 0 for st in plan.stages)


def model_of(plan: ReplayPlan) -> str:
    return f"{plan.server.model} tp{plan.server.tp}"


# -- evaluation ---------------------------------------------------------------------------------

def gpu_table(gpu: str, factors: dict[str, float]) -> dict[str, Any]:
    """The catalog GPU as an inline ``[hardware.gpu]`` table with ``factors`` applied."""
    from oracle.catalog import OPTIONAL_GPU_KEYS, get_gpu
    spec = dataclasses.replace(get_gpu(gpu, key="--gpu"), **{k: v for k, v in factors.items() if k in STEP_FACTORS})
    return {k: v for k, v in dataclasses.asdict(spec).items()
            if v is not None and not (k in OPTIONAL_GPU_KEYS and not v)}


def evaluate(plans: dict[str, ReplayPlan], factors: dict[str, float], *, gpu: str, seed: int = 0) -> Evaluation:
    """Replay every plan with ``factors`` (GPU factors + ``api_server_s``)."""
    from oracle.replay.run import simulate_plan
    t0 = time.perf_counter()
    table = gpu_table(gpu, factors)
    fw = {REQUEST_FACTOR: float(factors[REQUEST_FACTOR])} if REQUEST_FACTOR in factors else None
    out = {name: simulate_plan(plan, gpu=gpu, seed=seed, gpu_table=table, framework_keys=fw).comparison
           for name, plan in plans.items()}
    return Evaluation(factors=dict(factors), comparisons=out, wall_s=time.perf_counter() - t0)


def stage_rows(ev: Evaluation, plans: dict[str, ReplayPlan]) -> list[dict[str, Any]]:
    """One row per stage where the real server kept up: run, model, stage and, per
    REPORT_METRICS, measured / predicted / signed error (%)."""
    rows = []
    for name, c in ev.comparisons.items():
        for st in c["stages"]:
            if st["measured"]["failures"] > 0:
                continue
            row = {"run": name, "model": model_of(plans[name]), "stage": st["label"], "overloaded": st["overloaded"]}
            for metric, stat in REPORT_METRICS:
                r = st["metrics"][f"{metric}_ms"][stat]
                row[f"{metric}_{stat}"] = {"measured": r["measured"], "predicted": r["predicted"],
                                           "error_pct": r["error_pct"]}
            t = st["throughput"]["requests_per_s"]
            row["requests_per_s"] = {"measured": t["measured"], "predicted": t["predicted"], "error_pct": t["error_pct"]}
            rows.append(row)
    return rows


def _log_errors(rows: list[dict], metrics) -> list[float]:
    """|log(pred / meas)| per (stage, metric); a stage the simulated server did not keep up with
    (predicted timeouts) counts its figures like any other (they are then far off)."""
    out = []
    for row in rows:
        for metric, stat in metrics:
            r = row[f"{metric}_{stat}"]
            m, p = r["measured"], r["predicted"]
            out.append(abs(math.log(p / m)) if m and p and p > 0 and m > 0 else 5.0)
    return out


def summarize(rows: list[dict]) -> dict[str, Any]:
    """Median signed and absolute error (%) and the worst stage per metric, over ``rows``."""
    out: dict[str, Any] = {"stages": len(rows)}
    for key in [f"{m}_{s}" for m, s in REPORT_METRICS] + ["requests_per_s"]:
        errs = [row[key]["error_pct"] for row in rows if row[key]["error_pct"] is not None]
        out[key] = {"median_error_pct": statistics.median(errs) if errs else None,
                    "median_abs_error_pct": statistics.median(abs(e) for e in errs) if errs else None,
                    "max_abs_error_pct": max(abs(e) for e in errs) if errs else None}
    return out


# -- the optimiser ------------------------------------------------------------------------------

def nelder_mead(f: Callable[[np.ndarray], float], x0, step, lo, hi, *, max_evals: int = 60,
                xtol: float = 0.02) -> tuple[np.ndarray, float, int]:
    """Minimise ``f`` over the box [lo, hi] (points clipped into it) by Nelder-Mead.

    Stops after ``max_evals`` evaluations or when the simplex spans less than ``xtol`` of each
    initial step. Returns ``(x, f(x), evaluations)``.
    """
    lo, hi, step = (np.asarray(v, float) for v in (lo, hi, step))
    n = len(step)
    evals = 0

    def g(x):
        nonlocal evals
        evals += 1
        return f(np.minimum(np.maximum(x, lo), hi))

    pts = [np.minimum(np.maximum(np.asarray(x0, float), lo), hi)]
    for i in range(n):
        p = pts[0].copy()
        p[i] = p[i] + step[i] if p[i] + step[i] <= hi[i] else p[i] - step[i]
        pts.append(p)
    vals = [g(p) for p in pts]
    while evals < max_evals:
        order = np.argsort(vals, kind="stable")
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        if np.all(np.ptp(np.array(pts), axis=0) <= xtol * step):
            break
        c = np.mean(pts[:-1], axis=0)
        xr = np.minimum(np.maximum(2 * c - pts[-1], lo), hi)
        fr = g(xr)
        if fr < vals[0]:
            xe = np.minimum(np.maximum(3 * c - 2 * pts[-1], lo), hi)
            fe = g(xe)
            pts[-1], vals[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = xr, fr
        else:
            xc = (c + pts[-1]) / 2
            fc = g(xc)
            if fc < vals[-1]:
                pts[-1], vals[-1] = xc, fc
            else:
                pts = [pts[0]] + [(pts[0] + p) / 2 for p in pts[1:]]
                vals = [vals[0]] + [g(p) for p in pts[1:]]
    i = int(np.argmin(vals))
    return pts[i], float(vals[i]), evals


def _golden(f: Callable[[float], float], lo: float, hi: float, *, tol: float) -> float:
    """Minimise a unimodal ``f`` on [lo, hi] by golden-section search."""
    r = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = f(d)
    return (a + b) / 2


# -- fitting ------------------------------------------------------------------------------------

def start_factors(gpu: str, framework: str) -> dict[str, float]:
    """The catalog's current values of the free factors (the optimiser's start)."""
    from oracle.catalog import get_framework, get_gpu
    g = get_gpu(gpu, key="--gpu")
    out = {k: float(getattr(g, k)) for k in STEP_FACTORS}
    out[REQUEST_FACTOR] = float(get_framework(framework, key="--framework").api_server_s)
    return out


def fit(plans: dict[str, ReplayPlan], *, gpu: str, framework: str = "vllm", seed: int = 0, max_evals: int = 60,
        free: tuple[str, ...] = DEFAULT_FREE,
        progress: Callable[[str], None] | None = None) -> tuple[dict[str, float], Evaluation]:
    """Fit the free factors on ``plans`` (module docstring): the step-time factors ``free``
    (keys of :data:`STEP_FACTORS`), then ``api_server_s``. Returns the factors and the replays
    made with them."""
    say = progress or (lambda _m: None)
    usable = {k: p for k, p in plans.items() if kept_up(p)}
    if not usable:
        raise ReplayError("no run where the server kept up (every run has failed requests): nothing to fit on")
    start = start_factors(gpu, framework)
    unknown = [k for k in free if k not in STEP_FACTORS]
    if unknown or not free:
        raise ReplayError(f"cannot fit {unknown or 'nothing'}: the step-time factors are {', '.join(STEP_FACTORS)}")
    names = list(free)
    scale = np.array([STEP_FACTORS[k][2] for k in names])
    lo = np.array([STEP_FACTORS[k][0] for k in names]) / scale
    hi = np.array([STEP_FACTORS[k][1] for k in names]) / scale
    cache: dict[tuple, Evaluation] = {}

    def run(x: np.ndarray, api: float) -> Evaluation:
        key = (*np.round(x, 9), round(api, 9))
        if key not in cache:
            cache[key] = evaluate(usable, {**dict(zip(names, x * scale)), REQUEST_FACTOR: api}, gpu=gpu, seed=seed)
        return cache[key]

    def step_objective(x: np.ndarray) -> float:
        ev = run(x, 0.0)
        v = float(np.mean(_log_errors(stage_rows(ev, usable), STEP_METRICS)))
        say(f"  {', '.join(f'{k} {v_:.4g}' for k, v_ in zip(names, x * scale))}: mean |log err| {v:.4f}"
            f" ({ev.wall_s:.1f} s)")
        return v

    say(f"stage 1: {', '.join(names)} on {len(usable)} runs ({', '.join(sorted(usable))})")
    x, _, _ = nelder_mead(step_objective, np.array([start[k] for k in names]) / scale, np.ones(len(names)), lo, hi,
                          max_evals=max_evals)
    base = run(x, 0.0)
    rows = stage_rows(base, usable)

    def request_objective(api: float) -> float:   # TTFT shifts by api_server_s (see module docstring)
        errs = []
        for row in rows:
            for metric, stat in REQUEST_METRICS:
                r = row[f"{metric}_{stat}"]
                if r["measured"] and r["predicted"] is not None:
                    errs.append(abs(math.log((r["predicted"] + api * 1e3) / r["measured"])))
        return float(np.mean(errs)) if errs else 0.0

    api = _golden(request_objective, *REQUEST_BOUNDS, tol=1e-5)
    say(f"stage 2: api_server_s {api:.4g} s")
    factors = {**{k: float(_round(v)) for k, v in zip(names, x * scale)}, REQUEST_FACTOR: float(_round(api))}
    return factors, run(np.array([factors[k] for k in names]) / scale, factors[REQUEST_FACTOR])


def _round(v: float) -> float:
    return float(f"{v:.4g}")


def calibrate(paths: list[Path], *, gpu: str = "h100-sxm", framework: str = "vllm", seed: int = 0,
              lomo: bool = True, max_evals: int = 60, fit_attention: bool = False, command: str = "",
              progress: Callable[[str], None] | None = None) -> CalibrationResult:
    """Fit on every run, then (``lomo``) once per model on the others; see the module docstring.
    ``fit_attention``: fit ``eff_attn_memory`` too."""
    say = progress or (lambda _m: None)
    t0 = time.perf_counter()
    plans = load_plans(paths, seed=seed)
    free = (("eff_attn_memory",) if fit_attention else ()) + DEFAULT_FREE
    factors, ev = fit(plans, gpu=gpu, framework=framework, seed=seed, max_evals=max_evals, free=free, progress=say)
    rows = stage_rows(ev, plans)
    result = CalibrationResult(gpu=gpu, framework=framework, factors=factors,
                               in_sample={"stages": rows, "medians": summarize(rows)})
    if lomo:
        models = sorted({model_of(p) for p in plans.values()})
        held_rows: list[dict] = []
        for m in models:
            train = {k: p for k, p in plans.items() if model_of(p) != m}
            test = {k: p for k, p in plans.items() if model_of(p) == m}
            if not any(kept_up(p) for p in train.values()) or not test:
                continue
            fitted = sum(kept_up(p) for p in train.values())
            say(f"leave {m} out: fit on the {fitted} of {len(train)} other runs that kept up, predict {len(test)}")
            f_m, _ = fit(train, gpu=gpu, framework=framework, seed=seed, max_evals=max_evals, free=free,
                         progress=say)
            r_m = stage_rows(evaluate(test, f_m, gpu=gpu, seed=seed), test)
            held_rows += r_m
            result.lomo[m] = {"factors": f_m, "stages": r_m, "medians": summarize(r_m)}
        result.lomo["all held out"] = {"stages": [], "medians": summarize(held_rows)}
    result.provenance = {
        "runs": [str(p) for p in paths], "fitted_on": sorted(k for k, p in plans.items() if kept_up(p)),
        "gpu": gpu, "framework": framework, "seed": seed, "date": _dt.date.today().isoformat(),
        "commit": _git_commit(), "command": command, "wall_time_s": round(time.perf_counter() - t0, 1),
        "method": f"stage 1: {', '.join(free)} minimise mean |log(pred/meas)| of per-stage mean TPOT and E2E "
                  "(Nelder-Mead over whole replays); stage 2: api_server_s minimises it on per-stage mean and p90 "
                  "TTFT; stages with failed requests left out",
        "fitted": list(free) + [REQUEST_FACTOR],
        "held": {k: v for k, v in start_factors(gpu, framework).items() if k in STEP_FACTORS and k not in free},
    }
    return result


def _git_commit() -> str:
    """The package's git commit, ``+dirty`` when its Python sources differ from it."""
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "oracle/*.py"],
                               capture_output=True, text=True, timeout=10)
        return (out.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# -- writing ------------------------------------------------------------------------------------

def note(result: CalibrationResult) -> str:
    """The one-line provenance stored next to the fitted factors in the catalog."""
    med = result.in_sample["medians"]
    lomo = result.lomo.get("all held out", {}).get("medians")

    def fmt(m):
        return ", ".join(f"{k.split('_')[0].upper()} {m[k]['median_abs_error_pct']:.1f} %"
                         for k in ("ttft_mean", "tpot_mean", "e2e_mean") if m[k]["median_abs_error_pct"] is not None)
    gpu_keys = ", ".join(k for k in result.factors if k in STEP_FACTORS)
    held = ", ".join(f"{k} {v:.4g}" for k, v in result.provenance.get("held", {}).items())
    text = (f"{gpu_keys}: fitted end to end by oracle calibrate-e2e on {len(result.provenance['fitted_on'])} "
            f"vLLM runs ({result.provenance['date']}, commit {result.provenance['commit']})"
            + (f" with {held} held at the catalog's value" if held else "")
            + f"; median |error| per stage in sample {fmt(med)}")
    if lomo:
        text += f"; leave-one-model-out {fmt(lomo)}"
    return text + " (benchmarks/FIDELITY.md)"


#: what the framework note says of the CPU terms, which no shared run can identify
CPU_NOTE = ("cpu_step_s and cpu_seq_s are not measured: every shared run is GPU-bound, so under async scheduling "
            "the CPU time never shows (order of magnitude of vLLM v1's Python scheduler and output processing)")


def framework_note(result: CalibrationResult) -> str:
    """Provenance of the framework's fitted ``api_server_s``."""
    med = result.in_sample["medians"]
    held = result.lomo.get("all held out", {}).get("medians")
    text = (f"fitted end to end by oracle calibrate-e2e on per-stage mean and p90 TTFT of "
            f"{len(result.provenance['fitted_on'])} runs on {result.gpu} ({result.provenance['date']}, commit "
            f"{result.provenance['commit']}): median |error| of mean TTFT {med['ttft_mean']['median_abs_error_pct']:.1f} %")
    if held and held["ttft_mean"]["median_abs_error_pct"] is not None:
        text += f" in sample, {held['ttft_mean']['median_abs_error_pct']:.1f} % leave-one-model-out"
    return text + " (benchmarks/FIDELITY.md)"


def to_toml(result: CalibrationResult) -> str:
    """A calibration file: the fitted factors in catalog layout, plus provenance and errors."""
    from oracle.legacy.toml_writer import dumps
    gpu_keys = {k: v for k, v in result.factors.items() if k in STEP_FACTORS}
    doc = {"gpus": {result.gpu: {**gpu_keys, "e2e_calibration_note": note(result)}},
           "frameworks": {result.framework: {REQUEST_FACTOR: result.factors[REQUEST_FACTOR],
                                             "calibration_note": f"api_server_s: {framework_note(result)}"}},
           "provenance": {k: v for k, v in result.provenance.items() if v is not None},
           "errors": {"in_sample": _medians_toml(result.in_sample["medians"]),
                      **{f"held_out {m}": _medians_toml(v["medians"]) for m, v in result.lomo.items()}}}
    for m, v in result.lomo.items():
        if "factors" in v:
            doc["errors"][f"held_out {m}"]["factors"] = v["factors"]
    return dumps(doc, header=["oracle calibrate-e2e: end-to-end fit of the cost model's free factors",
                              "paste [gpus.*] into oracle/catalog/gpus.toml and [frameworks.*] into frameworks.toml, "
                              "or run with --update-catalog"])


def _medians_toml(m: dict) -> dict:
    out = {"stages": m["stages"]}
    for k, v in m.items():
        if isinstance(v, dict):
            out[k] = {kk: round(vv, 3) for kk, vv in v.items() if vv is not None}
    return out


def update_catalog(result: CalibrationResult, *, gpus_toml: Path | None = None,
                   frameworks_toml: Path | None = None) -> list[Path]:
    """Write the fitted factors into the catalog files (other keys and comments kept)."""
    from oracle.catalog import FRAMEWORKS_TOML, GPUS_TOML
    gpus_toml = gpus_toml or GPUS_TOML
    frameworks_toml = frameworks_toml or FRAMEWORKS_TOML
    gpu_values: dict[str, Any] = {k: v for k, v in result.factors.items() if k in STEP_FACTORS}
    gpu_values["e2e_calibration_note"] = note(result)
    sections = {f"gpus.{result.gpu}": gpu_values,
                "defaults": {"custom_ar_latency_s": result.factors["custom_ar_latency_s"]}}
    gpus_toml.write_text(set_keys(gpus_toml.read_text(), sections))
    fw = {REQUEST_FACTOR: result.factors[REQUEST_FACTOR],
          "calibration_note": f"api_server_s: {framework_note(result)}; {CPU_NOTE}"}
    frameworks_toml.write_text(set_keys(frameworks_toml.read_text(), {f"frameworks.{result.framework}": fw}))
    from oracle import catalog
    for fn in (catalog.load_gpus, catalog.gpu_defaults, catalog.load_frameworks):
        fn.cache_clear()
    return [gpus_toml, frameworks_toml]


def set_keys(text: str, sections: dict[str, dict[str, Any]]) -> str:
    """Set ``key = value`` lines in the given ``[section]``s of a catalog TOML text, keeping
    the rest (``oracle.calibrate.catalog.update_catalog_text``); every section must exist."""
    header = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
    present = {m.group(1).strip() for m in map(header.match, text.splitlines()) if m}
    missing = [name for name in sections if name not in present]
    if missing:
        raise ReplayError(f"the catalog has no section [{missing[0]}]")
    return update_catalog_text(text, sections)


__all__ = ["CalibrationResult", "Evaluation", "calibrate", "evaluate", "fit", "kept_up", "load_plans",
           "model_of", "nelder_mead", "set_keys", "stage_rows", "summarize", "to_toml", "update_catalog"]
