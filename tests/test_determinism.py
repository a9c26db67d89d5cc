"""Same scenario + seed => the same answer (issue #8, DESIGN.md §9).

Byte-identical ``requests.parquet`` / ``steps.parquet`` / ``comparison.parquet`` and identical
``summary.json`` apart from the wall clock (``simulation.wall_time_s``): twice in one process,
in two separate processes (different hash seeds), and a sweep's process pool against
``oracle.simulate`` of the same points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

import oracle
from oracle.cli import build_app

ROOT = Path(__file__).resolve().parents[1]
WALL_CLOCK = (("simulation", "wall_time_s"),)

# Two frameworks (prefix caching on/off), conversations with shared system prompts, a
# pinned pool small enough to preempt, a warm-up: most of the engine's paths in ~2 s.
SCENARIO = """\
name = "determinism"
seed = 2024

[simulation]
duration_s = 40
warm_up_s = 5

[model]
name = "llama-3.1-8b"

[hardware]
gpu = "h100-sxm"

[[workload.clients]]
name = "chat"
arrival = {{ process = "gamma", rate = 5.0, cv = 2.0 }}
prompt_tokens = {{ dist = "lognormal", mean = 600, sigma = 0.9, max = 8192 }}
output_tokens = {{ dist = "lognormal", mean = 150, sigma = 0.7, max = 1024 }}
conversation = {{ turns = {{ dist = "uniform", min = 1, max = 5 }}, think_time_s = 2 }}
system_prompt_tokens = 500
num_system_prompts = 4

[[frameworks]]
name = "apc"
replicas = 2
router = "{router}"
num_gpu_blocks = 1500

[[frameworks]]
name = "no-cache"
enable_prefix_caching = false

[slo]
ttft_ms = 500
tpot_ms = 50
"""


def write_scenario(folder: Path, router: str = "least_loaded") -> Path:
    path = folder / "scenario.toml"
    path.write_text(SCENARIO.format(router=router))
    return path


def strip_wall_clock(summary: dict) -> dict:
    out = json.loads(json.dumps(summary))
    for path in WALL_CLOCK:
        node = out
        for k in path[:-1]:
            node = node[k]
        assert path[-1] in node
        node.pop(path[-1])
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """Two result folders: the same files, byte-identical except summary.json's wall clock."""
    files_a = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    files_b = sorted(str(p.relative_to(b)) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    assert any(f.endswith("requests.parquet") for f in files_a) and any(f.endswith("steps.parquet") for f in files_a)
    for rel in files_a:
        if rel.endswith("summary.json"):
            sa, sb = (json.loads((d / rel).read_text()) for d in (a, b))
            assert strip_wall_clock(sa) == strip_wall_clock(sb), rel
        elif rel == "comparison.parquet":
            # one row per framework; no wall-clock column
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Path:
    return write_scenario(tmp_path_factory.mktemp("determinism"))


@pytest.fixture(scope="module")
def in_process(scenario, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("in_process") / "run"
    oracle.simulate(scenario, out_dir=out, record_steps=True)
    return out


def test_twice_in_one_process(scenario, in_process, tmp_path):
    again = oracle.simulate(scenario, out_dir=tmp_path / "again", record_steps=True)
    assert_same_run(in_process, tmp_path / "again")
    # the in-memory results too, and something actually happened in them
    first = pl.read_parquet(in_process / "apc" / "requests.parquet")
    assert first.equals(again.frameworks["apc"].requests)
    s = again.summaries["apc"]
    assert s["requests"]["total"] > 100 and s["preemptions"] > 0 and s["prefix_caching"]["prefix_cache_hits"] > 0


def test_two_processes(scenario, in_process, tmp_path):
    """Separate interpreters with different hash seeds give the same bytes as the in-process run."""
    outs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"proc{hash_seed}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        env.pop("ORACLE_DEBUG", None)
        proc = subprocess.run([sys.executable, "-m", "oracle.cli", "simulate", str(scenario), "--out", str(out),
                               "--steps", "--quiet"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs.append(out)
    assert_same_run(outs[0], outs[1])
    # the CLI also copies scenario.toml next to the results; the API run was given a path too
    assert_same_run(in_process, outs[0])


def test_seed_changes_the_answer(scenario, in_process, tmp_path):
    """The comparison above is not vacuous: another seed gives other bytes."""
    oracle.simulate(scenario, seed=7, out_dir=tmp_path / "other", record_steps=True)
    assert (tmp_path / "other" / "apc" / "requests.parquet").read_bytes() != \
        (in_process / "apc" / "requests.parquet").read_bytes()


def test_sweep_process_pool_matches_in_process(tmp_path, monkeypatch):
    """`oracle sweep --workers 2` (spawned workers) == oracle.simulate of each point, exactly."""
    monkeypatch.chdir(tmp_path)
    base = write_scenario(tmp_path)
    text = base.read_text().replace("duration_s = 40", "duration_s = 15")
    base.write_text(text)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text('base = "scenario.toml"\nrepeats = 2\n[grid]\n"frameworks.0.router" = ["round_robin", '
                     '"prefix_aware"]\n')
    result = CliRunner().invoke(build_app(), ["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--workers", "2",
                                              "--quiet"])
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(tmp_path / "sw" / "sweep.parquet")
    assert table.height == 2 * 2 * 2   # points x repeats x frameworks
    from oracle.sweep.task import METRICS
    metric_cols = [m for m, _, _ in METRICS if m != "wall_time_s"]
    for (point, repeat), rows in table.group_by(["point", "repeat"], maintain_order=True):
        router = rows["frameworks.0.router"][0]
        seed = rows["seed"][0]
        assert seed == 2024 + repeat
        direct = oracle.simulate(oracle.load_scenario(base, overrides={"frameworks.0.router": router, "seed": seed}))
        from oracle.metrics.compare import lookup
        for fw in rows.iter_rows(named=True):
            s = direct.summaries[fw["framework"]]
            for col, path, kind in METRICS:
                if col == "wall_time_s":
                    continue
                want = lookup(s, path)
                got = fw[col]
                if want is None or (isinstance(want, float) and want != want):
                    assert got is None or got != got, (point, repeat, fw["framework"], col, got)
                else:
                    assert got == want, (point, repeat, fw["framework"], col, got, want)
    assert metric_cols
