"""Fuzzing scenarios (issue #8): random and mutated scenario dicts never escape as anything but
an :class:`~oracle.errors.OracleError` with a one-line message, and small valid ones simulate
with their invariants intact.

* ``valid_scenarios()`` draws dicts over the documented keys (``oracle/scenario.py``,
  ``oracle/workload/spec.py``): clients with every distribution, arrival process and
  conversation pattern, shared arrivals, one or two frameworks with every engine knob. Many
  are still refused (a model that does not fit, prompts longer than ``max_model_len``, ...),
  which is fine: refusals must be OracleErrors.
* ``mutated_scenarios()`` takes such a dict and drops keys, renames them, or puts wrong
  types, zero/negative, NaN/inf, huge or tiny numbers anywhere.

Valid scenarios with ``num_requests <= 50`` go through ``oracle.simulate`` (under a 1 GiB
memory limit, so a huge pool is refused instead of allocated). Every outcome must be success
with the invariants below, or an OracleError. Example counts per outcome are printed (``-s``).
"""

from __future__ import annotations

import math
import time
from collections import Counter

import numpy as np
import polars as pl
import pytest
from hypothesis import event, given, settings
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st

import oracle
from oracle.errors import OracleError
from oracle.scenario import scenario_from_dict

MODELS = ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b", "qwen3-30b-a3b", "llama-2-7b", "llama-3.1-70b"]
GPUS = ["h100-sxm", "a100-80g", "h200", "l4", "mi300x", "a10g"]
MAX_SIMULATED_REQUESTS = 50
MEMORY_LIMIT = 1 << 30
OUTCOMES: dict[str, Counter] = {}


# -- strategies: valid scenarios -------------------------------------------------------------
def _num(lo: float, hi: float, *, integer_ok: bool = True):
    s = st.floats(lo, hi, allow_nan=False, allow_infinity=False)
    return st.one_of(s, st.integers(int(math.ceil(lo)), int(hi))) if integer_ok and hi >= math.ceil(lo) else s


@st.composite
def token_dist(draw, *, hi: int = 4000):
    """A token-count distribution: a bare number or one of the documented tables."""
    kind = draw(st.sampled_from(["number", "constant", "uniform", "normal", "lognormal", "exponential", "zipf",
                                 "empirical"]))
    bounded = draw(st.booleans())
    top = draw(st.integers(1, hi))
    if kind == "number":
        return draw(st.integers(1, hi))
    if kind == "constant":
        return {"dist": "constant", "value": draw(_num(1, hi))}
    if kind == "uniform":
        lo = draw(st.integers(1, top))
        return {"dist": "uniform", "min": lo, "max": top}
    d: dict = {"dist": kind}
    if kind == "normal":
        d.update(mean=draw(_num(-hi, hi)), std=draw(_num(0, 10 * hi)))
    elif kind == "lognormal":
        d[draw(st.sampled_from(["mean", "median"]))] = draw(_num(0.5, hi))
        d["sigma"] = draw(_num(0, 12))                   # sigma 12: draws up to e**60 before clipping
    elif kind == "exponential":
        d["mean"] = draw(_num(0.5, 1e12))
    elif kind == "zipf":
        d.update(exponent=draw(_num(0.1, 3)), max=top)
        bounded = False
    elif kind == "empirical":
        values = draw(st.lists(_num(0, 10 * hi), min_size=1, max_size=5))
        d["values"] = values
        if draw(st.booleans()):
            d["weights"] = draw(st.lists(_num(0, 5), min_size=len(values), max_size=len(values))
                                .filter(lambda w: sum(w) > 0))
    if bounded:
        d["max"] = top
        if draw(st.booleans()):
            d["min"] = draw(st.integers(1, top))
    return d


@st.composite
def time_dist(draw):
    if draw(st.booleans()):
        return draw(_num(0, 20))
    return {"dist": "exponential", "mean": draw(_num(0.01, 10)), "max": draw(_num(0.01, 60))}


@st.composite
def arrival(draw):
    a: dict = {"process": draw(st.sampled_from(["poisson", "gamma", "constant"])),
               "rate": draw(st.floats(1e-3, 200, allow_nan=False))}
    if a["process"] == "gamma":
        a["cv"] = draw(st.floats(0.05, 10, allow_nan=False))
    return a


@st.composite
def client(draw, i: int, shared: bool):
    c: dict = {"name": f"c{i}", "prompt_tokens": draw(token_dist(hi=6000)), "output_tokens": draw(token_dist(hi=300))}
    if shared:
        if draw(st.booleans()):
            c["share"] = draw(st.floats(0.01, 10, allow_nan=False))
    else:
        c["arrival"] = draw(arrival())
    if draw(st.booleans()):
        pattern = draw(st.sampled_from(["chat", "agent", "branch"]))
        conv: dict = {"pattern": pattern, "think_time_s": draw(time_dist())}
        if pattern != "agent" or draw(st.booleans()):
            conv["turns"] = {"dist": "uniform", "min": 1, "max": draw(st.integers(1, 6))}
        if pattern == "branch" and draw(st.booleans()):
            conv["branch_prob"] = draw(st.floats(0, 1, allow_nan=False))
        if pattern == "agent" and draw(st.booleans()):
            conv["tool_output_tokens"] = draw(token_dist(hi=500))
        c["conversation"] = conv
    if draw(st.booleans()):
        c["system_prompt_tokens"] = draw(st.integers(0, 3000))
        c["num_system_prompts"] = draw(st.integers(1, 8))
        if draw(st.booleans()):
            c["system_prompt_popularity"] = "zipf"
            c["system_prompt_zipf_exponent"] = draw(st.floats(0.1, 3, allow_nan=False))
        if draw(st.booleans()):
            c["system_prompt_pool"] = "shared"
    return c


@st.composite
def framework(draw, i: int):
    f: dict = {"name": f"fw{i}"}
    optional = {
        "tp": st.sampled_from([1, 2, 4, 8]),
        "pp": st.sampled_from([1, 2]),
        "replicas": st.integers(1, 3),
        "router": st.sampled_from(["round_robin", "least_loaded", "session_affinity", "prefix_aware"]),
        "block_size": st.sampled_from([1, 8, 16, 32, 128]),
        "num_gpu_blocks": st.one_of(st.just("unlimited"), st.integers(2, 4000)),
        "gpu_memory_utilization": st.floats(0.3, 0.98, allow_nan=False),
        "max_num_seqs": st.integers(1, 64),
        "max_num_batched_tokens": st.integers(16, 8192),
        "max_model_len": st.integers(64, 32768),
        "enable_chunked_prefill": st.booleans(),
        "enable_prefix_caching": st.booleans(),
        "dtype": st.sampled_from(["bf16", "fp16", "fp8"]),
        "kv_cache_dtype": st.sampled_from(["auto", "bf16", "fp16", "fp8"]),
        "scheduler_overhead_s": st.floats(0, 0.01, allow_nan=False),
    }
    for key in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=len(optional))):
        f[key] = draw(optional[key])
    return f


@st.composite
def valid_scenarios(draw):
    sim: dict = {"num_requests": draw(st.integers(1, MAX_SIMULATED_REQUESTS))}
    if draw(st.booleans()):
        sim["duration_s"] = draw(st.floats(0.05, 30, allow_nan=False))
    if draw(st.booleans()):
        sim["warm_up_s"] = draw(st.floats(0, 3, allow_nan=False))
    shared = draw(st.booleans())
    n_clients = draw(st.integers(1, 3))
    workload: dict = {"clients": [draw(client(i, shared)) for i in range(n_clients)]}
    if shared:
        workload["arrival"] = draw(arrival())
    raw: dict = {"name": "fuzz", "seed": draw(st.integers(0, 2**63 - 1)), "simulation": sim,
                 "model": {"name": draw(st.sampled_from(MODELS))}, "hardware": {"gpu": draw(st.sampled_from(GPUS))},
                 "workload": workload,
                 "frameworks": [draw(framework(i)) for i in range(draw(st.integers(1, 2)))]}
    if draw(st.booleans()):
        raw["slo"] = {k: draw(st.floats(1, 5000, allow_nan=False))
                      for k in draw(st.lists(st.sampled_from(["ttft_ms", "tpot_ms", "e2e_ms"]), unique=True,
                                             min_size=1))}
    return raw


# -- strategies: mutations -------------------------------------------------------------------
BAD_VALUES = [0, -1, 1, 2**31, 2**63, 2**64, 10**30, -(10**30), 0.5, -0.5, 1e-300, 1e308, -1e308,
              float("nan"), float("inf"), float("-inf"), "", "abc", "16", True, False, None, [], [1, 2], {},
              {"dist": "nope"}, {"a": 1}]


def _paths(node, prefix=()):
    """Every (path, value) below ``node`` (dict keys and list indices)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        yield prefix + (k,), v
        yield from _paths(v, prefix + (k,))


def _parent(raw, path):
    node = raw
    for k in path[:-1]:
        node = node[k]
    return node


@st.composite
def mutated_scenarios(draw):
    import copy
    raw = copy.deepcopy(draw(valid_scenarios()))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(raw)]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _parent(raw, path), path[-1]
        op = draw(st.sampled_from(["drop", "rename", "replace", "replace", "replace"]))
        if op == "drop":
            parent.pop(key) if isinstance(parent, dict) else parent.pop(key)
        elif op == "rename" and isinstance(parent, dict):
            new = draw(st.sampled_from([key + "s", key[:-1], key.upper(), "x" + key, key.replace("_", "-")]))
            parent[new] = parent.pop(key)
        else:
            parent[key] = draw(st.sampled_from(BAD_VALUES) | st.integers() | st.floats() | st.text(max_size=5))
    return raw


# -- the property ----------------------------------------------------------------------------
def check_result(res) -> None:
    """Invariants of a finished simulation (DESIGN.md §9)."""
    n = len(res.workload)
    for name, fr in res.frameworks.items():
        df, s = fr.requests, fr.summary
        assert df.height == n, name
        status = set(df["status"].unique().to_list())
        assert status <= {"finished", "rejected"}, (name, status)   # every non-rejected request finished
        done = df.filter(pl.col("status") == "finished")
        for a, b in (("arrival_s", "admitted_s"), ("admitted_s", "first_token_s"), ("first_token_s", "completion_s")):
            assert done[a].is_finite().all() and done[b].is_finite().all(), (name, a, b)
            assert (done[a] <= done[b]).all(), (name, a, b)
        assert (done["cached_tokens"] <= done["prompt_tokens"] - 1).all(), name
        assert (df["cached_tokens"] >= 0).all() and (df["prompt_tokens"] >= 1).all(), name
        counted = df.filter(~pl.col("warm_up"))
        r = s["requests"]
        assert r["total"] == counted.height and r["total"] + r["warm_up_excluded"] == n, (name, r)
        assert r["successful"] == counted.filter(pl.col("status") == "finished").height, (name, r)
        assert r["successful"] + r["failed"] == r["total"], (name, r)
        pc = s["prefix_caching"]
        assert 0 <= pc["prefix_cache_hits"] <= pc["prefix_cache_queries"], (name, pc)
        if not fr.summary["config"]["enable_prefix_caching"]:
            assert pc["prefix_cache_hits"] == 0 and (df["cached_tokens"] == 0).all(), name
        assert sum(pc["event_counts"].values()) <= r["total"], (name, pc["event_counts"])
        assert s["preemptions"] >= 0 and s["simulation"]["num_steps"] >= 0, name
        assert 0.0 <= s["goodput"]["fraction"] <= 1.0, name


def run_one(raw: dict, outcomes: Counter) -> None:
    try:
        sc = scenario_from_dict(raw)
    except OracleError as exc:
        assert exc.problems and str(exc) == "\n".join(str(p) for p in exc.problems)
        for p in exc.problems:   # every problem is one line
            msg = str(p)
            assert msg and "\n" not in msg, repr(msg)
        _note(outcomes, "refused by validation")
        return
    n = sc.simulation.num_requests
    if n is None or n > MAX_SIMULATED_REQUESTS:
        _note(outcomes, "valid, too big to simulate")
        return
    t0 = time.perf_counter()
    try:
        res = oracle.simulate(sc, max_memory_bytes=MEMORY_LIMIT)
    except OracleError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, repr(msg)
        _note(outcomes, "refused at run time")
        return
    finally:
        assert time.perf_counter() - t0 < 120, "a <= 50-request simulation took over two minutes"
    check_result(res)
    _note(outcomes, "simulated")


def _note(outcomes: Counter, what: str) -> None:
    outcomes[what] += 1
    try:
        event(what)   # shown with --hypothesis-show-statistics
    except InvalidArgument:   # called outside @given
        pass


def _report(name: str, outcomes: Counter, *, min_simulated: int) -> None:
    OUTCOMES[name] = outcomes
    total = sum(outcomes.values())
    print(f"\n{name}: {total} examples: " + ", ".join(f"{v} {k}" for k, v in sorted(outcomes.items())))
    assert outcomes["simulated"] >= min_simulated, outcomes


def test_valid_scenarios_simulate_or_refuse():
    outcomes: Counter = Counter()

    @given(valid_scenarios())
    def prop(raw):
        run_one(raw, outcomes)

    prop()
    _report("valid", outcomes, min_simulated=5)


def test_mutated_scenarios_only_raise_oracle_errors():
    outcomes: Counter = Counter()

    @given(mutated_scenarios())
    def prop(raw):
        run_one(raw, outcomes)

    prop()
    _report("mutated", outcomes, min_simulated=1)


@pytest.mark.nightly
def test_fuzz_nightly():
    outcomes: Counter = Counter()

    @settings(settings.get_profile("nightly"))
    @given(st.one_of(valid_scenarios(), mutated_scenarios()))
    def prop(raw):
        run_one(raw, outcomes)

    prop()
    _report("nightly", outcomes, min_simulated=50)


def test_extreme_hand_picked_values():
    """A few values that once broke simulators: huge sigma, tiny rates, huge think times."""
    base = {"name": "x", "simulation": {"num_requests": 20}, "model": {"name": "llama-3.1-8b"},
            "hardware": {"gpu": "h100-sxm"}, "frameworks": [{"name": "vllm"}]}
    clients = [
        {"arrival": {"rate": 1e-300}, "prompt_tokens": 100, "output_tokens": 10},
        {"arrival": {"rate": 1e6}, "prompt_tokens": {"dist": "lognormal", "mean": 100, "sigma": 40},
         "output_tokens": 10},
        {"arrival": {"rate": 1.0}, "prompt_tokens": {"dist": "normal", "mean": 0, "std": 1e300}, "output_tokens": 5},
        {"arrival": {"rate": 1.0}, "prompt_tokens": {"dist": "exponential", "mean": 1e300}, "output_tokens": 5},
        {"arrival": {"rate": 1.0}, "prompt_tokens": 50, "output_tokens": 5,
         "conversation": {"turns": 3, "think_time_s": 1e300}},
        {"arrival": {"process": "gamma", "rate": 1.0, "cv": 1e6}, "prompt_tokens": 50, "output_tokens": 5},
    ]
    outcomes: Counter = Counter()
    for c in clients:
        run_one({**base, "workload": {"clients": [c]}}, outcomes)
    print("\nhand-picked:", dict(outcomes))
    assert sum(outcomes.values()) == len(clients)
    assert np.isfinite(len(clients))
