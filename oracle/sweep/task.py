"""What a sweep worker runs: one point (scenario dict) -> one flat row of metrics per framework.

The same :func:`run_task` runs in-process, in a local process pool and as a Ray task. It is
importable without numba or polars (they load on the first task), so a pool initializer can
set ``NUMBA_CACHE_DIR`` and thread limits before anything compiles.

Per worker process:

* workloads are generated once per distinct workload (key: seed + ``[workload]`` +
  ``[simulation]`` + base folder) and kept in a small LRU, with their block hashes memoized;
* numba kernels load from the shared on-disk cache (see :func:`worker_env`): once per worker,
  a few seconds for the engine on a slow machine. With a cold cache every worker compiles at
  the same time on its own core (numba writes cache files atomically), which takes no longer
  in wall time than one compile followed by N loads would;
* each result reports ``compiles``: how many kernel signatures this task compiled from
  scratch (numba cache misses), so benchmarks and tests can check that workers do not
  recompile per point.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

# (column, path into summary.json, kind) -- kind "f": Float64, "i": Int64
_LAT = (("ttft", "time_to_first_token_ms"), ("tpot", "time_per_output_token_ms"),
        ("itl", "inter_token_latency_ms"), ("e2e", "end_to_end_latency_ms"))
METRICS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    *((f"{short}_{stat}_ms", ("latency", key, stat), "f") for short, key in _LAT
      for stat in ("mean", "p50", "p90", "p99")),
    ("throughput_rps", ("throughput", "requests_per_second"), "f"),
    ("output_tokens_per_s", ("throughput", "output_tokens_per_second"), "f"),
    ("input_tokens_per_s", ("throughput", "input_tokens_per_second"), "f"),
    ("goodput_rps", ("goodput", "requests_per_second"), "f"),
    ("goodput_fraction", ("goodput", "fraction"), "f"),
    ("token_hit_rate", ("prefix_caching", "token_hit_rate"), "f"),
    ("overall_hit_rate", ("prefix_caching", "overall_hit_rate"), "f"),
    ("conversational_hit_rate", ("prefix_caching", "conversational_hit_rate"), "f"),
    ("cross_request_hit_rate", ("prefix_caching", "cross_request_hit_rate"), "f"),
    ("prefill_reduction_ratio", ("prefix_caching", "prefill_reduction_ratio"), "f"),
    ("kv_mean_utilization", ("kv_cache", "mean_utilization"), "f"),
    ("kv_peak_utilization", ("kv_cache", "peak_utilization"), "f"),
    ("host_token_hit_rate", ("kv_offload", "host_token_hit_rate"), "f"),   # null without a KV offload tier
    ("host_bytes_loaded", ("kv_offload", "bytes_loaded"), "i"),
    ("preemptions", ("preemptions",), "i"),
    ("num_gpus", ("config", "num_gpus"), "i"),
    ("requests_total", ("requests", "total"), "i"),
    ("requests_failed", ("requests", "failed"), "i"),
    ("success_rate", ("requests", "success_rate"), "f"),
    ("sim_duration_s", ("simulation", "total_duration_s"), "f"),
    ("wall_time_s", ("simulation", "wall_time_s"), "f"),
)

WORKLOAD_CACHE_SIZE = int(os.environ.get("ORACLE_SWEEP_WORKLOAD_CACHE", "4"))

_workloads: "OrderedDict[str, Any]" = OrderedDict()
_stats = {"tasks": 0, "workloads_built": 0}


def worker_env(num_threads: int = 1) -> dict[str, str]:
    """Environment a sweep worker needs (only variables the user has not set).

    ``NUMBA_CACHE_DIR`` is passed on when set. When it is unset, workers keep the package's
    default kernel cache (``oracle.kernels._jit``: ``$ORACLE_CACHE_DIR/numba`` or
    ``~/.cache/llmperforacle/numba``, one folder per package state), which every process on the
    machine shares -- the same cache ``oracle simulate`` fills, so a sweep after a simulation
    compiles nothing. (A separate sweep-only folder would cost one full compile of the engine
    per machine, about a minute on 2 cores.)
    Each worker runs single-threaded (polars, numba, BLAS), so N workers use N cores.
    """
    env = {}
    if os.environ.get("NUMBA_CACHE_DIR"):
        env["NUMBA_CACHE_DIR"] = os.environ["NUMBA_CACHE_DIR"]
    elif os.environ.get("ORACLE_CACHE_DIR"):
        env["NUMBA_CACHE_DIR"] = os.path.join(os.environ["ORACLE_CACHE_DIR"], "numba")
    for var in ("POLARS_MAX_THREADS", "NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        if not os.environ.get(var):
            env[var] = str(num_threads)
    return env


def init_worker(env: dict[str, str], *, ignore_sigint: bool = True) -> None:
    """Pool initializer: set the environment before numba/polars are imported in this process.

    Workers ignore Ctrl-C (the terminal sends it to the whole process group): the parent
    handles it, keeps the finished points and stops the workers.
    """
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for k, v in env.items():
        os.environ.setdefault(k, v)
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)


def workload_key(raw: dict, base_dir: str) -> str:
    """The workload-relevant part of a scenario dict."""
    return json.dumps({"seed": raw.get("seed", 0), "workload": raw.get("workload"),
                       "simulation": raw.get("simulation"), "base_dir": base_dir},
                      sort_keys=True, default=str)


def _get_workload(sc, key: str):
    wl = _workloads.get(key)
    if wl is not None:
        _workloads.move_to_end(key)
        return wl, True
    from oracle.api import load_workload   # lazy: see _run
    wl = load_workload(sc)
    wl.block_hashes = functools.lru_cache(maxsize=4)(wl.block_hashes)   # per block size, once
    _workloads[key] = wl
    _stats["workloads_built"] += 1
    while len(_workloads) > max(WORKLOAD_CACHE_SIZE, 1):
        _workloads.popitem(last=False)
    return wl, False


def clear_workload_cache() -> None:
    _workloads.clear()


def _dispatchers():
    """Every numba dispatcher of the package's kernel/engine modules loaded so far."""
    try:
        from numba.core.registry import CPUDispatcher   # lazy: see _run
    except ImportError:  # pragma: no cover
        return []
    out = []
    for name, mod in list(sys.modules.items()):
        if mod is None or not name.startswith("oracle."):
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, CPUDispatcher):
                out.append(obj)
    return out


def compile_count() -> int:
    """Kernel signatures compiled from scratch (numba cache misses) in this process so far."""
    total = 0
    for d in _dispatchers():
        misses = getattr(d, "_cache_misses", None)
        if misses:
            total += sum(misses.values())
    return total


def _summary_row(summary: dict) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for col, path, kind in METRICS:
        node: Any = summary
        for k in path:
            node = node.get(k) if isinstance(node, dict) else None
        if node is not None:
            node = int(node) if kind == "i" else float(node)
        row[col] = node
    return row


def run_task(task) -> dict[str, Any]:
    """Simulate one sweep task; returns ``{key, rows: [{framework, metrics...}], ...}``.

    ``task`` is a :class:`oracle.sweep.spec.SweepTask` (or anything with ``raw``,
    ``base_dir``, ``file``, ``key``).
    """
    return _run(task, time.perf_counter())


def _run(task, t0: float) -> dict[str, Any]:
    # lazy: numpy, polars and numba read their thread and cache settings when imported, which
    # init_worker sets after a worker has imported this module (see the module docstring)
    from oracle.api import simulate
    from oracle.scenario import scenario_from_dict
    before = compile_count()
    sc = scenario_from_dict(task.raw, base_dir=Path(task.base_dir), file=task.file)
    t1 = time.perf_counter()
    wl, cached = _get_workload(sc, workload_key(task.raw, task.base_dir))
    t2, c2 = time.perf_counter(), time.process_time()
    res = simulate(sc, workload=wl, record_steps=False)
    t3, c3 = time.perf_counter(), time.process_time()
    rows = [{"framework": name, **_summary_row(fr.summary)} for name, fr in res.frameworks.items()]
    _stats["tasks"] += 1
    return {"key": task.key, "rows": rows, "pid": os.getpid(), "workload_cached": cached,
            "parse_s": t1 - t0, "workload_s": t2 - t1, "simulate_s": t3 - t2, "simulate_cpu_s": c3 - c2, "task_wall_s": time.perf_counter() - t0,
            "compiles": compile_count() - before, "worker_tasks": _stats["tasks"]}
