"""Differential tests: the jitted engine against the plain-Python reference.

Both read the same :class:`EngineInputs` and the same cost kernel (``inputs.cost_params``),
so integers must match exactly and timestamps to rtol 1e-9. Random scenarios come from
``engine_cases.scenarios`` (at most 40 requests so the run stays quick); the test is
parametrized over the four routers, each with the profile's ``max_examples`` (``ci``:
4 x 50 = 200 examples). The hand-worked cases of tests/test_reference_engine.py run too.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from engine_cases import Scenario, build_inputs, cost_model, draft_step_time_fn_for, hand_cases, scenarios, step_time_fn_for
from hypothesis import given
from hypothesis import strategies as st
from reference.engine import run_reference

from oracle.engine.inputs import EngineConfig, EngineInputs, EngineOutputs, Router

# Guard only while the jitted engine (or the cost kernel it imports) is missing.
run_engine = pytest.importorskip("oracle.engine.loop", reason="jitted engine not importable").run_engine
if not cost_model()[2]:
    pytest.skip("real cost kernel params (oracle.cost.build_cost_params) not available",
                allow_module_level=True)

INT_FIELDS = ("replica", "cache_event", "preemptions", "status", "cached_tokens", "computed_tokens")
TIME_FIELDS = ("arrival_s", "admitted_s", "first_token_s", "completion_s", "max_itl_s")
INT_STEP_COLUMNS = ("replica", "num_decode", "num_prefill_tokens", "num_running", "num_waiting",
                    "kv_blocks_used", "kv_blocks_cached")
TIME_STEP_COLUMNS = ("start_s", "duration_s")


def assert_same_outputs(ref: EngineOutputs, jit: EngineOutputs) -> None:
    for name in INT_FIELDS:
        np.testing.assert_array_equal(np.asarray(getattr(jit, name), np.int64),
                                      np.asarray(getattr(ref, name), np.int64), err_msg=name)
    for name in TIME_FIELDS:
        np.testing.assert_allclose(getattr(jit, name), getattr(ref, name), rtol=1e-9, atol=0,
                                   equal_nan=True, err_msg=name)
    assert int(jit.prefix_cache_queries) == ref.prefix_cache_queries
    assert int(jit.prefix_cache_hits) == ref.prefix_cache_hits
    assert (jit.spec_drafts, jit.spec_accepted, jit.spec_verifications) == \
        (ref.spec_drafts, ref.spec_accepted, ref.spec_verifications)
    np.testing.assert_array_equal(np.asarray(jit.itl_hist, np.int64), ref.itl_hist,
                                  err_msg="itl_hist")
    assert int(jit.num_steps) == ref.num_steps
    if ref.steps is not None:
        assert jit.steps is not None
        for col in INT_STEP_COLUMNS:
            np.testing.assert_array_equal(np.asarray(jit.steps[col], np.int64),
                                          np.asarray(ref.steps[col], np.int64), err_msg=col)
        for col in TIME_STEP_COLUMNS:
            np.testing.assert_allclose(jit.steps[col], ref.steps[col], rtol=1e-9, atol=0,
                                       err_msg=col)


def compare(inputs: EngineInputs) -> tuple[EngineOutputs, EngineOutputs]:
    ref = run_reference(inputs, step_time_fn_for(inputs), draft_step_time_fn=draft_step_time_fn_for(inputs))
    jit = run_engine(inputs)
    assert_same_outputs(ref, jit)
    return ref, jit


@pytest.mark.parametrize("name", sorted(hand_cases()))
def test_hand_cases(name):
    compare(hand_cases()[name].inputs())


def test_empty_input():
    compare(build_inputs([], EngineConfig(record_steps=True)))


def _with_flags(inputs: EngineInputs, writeable: bool) -> EngineInputs:
    """``inputs`` with every request array copied and its ``writeable`` flag set (read-only
    columns are what a zero-copy Arrow or memory-mapped workload gives)."""
    def flagged(a):
        a = np.array(a)
        a.flags.writeable = writeable
        return a
    return dataclasses.replace(inputs, **{f.name: flagged(getattr(inputs, f.name)) for f in dataclasses.fields(inputs)
                                          if isinstance(getattr(inputs, f.name), np.ndarray) and f.name != "cost_params"})


def test_one_compiled_engine_whatever_the_input_flags():
    """Read-only and writable inputs give the same outputs through one compiled engine: numba
    compiles a full engine per argument type (minutes), so input flags must not reach it."""
    from oracle.engine import loop
    inputs = hand_cases()["conversation"].inputs()
    ref, _ = compare(_with_flags(inputs, writeable=True))
    assert_same_outputs(ref, run_engine(_with_flags(inputs, writeable=False)))
    assert len(loop._simulate.signatures) == 1, loop._simulate.signatures


@pytest.mark.parametrize("name", ["worked_example", "preempt_last_running", "conversation"])
def test_hand_cases_variants(name):
    sc = hand_cases()[name]
    for kw in ({"enable_prefix_caching": False}, {"enable_chunked_prefill": False,
                                                  "max_num_batched_tokens": 64,
                                                  "max_model_len": 64},
               {"record_steps": True}, {"num_replicas": 2, "router": Router.PREFIX_AWARE}):
        compare(sc.with_config(**kw).inputs())


@pytest.mark.parametrize("router", list(Router), ids=[r.name.lower() for r in Router])
@given(data=st.data())
def test_random_scenarios(router, data):
    sc: Scenario = data.draw(scenarios(max_requests=40, router=router, timeouts=True), label="scenario")
    compare(sc.inputs())


@given(sc=scenarios(max_requests=25, pool_kinds=("tight",), record_steps=True, timeouts=True))
def test_random_tight_pools_with_steps(sc: Scenario):
    compare(sc.inputs())


def assert_same_lora(ref: EngineOutputs, jit: EngineOutputs) -> None:
    """LoRA totals: the same loads, skips, per-adapter loads and load time."""
    assert (ref.lora is None) == (jit.lora is None)
    if ref.lora is not None:
        for key in ("gpu_loads", "disk_loads", "skipped_admissions"):
            assert jit.lora[key] == ref.lora[key], key
        np.testing.assert_allclose(jit.lora["load_s"], ref.lora["load_s"], rtol=1e-9)
        np.testing.assert_array_equal(jit.lora["loads_by_adapter"], ref.lora["loads_by_adapter"])


# --- async scheduling (README "Async scheduling")
@pytest.mark.parametrize("name", sorted(hand_cases()))
def test_hand_cases_async(name):
    compare(hand_cases()[name].with_config(async_scheduling=True, record_steps=True).inputs())


@pytest.mark.parametrize("router", list(Router), ids=[r.name.lower() for r in Router])
@given(data=st.data())
def test_random_scenarios_async(router, data):
    sc: Scenario = data.draw(scenarios(max_requests=40, router=router, timeouts=True, async_scheduling=True),
                             label="scenario")
    compare(sc.inputs())


@given(sc=scenarios(max_requests=25, pool_kinds=("tight",), record_steps=True, timeouts=True,
                    async_scheduling=True))
def test_random_tight_pools_with_steps_async(sc: Scenario):
    compare(sc.inputs())


@given(sc=scenarios(max_requests=25, spec=True, timeouts=True))
def test_random_spec_decode(sc: Scenario):
    """Speculative decoding: drafts, rejections, lookahead slots, padding, drafter cost."""
    compare(sc.inputs())


@given(sc=scenarios(max_requests=20, pool_kinds=("tight",), record_steps=True, spec=True))
def test_random_spec_decode_tight_pools(sc: Scenario):
    compare(sc.inputs())


@pytest.mark.parametrize("router", list(Router), ids=[r.name.lower() for r in Router])
@given(data=st.data())
def test_random_scenarios_lora(router, data):
    """Multi-LoRA (README "Multi-LoRA"): the max_loras admission rule, adapter loads and the
    punica cost, with every other feature drawn as above."""
    sc: Scenario = data.draw(scenarios(max_requests=30, router=router, timeouts=True, lora=True), label="scenario")
    ref, jit = compare(sc.inputs())
    assert_same_lora(ref, jit)


# --- features together (each combination the scenario format accepts; the others are refused
# by name in oracle.scenario._check_feature_combinations)
@given(sc=scenarios(max_requests=25, timeouts=True, async_scheduling=True, offload=True))
def test_random_async_with_offload(sc: Scenario):
    compare(sc.inputs())


@given(sc=scenarios(max_requests=25, timeouts=True, async_scheduling=True, lora=True))
def test_random_async_with_lora(sc: Scenario):
    ref, jit = compare(sc.inputs())
    assert_same_lora(ref, jit)
