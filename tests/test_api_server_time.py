"""The framework's per-request API-server time: on the request path, outside the engine loop.

A request reaches the engine ``api_server_s`` after the client sent it, so TTFT and E2E grow
by exactly that on an idle server, TPOT does not, the requests table keeps the client's send
time, follow-ups wait for it too, and the client's timeout counts it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import oracle
from oracle.errors import ScenarioError
from oracle.scenario import apply_overrides, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _lone_requests(api_server_s, **over):
    """Three requests far apart (the server is idle when each arrives)."""
    raw = {"name": "api", "model": {"name": "llama-2-7b"}, "hardware": {"gpu": "h100-sxm"},
           "simulation": {"num_requests": 3},
           "workload": {"clients": [{"name": "c", "arrival": {"process": "constant", "rate": 0.1},
                                     "prompt_tokens": {"dist": "constant", "value": 500},
                                     "output_tokens": {"dist": "constant", "value": 50}}]},
           "frameworks": [{"name": "vllm"} | ({"api_server_s": api_server_s} if api_server_s is not None else {})]}
    return scenario_from_dict(apply_overrides(raw, over) if over else raw)


def test_api_server_time_adds_to_ttft_and_e2e_only():
    base = oracle.simulate(_lone_requests(0.0)).requests
    slow = oracle.simulate(_lone_requests(0.05)).requests
    np.testing.assert_allclose(slow["ttft_ms"].to_numpy(), base["ttft_ms"].to_numpy() + 50.0, rtol=1e-9)
    np.testing.assert_allclose(slow["e2e_ms"].to_numpy(), base["e2e_ms"].to_numpy() + 50.0, rtol=1e-9)
    np.testing.assert_allclose(slow["tpot_ms"].to_numpy(), base["tpot_ms"].to_numpy(), rtol=1e-9)
    # the requests table keeps the client's send time; the engine saw each request 50 ms later
    np.testing.assert_allclose(slow["arrival_s"].to_numpy(), base["arrival_s"].to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(slow["admitted_s"].to_numpy(), base["admitted_s"].to_numpy() + 0.05, rtol=1e-12)


def test_default_is_the_framework_catalog_value():
    from oracle.catalog import get_framework
    base = oracle.simulate(_lone_requests(0.0)).requests
    default = oracle.simulate(_lone_requests(None)).requests
    np.testing.assert_allclose(default["ttft_ms"].to_numpy(),
                               base["ttft_ms"].to_numpy() + get_framework("vllm").api_server_s * 1e3, rtol=1e-9)


def test_follow_ups_and_timeouts_count_the_api_server_time():
    raw = load_scenario(ROOT / "scenarios" / "quickstart.toml").raw
    over = {"simulation.duration_s": 20, "simulation.warm_up_s": 0}
    sc0 = scenario_from_dict(apply_overrides(raw, {**over, "frameworks.0.api_server_s": 0.0}))
    sc1 = scenario_from_dict(apply_overrides(raw, {**over, "frameworks.0.api_server_s": 0.2}))
    r0, r1 = oracle.simulate(sc0).requests, oracle.simulate(sc1).requests
    # a follow-up is sent think_s (5 s) after the client got its parent's last token, and reaches
    # the engine 0.2 s later: the table shows the client's send time
    t = r1.sort(["session", "turn"])
    same = (t["session"].to_numpy()[1:] == t["session"].to_numpy()[:-1]) & (t["session"].to_numpy()[1:] >= 0)
    done = t["completion_s"].to_numpy()[:-1]
    pairs = same & np.isfinite(done)
    assert pairs.sum() > 10
    np.testing.assert_allclose(t["arrival_s"].to_numpy()[1:][pairs], done[pairs] + 5.0, rtol=0, atol=1e-9)
    waited = t["admitted_s"].to_numpy()[1:][pairs] - t["arrival_s"].to_numpy()[1:][pairs]
    assert np.all(waited >= 0.2 - 1e-9)
    assert np.nanmin(r1["ttft_ms"].to_numpy()) >= 200.0 > np.nanmin(r0["ttft_ms"].to_numpy())
    # a client whose patience is shorter than the API-server time never gets an answer
    tight = scenario_from_dict(apply_overrides(raw, {**over, "frameworks.0.api_server_s": 0.2,
                                                     "workload.timeout_s": 0.15}))
    res = oracle.simulate(tight)
    assert res.summary["requests"]["successful"] == 0


@pytest.mark.parametrize("bad", [-0.1, "fast", 11.0])
def test_bad_api_server_time_is_one_clear_error(bad):
    with pytest.raises(ScenarioError, match="frameworks.0.api_server_s"):
        _lone_requests(bad)
