"""Time the simulator end to end on fixed, seeded scenarios (issue: speed targets).

    python benchmarks/bench_engine.py                        # chat + plain at 10k, 100k, 1M
    python benchmarks/bench_engine.py --requests 10000 --repeats 3 --json
    python benchmarks/bench_engine.py --reference 2000       # ratio vs the plain-Python engine
    python benchmarks/bench_engine.py --scenario chat chat-pd --requests 1000000 --repeats 1   # P/D vs aggregated
    python benchmarks/bench_engine.py --scenario plain plain-spec --requests 100000   # spec decode on vs off

Every measured run happens in a fresh subprocess (so ``peak_rss_mb`` is that run's own peak)
that first warms the compiled kernels on a tiny run, then times: workload generation +
simulation + writing requests.parquet and summary.json. ``compile_s`` is measured apart, in a
subprocess with an empty numba cache directory (a true cold compile). One JSON record per
run is printed (``--json``) or summarised as a table; medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIOS = {"chat": HERE / "chat.toml", "plain": HERE / "plain.toml", "chat-pd": HERE / "chat_pd.toml",
             "plain-spec": HERE / "plain_spec.toml"}
DEFAULT_SCENARIOS = ["chat", "plain"]   # chat-pd: --scenario chat chat-pd (disaggregated vs aggregated)


def _one_run(scenario: str, requests: int, out_dir: str) -> dict:
    """Runs inside the subprocess: warm up, then time one full simulate + write."""
    import resource

    import oracle
    from oracle.scenario import apply_overrides, load_scenario
    base = load_scenario(SCENARIOS[scenario]).raw
    oracle.simulate(apply_overrides(base, {"simulation.num_requests": 200}))  # load compiled kernels
    raw = apply_overrides(base, {"simulation.num_requests": requests})
    t0 = time.perf_counter()
    res = oracle.simulate(raw, out_dir=out_dir)
    wall = time.perf_counter() - t0
    s = res.summary
    return {
        "scenario": scenario,
        "requests": requests,
        "wall_s": wall,
        "sim_requests_per_s": requests / wall,
        "simulated_s": s["simulation"]["total_duration_s"],
        "simulated_s_per_wall_s": s["simulation"]["total_duration_s"] / wall,
        "engine_s": s["simulation"]["wall_time_s"],
        "num_steps": s["simulation"]["num_steps"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ttft_p50_ms": s["latency"]["time_to_first_token_ms"]["p50"],
        "kv_peak_utilization": s["kv_cache"]["peak_utilization"],
        "token_hit_rate": s["prefix_caching"]["token_hit_rate"],
    }


def _cold_compile() -> dict:
    """Inside a subprocess with an empty NUMBA_CACHE_DIR: time the first tiny simulate."""
    import oracle
    from oracle.scenario import apply_overrides, load_scenario
    raw = apply_overrides(load_scenario(SCENARIOS["chat"]).raw, {"simulation.num_requests": 50})
    t0 = time.perf_counter()
    oracle.simulate(raw)
    return {"compile_s": time.perf_counter() - t0}


def _reference_ratio(scenario: str, requests: int) -> dict:
    """Engine-only time of the jitted loop vs tests/reference/engine.py on the same inputs."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from reference.engine import run_reference

    import oracle  # noqa: F401
    from oracle.api import as_scenario, engine_inputs, load_workload
    from oracle.engine.loop import run_engine
    from oracle.kernels.cost import step_time_s
    from oracle.scenario import apply_overrides, load_scenario
    sc = as_scenario(apply_overrides(load_scenario(SCENARIOS[scenario]).raw, {"simulation.num_requests": requests}))
    wl = load_workload(sc)
    # the reference reads per-request hash ranges (CSR), so give both engines those
    inputs = engine_inputs(sc, sc.frameworks[0], wl, hashes=wl.block_hashes(sc.frameworks[0].block_size))
    run_engine(inputs)  # compiled/loaded
    jit_times = []
    for _ in range(3):
        t0 = time.perf_counter()
        run_engine(inputs)
        jit_times.append(time.perf_counter() - t0)
    params = inputs.cost_params
    t0 = time.perf_counter()
    run_reference(inputs, lambda *agg: step_time_s(params, *agg))
    ref = time.perf_counter() - t0
    jit = statistics.median(jit_times)
    return {"scenario": scenario, "requests": requests, "reference_s": ref, "jit_s": jit, "ratio": ref / jit}


def _subprocess(fn: str, *args, env: dict | None = None) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {str(HERE)!r}); import bench_engine as b; "
            f"print('@@' + json.dumps(b.{fn}(*{args!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise SystemExit(f"benchmark subprocess failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1]
    return json.loads(line[2:])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", nargs="+", default=DEFAULT_SCENARIOS, choices=list(SCENARIOS))
    ap.add_argument("--requests", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference", type=int, default=0, metavar="N",
                    help="Also time the plain-Python reference engine on N requests of each scenario.")
    ap.add_argument("--no-compile", action="store_true", help="Skip the cold-compile measurement.")
    ap.add_argument("--json", action="store_true", help="Print one JSON record per line.")
    args = ap.parse_args(argv)

    records = []
    if not args.no_compile:
        with tempfile.TemporaryDirectory() as cache:
            rec = _subprocess("_cold_compile", env={"NUMBA_CACHE_DIR": cache})
        rec["kind"] = "compile"
        records.append(rec)
        print(json.dumps(rec) if args.json else f"cold compile (first simulate, empty cache): {rec['compile_s']:.1f} s",
              flush=True)
    for sc in args.scenario:
        for n in args.requests:
            runs = []
            for _ in range(args.repeats):
                with tempfile.TemporaryDirectory() as out:
                    runs.append(_subprocess("_one_run", sc, n, out))
            med = dict(runs[0])  # the simulated figures are identical across repeats (same seed)
            for k in ("wall_s", "sim_requests_per_s", "simulated_s_per_wall_s", "peak_rss_mb", "engine_s"):
                med[k] = statistics.median(r[k] for r in runs)
            med["kind"] = "run"
            med["repeats"] = len(runs)
            med["wall_s_all"] = [round(r["wall_s"], 3) for r in runs]
            records.append(med)
            if args.json:
                print(json.dumps(med), flush=True)
            else:
                print(f"{sc:6s} {n:>9,d} req: wall {med['wall_s']:7.2f} s (runs {med['wall_s_all']}), "
                      f"{med['sim_requests_per_s']:>10,.0f} req/s, sim/wall {med['simulated_s_per_wall_s']:8.1f}x, "
                      f"peak RSS {med['peak_rss_mb']:7.0f} MB", flush=True)
    if args.reference:
        for sc in args.scenario:
            rec = _subprocess("_reference_ratio", sc, args.reference)
            rec["kind"] = "reference"
            records.append(rec)
            print(json.dumps(rec) if args.json else
                  f"{sc:6s} reference engine on {args.reference} req: {rec['reference_s']:.2f} s vs jitted "
                  f"{rec['jit_s'] * 1e3:.1f} ms -> {rec['ratio']:,.0f}x", flush=True)


if __name__ == "__main__":
    main()
