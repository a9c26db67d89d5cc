"""Prefill/decode disaggregation (oracle/engine/README.md, "Prefill/decode disaggregation").

* differential: the jitted two-pool loop (``oracle.engine.pd``) against the reference
  (``tests/reference/pd.py``) on the hand cases and on random scenarios split into pools;
* invariants: every transfer completes before its request is admitted on the decode side,
  bytes = tokens x bytes per token, no block lost (the reference checks its pools every step);
* scenario keys and their errors; the API, summary, report and search.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from engine_cases import ReqSpec, Scenario, hand_cases, scenarios, step_time_fn_for
from hypothesis import given
from hypothesis import strategies as st
from reference.pd import ReferencePD
from test_engine_diff import assert_same_outputs

from oracle.engine.disagg import KvLink, PDInputs
from oracle.engine.inputs import LEAST_KV_TRANSFER, EngineConfig, Router, Status
from oracle.errors import OracleError

run_pd_engine = pytest.importorskip("oracle.engine.pd").run_pd_engine

PD_FLOAT_COLUMNS = ("prefill_admitted_s", "prefill_end_s", "transfer_start_s", "transfer_end_s", "transfer_bytes",
                    "decode_admitted_s")
PD_INT_COLUMNS = ("prefill_replica", "transfer_tokens", "prefill_computed_tokens", "decode_computed_tokens")
LINK = KvLink(bytes_per_token=131072.0, bandwidth_bytes_s=2e9, latency_s=1e-4, overhead_s=5e-4)


def pd_inputs(sc: Scenario, *, num_prefill: int = 1, num_decode: int = 1, prefill: dict | None = None,
              decode: dict | None = None, link: KvLink = LINK) -> PDInputs:
    """The scenario's requests on a prefill pool and a decode pool (config overrides per pool)."""
    inp = sc.inputs()
    cfg = inp.config
    p = dataclasses.replace(inp, config=dataclasses.replace(cfg, num_replicas=num_prefill, **(prefill or {})))
    d = dataclasses.replace(inp, config=dataclasses.replace(cfg, num_replicas=num_decode, **(decode or {})))
    return PDInputs(prefill=p, decode=d, link=link)


def compare_pd(inputs: PDInputs):
    model = ReferencePD(inputs, step_time_fn_for(inputs.prefill), step_time_fn_for(inputs.decode), debug=True)
    ref = model.run()   # debug: every pool's blocks checked after every step
    for engine in (model.P, model.D):   # no block lost: at the end every block is free again
        for rep in engine.replicas:
            assert not rep.running and not rep.waiting
            assert rep.pool.num_free == rep.pool.num_usable
    jit = run_pd_engine(inputs)
    assert_same_outputs(ref, jit)
    for name in PD_INT_COLUMNS:
        np.testing.assert_array_equal(np.asarray(jit.pd[name], np.int64), np.asarray(ref.pd[name], np.int64),
                                      err_msg=name)
    for name in PD_FLOAT_COLUMNS:
        np.testing.assert_allclose(jit.pd[name], ref.pd[name], rtol=1e-9, atol=0, equal_nan=True, err_msg=name)
    for pool in ("prefill", "decode"):
        np.testing.assert_allclose(jit.pd["pools"][pool]["busy_s"], ref.pd["pools"][pool]["busy_s"], rtol=1e-9)
    check_pd_invariants(inputs, jit)
    return ref, jit


def check_pd_invariants(inputs: PDInputs, out) -> None:
    """Transfers complete before decode admission; bytes conserved; request accounting."""
    pd = out.pd
    served = out.status != int(Status.REJECTED)
    assert (out.status != int(Status.PENDING)).all()
    sent = np.isfinite(pd["transfer_end_s"])
    np.testing.assert_array_equal(sent, served)
    p = inputs.decode.prompt_tokens.astype(np.int64)
    assert (pd["prefill_end_s"][sent] <= pd["transfer_start_s"][sent]).all()
    assert (pd["transfer_start_s"][sent] < pd["transfer_end_s"][sent]).all()
    assert (pd["transfer_end_s"][sent] <= pd["decode_admitted_s"][sent]).all()     # KV in before decoding
    assert (pd["decode_admitted_s"][sent] < out.first_token_s[sent]).all()
    assert (pd["prefill_admitted_s"][sent] < pd["prefill_end_s"][sent]).all()
    assert ((pd["transfer_tokens"][sent] >= 1) & (pd["transfer_tokens"][sent] <= p[sent])).all()
    np.testing.assert_allclose(pd["transfer_bytes"], pd["transfer_tokens"] * inputs.link.bytes_per_token)
    assert (pd["transfer_tokens"][~sent] == 0).all()
    # the decode pool computes the recomputed last prompt token and every later output token (no preemption)
    calm = sent & (out.preemptions == 0)
    np.testing.assert_array_equal(pd["decode_computed_tokens"][calm], inputs.decode.output_tokens[calm])
    # transfers to one decode replica never overlap on its link
    for d in np.unique(out.replica[sent]):
        k = sent & (out.replica == d)
        order = np.argsort(pd["transfer_start_s"][k], kind="stable")
        starts, ends = pd["transfer_start_s"][k][order], pd["transfer_end_s"][k][order]
        assert (starts[1:] >= ends[:-1] - inputs.link.latency_s - 1e-12).all()


# ------------------------------------------------------------------------------ differential
@pytest.mark.parametrize("name", ["worked_example", "conversation", "preempt_last_running"])
@pytest.mark.parametrize("shape", ["1p1d", "2p1d-least-kv", "1p2d-rr-steps", "2p2d-least-kv-nocache"])
def test_hand_cases_pd(name, shape):
    sc = hand_cases()[name]
    kw = {"1p1d": {},
          "2p1d-least-kv": dict(num_prefill=2, decode={"router": LEAST_KV_TRANSFER}),
          "1p2d-rr-steps": dict(num_decode=2, prefill={"record_steps": True}, decode={"record_steps": True}),
          "2p2d-least-kv-nocache": dict(num_prefill=2, num_decode=2,
                                        prefill={"enable_prefix_caching": False},
                                        decode={"router": LEAST_KV_TRANSFER, "enable_prefix_caching": False})}[shape]
    compare_pd(pd_inputs(sc, **kw))


def test_follow_up_waits_for_decode_and_least_kv_transfer_finds_the_history():
    """Turn 2 arrives think_s after turn 1 *completes on the decode pool*; the decode replica
    holding turn 1 receives only the new part of the prompt."""
    sys_prompt = list(range(1, 65))
    t1 = ReqSpec(prompt=sys_prompt, output=list(range(100, 120)), arrival_s=0.0, session=0)
    t2 = ReqSpec(prompt=t1.tokens + list(range(200, 216)), output=list(range(300, 304)), session=0, turn=1,
                 parent=0, think_s=0.5)
    other = ReqSpec(prompt=list(range(500, 540)), output=[1, 2], arrival_s=0.0)
    cfg = EngineConfig(block_size=16, num_gpu_blocks=200, max_model_len=512)
    sc = Scenario([t1, t2, other], cfg)
    ref, out = compare_pd(pd_inputs(sc, num_prefill=1, num_decode=2, decode={"router": LEAST_KV_TRANSFER}))
    assert out.arrival_s[1] == pytest.approx(out.completion_s[0] + 0.5)
    assert out.replica[1] == out.replica[0]
    # turn 1's prompt + output blocks (84 tokens -> 5 full blocks) are in the decode replica's cache
    assert out.pd["transfer_tokens"][1] == len(t2.prompt) - 5 * 16
    assert out.pd["transfer_tokens"][0] == len(t1.prompt)


def test_rejected_when_either_pool_cannot_hold_it():
    big = ReqSpec(prompt=list(range(1, 40)), output=list(range(40, 80)), arrival_s=0.0, session=0)
    child = ReqSpec(prompt=big.tokens + [7], output=[1], session=0, turn=1, parent=0, think_s=1.0)
    ok = ReqSpec(prompt=[1, 2, 3], output=[4, 5], arrival_s=0.1)
    sc = Scenario([big, child, ok], EngineConfig(block_size=4, num_gpu_blocks=64, max_model_len=100))
    # the decode pool's KV holds 5 usable blocks = 20 tokens: the first turn (79 tokens) cannot fit there
    ref, out = compare_pd(pd_inputs(sc, decode={"num_gpu_blocks": 6}))
    assert out.status[0] == Status.REJECTED and out.status[2] == Status.FINISHED
    assert out.arrival_s[1] == pytest.approx(out.arrival_s[0] + 1.0)


@pytest.mark.parametrize("router", list(Router), ids=[r.name.lower() for r in Router])
@given(data=st.data())
def test_random_scenarios_pd(router, data):
    sc: Scenario = data.draw(scenarios(max_requests=30, router=router), label="scenario")
    num_prefill = data.draw(st.integers(1, 2), label="prefill replicas")
    num_decode = data.draw(st.integers(1, 3), label="decode replicas")
    d_router = data.draw(st.sampled_from([*list(Router), LEAST_KV_TRANSFER]), label="decode router")
    d_seqs = data.draw(st.sampled_from([256, 4, 2, 1]), label="decode max_num_seqs")
    link = KvLink(bytes_per_token=data.draw(st.sampled_from([1.0, 131072.0])),
                  bandwidth_bytes_s=data.draw(st.sampled_from([1e6, 5e9, 1e12])),
                  latency_s=data.draw(st.sampled_from([0.0, 1e-3])), overhead_s=data.draw(st.sampled_from([0.0, 2e-3])))
    compare_pd(pd_inputs(sc, num_prefill=num_prefill, num_decode=num_decode, link=link,
                         decode={"router": d_router, "max_num_seqs": d_seqs, "record_steps": sc.config.record_steps}))


def test_empty():
    sc = Scenario([], EngineConfig(record_steps=True))
    inputs = pd_inputs(sc)
    out = run_pd_engine(inputs)
    assert out.status.size == 0 and out.pd["transfer_tokens"].size == 0


def test_unsupported_inputs():
    sc = Scenario([ReqSpec(prompt=[1, 2], output=[3], timeout_s=1.0)], EngineConfig())
    with pytest.raises(ValueError, match="timeouts"):
        run_pd_engine(pd_inputs(sc))
    sc = Scenario([ReqSpec(prompt=[1, 2], output=[3])], EngineConfig())
    with pytest.raises(ValueError, match="block_size"):
        run_pd_engine(pd_inputs(sc, decode={"block_size": 8}))
    with pytest.raises(ValueError, match="decode pools only"):
        run_pd_engine(pd_inputs(sc, prefill={"router": LEAST_KV_TRANSFER}))


# ------------------------------------------------------------------------------ scenarios
BASE = {
    "name": "pd", "seed": 1,
    "simulation": {"num_requests": 60},
    "model": {"name": "llama-3.1-8b"}, "hardware": {"gpu": "h100-sxm"},
    "workload": {"clients": [{"name": "chat", "arrival": {"process": "poisson", "rate": 20.0},
                              "prompt_tokens": {"dist": "uniform", "min": 200, "max": 2000},
                              "output_tokens": {"dist": "uniform", "min": 10, "max": 60},
                              "conversation": {"turns": {"dist": "constant", "value": 2},
                                               "think_time_s": {"dist": "constant", "value": 0.5}}}]},
    "frameworks": [{"name": "agg", "replicas": 2},
                   {"name": "pd", "prefill": {"replicas": 1, "router": "prefix_aware"},
                    "decode": {"replicas": 1, "router": "least_kv_transfer"},
                    "kv_transfer": {"link": "roce"}}],
    "slo": {"ttft_ms": 400, "tpot_ms": 30},
}


def _with_fw(**fw) -> dict:
    raw = json.loads(json.dumps(BASE))
    raw["frameworks"][1].update(fw)
    return raw


@pytest.mark.parametrize("fw, key, reason", [
    ({"replicas": 2}, "frameworks.1.replicas", "set per pool"),
    ({"router": "least_loaded"}, "frameworks.1.router", "per pool"),
    ({"decode": None}, "frameworks.1.decode", "both a prefill and a decode pool"),
    ({"prefill": {"replicas": 1, "router": "least_kv_transfer"}}, "frameworks.1.prefill.router", "unknown value"),
    ({"prefill": {"tp": 2}}, "frameworks.1.prefill.replicas", "required"),
    ({"kv_transfer": {"link": "carrier-pigeon"}}, "frameworks.1.kv_transfer.link", "unknown value"),
    ({"kv_transfer": {"link": "nvlink", "bandwidth_gbps": 0}}, "frameworks.1.kv_transfer.bandwidth_gbps", ">"),
    ({"decode": {"replicas": 1, "num_gpu_blocks": 100}}, "frameworks.1.decode", "less than one request"),
    ({"decode": {"replicas": 1, "gpu": "h9000"}}, "frameworks.1.decode.gpu", "unknown GPU"),
    ({"decode": {"replicas": 1, "block_size": 32}}, "frameworks.1.decode.block_size", "unknown key"),
])
def test_scenario_errors(fw, key, reason):
    from oracle.scenario import scenario_from_dict
    with pytest.raises(OracleError) as err:
        scenario_from_dict(_with_fw(**fw))
    problems = getattr(err.value, "problems", None) or [err.value]
    assert any(p.key == key and reason in p.reason for p in problems), [(p.key, p.reason) for p in problems]


def test_kv_transfer_without_pools_and_timeouts_are_errors():
    from oracle.scenario import scenario_from_dict
    raw = json.loads(json.dumps(BASE))
    raw["frameworks"][0]["kv_transfer"] = {"link": "nvlink"}
    with pytest.raises(OracleError, match="prefill and a decode pool"):
        scenario_from_dict(raw)
    raw = json.loads(json.dumps(BASE))
    raw["workload"]["timeout_s"] = 5.0
    with pytest.raises(OracleError, match="timeouts"):
        scenario_from_dict(raw)


def test_pool_settings_and_link_catalog():
    from oracle.catalog import load_links
    from oracle.scenario import pool_framework, scenario_from_dict
    sc = scenario_from_dict(_with_fw(prefill={"replicas": 2, "tp": 2, "max_num_batched_tokens": 4096},
                                     decode={"replicas": 1, "tp": 4, "gpu": "h200", "max_num_seqs": 512},
                                     kv_transfer={"link": "ethernet", "latency_s": 1e-4}))
    fw = sc.frameworks[1]
    assert fw.disaggregated and fw.num_gpus == 2 * 2 + 4
    p, d = pool_framework(fw, "prefill"), pool_framework(fw, "decode")
    assert (p.replicas, p.tp, p.max_num_batched_tokens, p.max_num_seqs) == (2, 2, 4096, 256)
    assert (d.replicas, d.tp, d.max_num_seqs, d.router) == (1, 4, 512, "round_robin")   # the entry's default
    link = load_links()["ethernet"]
    assert fw.kv_transfer.bandwidth_gbps == link.bandwidth_gbps and fw.kv_transfer.latency_s == 1e-4
    assert set(load_links()) == {"nvlink", "infiniband", "roce", "ethernet"}
    assert all(spec.source for spec in load_links().values())


# ------------------------------------------------------------------------------ API and outputs
@pytest.fixture(scope="module")
def pd_result():
    import oracle
    return oracle.simulate(BASE, record_steps=True)


def test_simulate_columns_and_summary(pd_result, tmp_path):
    from oracle.metrics.columns import PD_REQUEST_COLUMNS, REQUEST_COLUMNS
    agg, pd = pd_result.frameworks["agg"], pd_result.frameworks["pd"]
    assert tuple(agg.requests.columns) == REQUEST_COLUMNS
    assert tuple(pd.requests.columns) == REQUEST_COLUMNS + PD_REQUEST_COLUMNS
    df = pd.requests.filter(pd.requests["status"] == "finished")
    assert df.height == 60
    parts = df["ttft_queue_ms"] + df["ttft_prefill_ms"] + df["ttft_transfer_ms"] + df["ttft_decode_ms"]
    np.testing.assert_allclose(parts.to_numpy(), df["ttft_ms"].to_numpy(), rtol=1e-9)
    assert (df["ttft_transfer_ms"] > 0).all() and (df["ttft_decode_ms"] > 0).all()
    s = pd.summary["disaggregation"]
    assert s["p_to_d_ratio"] == "1:1" and s["kv_transfer"]["link"] == "roce"
    assert s["kv_transfer"]["transfers"] == 60
    assert s["kv_transfer"]["total_bytes"] == pytest.approx(float(pd.requests["transfer_bytes"].sum()))
    # follow-ups find their history on the decode replica: only part of the prompts moves
    assert 0 < s["kv_transfer"]["decode_prefix_saved_fraction"] < 1
    for pool in ("prefill", "decode"):
        assert 0 < s[pool]["busy_fraction"] <= 1 and s[pool]["num_gpus"] == 1
    assert pd.summary["config"]["num_gpus"] == 2 and pd.summary["config"]["disaggregated"] == "1:1"
    steps = pd.steps
    assert set(steps["replica"].unique()) == {0, 1}   # prefill replica 0, decode replica 1
    assert "disaggregation" not in agg.summary
    pd_result.write(tmp_path / "run")
    assert (tmp_path / "run" / "pd" / "requests.parquet").is_file()


def test_report_shows_the_pools(pd_result, tmp_path):
    from oracle.report import build_report
    from oracle.report.disagg import disaggregation_table
    from oracle.report.tables import to_rich
    t = disaggregation_table(pd_result.summaries)
    assert t is not None and to_rich(t) is not None
    labels = [r[0].text for r in t.rows]
    assert "P:D replicas" in labels and "KV transfer (link wait included)" in labels
    pd_result.write(tmp_path / "run")
    doc, tables, _ = build_report(tmp_path / "run")
    assert any(tb.title == "Prefill/decode disaggregation" for tb in tables)


def test_sweep_override_and_search_over_pools(tmp_path):
    from oracle.scenario import apply_overrides, scenario_from_dict
    from oracle.sweep.search import search
    raw = apply_overrides(BASE, {"frameworks.1.prefill.replicas": 3, "frameworks.1.decode.replicas": 2})
    fw = scenario_from_dict(raw).frameworks[1]
    assert (fw.prefill.replicas, fw.decode.replicas) == (3, 2)
    raw = json.loads(json.dumps(BASE))
    raw["simulation"]["num_requests"] = 30
    sc = scenario_from_dict(raw)
    res = search(sc, vary="prefill_replicas", framework="pd", slo_ttft_ms=5000, slo_tpot_ms=1000, goodput=0.5,
                 hi=4)
    assert res.status == "found" and res.answer == 1
    with pytest.raises(OracleError, match="prefill/decode pools"):
        search(sc, vary="decode_replicas", framework="agg", slo_ttft_ms=100)
    with pytest.raises(OracleError, match="aggregated framework"):
        search(sc, vary="replicas", framework="pd", slo_ttft_ms=100)
    assert math.isfinite(res.wall_time_s)


def test_bundled_scenario_validates():
    from pathlib import Path

    from oracle.scenario import load_scenario
    root = Path(__file__).resolve().parents[1] / "scenarios"
    sc = load_scenario(root / "disaggregation.toml")
    assert [fw.num_gpus for fw in sc.frameworks] == [4, 4, 4]
    assert [fw.disaggregated for fw in sc.frameworks] == [False, True, True]
    from oracle.sweep.spec import load_sweep
    spec = load_sweep(root / "sweep_pd_ratio.toml")
    assert spec is not None


def test_catalog_links_command():
    from typer.testing import CliRunner

    from oracle.cli import build_app
    app = build_app()
    out = CliRunner().invoke(app, ["catalog", "links", "--json"])
    assert out.exit_code == 0, out.output
    assert set(json.loads(out.stdout)) == {"nvlink", "infiniband", "roce", "ethernet"}
    out = CliRunner().invoke(app, ["catalog", "links"])
    assert out.exit_code == 0 and "infiniband" in out.stdout, out.output
