"""End-to-end: `oracle simulate` and `oracle.simulate` on real scenarios and traces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import oracle
from oracle.cli import build_app
from oracle.metrics.columns import LEGACY_CSV_COLUMNS, REQUEST_COLUMNS
from oracle.scenario import apply_overrides, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "scenarios"


def small(path: Path, **overrides) -> dict:
    """A bundled scenario as a dict, with overrides (dotted keys) and paths made absolute."""
    sc = load_scenario(path)
    raw = apply_overrides(sc.raw, overrides)
    trace = raw.get("workload", {}).get("trace")
    if trace and not Path(trace["path"]).is_absolute():
        trace["path"] = str(path.parent / trace["path"])
    return raw


@pytest.fixture(scope="module")
def chat():
    raw = small(SCENARIOS / "chat_prefix_cache.toml", **{"simulation.duration_s": 120, "simulation.warm_up_s": 10})
    return oracle.simulate(raw)


def test_request_table_columns_and_timestamps(chat):
    for fr in chat.frameworks.values():
        df = fr.requests
        assert tuple(df.columns) == REQUEST_COLUMNS
        done = df.filter(pl.col("status") == "finished")
        assert done.height == df.height  # nothing rejected in this scenario
        for a, b in (("arrival_s", "admitted_s"), ("admitted_s", "first_token_s"), ("first_token_s", "completion_s")):
            assert (done[a] <= done[b]).all(), (a, b)
        assert (done["cached_tokens"] <= done["prompt_tokens"] - 1).all()


def test_prefix_caching_pays_on_chat(chat):
    on = chat.frameworks["vllm-apc"].summary
    off = chat.frameworks["vllm-no-cache"].summary
    assert on["prefix_caching"]["conversational_hit_rate"] > 0.8
    assert off["prefix_caching"]["conversational_hit_rate"] == 0.0
    assert off["prefix_caching"]["prefix_cache_hits"] == 0 and off["prefix_caching"]["token_hit_rate"] == 0.0
    assert off["prefix_caching"]["event_counts"]["MISS_FULL"] == off["requests"]["total"]
    assert on["prefix_caching"]["prefill_reduction_ratio"] > 0.5
    ttft_on = on["latency"]["time_to_first_token_ms"]
    ttft_off = off["latency"]["time_to_first_token_ms"]
    assert ttft_on["p50"] < ttft_off["p50"] and ttft_on["mean"] < ttft_off["mean"]
    # the same workload went through both (follow-ups arrive at different times, so the
    # warm-up split may differ by a request or two)
    assert chat.frameworks["vllm-apc"].requests.height == chat.frameworks["vllm-no-cache"].requests.height


def test_same_seed_same_results(chat):
    raw = small(SCENARIOS / "chat_prefix_cache.toml", **{"simulation.duration_s": 120, "simulation.warm_up_s": 10})
    again = oracle.simulate(raw)
    for name, fr in chat.frameworks.items():
        assert fr.requests.equals(again.frameworks[name].requests)
        a, b = dict(fr.summary), dict(again.frameworks[name].summary)
        a.pop("simulation"), b.pop("simulation")
        assert a == b


def test_cli_writes_outputs_atomically(tmp_path):
    out = tmp_path / "run"
    args = ["simulate", str(SCENARIOS / "quickstart.toml"), "--out", str(out), "--quiet", "--format", "csv",
            "--steps", "--seed", "3"]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    fw_dir = out / "vllm"
    summary = json.loads((fw_dir / "summary.json").read_text())
    for key in ("simulation", "requests", "throughput", "latency", "goodput", "kv_cache", "preemptions",
                "prefix_caching"):
        assert key in summary
    assert summary["seed"] == 3
    req = pl.read_parquet(fw_dir / "requests.parquet")
    assert req.height == summary["requests"]["total"] + summary["requests"]["warm_up_excluded"]
    steps = pl.read_parquet(fw_dir / "steps.parquet")
    assert steps.height == summary["simulation"]["num_steps"]
    assert (steps["kv_blocks_used"] <= summary["kv_cache"]["num_gpu_blocks"] - 1).all()
    csv = pl.read_csv(fw_dir / "requests.csv")
    assert tuple(csv.columns[: len(LEGACY_CSV_COLUMNS)]) == LEGACY_CSV_COLUMNS
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]
    # --json prints the summary
    result = CliRunner().invoke(build_app(), args + ["--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["requests"]["total"] == summary["requests"]["total"]


def test_unlimited_cache_never_preempts_and_pinned_tiny_cache_does():
    raw = small(SCENARIOS / "quickstart.toml", **{"simulation.duration_s": 60})
    unlimited = oracle.simulate(apply_overrides(raw, {"frameworks.0.num_gpu_blocks": "unlimited"}))
    assert unlimited.summary["preemptions"] == 0
    tiny = oracle.simulate(apply_overrides(raw, {"frameworks.0.num_gpu_blocks": 700,
                                                 "workload.clients.0.arrival.rate": 12.0}))
    s = tiny.summary
    assert s["preemptions"] > 0
    assert s["requests"]["successful"] == s["requests"]["total"]
    assert s["kv_cache"]["peak_blocks_used"] <= 699


def test_python_api_accepts_path_dict_and_scenario():
    path = SCENARIOS / "quickstart.toml"
    raw = small(path, **{"simulation.duration_s": 20})
    a = oracle.simulate(raw)
    b = oracle.simulate(scenario_from_dict(raw))
    assert a.requests.equals(b.requests)
    c = oracle.simulate(path, seed=5)
    assert c.scenario.seed == 5 and c.requests.height > 0


def test_multi_framework_comparison(tmp_path):
    raw = small(SCENARIOS / "routers.toml", **{"simulation.duration_s": 40, "simulation.warm_up_s": 5})
    res = oracle.simulate(raw, out_dir=tmp_path)
    cmp = pl.read_parquet(tmp_path / "comparison.parquet")
    assert cmp["framework"].to_list() == ["round-robin", "least-loaded", "session-affinity", "prefix-aware"]
    for name, fr in res.frameworks.items():
        used = set(fr.requests["replica"].to_list())
        assert used == {0, 1, 2, 3}, name
    # session affinity keeps every session on one replica
    sa = res.frameworks["session-affinity"].requests.filter(pl.col("session") >= 0)
    assert sa.group_by("session").agg(pl.col("replica").n_unique())["replica"].max() == 1
    # prefix-aware routing gets more cache hits than round robin
    hits = {n: fr.summary["prefix_caching"]["token_hit_rate"] for n, fr in res.frameworks.items()}
    assert hits["prefix-aware"] > hits["round-robin"]


@pytest.mark.parametrize("name", ["mooncake_replay.toml", "azure_trace.toml"])
def test_trace_scenarios_run(name):
    raw = small(SCENARIOS / name, **{"workload.trace.limit": 300})
    res = oracle.simulate(raw)
    for fr in res.frameworks.values():
        assert fr.summary["requests"]["total"] == 300
        too_long = fr.requests.filter(pl.col("prompt_tokens") + pl.col("output_tokens") > 131072)
        assert (too_long["status"] == "rejected").all()
        assert fr.summary["requests"]["successful"] == 300 - too_long.height
        assert np.isfinite(fr.summary["latency"]["time_to_first_token_ms"]["p99"])


def test_itl_histogram_agrees_with_the_request_table():
    """The streamed ITL histogram's mean equals the token-weighted TPOT of the same requests
    (every gap lands in a bin 2.3 % wide: the mean of bin centres is within ~1.2 %)."""
    raw = small(SCENARIOS / "quickstart.toml", **{"simulation.duration_s": 60, "simulation.warm_up_s": 10})
    res = oracle.simulate(raw)
    df = res.requests.filter((pl.col("status") == "finished") & ~pl.col("warm_up") & (pl.col("output_tokens") > 1))
    gaps_total_ms = ((df["completion_s"] - df["first_token_s"]) * 1e3).sum()
    num_gaps = (df["output_tokens"] - 1).sum()
    itl = res.summary["latency"]["inter_token_latency_ms"]
    assert itl["mean"] == pytest.approx(gaps_total_ms / num_gaps, rel=0.015)
    assert itl["max"] == pytest.approx(df["max_itl_ms"].max())
    assert itl["p50"] <= itl["p99"] <= itl["max"]


def test_output_style_original(tmp_path):
    """[output] style = "original": the original LLMPerfOracle's CSV values and summary keys."""
    raw = small(SCENARIOS / "chat_prefix_cache.toml", **{"simulation.duration_s": 20.0, "simulation.warm_up_s": 1.0,
                                                          "output.style": "original", "output.steps": False,
                                                          "output.reported_duration_s": 25.0})
    raw["frameworks"] = [dict(raw["frameworks"][0], replicas=2, router="round_robin")]
    res = oracle.simulate(raw, out_dir=tmp_path / "run", format="csv")
    plain = oracle.simulate(apply_overrides(raw, {"output.style": "default"}) | {
        "output": {k: v for k, v in raw["output"].items() if k not in ("style", "reported_duration_s")}})
    s, p = res.summary, plain.summary
    assert s["simulation"]["total_duration_s"] == 25.0
    assert s["simulation"]["simulated_until_s"] == p["simulation"]["total_duration_s"]
    assert res.steps is None   # recorded for gpu_utilization, not kept
    busy = res.first.outputs.steps["duration_s"].sum()
    assert 0 < s["gpu_utilization"] <= 1 and np.isclose(s["gpu_utilization"], busy / (2 * s["simulation"]["simulated_until_s"]))
    ok = res.requests.filter((pl.col("status") == "finished") & ~pl.col("warm_up"))
    ttft = s["latency"]["time_to_first_token_ms"]
    assert ttft["count"] == ok.height and np.isclose(ttft["std"], ok["ttft_ms"].std(ddof=0))
    assert np.isclose(ttft["min"], ok["ttft_ms"].min()) and ttft["p50"] == p["latency"]["time_to_first_token_ms"]["p50"]
    assert list(ttft)[:4] == ["count", "mean", "std", "min"]
    pc = s["prefix_caching"]
    assert pc["conversational_hits"] == pc["event_counts"]["CONVERSATIONAL_HIT"] > 0
    assert pc["conversational_hit_rate"] == pc["conversational_hits"] / s["requests"]["total"]
    assert pc["cross_request_hits"] == pc["event_counts"]["CROSS_REQUEST_HIT"]
    assert pc["event_counts"]["CONVERSATIONAL_MISS_UNEXPECTED_PROMPT"] == 0
    assert np.isclose(pc["average_tokens_prefilled"], ok["prefilled_tokens"].mean())
    # round robin sends follow-ups to the other replica: a miss there is MISS_FULL, as in the original
    assert p["prefix_caching"]["event_counts"]["CONVERSATIONAL_MISS_EVICTED"] > 0
    assert pc["event_counts"]["CONVERSATIONAL_MISS_EVICTED"] < p["prefix_caching"]["event_counts"]["CONVERSATIONAL_MISS_EVICTED"]
    assert sum(pc["event_counts"].values()) == sum(p["prefix_caching"]["event_counts"].values())

    csv = pl.read_csv(tmp_path / "run" / res.first.name / "requests.csv")
    assert tuple(csv.columns[:len(LEGACY_CSV_COLUMNS)]) == LEGACY_CSV_COLUMNS
    req = res.requests
    assert csv["request_id"].to_list() == [f"req_{i}" for i in range(req.height)]
    assert set(csv["status"]) <= {"SUCCESS", "PENDING", "OOM_KV_BLOCK"}
    first = req.filter(pl.col("turn") == 0)["request_id"].to_list()
    assert csv["session_id"][first].to_list() == [f"sess_{n}" for n in range(len(first))]
    assert all(c.startswith("client_chat_") for c in csv["client_id"].to_list()[:5])
    sess = csv.filter(pl.col("session_id") == csv["session_id"][first[0]])
    assert sess["client_id"].n_unique() == 1 and sess.height == req.filter(pl.col("session") == req["session"][first[0]]).height
    adm = req["first_token_s"] - req["admitted_s"]
    assert np.allclose(csv["ttft_ms"].to_numpy(), adm.to_numpy() * 1e3)
    moved = (csv["prefix_cache_event"] == "MISS_FULL") & (req["cache_event"] == "CONVERSATIONAL_MISS_EVICTED")
    assert moved.any() and (req.filter(moved)["turn"] >= 1).all()
    from oracle.errors import ScenarioError
    with pytest.raises(ScenarioError, match="output.reported_duration_s: only applies with style"):
        scenario_from_dict(apply_overrides(raw, {"output.style": "default"}))
