"""`[workload] timeout_s`: clients that give up (README "Client timeouts"), end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import oracle
from oracle.errors import ScenarioError
from oracle.scenario import apply_overrides, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]


def _overloaded(timeout_s):
    """Quickstart at 5x its rate on a tiny KV pool: requests queue for many seconds."""
    raw = load_scenario(ROOT / "scenarios" / "quickstart.toml").raw
    over = {"simulation.duration_s": 30, "simulation.warm_up_s": 0,
            "workload.clients.0.arrival.rate": 30.0, "frameworks.0.num_gpu_blocks": 400}
    if timeout_s is not None:
        over["workload.timeout_s"] = timeout_s
    return scenario_from_dict(apply_overrides(raw, over))


def test_clients_give_up_and_are_counted_as_failures():
    base = oracle.simulate(_overloaded(None))
    short = oracle.simulate(_overloaded(2.0))
    r0, r1 = base.requests, short.requests
    assert (r0["status"] == "timed_out").sum() == 0
    timed_out = r1.filter(r1["status"] == "timed_out")
    assert timed_out.height > 0
    req = short.summary["requests"]
    assert req["timed_out"] == timed_out.height
    assert req["failed"] >= req["timed_out"]
    ok = r1.filter(r1["status"] == "finished")
    # a request that finished did so within the client's patience
    assert np.all((ok["completion_s"] - ok["arrival_s"]).to_numpy() <= 2.0 + 1e-9)
    # a client that gives up frees the server: the requests that do finish wait less
    assert short.summary["latency"]["time_to_first_token_ms"]["p50"] < \
        base.summary["latency"]["time_to_first_token_ms"]["p50"]


@pytest.mark.parametrize("bad", [0, -1.0, "soon"])
def test_bad_timeout_is_one_clear_error(bad):
    with pytest.raises(ScenarioError, match="workload.timeout_s"):
        _overloaded(bad)
