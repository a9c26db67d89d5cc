"""Multi-LoRA (oracle.lora, oracle.engine.lora, oracle.kernels.lora): a hand-worked engine
case on both engines, per-adapter prefix hashes, the adapters' draw, the cost terms against
hand calculations, the scenario checks, the summary and ``oracle cost``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from engine_cases import ReqSpec, build_inputs, lora_test_params, step_time_fn_for
from reference.engine import run_reference
from test_engine_diff import assert_same_lora, assert_same_outputs
from typer.testing import CliRunner

from oracle.catalog import get_gpu, get_model
from oracle.engine.inputs import EngineConfig
from oracle.errors import ScenarioError
from oracle.kernels.lora import LORA_PARAM_NAMES, lora_step_time_s
from oracle.lora import (LoraWorkloadSpec, adapted_width, adapter_bytes, assign_adapters, build_lora_params,
                         mix_adapter_hashes)
from oracle.scenario import scenario_from_dict

run_engine = pytest.importorskip("oracle.engine.loop").run_engine


def _both(inputs):
    ref = run_reference(inputs, step_time_fn_for(inputs), debug=True)
    jit = run_engine(inputs)
    assert_same_outputs(ref, jit)
    assert_same_lora(ref, jit)
    return ref, jit


# ------------------------------------------------------------------------------ engine
def test_max_loras_skips_and_keeps_order():
    """max_loras = 1, all at t = 0, in id order: A (adapter 0, 3 output tokens), B (adapter 1),
    C (adapter 0), D (no adapter), E (adapter 1). Step 1 admits A, passes B over, admits C
    (adapter 0 is running) and D (no adapter), passes E over: waiting = [B, E], in order.
    B and E wait until A finishes (end of step 3); step 4 admits both (adapter 1 only).
    Loads: adapter 0 before step 1, adapter 1 before step 4 (disk + host each, replacing 0
    in the single GPU slot). Skips: B and E in steps 1-3 = 6."""
    specs = [ReqSpec(prompt=[1, 2, 3, 4], output=[5, 6, 7], lora=0),
             ReqSpec(prompt=[11, 12, 13, 14], output=[15], lora=1),
             ReqSpec(prompt=[21, 22, 23, 24], output=[25], lora=0),
             ReqSpec(prompt=[31, 32, 33, 34], output=[35], lora=-1),
             ReqSpec(prompt=[41, 42, 43, 44], output=[45], lora=1)]
    inputs = build_inputs(specs, EngineConfig(block_size=4, max_loras=1, max_cpu_loras=1, record_steps=True))
    ref, _ = _both(inputs)
    t = ref.steps["start_s"]
    assert ref.num_steps == 4
    np.testing.assert_array_equal(ref.admitted_s, [t[0], t[3], t[0], t[0], t[3]])
    assert ref.completion_s[0] == t[3]           # A's third token ends step 3
    assert ref.lora["skipped_admissions"] == 6
    assert ref.lora["gpu_loads"] == 2 and ref.lora["disk_loads"] == 2
    np.testing.assert_array_equal(ref.lora["loads_by_adapter"], [1, 1])
    p = inputs.lora_params
    host, disk = p[LORA_PARAM_NAMES.index("load_host_s")], p[LORA_PARAM_NAMES.index("load_disk_s")]
    assert ref.lora["load_s"] == pytest.approx(2 * (host + disk), rel=1e-12)
    # step 1 pays the load of adapter 0 on top of its forward pass and punica kernels
    base = step_time_fn_for(inputs)(12, 3, 0, 0, 3 * 4 * (0 + 5 / 2), 0)   # A, C, D prefill 4 tokens each
    punica = lora_step_time_s(p, 8, 1)      # A and C: 8 adapter tokens, one adapter
    assert ref.steps["duration_s"][0] == pytest.approx(base + punica + host + disk, rel=1e-12)


def test_lora_lru_cpu_cache_saves_disk_reads():
    """One GPU slot, two CPU entries: adapters 0, 1, 0 one after the other. The second use of
    adapter 0 copies it from host memory again (GPU slot taken by 1) but reads no disk."""
    specs = [ReqSpec(prompt=[1, 2, 3], output=[4], arrival_s=0.0, lora=0),
             ReqSpec(prompt=[5, 6, 7], output=[8], arrival_s=1.0, lora=1),
             ReqSpec(prompt=[9, 10, 11], output=[12], arrival_s=2.0, lora=0)]
    for cpu, disk in ((2, 2), (1, 3)):
        inputs = build_inputs(specs, EngineConfig(block_size=4, max_loras=1, max_cpu_loras=cpu))
        ref, _ = _both(inputs)
        assert ref.lora["gpu_loads"] == 3 and ref.lora["disk_loads"] == disk


@pytest.mark.parametrize("same_adapter", [True, False])
def test_adapters_never_share_cached_blocks(same_adapter):
    """vLLM puts the LoRA in every block hash: equal tokens under another adapter miss."""
    tokens = list(range(1, 33))
    specs = [ReqSpec(prompt=tokens, output=[99], arrival_s=0.0, lora=0),
             ReqSpec(prompt=tokens, output=[98], arrival_s=1.0, lora=0 if same_adapter else 1),
             ReqSpec(prompt=tokens, output=[97], arrival_s=2.0, lora=-1)]
    ref, _ = _both(build_inputs(specs, EngineConfig(block_size=4, max_loras=2)))
    assert ref.cached_tokens[1] == (28 if same_adapter else 0)
    assert ref.cached_tokens[2] == 0      # the base model's blocks are apart too


def test_lora_off_changes_nothing():
    """max_loras = 0 (LoRA off) with adapters given runs exactly as without them."""
    specs = [ReqSpec(prompt=list(range(1, 20)), output=[1, 2, 3], arrival_s=0.1 * i) for i in range(6)]
    plain = run_engine(build_inputs(specs, EngineConfig(block_size=4, record_steps=True)))
    inputs = build_inputs(specs, EngineConfig(block_size=4, record_steps=True))
    inputs.lora_adapter = np.zeros(len(specs), np.int32)
    inputs.lora_params = lora_test_params()
    off = run_engine(inputs)
    assert off.lora is None
    assert_same_outputs(plain, off)


# ------------------------------------------------------------------------------ hashes
def test_mix_adapter_hashes():
    offsets = np.array([0, 2, 4, 6], np.int64)
    h = np.array([5, 6, 5, 6, 5, 6], np.uint64)
    mixed = mix_adapter_hashes(offsets, h, np.array([0, 1, -1], np.int32))
    assert list(mixed[4:]) == [5, 6]                        # no adapter: unchanged
    assert len({int(x) for x in mixed[:4]}) == 4 and np.all(mixed != 0)
    again = mix_adapter_hashes(offsets, h, np.array([0, 0, 1], np.int32))
    assert list(again[:2]) == list(again[2:4]) == list(mixed[:2])    # same tokens, same adapter
    assert list(again[4:]) == list(mixed[2:4])


# ------------------------------------------------------------------------------ workload
def test_assign_adapters_per_session_deterministic_zipf():
    session = np.concatenate([np.repeat(np.arange(5000), 2), np.full(5000, -1)]).astype(np.int64)
    spec = LoraWorkloadSpec(adapters=10, popularity="zipf", zipf_s=1.2)
    a = assign_adapters(spec, session, seed=3)
    np.testing.assert_array_equal(a, assign_adapters(spec, session, seed=3))
    assert not np.array_equal(a, assign_adapters(spec, session, seed=4))
    for s in np.unique(session[session >= 0])[:200]:
        assert len(set(a[session == s].tolist())) == 1     # a conversation names one adapter
    counts = np.bincount(a, minlength=10)
    assert counts[0] > counts[1] > counts[4] > counts[9] > 0   # Zipf: adapter 0 the most popular
    half = assign_adapters(LoraWorkloadSpec(adapters=3, popularity="uniform", fraction=0.5), session, seed=3)
    assert 0.4 < np.mean(half < 0) < 0.6 and set(np.unique(half)) == {-1, 0, 1, 2}


# ---------------------------------------------------------------------------------- cost
def test_lora_cost_terms_by_hand():
    """Llama-3.1-8B (h 4096, 32 heads x 128, 8 KV heads, f 14336, 32 layers): per layer the
    adapted matrices' d_in + d_out: q 8192, k 5120, v 5120, o 8192, gate 18432, up 18432,
    down 18432 = 81920; a rank-16 bf16 adapter = 16 x 81920 x 32 x 2 B = 83,886,080 B."""
    model, gpu = get_model("llama-3.1-8b"), get_gpu("h100-sxm")
    assert adapted_width(model) == (32 * 81920, 32 * 81920)
    assert adapter_bytes(model, 16) == 83_886_080
    # TP 2: q, k, v, gate, up keep d_in and halve d_out; o, down halve d_in
    w2 = 32 * ((4096 + 2048) + 2 * (4096 + 512) + (2048 + 4096) + 2 * (4096 + 7168) + (7168 + 4096))
    assert adapted_width(model, 2)[0] == w2
    p = dict(zip(LORA_PARAM_NAMES, build_lora_params(model, gpu, max_lora_rank=32, rank=8,
                                                     host_bw_gbps=20.0, disk_bw_gbps=1.0)))
    assert p["flops_per_token"] == 2 * 32 * 32 * 81920
    assert p["weight_bytes_per_adapter"] == 32 * 32 * 81920 * 2
    assert p["load_host_s"] == pytest.approx(8 * 32 * 81920 * 2 / 20e9)
    assert p["load_disk_s"] == pytest.approx(8 * 32 * 81920 * 2 / 1e9)
    assert p["kernels_s"] == pytest.approx(2 * 4 * 32 * gpu.kernel_overhead_s)
    params = np.array([p[k] for k in LORA_PARAM_NAMES])
    flops = p["flops_per_token"] * 100
    nbytes = p["weight_bytes_per_adapter"] * 3 + p["act_bytes_per_token"] * 100
    expect = max(flops / (gpu.peak_tflops_bf16 * 1e12 * gpu.eff_compute),
                 nbytes / (gpu.mem_bw_gbps * 1e9 * gpu.eff_memory)) + p["kernels_s"]
    assert lora_step_time_s(params, 100, 3) == pytest.approx(expect, rel=1e-12)
    assert lora_step_time_s(params, 0, 0) == 0.0
    # decode of few tokens is memory bound: each extra adapter adds its weights
    assert lora_step_time_s(params, 8, 4) > lora_step_time_s(params, 8, 1)


def test_cli_cost_lora_terms():
    from oracle.cli import build_app
    args = ["cost", "-m", "llama-3.1-8b", "-g", "h100-sxm", "--decode-batch", "64", "--json"]
    plain = json.loads(CliRunner().invoke(build_app(), args).stdout)
    res = CliRunner().invoke(build_app(), args + ["--lora-adapters", "4", "--max-lora-rank", "16"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    lora = out["lora"]
    assert lora["num_lora_tokens"] == 64 and lora["num_adapters"] == 4
    assert out["ops"]["lora_punica_ms"] == pytest.approx(lora["punica_s"] * 1e3)
    assert out["total_ms"] == pytest.approx(plain["total_ms"] + lora["punica_s"] * 1e3, rel=1e-12)
    assert lora["adapter_load_host_s"] == pytest.approx(83_886_080 / 25e9)
    assert "max_lora_rank = 16" in out["sources"]["lora_punica"]
    table = CliRunner().invoke(build_app(), args[:-1] + ["--lora-adapters", "2"])
    assert table.exit_code == 0 and "LoRA: 64 tokens of 2 adapter(s)" in table.output
    for extra, key in ((["--lora-adapters", "2", "--max-lora-rank", "20"], "--max-lora-rank"),
                       (["--lora-adapters", "2", "--lora-rank", "32"], "--lora-rank"),
                       (["--lora-adapters", "65"], "--lora-adapters")):
        bad = CliRunner().invoke(build_app(), args + extra)
        assert bad.exit_code == 1 and key in bad.output, bad.output


# ------------------------------------------------------------------------------ scenario
def _raw(lora=None, **fw):
    raw = {"name": "t", "seed": 1, "simulation": {"num_requests": 40},
           "model": {"name": "llama-3.1-8b"}, "hardware": {"gpu": "h100-sxm"},
           "workload": {"clients": [{"name": "c", "arrival": {"process": "poisson", "rate": 20.0},
                                     "prompt_tokens": {"dist": "uniform", "min": 50, "max": 400},
                                     "output_tokens": {"dist": "uniform", "min": 5, "max": 60},
                                     "conversation": {"turns": {"dist": "uniform", "min": 1, "max": 3},
                                                      "think_time_s": {"dist": "constant", "value": 0.5}}}]},
           "frameworks": [{"name": "f", **fw}]}
    if lora is not None:
        raw["workload"]["lora"] = lora
    return raw


@pytest.mark.parametrize("lora, fw, key, fragment", [
    ({"adapters": 4}, {}, "frameworks.0.enable_lora", "set enable_lora = true"),
    ({"adapters": 4, "rank": 32}, {"enable_lora": True}, "frameworks.0.max_lora_rank", "rank 32"),
    ({"adapters": 4}, {"enable_lora": True, "max_loras": 0}, "frameworks.0.max_loras", ">= 1"),
    ({"adapters": 4}, {"enable_lora": True, "max_loras": 4, "max_cpu_loras": 2}, "frameworks.0.max_cpu_loras",
     ">= max_loras (4)"),
    ({"adapters": 4}, {"enable_lora": True, "max_lora_rank": 20}, "frameworks.0.max_lora_rank", "one of 1, 8"),
    (None, {"max_loras": 2}, "frameworks.0.max_loras", "only applies with enable_lora"),
    ({"adapters": 0}, {"enable_lora": True}, "workload.lora.adapters", ">= 1"),
    ({"adapters": 4, "popularity": "pareto"}, {"enable_lora": True}, "workload.lora.popularity", "zipf"),
    ({"adapters": 4, "popularity": "uniform", "zipf_s": 1.0}, {"enable_lora": True}, "workload.lora.zipf_s",
     "popularity = \"zipf\""),
    ({"adapters": 4, "ranks": 8}, {"enable_lora": True}, "workload.lora.ranks", "did you mean 'rank'"),
])
def test_scenario_lora_errors(lora, fw, key, fragment):
    with pytest.raises(ScenarioError) as err:
        scenario_from_dict(_raw(lora, **fw))
    assert err.value.key == key and fragment in str(err.value), str(err.value)


def test_simulate_lora_summary_and_determinism():
    from oracle.api import simulate
    raw = _raw({"adapters": 6, "zipf_s": 1.0}, enable_lora=True, max_loras=2, max_cpu_loras=3)
    res = simulate(raw)
    fr = res.first
    lora = fr.summary["lora"]
    req = fr.requests
    assert "lora_adapter" in req.columns and req["lora_adapter"].min() >= 0
    assert lora["requests_with_adapter"] == req.height == 40
    assert lora["max_loras"] == 2 and lora["max_cpu_loras"] == 3 and lora["adapters"] == 6
    assert lora["adapter_loads"] >= lora["distinct_adapters_requested"] >= 1
    assert lora["disk_loads"] <= lora["adapter_loads"] and lora["load_time_s"] > 0
    assert sum(a["requests"] for a in lora["top_adapters"]) == 40
    again = simulate(raw).first
    assert again.summary["lora"] == lora
    assert again.requests.equals(req)
    # one adapter slot more: no request waits longer for its adapter
    wide = simulate(_raw({"adapters": 6, "zipf_s": 1.0}, enable_lora=True, max_loras=6)).first.summary["lora"]
    assert wide["skipped_admissions"] == 0 <= lora["skipped_admissions"]
    assert math.isfinite(fr.summary["latency"]["time_to_first_token_ms"]["p50"])


def test_lora_buffers_take_kv_memory():
    """vLLM allocates max_loras x max_lora_rank A and B buffers per adapted layer at start-up:
    16 x 16 x 2,621,440 x 2 B = 1,342,177,280 B = 640 KV blocks of 16 tokens x 128 KiB."""
    from oracle.scenario import resolve_num_gpu_blocks
    with_lora = scenario_from_dict(_raw({"adapters": 4}, enable_lora=True, max_loras=16))
    base = scenario_from_dict(_raw())
    n_lora = resolve_num_gpu_blocks(with_lora, with_lora.frameworks[0])
    assert resolve_num_gpu_blocks(base, base.frameworks[0]) - n_lora == 640


def test_catalog_models_show_adapter_size():
    from oracle.cli import build_app
    out = json.loads(CliRunner().invoke(build_app(), ["catalog", "models", "--json"]).stdout)
    assert out["llama-3.1-8b"]["lora_r16_adapter_bytes"] == 83_886_080
    table = CliRunner().invoke(build_app(), ["catalog", "models"])
    assert table.exit_code == 0 and "LoRA r16 MB" in table.output
