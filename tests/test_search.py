"""``oracle search``: the largest rate / fewest replicas meeting TTFT+TPOT SLOs at a goodput target."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from oracle.sweep.search import rate_overrides, search
from test_sweep import run_cli, write_base

ROOT = Path(__file__).resolve().parents[1]


def small_base(tmp_path: Path) -> Path:
    """scenarios/sweep_base.toml, cut to 400 requests so that each simulation is quick."""
    text = (ROOT / "scenarios" / "sweep_base.toml").read_text().replace("num_requests = 2000", "num_requests = 400")
    path = tmp_path / "base.toml"
    path.write_text(text)
    return path


def test_rate_overrides_cover_clients_shared_rate_and_traces():
    raw = {"workload": {"arrival": {"process": "poisson", "rate": 10.0},
                        "clients": [{"name": "a"}, {"name": "b", "arrival": {"rate": 2.0}}]}}
    assert rate_overrides(raw, 3.0) == {"workload.arrival.rate": 30.0, "workload.clients.1.arrival.rate": 6.0}
    raw = {"workload": {"trace": {"path": "t.jsonl", "format": "mooncake", "time_scale": 2.0}}}
    assert rate_overrides(raw, 4.0) == {"workload.trace.time_scale": 0.5}
    assert rate_overrides({"workload": {"trace": {"path": "t"}}}, 2.0) == {"workload.trace.time_scale": 0.5}


def slos_for(base: Path) -> tuple[float, float]:
    """SLOs the scenario meets comfortably as written (so that tests do not depend on the
    cost model's calibration): 3x its TTFT p99 and 1.5x its TPOT p99."""
    import oracle
    lat = oracle.simulate(base).summary["latency"]
    return 3 * lat["time_to_first_token_ms"]["p99"], 1.5 * lat["time_per_output_token_ms"]["p99"]


def test_rate_search_brackets_the_target(tmp_path):
    base = small_base(tmp_path)
    ttft, tpot = slos_for(base)
    res = search(base, vary="rate", slo_ttft_ms=ttft, slo_tpot_ms=tpot, goodput=0.95, tolerance=0.05)
    assert res.status == "found", res.to_dict()
    pts = {p["value"]: p for p in res.points}
    at = pts[res.answer]
    assert at["goodput_fraction"] >= 0.95
    above = min(v for v in pts if v > res.answer)       # the next point measured above the answer
    assert above == res.neighbour
    assert pts[above]["goodput_fraction"] < 0.95
    assert (above - res.answer) <= 0.05 * res.answer
    # every measured point at or below the answer passes, every one above fails (monotone here)
    assert all(p["passed"] == (v <= res.answer) for v, p in pts.items())
    assert res.answer > 1 and any(not p["passed"] for p in res.points)
    # the SLOs of the search replaced the scenario's [slo]
    assert res.slo == {"ttft_ms": ttft, "tpot_ms": tpot}
    # an independent run at the answer and just above agrees
    import oracle
    raw_rate = 8.0
    for m, ok in ((res.answer, True), (above, False)):
        sc = oracle.load_scenario(base, overrides={"workload.clients.0.arrival.rate": raw_rate * m,
                                                   "slo": {"ttft_ms": ttft, "tpot_ms": tpot}})
        frac = oracle.simulate(sc).summary["goodput"]["fraction"]
        assert (frac >= 0.95) == ok, (m, frac)


def test_replicas_search_cli(tmp_path):
    base = small_base(tmp_path)
    ttft, tpot = slos_for(base)
    # 16x the base rate overloads one replica (a 8B model on one H100 serves ~40 req/s of
    # this traffic) and needs several
    base.write_text(base.read_text().replace("rate = 8.0", "rate = 128.0"))
    out = tmp_path / "out"
    r = run_cli("search", base, "--vary", "replicas", "--slo-ttft-ms", str(ttft), "--slo-tpot-ms", str(tpot),
                "--goodput", "0.95", "--hi", "64", "--out", out, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["status"] == "found" and doc["answer"] > 1
    df = pl.read_parquet(out / "search.parquet")
    by = {row["value"]: row for row in df.iter_rows(named=True)}
    assert by[doc["answer"]]["goodput_fraction"] >= 0.95
    assert by[doc["answer"] - 1]["goodput_fraction"] < 0.95          # one fewer replica was measured and fails
    assert df["value"].to_list() == sorted(df["value"].to_list())
    assert json.loads((out / "search.json").read_text())["answer"] == doc["answer"]


def test_search_cli_table_and_errors(tmp_path):
    base = write_base(tmp_path, num_requests=100)
    r = run_cli("search", base, "--slo-ttft-ms", "100000", "--slo-tpot-ms", "100000", "--hi", "4",
                "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "goodput >= 99 %: at least x4 (32 sessions/s)" in text, text   # even the highest rate allowed passes
    r = run_cli("search", base, "--vary", "speed")
    assert r.exit_code == 1 and "--vary must be one of" in r.output, r.output
    r = run_cli("search", base, "--framework", "nope")
    assert r.exit_code == 1 and "no framework named 'nope'" in r.output, r.output
    r = run_cli("search", base, "--goodput", "1.5")
    assert r.exit_code == 1 and "--goodput" in r.output, r.output
    r = run_cli("search", base, "--vary", "replicas", "--lo", "1.5")
    assert r.exit_code == 1 and "whole number" in r.output, r.output


def test_unreachable_target_and_shared_rate(tmp_path):
    base = write_base(tmp_path, num_requests=100)
    res = search(base, vary="rate", slo_ttft_ms=0.001, slo_tpot_ms=0.001, lo=0.5)
    assert res.answer is None and res.status == "lo_fails" and len(res.points) == 1
    # a workload-level shared arrival rate is scaled too
    shared = tmp_path / "shared.toml"
    shared.write_text(base.read_text()
                      .replace('arrival = { process = "poisson", rate = 8.0 }\n', "")
                      .replace("[[workload.clients]]", '[workload]\narrival = { process = "poisson", rate = 8.0 }\n'
                                                       "[[workload.clients]]"))
    res = search(shared, vary="rate", slo_ttft_ms=1e6, slo_tpot_ms=1e6, hi=2.0)
    assert res.status == "hi_passes" and res.answer == 2.0
    assert [p["offered_sessions_per_s"] for p in sorted(res.points, key=lambda p: p["value"])] == [8.0, 16.0]
