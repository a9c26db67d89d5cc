"""KV offload tier (README "KV offload"): the jitted engine against the plain-Python
reference, the host tier's LRU against its reference, and the tier's invariants."""

from __future__ import annotations

import random

import numpy as np
import pytest
from engine_cases import ReqSpec, Scenario, build_inputs, scenarios, step_time_fn_for
from hypothesis import given
from hypothesis import strategies as st
from reference.engine import run_reference
from reference.hosttier import HostTier
from test_engine_diff import assert_same_outputs

from oracle.engine.inputs import EngineConfig, Router
from oracle.engine.loop import run_engine
from oracle.kernels._jit import jit
from oracle.kernels.hosttier import host_match, host_store, new_host_arrays


def compare(inputs):
    ref = run_reference(inputs, step_time_fn_for(inputs), debug=True)
    out = run_engine(inputs)
    assert_same_outputs(ref, out)
    np.testing.assert_array_equal(out.host_cached_tokens, ref.host_cached_tokens)
    assert out.host == ref.host
    np.testing.assert_allclose(out.host_load_s, ref.host_load_s, rtol=1e-9, atol=1e-15)
    return ref, out


def _conversation(host_blocks: int, **kw) -> EngineConfig:
    """Two sessions of three turns on one replica whose GPU holds one conversation only."""
    return EngineConfig(block_size=4, num_gpu_blocks=12, host_kv_blocks=host_blocks, host_load_s_per_block=1e-3,
                        host_load_latency_s=1e-4, record_steps=True, **kw)


def _chat_specs() -> list[ReqSpec]:
    specs = []
    for sess, base in ((0, 1000), (1, 2000)):
        first = len(specs)
        specs.append(ReqSpec(list(range(base, base + 13)), [base + 50, base + 51], arrival_s=0.0, session=sess))
        for turn in (1, 2):
            par = specs[-1]
            specs.append(ReqSpec(par.tokens + list(range(base + 100 * turn, base + 100 * turn + 5)),
                                 [base + 100 * turn + 60], session=sess, turn=turn, parent=first + turn - 1,
                                 think_s=0.05))
    return specs


def test_host_tier_serves_evicted_history():
    """The GPU (11 usable blocks) cannot keep both conversations; the host tier gives the
    later turns their history back, at the load cost, and loads are conserved."""
    specs = _chat_specs()
    ref_off, off = compare(build_inputs(specs, _conversation(0)))
    ref_on, on = compare(build_inputs(specs, _conversation(64)))
    assert off.host_cached_tokens.sum() == 0 and off.host == {k: 0 for k in on.host}
    assert on.host["hit_blocks"] > 0 and on.host_load_s > 0
    # every loaded block is one a request did not compute
    assert on.computed_tokens.sum() == off.computed_tokens.sum() - on.host["hit_blocks"] * 4
    # no preemption here: blocks loaded = the first-admission host hits
    assert on.preemptions.sum() == 0 and on.host_cached_tokens.sum() == on.host["hit_blocks"] * 4
    assert on.host["loads"] == np.count_nonzero(on.host_cached_tokens)
    # the load time is in the step durations: steps sum to the busy time
    assert on.host_load_s == pytest.approx(on.host["loads"] * 1e-4 + on.host["hit_blocks"] * 1e-3)
    # the host only holds prompt blocks
    assert on.host["stored_blocks"] <= sum(len(s.prompt) // 4 for s in specs)


def test_off_changes_nothing():
    """A tier of 0 blocks is the engine without offload."""
    specs = _chat_specs()
    base = run_engine(build_inputs(specs, EngineConfig(block_size=4, num_gpu_blocks=12, record_steps=True)))
    off = run_engine(build_inputs(specs, _conversation(0)))
    assert_same_outputs(base, off)


def test_offer_larger_than_tier_is_refused():
    """A prompt prefilled in one step offers its 9 blocks at once: more than the 3-block tier
    holds, so nothing is stored (vLLM ``prepare_store`` returns None); in 2-block chunks
    every offer fits and the tier keeps the last 3 blocks offered."""
    specs = [ReqSpec(list(range(1, 40)), [99], arrival_s=0.0)]
    _, out = compare(build_inputs(specs, _conversation(3)))
    assert out.host["stored_blocks"] == 0 and out.host["failed_stores"] == 1
    _, out = compare(build_inputs(specs, _conversation(3, max_num_batched_tokens=8)))
    assert out.host["failed_stores"] == 0 and out.host["stored_blocks"] == 9 and out.host["evicted_blocks"] == 6


@pytest.mark.parametrize("router", list(Router), ids=[r.name.lower() for r in Router])
@given(data=st.data())
def test_random_scenarios_with_offload(router, data):
    sc: Scenario = data.draw(scenarios(max_requests=30, router=router, timeouts=True, offload=True),
                             label="scenario")
    ref, out = compare(sc.inputs())
    h = out.host
    assert 0 <= h["stored_blocks"] - h["evicted_blocks"] <= sc.config.host_kv_blocks * sc.config.num_replicas
    assert out.host_cached_tokens.sum() <= h["hit_blocks"] * sc.config.block_size


# ------------------------------------------------------------------- the tier on its own
@jit
def _store(arrs, r, hashes, start, num):
    slot_hash, prev, nxt, hm, used, n, cmask = arrs
    return host_store(n, cmask, r, hashes, start, num, slot_hash, prev, nxt, hm, used, np.empty(num, np.int32))


@jit
def _match(arrs, r, hashes, start, num):
    return host_match(arrs[3], arrs[0], arrs[5], arrs[6], r, hashes, start, num)


def _lru_order(arrs, r):
    """Hashes of replica r's tier, least recently used first."""
    slot_hash, prev, nxt, hm, used, n, cmask = arrs
    base = r * (n + 2)
    out, s = [], nxt[base + n]
    while s != n + 1:
        out.append(int(slot_hash[r * n + s]))
        s = nxt[base + s]
    return out


@pytest.mark.parametrize("seed", range(20))
def test_host_tier_matches_reference(seed):
    rng = random.Random(seed)
    cap = rng.randint(1, 12)
    arrs = new_host_arrays(2, cap)
    ref = HostTier(cap)
    for _ in range(60):
        hashes = [rng.randint(1, 25) for _ in range(rng.randint(1, 8))]
        hashes = list(dict.fromkeys(hashes))  # a request's chained hashes are distinct
        arr = np.array(hashes, np.uint64)
        assert _match(arrs, 1, arr, 0, len(hashes)) == ref.match(hashes)
        got = _store(arrs, 1, arr, 0, len(hashes))
        want = ref.store(hashes)
        assert got == ((-1, 0) if want is None else want)
        assert _lru_order(arrs, 1) == list(ref.lru)
        assert _lru_order(arrs, 0) == []


# ------------------------------------------------------------------- scenario keys and metrics
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
KV_SCENARIO = ROOT / "scenarios" / "kv_offload.toml"


def _scenario(**overrides):
    import oracle
    base = {"simulation.duration_s": 300, "simulation.warm_up_s": 10}
    return oracle.load_scenario(KV_SCENARIO, overrides={**base, **overrides})


@pytest.mark.parametrize("value, key, reason", [
    ({"gib": 8, "blocks": 10}, "frameworks.1.kv_offload", "exactly one of `blocks`"),
    ({}, "frameworks.1.kv_offload", "exactly one of `blocks`"),
    ({"gib": -1}, "frameworks.1.kv_offload.gib", "must be > 0"),
    ({"blocks": 0}, "frameworks.1.kv_offload.blocks", ">= 1"),
    ({"gib": 8, "link_gbps": 0}, "frameworks.1.kv_offload.link_gbps", "must be > 0"),
    ({"gib": 8, "bandwidth": 3}, "frameworks.1.kv_offload.bandwidth", "unknown key"),
])
def test_bad_kv_offload_names_key_and_reason(value, key, reason):
    from oracle.errors import ScenarioError
    with pytest.raises(ScenarioError) as exc:
        _scenario(**{"frameworks.1.kv_offload": value})
    assert exc.value.key == key and reason in exc.value.reason, (exc.value.key, exc.value.reason)


def test_kv_offload_needs_prefix_caching():
    from oracle.errors import ScenarioError
    with pytest.raises(ScenarioError) as exc:
        _scenario(**{"frameworks.1.enable_prefix_caching": False})
    assert exc.value.key == "frameworks.1.kv_offload" and "enable_prefix_caching" in exc.value.reason


def test_host_tier_size_and_link_from_the_catalog():
    from oracle.kv_offload import host_block_bytes, host_tier_params
    sc = _scenario(**{"frameworks.1.tp": 2})
    fw = sc.frameworks[1]
    # Llama 3.1 8B, bf16: 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 128 KiB per token
    assert host_block_bytes(sc, fw) == 16 * 131072
    blocks, s_per_block, latency = host_tier_params(sc, fw)
    assert blocks == 8 * 2**30 // (16 * 131072)
    # each of the 2 GPUs moves its half of a block over its own PCIe Gen4 link (25 GB/s)
    assert s_per_block == pytest.approx(16 * 131072 / 2 / 25e9)
    assert latency == sc.gpu.host_link_latency_s
    assert host_tier_params(sc, sc.frameworks[0]) == (0, 0.0, 0.0)


def test_simulate_reports_gpu_and_host_hits():
    import oracle
    res = oracle.simulate(_scenario())
    off, on = res.summaries["gpu-only"], res.summaries["host-32g"]
    assert "kv_offload" not in off and "host_cached_tokens" not in res.frameworks["gpu-only"].requests.columns
    k = on["kv_offload"]
    assert k["host_hit_blocks"] > 0 and k["bytes_loaded"] == k["host_hit_blocks"] * k["block_bytes"]
    assert k["bytes_written"] == k["blocks_stored"] * k["block_bytes"]
    assert k["gpu_hit_tokens"] == on["prefix_caching"]["prefix_cache_hits"] + \
        on["prefix_caching"]["preempted_prefix_cache_hits"]
    req = res.frameworks["host-32g"].requests
    assert req["host_cached_tokens"].sum() <= k["host_hit_tokens"]
    # the host tier serves history the GPU lost: faster first tokens
    assert on["latency"]["time_to_first_token_ms"]["p50"] < off["latency"]["time_to_first_token_ms"]["p50"]


def test_sweep_over_the_tier_size(tmp_path):
    """The tier size is sweepable; the host metrics are columns of sweep.parquet."""
    import polars as pl
    from typer.testing import CliRunner

    from oracle.cli import build_app
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'base = "{KV_SCENARIO.as_posix()}"\n[grid]\n"simulation.duration_s" = [150]\n'
                     '"frameworks.1.kv_offload.gib" = [0.25, 8]\n')
    result = CliRunner().invoke(build_app(), ["sweep", str(sweep), "--out", str(tmp_path / "sw"), "--workers", "1",
                                              "--quiet"])
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(tmp_path / "sw" / "sweep.parquet").filter(pl.col("framework") == "host-8g")
    assert df["frameworks.1.kv_offload.gib"].to_list() == [0.25, 8]
    assert df["host_bytes_loaded"].null_count() == 0 and df["host_token_hit_rate"].null_count() == 0
    gpu_only = pl.read_parquet(tmp_path / "sw" / "sweep.parquet").filter(pl.col("framework") == "gpu-only")
    assert gpu_only["host_token_hit_rate"].null_count() == gpu_only.height
