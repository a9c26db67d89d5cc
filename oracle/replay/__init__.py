"""``oracle replay``: simulate a real benchmark as it ran and compare with what it measured.

    from oracle.replay import replay
    res = replay("results/20260217-155451-llama-2-7b-tp1-codegen")      # inference-perf folder
    res = replay("bench.json", flags={"tp": 2})                         # vllm bench serve result
    res.comparison["stages"][0]["metrics"]["ttft_ms"]["mean"]           # measured, predicted, error_pct

A converter reads the result into a :class:`~oracle.replay.common.ReplayPlan` (server
settings, stages, requests with the load generator's own data and arrival rules, measured
figures converted per token): :mod:`oracle.replay.inference_perf`,
:mod:`oracle.replay.vllm_bench`. :mod:`oracle.replay.run` simulates the plan as an ordinary
scenario and builds the comparison; :func:`write_replay` saves everything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from oracle.replay.common import ReplayError, ReplayPlan
from oracle.replay.run import ReplayResult, add_seed_spread, build_workload, scenario_dict, simulate_plan

__all__ = ["ReplayError", "ReplayPlan", "ReplayResult", "add_seed_spread", "build_workload", "load_plan", "replay",
           "scenario_dict", "simulate_plan", "write_replay"]


def load_plan(path: str | Path, *, server_file: str | Path | None = None, flags: dict[str, Any] | None = None,
              seed: int = 0, timeout_s: float | None = None) -> ReplayPlan:
    """Read a benchmark result: an inference-perf result folder or a vllm bench serve JSON."""
    from oracle.replay.inference_perf import is_inference_perf, load_inference_perf
    from oracle.replay.vllm_bench import is_vllm_bench, load_vllm_bench
    path = Path(path)
    server = Path(server_file) if server_file is not None else None
    if server is not None and not server.is_file():
        raise ReplayError("file not found" if not server.exists() else "not a file", file=server)
    if not path.exists():
        raise ReplayError("not found (expected an inference-perf result folder or a vllm bench serve JSON)",
                          file=path)
    if is_inference_perf(path):
        return load_inference_perf(path, server_file=server, flags=flags, seed=seed, timeout_s=timeout_s)
    if is_vllm_bench(path):
        return load_vllm_bench(path, server_file=server, flags=flags, seed=seed, timeout_s=timeout_s)
    if path.is_dir():
        raise ReplayError("not an inference-perf result folder: no results/config.yaml or config.yaml inside",
                          file=path)
    raise ReplayError("not a benchmark result: expected an inference-perf result folder or a vllm bench serve "
                      ".json file", file=path)


def replay(path: str | Path, *, server_file: str | Path | None = None, flags: dict[str, Any] | None = None,
           gpu: str = "h100-sxm", seed: int = 0, timeout_s: float | None = None,
           progress: Callable[[str], None] | None = None, seeds: int = 1) -> ReplayResult:
    """Read, simulate and compare a benchmark result (nothing is written; see :func:`write_replay`).

    ``seeds`` > 1 also replays with the ``seeds - 1`` seeds after ``seed`` (other arrival
    draws) and adds each figure's range over the draws to the comparison
    (:func:`~oracle.replay.run.add_seed_spread`); the simulation kept is ``seed``'s."""
    from oracle.catalog import get_gpu
    from oracle.errors import OracleError
    try:
        get_gpu(gpu, key="--gpu")
    except OracleError as exc:
        raise ReplayError(exc.reason, key="--gpu") from None
    if seeds < 1:
        raise ReplayError(f"must be >= 1, got {seeds}", key="--seeds")
    plan = load_plan(path, server_file=server_file, flags=flags, seed=seed, timeout_s=timeout_s)
    res = simulate_plan(plan, gpu=gpu, seed=seed, progress=progress)
    if seeds > 1:
        others = []
        for s in range(seed + 1, seed + seeds):
            say = (lambda m, _s=s: progress(f"seed {_s}: {m}")) if progress is not None else None
            other = load_plan(path, server_file=server_file, flags=flags, seed=s, timeout_s=timeout_s)
            others.append(simulate_plan(other, gpu=gpu, seed=s, progress=say).comparison)
        add_seed_spread(res.comparison, others)
    return res


def write_replay(res: ReplayResult, out_dir: str | Path) -> Path:
    """Write ``out_dir/{replay.json, scenario.toml, workload.parquet, vllm/...}`` atomically.

    ``oracle simulate out_dir/scenario.toml`` reruns the simulation of the last (all-stage)
    run and gives the same ``vllm/`` results.
    """
    from oracle.legacy.toml_writer import dumps as toml_dumps
    from oracle.metrics.output import write_framework
    from oracle.metrics.writers import check_out_dir, dumps, make_staging_dir, publish, write_text
    dest = Path(out_dir)
    check_out_dir(dest)
    staging = make_staging_dir(dest)
    names = ["replay.json", "scenario.toml", "workload.parquet"]
    try:
        write_text(staging / "replay.json", dumps(res.comparison))
        header = [f"oracle replay of {res.plan.source} ({res.plan.kind})",
                  "the workload reproduces the load generator; see replay.json for the notes"]
        write_text(staging / "scenario.toml", toml_dumps(res.scenario_raw, header=header))
        res.workload.to_parquet(staging / "workload.parquet")
        for name, fr in res.simulation.frameworks.items():
            write_framework(fr, staging / name, fmt="parquet", steps=fr.steps is not None)
            names.append(name)
        publish(staging, dest, names)
    except BaseException:
        import shutil
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest
