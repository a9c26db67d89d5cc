"""`oracle workload generate|stats` through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from data_sources import SOURCES, trace_file
from oracle.cli import build_app
from oracle.workload import Workload

runner = CliRunner()

WORKLOAD_ONLY = """
seed = 11
[simulation]
num_requests = 400
[[workload.clients]]
name = "chat"
arrival = { process = "poisson", rate = 4.0 }
prompt_tokens = { dist = "lognormal", mean = 600, sigma = 0.9, max = 8192 }
output_tokens = { dist = "lognormal", mean = 220, sigma = 0.7, max = 2048 }
conversation = { turns = { dist = "uniform", min = 1, max = 8 }, think_time_s = 5 }
system_prompt_tokens = 600
num_system_prompts = 8
"""


@pytest.fixture(scope="module")
def app():
    return build_app()


def invoke(app, *args):
    return runner.invoke(app, [str(a) for a in args])


def test_generate_then_stats(app, tmp_path):
    scen = tmp_path / "s.toml"
    scen.write_text(WORKLOAD_ONLY)
    out = tmp_path / "w.parquet"
    res = invoke(app, "workload", "generate", scen, "-o", out)
    assert res.exit_code == 0, res.output
    assert "wrote 400 requests" in res.output
    wl = Workload.from_parquet(out)
    assert len(wl) == 400
    res = invoke(app, "workload", "stats", out, "--json")
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output)
    for key in ("requests", "duration_s", "rate_per_s", "prompt_tokens", "output_tokens", "sessions", "turns",
                "ideal_prefix_reuse", "followups", "clients"):
        assert key in stats
    assert stats["requests"] == 400 and 0.5 < stats["ideal_prefix_reuse"] < 1
    assert set(stats["prompt_tokens"]) >= {"mean", "p50", "p90", "p99", "max"}
    # the scenario itself gives the same numbers; --seed changes them
    same = json.loads(invoke(app, "workload", "stats", scen, "--json").output)
    assert same["ideal_prefix_reuse"] == stats["ideal_prefix_reuse"]
    other = invoke(app, "workload", "generate", scen, "-o", tmp_path / "o.parquet", "--seed", 12,
                   "--num-requests", 50)
    assert other.exit_code == 0 and "wrote 50 requests" in other.output
    human = invoke(app, "workload", "stats", out)
    assert human.exit_code == 0 and "ideal_prefix_reuse" in human.output


@pytest.mark.parametrize("source", SOURCES)
def test_stats_on_mooncake_trace(app, source):
    path, facts = trace_file(source, "synthetic_trace.jsonl")
    res = invoke(app, "workload", "stats", path, "--block-size", 512, "--json")
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output)
    # full trace 65.0 %, its cut 65.3 % (test_traces checks both against the reference count)
    assert stats["requests"] == facts["n"] and abs(stats["ideal_prefix_reuse"] - 0.65) < 0.01


def test_full_scenario_file(app, tmp_path):
    import pathlib
    quickstart = pathlib.Path(__file__).resolve().parents[1] / "scenarios" / "quickstart.toml"
    if not quickstart.exists():
        pytest.skip("scenarios/quickstart.toml not present")
    res = invoke(app, "workload", "generate", quickstart, "-o", tmp_path / "q.parquet", "--num-requests", 100)
    assert res.exit_code == 0, res.output


def test_user_errors_exit_1_with_one_line(app, tmp_path):
    res = invoke(app, "workload", "stats", tmp_path / "missing.jsonl")
    assert res.exit_code == 1 and "file not found" in res.output
    scen = tmp_path / "bad.toml"
    scen.write_text(WORKLOAD_ONLY.replace("rate = 4.0", "rate = -4.0"))
    res = invoke(app, "workload", "generate", scen, "-o", tmp_path / "x.parquet")
    assert res.exit_code == 1, res.output
    assert "workload.clients.0.arrival.rate: must be > 0" in res.output and str(scen) in res.output
    assert not (tmp_path / "x.parquet").exists()
    scen.write_text(WORKLOAD_ONLY.replace("[simulation]\nnum_requests = 400", ""))
    res = invoke(app, "workload", "generate", scen, "-o", tmp_path / "x.parquet")
    assert res.exit_code == 1 and "duration_s and/or num_requests" in res.output
