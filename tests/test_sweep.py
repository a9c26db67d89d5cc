"""``oracle sweep``: sweep files, validation before running, the local pool, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from oracle.cli import build_app
from oracle.errors import ScenarioError
from oracle.sweep.spec import expand_points, load_sweep, make_tasks

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
name = "tiny"
seed = 11
[simulation]
num_requests = {num_requests}
[model]
name = "llama-3.1-8b"
[hardware]
gpu = "h100-sxm"
[[workload.clients]]
name = "chat"
arrival = {{ process = "poisson", rate = 8.0 }}
prompt_tokens = {{ dist = "lognormal", mean = 500, sigma = 0.6, max = 4096 }}
output_tokens = {{ dist = "lognormal", mean = 80, sigma = 0.5, max = 512 }}
system_prompt_tokens = 200
num_system_prompts = 2
[[frameworks]]
name = "vllm"
replicas = 1
{extra_frameworks}
[slo]
ttft_ms = 500
tpot_ms = 50
"""


def write_base(folder: Path, *, num_requests: int = 150, two_frameworks: bool = False) -> Path:
    extra = '[[frameworks]]\nname = "no-cache"\nenable_prefix_caching = false\n' if two_frameworks else ""
    path = folder / "base.toml"
    path.write_text(BASE.format(num_requests=num_requests, extra_frameworks=extra))
    return path


def write_sweep(folder: Path, body: str, *, name: str = "sweep.toml", base: str = "base.toml") -> Path:
    path = folder / name
    path.write_text(f'base = "{base}"\n' + body)
    return path


def run_cli(*args: str):
    return CliRunner().invoke(build_app(), [str(a) for a in args])


# -- sweep files ----------------------------------------------------------------------------
def test_grid_expansion_order_and_repeats(tmp_path):
    write_base(tmp_path)
    f = write_sweep(tmp_path, 'repeats = 3\n[grid]\n"frameworks.0.replicas" = [1, 2]\n'
                              '"workload.clients.0.arrival.rate" = [2.0, 4.0, 8.0]\n')
    spec = load_sweep(f)
    assert spec.name == "sweep" and spec.num_points == 6 and spec.repeats == 3
    points = expand_points(spec)
    assert [p.overrides for p in points[:4]] == [
        {"frameworks.0.replicas": 1, "workload.clients.0.arrival.rate": 2.0},
        {"frameworks.0.replicas": 1, "workload.clients.0.arrival.rate": 4.0},
        {"frameworks.0.replicas": 1, "workload.clients.0.arrival.rate": 8.0},
        {"frameworks.0.replicas": 2, "workload.clients.0.arrival.rate": 2.0}]
    assert points[3].scenario.frameworks[0].replicas == 2
    assert points[2].scenario.workload.clients[0].arrival.rate == 8.0
    tasks = make_tasks(spec, points)
    assert len(tasks) == 18
    assert [(t.point, t.repeat, t.seed) for t in tasks[:4]] == [(0, 0, 11), (0, 1, 12), (0, 2, 13), (1, 0, 11)]
    assert len({t.key for t in tasks}) == 18          # every scenario (incl. seed) differs
    assert make_tasks(spec, points)[5].key == tasks[5].key   # keys are stable


def test_explicit_points_crossed_with_grid_and_nested_keys(tmp_path):
    write_base(tmp_path)
    f = write_sweep(tmp_path, 'name = "gpus"\n[[points]]\n"hardware.gpu" = "h100-sxm"\n'
                              '[[points]]\nhardware.gpu = "h200"\nframeworks.0.tp = 2\n'
                              '[grid]\n"workload.clients.0.arrival.rate" = [1.0, 3.0]\n'
                              '[output]\ndir = "out/gpus"\n')
    spec = load_sweep(f)
    assert spec.keys == ("hardware.gpu", "frameworks.0.tp", "workload.clients.0.arrival.rate")
    assert spec.out_dir == "out/gpus"
    points = expand_points(spec)
    assert [p.overrides for p in points] == [
        {"hardware.gpu": "h100-sxm", "workload.clients.0.arrival.rate": 1.0},
        {"hardware.gpu": "h100-sxm", "workload.clients.0.arrival.rate": 3.0},
        {"hardware.gpu": "h200", "frameworks.0.tp": 2, "workload.clients.0.arrival.rate": 1.0},
        {"hardware.gpu": "h200", "frameworks.0.tp": 2, "workload.clients.0.arrival.rate": 3.0}]
    assert points[2].scenario.gpu.name != points[0].scenario.gpu.name
    assert points[3].scenario.frameworks[0].tp == 2


def test_points_only_and_no_overrides(tmp_path):
    write_base(tmp_path)
    spec = load_sweep(write_sweep(tmp_path, '[[points]]\n"seed" = 5\n[[points]]\n"seed" = 9\n'))
    tasks = make_tasks(spec, expand_points(spec))
    assert [t.seed for t in tasks] == [5, 9]
    spec = load_sweep(write_sweep(tmp_path, "repeats = 2\n", name="plain.toml"))
    points = expand_points(spec)
    assert len(points) == 1 and points[0].overrides == {}
    assert [t.seed for t in make_tasks(spec, points)] == [11, 12]


@pytest.mark.parametrize("body, where, reason", [
    ('[grid]\n"frameworks.0.replicas" = [1, 2, 0]\n', "point 2: frameworks.0.replicas", "must be >= 1"),
    ('[[points]]\n"frameworks.0.replicas" = 1\n[[points]]\n"frameworks.0.replica" = 2\n',
     "point 1: frameworks.0.replica", "did you mean 'replicas'"),
    ('[grid]\n"frameworks.3.replicas" = [1]\n', "point 0: frameworks.3.replicas", "out of range"),
    ('[grid]\n"hardware.gpu" = ["h100-sxm", "h1000"]\n', "point 1: hardware.gpu", "h1000"),
    ('[grid]\n"workload.clients.0.arrival.rate" = [1.0, -2.0]\n', "point 1: workload.clients.0.arrival.rate",
     "must be > 0"),
    ('[grid]\n"frameworks.0.replicas" = 2\n', "grid.frameworks.0.replicas", "must be an array"),
    ('[grid]\n"frameworks.0.replicas" = []\n', "grid.frameworks.0.replicas", "at least one value"),
    ('[grid]\n"output.dir" = ["a"]\n', "output.dir", "cannot be swept"),
    ('[grids]\n"frameworks.0.replicas" = [1]\n', "grids", "did you mean 'grid'"),
    ('[[points]]\n"model.name.x" = 1\n', "point 0: model.name", "must be a string"),
])
def test_bad_points_exit_1_before_running(tmp_path, body, where, reason):
    write_base(tmp_path)
    f = write_sweep(tmp_path, body)
    out = tmp_path / "out"
    r = run_cli("sweep", f, "--out", out)
    assert r.exit_code == 1, r.output
    msg = r.output.strip().splitlines()[-1]
    assert msg.startswith(f"error: {f}: "), msg
    assert where in msg and reason in msg, msg
    assert not (out / "sweep.parquet").exists() and not any(out.glob("points/*.json"))


def test_missing_base_names_the_file(tmp_path):
    f = write_sweep(tmp_path, "", base="nope.toml")
    r = run_cli("sweep", f)
    assert r.exit_code == 1 and "nope.toml" in r.output and "not found" in r.output, r.output


def test_bundled_sweeps_validate():
    for f in sorted((ROOT / "scenarios").glob("sweep_*.toml")):
        if f.name == "sweep_base.toml":
            continue
        spec = load_sweep(f)
        assert len(expand_points(spec)) == spec.num_points


# -- running --------------------------------------------------------------------------------
METRIC_COLUMNS = ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "ttft_mean_ms", "tpot_p99_ms", "itl_p99_ms",
                  "e2e_p99_ms", "throughput_rps", "goodput_rps", "goodput_fraction", "token_hit_rate",
                  "preemptions", "num_gpus", "success_rate", "wall_time_s")


def test_local_pool_two_workers(tmp_path):
    """A real 2-process pool: rows, columns, same numbers as oracle.simulate, no per-point recompiles."""
    import oracle
    from oracle.sweep.run import run_sweep
    base = write_base(tmp_path, two_frameworks=True)
    f = write_sweep(tmp_path, 'repeats = 2\n[grid]\n"frameworks.0.replicas" = [1, 2]\n'
                              '"workload.clients.0.arrival.rate" = [4.0, 8.0]\n')
    res = run_sweep(f, out_dir=tmp_path / "out", workers=2)
    df = pl.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert res.workers == 2 and res.num_run == 8
    assert df.height == 4 * 2 * 2
    assert df.columns[:6] == ["point", "repeat", "seed", "framework", "frameworks.0.replicas",
                              "workload.clients.0.arrival.rate"]
    assert set(METRIC_COLUMNS) <= set(df.columns)
    assert df.schema["frameworks.0.replicas"] == pl.Int64 and df.schema["point"] == pl.Int64
    assert sorted(set(df["framework"])) == ["no-cache", "vllm"]
    assert df.filter(pl.col("framework") == "vllm")["num_gpus"].to_list() == [1, 1, 1, 1, 2, 2, 2, 2]
    # the same numbers as a direct run of point 3 (replicas 2, rate 8), repeat 1
    direct = oracle.simulate(oracle.load_scenario(base, overrides={
        "frameworks.0.replicas": 2, "workload.clients.0.arrival.rate": 8.0, "seed": 12}))
    row = df.filter((pl.col("point") == 3) & (pl.col("repeat") == 1) & (pl.col("framework") == "no-cache"))
    s = direct.summaries["no-cache"]
    assert row["seed"][0] == 12
    assert row["ttft_p99_ms"][0] == pytest.approx(s["latency"]["time_to_first_token_ms"]["p99"], rel=1e-12)
    assert row["goodput_fraction"][0] == pytest.approx(s["goodput"]["fraction"], rel=1e-12)
    assert row["requests_total"][0] == s["requests"]["total"]
    # after its first point no worker compiled anything (the on-disk numba cache is shared)
    pids = {t["pid"] for t in res.task_stats}
    for pid in pids:
        mine = sorted((t for t in res.task_stats if t["pid"] == pid), key=lambda t: t["worker_tasks"])
        assert all(t["compiles"] == 0 for t in mine[1:]), mine
        # one workload per distinct (seed, rate) per worker
        assert sum(not t["workload_cached"] for t in mine) <= 4
    manifest = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert manifest["num_points"] == 4 and len(manifest["tasks"]) == 8


def _serial_sweep(tmp_path):
    write_base(tmp_path)
    return write_sweep(tmp_path, '[grid]\n"workload.clients.0.arrival.rate" = [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]\n')


def test_resume_skips_finished_points(tmp_path):
    from oracle.sweep.run import run_sweep
    f = _serial_sweep(tmp_path)
    out = tmp_path / "out"
    first = run_sweep(f, out_dir=out, workers=1)
    assert first.num_run == 6
    files = sorted((out / "points").glob("*.json"))
    assert len(files) == 6
    # an interrupted run: three points missing, a half-written temporary file, no table
    for p in files[:3]:
        p.unlink()
    (out / "points" / f".{files[0].name}.tmp-999").write_text('{"key": "')
    (out / "sweep.parquet").unlink()
    second = run_sweep(f, out_dir=out, workers=1, resume=True)
    assert (second.num_run, second.num_reused) == (3, 3)
    assert not list((out / "points").glob(".*"))
    drop = ["wall_time_s"]
    assert second.table.drop(drop).equals(first.table.drop(drop))
    # a grid extended by one value reuses all six points
    f.write_text(f.read_text().replace("12.0]", "12.0, 14.0]"))
    third = run_sweep(f, out_dir=out, workers=1, resume=True)
    assert (third.num_run, third.num_reused, third.table.height) == (1, 6, 7)
    # without --resume everything runs again
    assert run_sweep(f, out_dir=out, workers=1).num_run == 7


def test_resume_after_kill(tmp_path):
    """Kill a running `oracle sweep` mid-way; --resume then only runs what is missing."""
    f = _serial_sweep(tmp_path)
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from oracle.cli import main; main()", "sweep", str(f), "--out", str(out),
           "--workers", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((out / "points").glob("*.json"))) < 2:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list((out / "points").glob("*.json")))
    assert not (out / "sweep.parquet").exists() or finished == 6
    r = run_cli("sweep", f, "--out", out, "--workers", "1", "--resume", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["reused"] == finished and doc["run"] == 6 - finished and doc["rows"] == 6
    df = pl.read_parquet(out / "sweep.parquet")
    assert df["point"].to_list() == list(range(6))


def test_cli_table_output(tmp_path):
    f = _serial_sweep(tmp_path)
    r = run_cli("sweep", f, "--out", tmp_path / "o", "--workers", "1")
    assert r.exit_code == 0, r.output
    assert "arrival.rate" in r.output and "TTFT p99" in r.output
    assert "6 points" in r.output and "sweep.parquet" in r.output


def test_runtime_failure_names_the_point(tmp_path):
    from oracle.sweep.executors import run_serial
    from oracle.sweep.spec import SweepTask
    with pytest.raises(Exception) as info:
        list(run_serial([SweepTask(point=4, repeat=1, seed=0, key="k", raw={"model": {}}, base_dir=str(tmp_path))]))
    assert info.value.task.point == 4
    with pytest.raises(ScenarioError):
        load_sweep(tmp_path / "missing.toml")
