"""Sweep throughput: a 1,000-point sweep of 10,000-request scenarios on the local executor.

    python benchmarks/bench_sweep.py                       # 1,000 points x 10k requests, all cores
    python benchmarks/bench_sweep.py --points 100 --requests 2000 --workers 2

The sweep: scenarios/sweep_base.toml with ``num_requests`` set, 10 arrival rates (grid)
crossed with explicit points over replicas (1, 2, 4, 8) x max_num_seqs (64 .. 1024) x
max_num_batched_tokens (2048 .. 32768): 10 distinct workloads, 1,000 points.

Reports (and prints as JSON): total wall time (validation + pool start + runs + assembly),
its parts, ``simulate()`` time per point, per-point overhead (core-seconds per point outside
``simulate()``: parsing, workload cache, summary row, IPC, writing the point file; pool
start-up excluded and reported as ``startup_s``) and numba compiles per worker after its
first point (0 = the on-disk cache is reused).
A warm-up sweep of ``--workers`` points first fills the numba cache, so compile time is
reported apart (``warmup_s``) and excluded from the figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATES = (4.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0, 32.0, 40.0)
COMBOS = list(itertools.product((1, 2, 4, 8), (64, 128, 256, 512, 1024), (2048, 4096, 8192, 16384, 32768)))


def write_sweep(folder: Path, *, points: int, requests: int) -> Path:
    k = max(1, points // len(RATES))
    if k > len(COMBOS):
        raise SystemExit(f"--points must be at most {len(COMBOS) * len(RATES)}")
    base = (ROOT / "scenarios" / "sweep_base.toml").read_text()
    base = base.replace("num_requests = 2000", f"num_requests = {requests}")
    (folder / "base.toml").write_text(base)
    lines = ['name = "bench-sweep"', 'base = "base.toml"', ""]
    for replicas, seqs, budget in COMBOS[:k]:
        lines += ["[[points]]", f'"frameworks.0.replicas" = {replicas}', f'"frameworks.0.max_num_seqs" = {seqs}',
                  f'"frameworks.0.max_num_batched_tokens" = {budget}', ""]
    lines += ["[grid]", f'"workload.clients.0.arrival.rate" = [{", ".join(map(str, RATES))}]', ""]
    path = folder / "sweep.toml"
    path.write_text("\n".join(lines))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path, default=None, help="Keep the sweep output here (default: a temp folder).")
    args = ap.parse_args()

    from oracle.sweep.run import run_sweep
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        out = args.out or folder / "out"
        # warm-up: fill the numba cache (compile time is reported apart)
        (folder / "warm").mkdir()
        warm = write_sweep(folder / "warm", points=len(RATES), requests=200)
        t = time.perf_counter()
        run_sweep(warm, out_dir=folder / "warm-out", workers=args.workers)
        warmup_s = time.perf_counter() - t

        sweep = write_sweep(folder, points=args.points, requests=args.requests)
        res = run_sweep(sweep, out_dir=out, workers=args.workers)
        df = res.table
        tasks = res.task_stats
        per_worker: dict[int, list[dict]] = {}
        for st in tasks:
            per_worker.setdefault(st["pid"], []).append(st)
        firsts = [min(ss, key=lambda st: st["worker_tasks"]) for ss in per_worker.values()]
        later = [st for st in tasks if st not in firsts]
        sim = [st["simulate_s"] for st in tasks]
        cpu = [st["simulate_cpu_s"] for st in tasks]
        # startup: until every worker delivered its first result, minus that first task's own simulation
        startup_s = max(st["done_s"] - st["simulate_s"] for st in firsts)
        steady = later or tasks
        gaps = []
        for ss in per_worker.values():
            ss = sorted(ss, key=lambda st: st["worker_tasks"])
            gaps += [b["done_s"] - a["done_s"] - b["simulate_s"] for a, b in zip(ss, ss[1:])]
        exec_s = max(st["done_s"] for st in tasks)
        report = {
            "points": res.num_points, "requests_per_point": args.requests, "workers": res.workers,
            "cores": os.cpu_count(),
            "load_avg_1m": [round(load_start, 2), round(os.getloadavg()[0], 2)],   # at start, at end
            "wall_time_s": round(res.wall_time_s, 2),
            "validate_s": round(res.validate_s, 2),
            "execute_s": round(exec_s, 2),
            "assemble_s": round(res.wall_time_s - res.validate_s - exec_s, 2),
            "startup_s": round(startup_s, 2),
            "warmup_sweep_s": round(warmup_s, 2),
            "points_per_s": round(res.num_tasks / res.wall_time_s, 2),
            "simulate_s_per_point_mean": round(statistics.fmean(sim), 4),
            "simulate_s_per_point_median": round(statistics.median(sim), 4),
            "simulate_s_per_point_max": round(max(sim), 4),
            # CPU seconds (not wall) of simulate(): what the points cost without other load
            "simulate_cpu_s_per_point_mean": round(statistics.fmean(cpu), 4),
            "simulate_cpu_s_total": round(sum(cpu), 1),
            "cpu_bound_wall_s": round(res.validate_s + startup_s + sum(cpu) / res.workers, 1),
            # in the worker, outside simulate(): parse + workload (cached) + summary row
            "worker_overhead_s_per_point": round(statistics.fmean(st["task_wall_s"] - st["simulate_s"]
                                                                  for st in steady), 4),
            # per worker, the time between two results that is not simulate() (parse, workload
            # cache, summary, IPC): core-seconds per point, start-up excluded
            "overhead_core_s_per_point": round(statistics.fmean(gaps), 4) if gaps else None,
            "workload_builds": sum(not st["workload_cached"] for st in tasks),
            "compiles_first_point_per_worker": sum(st["compiles"] for st in firsts),
            "compiles_after_first_point": sum(st["compiles"] for st in later),
            "requests_simulated": int(df["requests_total"].sum()),
        }
        print(json.dumps(report, indent=1))


if __name__ == "__main__":   # required: spawned workers re-import this file
    main()
