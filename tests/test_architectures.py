"""Architectures of issue 17: MoE with shared experts, dense layers and expert parallelism, MLA,
sliding-window layers, FP4 weights; the catalog entries; the errors; engine runs per new model.

Every cost/memory term is checked against a hand calculation written out in the test (on an
ideal GPU: efficiencies 1, no fixed times, pure roofline).
"""

from __future__ import annotations

import json
import re
import math

import numpy as np
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import oracle
from oracle.catalog import GpuSpec, ModelSpec, get_gpu, get_model, model_from_table
from oracle._config import Table
from oracle.cli import build_app
from oracle.cost import OP_NAMES, build_cost_params, params_to_dict, step_cost
from oracle.errors import OracleError, ScenarioError
from oracle.kernels.cost import NUM_OPS, step_time_s, step_work
from oracle.memory import (compute_num_gpu_blocks, kv_bytes_per_token, kv_bytes_per_token_per_gpu, kv_cache_groups,
                           weight_bytes, weight_bytes_per_gpu)
from oracle.scenario import scenario_from_dict
from reference.cost import reference_step

IDEAL = GpuSpec(name="ideal", memory_gib=80, mem_bw_gbps=1000, peak_tflops_bf16=100, peak_tflops_fp8=200,
                peak_tflops_fp4=400, link_bw_gbps=100, eff_compute=1.0, eff_memory=1.0, layer_overhead_s=0.0,
                step_overhead_s=0.0, link_latency_s=0.0)

TINY_MLA = ModelSpec(name="tiny-mla", num_layers=2, hidden_size=256, num_heads=4, num_kv_heads=4, head_dim=48,
                     intermediate_size=512, vocab_size=1000, max_context=4096, tied_embeddings=False,
                     kv_lora_rank=64, q_lora_rank=96, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32)
TINY_WINDOW = ModelSpec(name="tiny-window", num_layers=2, hidden_size=256, num_heads=4, num_kv_heads=2, head_dim=64,
                        intermediate_size=512, vocab_size=1000, max_context=4096, tied_embeddings=False,
                        sliding_window=64, num_window_layers=1)
TINY_MOE = ModelSpec(name="tiny-moe", num_layers=2, hidden_size=128, num_heads=4, num_kv_heads=2, head_dim=32,
                     intermediate_size=512, vocab_size=500, max_context=4096, tied_embeddings=False,
                     num_experts=8, num_active_experts=2, expert_intermediate_size=64,
                     shared_expert_intermediate_size=64, num_dense_layers=1)


def work(params, aggs):
    """(seconds, FLOPs, bytes) per op name for aggregates (T, E, D, Sd, U, Sp)."""
    s, f, b = np.zeros(NUM_OPS), np.zeros(NUM_OPS), np.zeros(NUM_OPS)
    step_work(params, *aggs, s, f, b)
    return {n: (s[i], f[i], b[i]) for i, n in enumerate(OP_NAMES)}


# -- catalog: parameter counts against the model cards -------------------------------------------

# (total, active) parameters in billions as the model cards state them (Hugging Face model cards
# of the repositories named in models.toml). gpt-oss counts active parameters without the input
# embedding (its card: 116.83 B total, 5.13 B active; 20.91 B, 3.61 B).
CARDS = {
    "deepseek-v3": (671, 37), "deepseek-r1": (671, 37), "kimi-k2": (1000, 32), "qwen3-235b-a22b": (235, 22),
    "llama-4-scout": (109, 17), "llama-4-maverick": (400, 17), "glm-4.5": (355, 32),
}


@pytest.mark.parametrize("name", sorted(CARDS))
def test_parameter_counts_match_the_model_cards(name):
    m = get_model(name)
    total, active = CARDS[name]
    # Kimi K2's card says "1 trillion"; Scout's 109 B include the vision encoder (not modelled)
    assert m.num_params / 1e9 == pytest.approx(total, rel=0.035)
    assert m.num_active_params / 1e9 == pytest.approx(active, rel=0.06)


@pytest.mark.parametrize("name,total,active", [("gpt-oss-120b", 116.83, 5.13), ("gpt-oss-20b", 20.91, 3.61)])
def test_gpt_oss_parameter_counts(name, total, active):
    m = get_model(name)
    input_embedding = m.vocab_size * m.hidden_size
    assert m.num_params / 1e9 == pytest.approx(total, rel=0.003)
    assert (m.num_active_params - input_embedding) / 1e9 == pytest.approx(active, rel=0.01)


def test_deepseek_v3_parameters_by_hand():
    # per layer MLA: q_a 7168·1536 + q_b 1536·128·192 + kv_a 7168·(512+64) + kv_b 512·128·(128+128)
    # + o 128·128·7168; MoE layer: (256 + 1 shared) experts × 3 × 7168 × 2048 + router 7168·256;
    # 3 dense layers 3 × 7168 × 18432; untied embedding 2 × 129280 × 7168; norms (2·61 + 1)·7168
    attn = 7168 * 1536 + 1536 * 128 * 192 + 7168 * 576 + 512 * 128 * 256 + 128 * 128 * 7168
    moe = 257 * 3 * 7168 * 2048 + 7168 * 256
    total = 61 * attn + 58 * moe + 3 * 3 * 7168 * 18432 + 2 * 129280 * 7168 + 123 * 7168
    assert get_model("deepseek-v3").num_params == total
    active = 61 * attn + 58 * (9 * 3 * 7168 * 2048 + 7168 * 256) + 3 * 3 * 7168 * 18432 + 2 * 129280 * 7168 + 123 * 7168
    assert get_model("deepseek-v3").num_active_params == active


# -- MLA --------------------------------------------------------------------------------------------

def test_mla_kv_cache_bytes_by_hand():
    # DeepSeek-V3, bf16 KV: 61 layers × (kv_lora_rank 512 + rope 64) × 2 bytes = 70,272 bytes a token,
    # the same on every GPU of a TP group (vLLM keeps the latent vector whole)
    ds = get_model("deepseek-v3")
    assert kv_bytes_per_token(ds, "bf16") == 61 * 576 * 2 == 70272
    assert kv_bytes_per_token_per_gpu(ds, "bf16", tp=8) == 70272
    assert kv_bytes_per_token_per_gpu(ds, "fp8", tp=8, pp=2) == 31 * 576


def test_mla_attention_flops_and_bytes_by_hand():
    params = build_cost_params(TINY_MLA, IDEAL, dtype="bf16")
    # decode, one sequence with 99 cached tokens: 100 keys a layer. Absorbed MLA: per head and key
    # 2·(2r + rope) = 2·(128 + 16) = 288 FLOPs; 4 heads, 2 layers -> 2 × 4 × 288 × 100 = 230,400.
    # Bytes a layer: 100 latent vectors of (64 + 16) × 2 = 160 bytes, plus Q read + O written
    # 4 × (48 + 32) × 2 = 640 -> 2 × 16,640 = 33,280.
    _, f, b = work(params, (1, 1, 1, 100.0, 0.0, 0.0))["attention_decode"]
    assert f == pytest.approx(230_400, rel=1e-12) and b == pytest.approx(33_280, rel=1e-12)
    # prefill chunk of 10 after nothing: 10·(0 + 11/2) = 55 pairs; unabsorbed: per head and key
    # 2·(nope 32 + rope 16 + v 32) = 160 FLOPs -> 2 layers × 4 × 160 × 55 = 70,400
    _, f, _ = work(params, (10, 1, 0, 0.0, 55.0, 0.0))["attention_prefill"]
    assert f == pytest.approx(70_400, rel=1e-12)
    # projections: q_a 256·96 + q_b 96·4·48 + kv_a 256·80 + kv_b 64·4·64 = 79,872 weights, 2 FLOPs
    # a weight a token; o: 4·32 × 256 = 32,768 weights
    p = params_to_dict(params)
    assert p["qkv_flops_per_token"] == 2 * 79_872 and p["qkv_weight_bytes"] == 2 * 79_872
    assert p["out_flops_per_token"] == 2 * 32_768
    assert TINY_MLA.attn_params_per_layer == 79_872 + 32_768


# -- sliding window ---------------------------------------------------------------------------------

def test_window_decode_reads_at_most_w_keys_by_hand():
    params = build_cost_params(TINY_WINDOW, IDEAL, dtype="bf16")
    # one decode with 999 cached tokens (1000 keys): the full layer reads 1000 keys, the windowed
    # one 64. FLOPs 4 × (4 heads × 64) × (1000 + 64) = 1,089,536. Bytes: KV 2·2·64·2 = 512 a key,
    # Q + O 2 × 256 × 2 = 1,024 a layer -> 1000·512 + 1024 + 64·512 + 1024 = 546,816.
    _, f, b = work(params, (1, 1, 1, 1000.0, 0.0, 0.0))["attention_decode"]
    assert f == pytest.approx(1_089_536, rel=1e-12) and b == pytest.approx(546_816, rel=1e-12)
    # a context below the window: both layers read everything
    full = build_cost_params(dataclasses.replace(TINY_WINDOW, sliding_window=0, num_window_layers=0), IDEAL)
    assert work(params, (1, 1, 1, 50.0, 0.0, 0.0))["attention_decode"] == \
        pytest.approx(work(full, (1, 1, 1, 50.0, 0.0, 0.0))["attention_decode"], rel=1e-12)


def test_window_prefill_by_hand():
    params = build_cost_params(TINY_WINDOW, IDEAL, dtype="bf16")
    # chunk of 100 after 500 cached: full layer 100·(500 + 101/2) = 55,050 pairs and 600 keys read;
    # windowed layer min(55,050, 100·64) = 6,400 pairs and min(500, 64) + 100 = 164 keys.
    _, f, b = work(params, (100, 1, 0, 0.0, 55_050.0, 500.0))["attention_prefill"]
    assert f == pytest.approx(4 * 256 * (55_050 + 6_400), rel=1e-12)
    assert b == pytest.approx((600 + 164) * 512 + 2 * 100 * 1024, rel=1e-12)


def test_hybrid_kv_cache_groups_follow_vllm():
    # vLLM's examples (kv_cache_planning._get_kv_cache_groups_uniform_page_size): 10 full + 20
    # windowed -> 3 groups of 10; gpt-oss-20b + eagle-like 13 full + 12 windowed -> groups of 13
    def spec(full, window):
        return ModelSpec(name="x", num_layers=full + window, hidden_size=64, num_heads=1, num_kv_heads=1,
                         head_dim=64, intermediate_size=64, vocab_size=10, max_context=1024, tied_embeddings=True,
                         sliding_window=128, num_window_layers=window)
    assert kv_cache_groups(spec(10, 20)) == (10, 1, 2)
    assert kv_cache_groups(spec(13, 12)) == (13, 1, 1)
    assert kv_cache_groups(get_model("gpt-oss-120b")) == (18, 1, 1)
    assert kv_cache_groups(get_model("llama-4-maverick")) == (12, 1, 3)
    assert kv_cache_groups(get_model("llama-3.1-8b")) == (32, 1, 0)


def test_hybrid_pool_size_by_hand():
    # gpt-oss-120b on one H200: a block holds group_size 18 layers' pages of 16 tokens × 2·8·64·2
    # bytes = 16 × 18 × 2,048 = 589,824 bytes; blocks = floor(budget / that) for the one
    # full-attention group
    m, g = get_model("gpt-oss-120b"), get_gpu("h200")
    from oracle.memory import activation_reserve_bytes
    budget = g.memory_bytes * 0.9 - weight_bytes_per_gpu(m, "mxfp4") - activation_reserve_bytes(m, dtype="mxfp4")
    assert compute_num_gpu_blocks(m, g, dtype="mxfp4") == math.floor(budget / 589_824)


# -- MoE: shared experts, dense layers, expert parallelism -------------------------------------------

def test_moe_shared_dense_and_expert_parallel_by_hand():
    # tp 1, dp 4, expert parallel (EP size 4), imbalance 1.5, 10 tokens (all decodes)
    params = build_cost_params(TINY_MOE, IDEAL, dtype="bf16", dp=4, expert_parallel=True, expert_imbalance=1.5)
    ops = work(params, (10, 10, 10, 1000.0, 0.0, 0.0))
    # busiest GPU: 1.5 × 4 ranks × k 2 / EP 4 = 3 expert-token pairs per local token.
    # gate+up, MoE layer: router 2·128·8 + 3 × 2·128·(2·64) + shared 2·128·(2·64) = 133,120 a token;
    # dense layer: 2·128·(2·512) = 262,144 a token -> 10 × (133,120 + 262,144) = 3,952,640
    assert ops["mlp_gate_up"][1] == pytest.approx(3_952_640, rel=1e-12)
    # down: MoE 3 × 2·64·128 + shared 2·64·128 = 65,536; dense 2·512·128 = 131,072 -> × 10
    assert ops["mlp_down"][1] == pytest.approx(10 * (65_536 + 131_072), rel=1e-12)
    # expert weights read: E/ep = 2 local experts, touched 2·(1 − (1 − 2/8)^(4 ranks × 10 tokens))
    touched = 2 * (1 - 0.75 ** 40)
    down_bytes = (64 * 128 * 2 + touched * 64 * 128 * 2 + 10 * (3 * (64 + 128) + 64 + 128) * 2   # MoE layer
                  + 512 * 128 * 2 + 10 * (512 + 128) * 2)                                      # dense layer
    assert ops["mlp_down"][2] == pytest.approx(down_bytes, rel=1e-12)
    # all-to-all: dispatch + combine in the 1 MoE layer, each 1.5 × k 2 × 128 × 2 bytes × 3/4 = 576
    # bytes a token -> 2 × 10 × 576 = 11,520 bytes over 100 GB/s
    s, _, b = ops["moe_all_to_all"]
    assert b == pytest.approx(11_520, rel=1e-12) and s == pytest.approx(11_520 / 100e9, rel=1e-12)
    assert step_time_s(params, 10, 10, 10, 1000.0, 0.0, 0.0) == pytest.approx(sum(v[0] for v in ops.values()))


def test_expert_parallel_weights_per_gpu_by_hand():
    # attention 128·32·(4 + 2·2) + 4·32·128 = 49,152; MoE layer 3·128·(8/4 experts × 64 + shared 64)
    # = 73,728 + router 1,024; dense layer 3·128·512 = 196,608; vocab 2·500·128 + norms 5·128; bf16
    expected = 2 * ((49_152 + 73_728 + 1_024) + (49_152 + 196_608) + 128_000 + 640)
    assert weight_bytes_per_gpu(TINY_MOE, "bf16", ep=4) == expected
    # without EP, every expert's full width: 3·128·(8 × 64 + 64)
    assert weight_bytes_per_gpu(TINY_MOE, "bf16") == expected + 2 * 3 * 128 * 6 * 64


def test_expert_parallel_matches_the_reference():
    for model, gpu, kw in [(TINY_MOE, IDEAL, dict(tp=2, dp=2)), (get_model("deepseek-v3"), get_gpu("h200"), dict(dp=8)),
                           (get_model("qwen3-235b-a22b"), get_gpu("b200"), dict(tp=4, dp=2))]:
        for chunks, decodes in [([], [100] * 7), ([(300, 50, True)], [2000, 10])]:
            params = build_cost_params(model, gpu, dtype="fp8", expert_parallel=True, expert_imbalance=1.3, **kw)
            ref = reference_step(model, gpu, dtype="fp8", expert_parallel=True, expert_imbalance=1.3,
                                 prefill_chunks=chunks, decode_contexts=decodes, **kw)
            t = sum(c for c, _, _ in chunks) + len(decodes)
            aggs = (t, len(decodes) + len(chunks), len(decodes), float(sum(n + 1 for n in decodes)),
                    float(sum(c * (p + (c + 1) / 2) for c, p, _ in chunks)), float(sum(p for _, p, _ in chunks)))
            got = work(params, aggs)
            assert ref["moe_all_to_all"] > 0
            for op in OP_NAMES:
                assert got[op][0] == pytest.approx(ref[op], rel=1e-12), op


# -- FP4 --------------------------------------------------------------------------------------------

def test_fp4_weight_bytes_by_hand():
    m = get_model("gpt-oss-120b")
    # experts in MXFP4 (4.25 bits: 4-bit values + an 8-bit scale per 32); attention, router,
    # embedding, LM head and norms in bf16
    attn = 2880 * 64 * (64 + 16) + 64 * 64 * 2880
    experts = 128 * 3 * 2880 * 2880
    expected = 36 * (attn * 2 + experts * 4.25 / 8 + 2880 * 128 * 2) + (2 * 201088 * 2880 + 73 * 2880) * 2
    assert weight_bytes_per_gpu(m, "mxfp4") == math.ceil(expected)
    assert weight_bytes_per_gpu(m, "nvfp4") > weight_bytes_per_gpu(m, "mxfp4")   # 4.5 bits
    assert weight_bytes(m, "auto") == weight_bytes(m, "mxfp4")


def test_fp4_runs_at_the_fp4_peak_or_weight_only():
    m = get_model("gpt-oss-20b")
    b200, h100 = get_gpu("b200"), get_gpu("h100-sxm")
    p = params_to_dict(build_cost_params(m, b200, dtype="mxfp4"))
    assert p["mlp_s_per_flop"] == pytest.approx(1 / (9000e12 * b200.eff_compute))
    assert p["linear_s_per_flop"] == pytest.approx(1 / (2250e12 * b200.eff_compute))   # attention: 16-bit
    assert p["up_expert_bytes"] == pytest.approx(2880 * 2 * 2880 * 4.25 / 8)
    p = params_to_dict(build_cost_params(m, h100, dtype="mxfp4"))                      # no FP4: weight-only
    assert p["mlp_s_per_flop"] == pytest.approx(1 / (h100.peak_tflops_bf16 * 1e12 * h100.eff_compute))
    # existing dtypes: the MLP rate is the linear rate
    p = params_to_dict(build_cost_params("llama-3.1-8b", "h100-sxm", dtype="fp8"))
    assert p["mlp_s_per_flop"] == p["linear_s_per_flop"]


# -- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,needle", [
    (dict(model="deepseek-v3", gpu="h200", dp=3, expert_parallel=True), "3 does not divide the 256 experts"),
    (dict(model="deepseek-v3", gpu="h200", dp=8), "needs expert_parallel = true"),
    (dict(model="llama-3.1-8b", gpu="h200", expert_parallel=True), "needs an MoE model"),
    (dict(model="deepseek-v3", gpu="h200", dp=2, expert_parallel=True, expert_imbalance=3.0), "expert_imbalance"),
    (dict(model="gpt-oss-20b", gpu="a100-80g", dtype="mxfp4"), "a100-80g has neither"),
    (dict(model="gpt-oss-20b", gpu="mi355x", dtype="nvfp4"), "runs mxfp4"),
    (dict(model="gpt-oss-20b", gpu="b200", dtype="mxfp4", kv_dtype="mxfp4"), "KV cache cannot be mxfp4"),
])
def test_bad_combinations_are_errors(kwargs, needle):
    with pytest.raises(ScenarioError, match=needle):
        build_cost_params(**kwargs)


@pytest.mark.parametrize("table,key,needle", [
    (dict(sliding_window=4096), "sliding_window", "must be smaller than max_context"),
    (dict(kv_lora_rank=64, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32), "head_dim",
     "qk_nope_head_dim + qk_rope_head_dim"),
    (dict(shared_expert_intermediate_size=64), "shared_expert_intermediate_size", "<= 0"),
    (dict(q_lora_rank=8), "q_lora_rank", "<= 0"),
])
def test_bad_architecture_tables(table, key, needle):
    base = dict(num_layers=2, hidden_size=256, num_heads=4, intermediate_size=512, vocab_size=100, max_context=4096)
    with pytest.raises(ScenarioError, match=re.escape(needle)) as info:
        model_from_table(Table({**base, **table}, "model.architecture"))
    assert key in str(info.value)


def _scenario(model: str, gpu: str, dtype: str, **fw) -> dict:
    return {"name": f"arch-{model}", "seed": 3, "simulation": {"num_requests": 24},
            "model": {"name": model, "dtype": dtype}, "hardware": {"gpu": gpu},
            "workload": {"clients": [{"name": "c", "arrival": {"process": "poisson", "rate": 4.0},
                                      "prompt_tokens": {"dist": "uniform", "min": 100, "max": 3000},
                                      "output_tokens": {"dist": "uniform", "min": 5, "max": 60}}]},
            "frameworks": [{"name": "f", **fw}]}


@pytest.mark.parametrize("fw,needle", [
    (dict(tp=1, replicas=8, data_parallel_size=8), "frameworks.0.data_parallel_size"),
    (dict(tp=1, replicas=4, data_parallel_size=8, expert_parallel=True), "frameworks.0.replicas"),
    (dict(tp=1, replicas=3, data_parallel_size=3, expert_parallel=True), "does not divide the 256 experts"),
])
def test_scenario_errors_name_the_key(fw, needle):
    with pytest.raises(OracleError, match=needle.replace(".", r"\.")):
        scenario_from_dict(_scenario("deepseek-v3", "h200", "fp8", **fw))


def test_scenario_fp4_on_a_gpu_without_it():
    raw = _scenario("gpt-oss-20b", "a100-80g", "bf16", tp=1)
    raw["frameworks"][0]["dtype"] = "mxfp4"
    with pytest.raises(OracleError, match=r"frameworks\.0\.dtype: mxfp4 weights need FP4 .* a100-80g has neither"):
        scenario_from_dict(raw)
    with pytest.raises(OracleError, match=r"frameworks\.0: mxfp4 weights need .*\(model dtype\)"):
        scenario_from_dict(_scenario("gpt-oss-20b", "a100-80g", "mxfp4", tp=1))


# -- engine runs: one per new model (tiny workload) --------------------------------------------------

RUNS = [
    ("deepseek-v3", "h200", "fp8", dict(tp=8)),
    ("deepseek-r1", "h200", "fp8", dict(tp=1, replicas=8, data_parallel_size=8, expert_parallel=True)),
    ("kimi-k2", "b200", "fp8", dict(tp=8)),
    ("qwen3-235b-a22b", "h200", "bf16", dict(tp=4, replicas=2, data_parallel_size=2, expert_parallel=True)),
    ("gpt-oss-120b", "h100-sxm", "mxfp4", dict(tp=1)),
    ("gpt-oss-20b", "b200", "nvfp4", dict(tp=1)),
    ("llama-4-scout", "h100-sxm", "bf16", dict(tp=4)),
    ("llama-4-maverick", "gb200", "fp8", dict(tp=8)),
    ("glm-4.5", "mi355x", "fp8", dict(tp=4)),
]


@pytest.mark.parametrize("model,gpu,dtype,fw", RUNS, ids=[r[0] for r in RUNS])
def test_engine_run_per_new_model(model, gpu, dtype, fw):
    res = oracle.simulate(_scenario(model, gpu, dtype, **fw))
    s = next(iter(res.frameworks.values())).summary
    assert s["requests"]["successful"] == s["requests"]["total"] == 24
    assert s["config"]["architecture"] == get_model(model).describe()
    assert s["config"]["precision"].startswith(f"{dtype} weights")
    assert s["config"]["expert_parallel_size"] == (fw["tp"] * fw.get("data_parallel_size", 1)
                                                   if fw.get("expert_parallel") else 1)
    assert s["latency"]["time_per_output_token_ms"]["mean"] > 0


def test_existing_models_keep_their_summary_keys():
    res = oracle.simulate(_scenario("llama-3.1-8b", "h100-sxm", "bf16", tp=1))
    assert "architecture" not in next(iter(res.frameworks.values())).summary["config"]


# -- CLI ----------------------------------------------------------------------------------------------

def test_cli_cost_shows_all_to_all_mla_and_precision():
    res = CliRunner().invoke(build_app(), ["cost", "-m", "deepseek-v3", "-g", "h200", "--dtype", "auto", "--dp", "8",
                                           "--expert-parallel", "--decode-batch", "32", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["ops"]["moe_all_to_all_ms"] > 0 and out["config"]["ep"] == 8 and out["config"]["dtype"] == "fp8"
    assert "MLA absorbed" in out["sources"]["attention_decode"]
    assert "EP size 8" in out["sources"]["moe_all_to_all"]
    direct = step_cost(get_model("deepseek-v3"), get_gpu("h200"), dtype="fp8", dp=8, expert_parallel=True,
                       decode_batch=32, framework="vllm")
    assert out["total_ms"] == pytest.approx(direct["total_ms"], rel=1e-12)
    res = CliRunner().invoke(build_app(), ["cost", "-m", "gpt-oss-120b", "-g", "b200", "--dtype", "auto",
                                           "--decode-batch", "8", "--decode-context", "4000"])
    assert res.exit_code == 0, res.output
    assert "mxfp4" in res.output and "windowed" in res.output


def test_cli_cost_bad_combination_is_one_line():
    res = CliRunner().invoke(build_app(), ["cost", "-m", "deepseek-v3", "-g", "h200", "--dp", "8",
                                           "--decode-batch", "1"])
    assert res.exit_code == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs expert_parallel = true" in lines[0], res.stderr


def test_cli_catalog_lists_architectures_and_fp4():
    res = CliRunner().invoke(build_app(), ["catalog", "models", "--json"])
    assert res.exit_code == 0
    models = json.loads(res.stdout)
    assert models["deepseek-v3"]["architecture"].startswith("MLA r=512+64")
    assert models["deepseek-v3"]["kv_bytes_per_token"] == 70272          # bf16 KV under FP8 weights
    assert "layers window 128" in models["gpt-oss-120b"]["architecture"]
    res = CliRunner().invoke(build_app(), ["catalog", "gpus", "--json"])
    gpus = json.loads(res.stdout)
    assert gpus["b200"]["peak_tflops_fp4"] == 9000 and gpus["h100-sxm"]["peak_tflops_fp4"] == 0
    assert {"gb200", "mi325x", "mi355x"} <= set(gpus)


# -- both engines with the new architectures' step costs ----------------------------------------------

@pytest.mark.parametrize("model,gpu,kw", [
    ("deepseek-v3", "h200", dict(dtype="fp8", dp=8, expert_parallel=True, expert_imbalance=1.25)),
    ("gpt-oss-120b", "b200", dict(dtype="mxfp4")),
    ("llama-4-maverick", "gb200", dict(dtype="fp8", tp=8)),
])
def test_engine_matches_reference_with_new_architectures(model, gpu, kw):
    from engine_cases import build_inputs, hand_cases
    from test_engine_diff import compare
    params = build_cost_params(model, gpu, framework="vllm", max_num_seqs=256, **kw)
    for name in ("worked_example", "conversation", "preempt_last_running"):
        sc = hand_cases()[name].with_config(record_steps=True)
        ref, _ = compare(build_inputs(sc.specs, sc.config, cost_params=params))
        plain, _ = compare(sc.inputs())          # the cases' default cost (a dense 8B model)
        # the steps were priced with this model's parameters
        assert ref.steps["duration_s"][0] != pytest.approx(plain.steps["duration_s"][0], rel=1e-3)


# -- invariants -------------------------------------------------------------------------------------

step_batches = st.tuples(st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 40_000)), max_size=3),
                         st.lists(st.integers(1, 60_000), max_size=48)).filter(lambda b: b[0] or b[1])


def _aggs(chunks, decodes):
    return (sum(c for c, _ in chunks) + len(decodes), len(chunks) + len(decodes), len(decodes),
            float(sum(n + 1 for n in decodes)), float(sum(c * (p + (c + 1) / 2) for c, p in chunks)),
            float(sum(p for _, p in chunks)))


@given(name=st.sampled_from(["gpt-oss-120b", "gpt-oss-20b", "llama-4-scout", "llama-4-maverick"]), batch=step_batches)
@settings(max_examples=40, deadline=None)
def test_windowed_layers_never_cost_more_than_full_attention(name, batch):
    m = get_model(name)
    full = dataclasses.replace(m, sliding_window=0, num_window_layers=0)
    aggs = _aggs(*batch)
    for gpu in ("h100-sxm", "b200"):
        windowed = step_time_s(build_cost_params(m, gpu, dtype="fp8"), *aggs)
        assert windowed <= step_time_s(build_cost_params(full, gpu, dtype="fp8"), *aggs) * (1 + 1e-12)


@given(a=st.floats(1.0, 8.0), b=st.floats(1.0, 8.0), batch=step_batches)
@settings(max_examples=40, deadline=None)
def test_expert_imbalance_never_makes_a_step_cheaper(a, b, batch):
    lo, hi = sorted((a, b))
    aggs = _aggs(*batch)
    cost = [step_time_s(build_cost_params("deepseek-v3", "h200", dtype="fp8", dp=8, expert_parallel=True,
                                          expert_imbalance=x), *aggs) for x in (lo, hi)]
    assert cost[0] <= cost[1] * (1 + 1e-12)


@pytest.mark.parametrize("name", ["gpt-oss-120b", "gpt-oss-20b", "llama-4-scout"])
def test_hybrid_pool_has_more_blocks_than_full_attention(name):
    m, gpu = get_model(name), get_gpu("b200")
    full = dataclasses.replace(m, sliding_window=0, num_window_layers=0)
    size, groups, _ = kv_cache_groups(m)
    # a block holds group_size layers instead of all of them: L / group_size times the blocks (± rounding)
    ratio = compute_num_gpu_blocks(m, gpu, dtype="fp8") / compute_num_gpu_blocks(full, gpu, dtype="fp8")
    assert ratio == pytest.approx(m.num_layers / size / groups, rel=1e-3)
