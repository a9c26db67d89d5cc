"""Closed-loop clients (``concurrency``): N users, each sending its next request when its
previous one ends (oracle/workload/closed_loop.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from typer.testing import CliRunner

import oracle
from oracle.cli import build_app
from oracle.errors import OracleError
from oracle.scenario import scenario_from_dict
from oracle.workload import build_workload
from oracle.workload.closed_loop import closed_client_requests, simulate_closed_loop
from oracle.workload.table import Workload

BASE = {
    "name": "cl", "seed": 5,
    "simulation": {"num_requests": 120},
    "model": {"name": "llama-3.1-8b"}, "hardware": {"gpu": "h100-sxm"},
    "workload": {"clients": [{"name": "bench", "concurrency": 6,
                              "prompt_tokens": {"dist": "uniform", "min": 100, "max": 900},
                              "output_tokens": {"dist": "uniform", "min": 20, "max": 200}}]},
    "frameworks": [{"name": "vllm"}],
}


def scenario(**changes) -> dict:
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = raw
        parts = dotted.split("__")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    return raw


def in_flight(arrival: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Requests in flight just after each arrival."""
    return np.array([int(((arrival <= a) & (end > a)).sum()) for a in arrival])


def test_count_limited_users_keep_n_requests_in_flight():
    res = oracle.simulate(scenario())
    df = res.requests
    assert df.height == 120
    a, c = df["arrival_s"].to_numpy(), df["completion_s"].to_numpy()
    assert (df["status"] == "finished").all()
    assert np.isfinite(a).all()
    # 6 at once from the start; every later request arrives exactly when its parent (the
    # same user's previous request) completes: think time 0
    wl = res.first.workload
    assert (a[wl.parent < 0] == 0).all() and int((wl.parent < 0).sum()) == 6
    follow = np.flatnonzero(wl.parent >= 0)
    # (exact up to rounding: the engine's clock is the client's shifted by the API-server time)
    np.testing.assert_allclose(a[follow], c[wl.parent[follow]], rtol=0, atol=1e-9)
    n = in_flight(a, c)
    assert n.max() == 6
    has_child = np.zeros(len(wl), bool)
    has_child[wl.parent[follow]] = True
    first_done = c[~has_child].min()               # the first user out of requests
    assert (n[a < first_done] == 6).all()
    assert (wl.session == -1).all() and (wl.turn == 0).all()


def test_think_time_and_ramp_up():
    raw = scenario(workload__clients__0__think_time_s=0.25, workload__clients__0__ramp_up_s=3.0)
    res = oracle.simulate(raw)
    wl, out = res.first.workload, res.first.outputs
    first = np.flatnonzero(wl.parent < 0)
    np.testing.assert_allclose(out.arrival_s[first], np.arange(6) * 0.5)   # user k at k * 3 / 6
    follow = np.flatnonzero(wl.parent >= 0)
    np.testing.assert_allclose(out.arrival_s[follow], out.completion_s[wl.parent[follow]] + 0.25)


def test_client_num_requests_and_per_user_counts():
    raw = scenario(workload__clients__0__num_requests=20, simulation={"num_requests": 7})
    sc = scenario_from_dict(raw)
    wl = build_workload(sc.workload, duration_s=None, num_requests=sc.simulation.num_requests, seed=1)
    assert len(wl) == 20                           # the client's own count wins
    # user k has requests k, k + 6, ...: 4, 4, 3, 3, 3, 3
    roots = np.arange(len(wl))
    while (wl.parent[roots] >= 0).any():
        roots = np.where(wl.parent[roots] >= 0, wl.parent[roots], roots)
    assert sorted(np.bincount(roots)[np.bincount(roots) > 0].tolist()) == [3, 3, 3, 3, 4, 4]
    wl.validate()


def test_longer_chains_start_with_the_same_requests():
    c = scenario_from_dict(scenario()).workload.clients[0]
    short = closed_client_requests(c, 0, 50, seed=3)
    long = closed_client_requests(c, 0, 9000, seed=3)     # crosses a draw block
    for col in ("prompt_tokens", "output_tokens", "think_s", "parent"):
        np.testing.assert_array_equal(getattr(long, col)[:50], getattr(short, col))


def test_duration_limited_users_send_until_the_duration():
    raw = scenario(simulation={"duration_s": 20.0})
    raw["frameworks"] = [{"name": "fast"}, {"name": "slow", "max_num_seqs": 2}]
    res = oracle.simulate(raw)
    counts = {}
    for name, fr in res.frameworks.items():
        wl, out = fr.workload, fr.outputs
        wl.validate()
        assert (out.arrival_s < 20.0).all()             # nothing sent at or after the duration
        has_child = np.zeros(len(wl), bool)
        has_child[wl.parent[wl.parent >= 0]] = True
        last = np.flatnonzero(~has_child)
        assert last.size == 6                           # every user ...
        assert (out.completion_s[last] >= 20.0).all() or (out.arrival_s[last] > 15.0).all()
        assert not (out.completion_s[last] < 20.0).any()   # ... was still busy at the duration
        counts[name] = len(wl)
    assert counts["fast"] > counts["slow"]               # the workload depends on the framework


def test_duration_cut_keeps_the_arrivals_of_a_longer_run():
    """Dropping the requests sent after the duration changes nothing before it (causality)."""
    sc = scenario_from_dict(scenario(simulation={"duration_s": 10.0}))
    fw = sc.frameworks[0]
    from oracle.api import _run_engine, engine_inputs
    runs = []

    def run(wl, final):
        out = _run_engine(engine_inputs(sc, fw, wl))
        runs.append((wl, out))
        return out

    wl, out = simulate_closed_loop(sc.workload, None, duration_s=10.0, num_requests=None, seed=sc.seed, run=run)
    assert len(runs) >= 2
    long_wl, long_out = runs[-2]
    assert len(long_wl) > len(wl)
    kept = long_out.arrival_s < 10.0
    np.testing.assert_allclose(np.sort(long_out.arrival_s[kept]), np.sort(out.arrival_s), rtol=0, atol=0)


def test_mixed_open_and_closed_clients():
    raw = scenario(simulation={"duration_s": 30.0})
    open_client = {"name": "chat", "arrival": {"process": "poisson", "rate": 2.0}, "prompt_tokens": 300,
                   "output_tokens": 50, "conversation": {"turns": 3, "think_time_s": 1.0}}
    raw["workload"]["clients"].append(open_client)
    alone = copy.deepcopy(raw)
    alone["workload"]["clients"] = [open_client]
    mixed = build_workload(scenario_from_dict(raw).workload, duration_s=30.0, num_requests=None, seed=5)
    only = build_workload(scenario_from_dict(alone).workload, duration_s=30.0, num_requests=None, seed=5)
    mixed.validate()
    chat = mixed.client == 1
    # the open-loop requests are the ones the open client alone generates, in the same order
    np.testing.assert_array_equal(mixed.prompt_tokens[chat], only.prompt_tokens)
    np.testing.assert_array_equal(mixed.arrival_s[chat], only.arrival_s)
    np.testing.assert_array_equal(mixed.session[chat], only.session)
    res = oracle.simulate(raw)
    df = res.requests
    assert set(df["client"].unique()) == {"bench", "chat"}
    assert (df["status"] == "finished").all()


@pytest.mark.parametrize("router", ["round_robin", "least_loaded", "session_affinity", "prefix_aware"])
def test_chains_work_with_every_router(router):
    raw = scenario()
    raw["frameworks"] = [{"name": "vllm", "replicas": 3, "router": router}]
    raw["workload"]["clients"][0]["system_prompt_tokens"] = 256
    res = oracle.simulate(raw)
    df = res.requests
    assert (df["status"] == "finished").all()
    assert df["replica"].n_unique() == 3
    assert df["turn"].max() == 0 and set(df["cache_event"].unique()) <= {"MISS_FULL", "CROSS_REQUEST_HIT"}
    if router == "prefix_aware":
        assert res.summary["prefix_caching"]["cross_request_hit_rate"] > 0.5   # the shared system prompt


def test_closed_loop_workload_round_trips_through_parquet(tmp_path):
    sc = scenario_from_dict(scenario())
    wl = build_workload(sc.workload, duration_s=None, num_requests=120, seed=0)
    wl.to_parquet(tmp_path / "w.parquet")
    back = Workload.from_parquet(tmp_path / "w.parquet")
    np.testing.assert_array_equal(back.parent, wl.parent)
    assert (back.session == -1).all()


def test_the_reference_engine_agrees_on_chains():
    from engine_cases import step_time_fn_for
    from reference.engine import run_reference
    from test_engine_diff import assert_same_outputs

    from oracle.api import engine_inputs
    from oracle.engine.loop import run_engine
    raw = scenario(simulation={"num_requests": 30})
    raw["frameworks"] = [{"name": "vllm", "replicas": 2, "router": "least_loaded", "num_gpu_blocks": 120,
                          "max_num_seqs": 4}]
    sc = scenario_from_dict(raw)
    wl = build_workload(sc.workload, duration_s=None, num_requests=30, seed=2)
    inputs = engine_inputs(sc, sc.frameworks[0], wl, hashes=wl.block_hashes(16), record_steps=True)  # CSR
    assert_same_outputs(run_reference(inputs, step_time_fn_for(inputs)), run_engine(inputs))


@pytest.mark.parametrize("client, key, fragment", [
    ({"arrival": {"rate": 1.0}}, "workload.clients.0.arrival", "does not apply to a closed-loop client"),
    ({"conversation": {"turns": 2}}, "workload.clients.0.conversation", "independent requests"),
    ({"concurrency": 0}, "workload.clients.0.concurrency", "must be >= 1"),
    ({"concurrency": None, "think_time_s": 1.0, "arrival": {"rate": 1.0}}, "workload.clients.0.think_time_s",
     "only applies to a closed-loop client"),
    ({"concurrency": None, "num_requests": 5, "arrival": {"rate": 1.0}}, "workload.clients.0.num_requests",
     "only applies to a closed-loop client"),
])
def test_bad_closed_loop_keys(client, key, fragment):
    raw = scenario()
    for k, v in client.items():
        if v is None:
            raw["workload"]["clients"][0].pop(k)
        else:
            raw["workload"]["clients"][0][k] = v
    with pytest.raises(OracleError) as info:
        scenario_from_dict(raw)
    assert f"{key}: " in str(info.value) and fragment in str(info.value), str(info.value)


def test_a_count_on_every_client_is_enough_to_end():
    raw = scenario(simulation=None, workload__clients__0__num_requests=10)
    assert scenario_from_dict(raw).simulation.num_requests is None
    raw = scenario(simulation=None)
    with pytest.raises(OracleError, match="set duration_s and/or num_requests"):
        scenario_from_dict(raw)


def test_sweep_over_concurrency(tmp_path):
    """Latency per concurrency level: the bundled sweep over workload.clients.0.concurrency."""
    import polars as pl
    from data_sources import ROOT
    out = tmp_path / "sweep"
    result = CliRunner().invoke(build_app(), ["sweep", str(ROOT / "scenarios" / "sweep_concurrency.toml"),
                                              "--out", str(out), "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(out / "sweep.parquet").sort("workload.clients.0.concurrency")
    assert df["workload.clients.0.concurrency"].to_list() == [1, 4, 16, 64]
    assert (df["requests_total"] == 400).all()
    for col in ("throughput_rps", "ttft_p99_ms", "tpot_p50_ms"):
        assert df[col].is_sorted(), (col, df[col].to_list())   # more users: more throughput, more latency
