"""Cost model: kernel vs plain-Python reference, hand-worked cases, sanity properties, CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from oracle.catalog import FrameworkSpec, GpuSpec, ModelSpec, get_framework, get_gpu, get_model, load_gpus, load_models
from oracle.cost import (OP_NAMES, PARAM_NAMES, build_cost_params, cudagraph_capture_max, padded_tokens,
                         params_to_dict, step_aggregates, step_cost)
from oracle.errors import ScenarioError
from oracle.kernels.cost import NUM_OPS, step_breakdown, step_time_s, step_work
from oracle.memory import weight_bytes
from reference.cost import reference_step

# -- helpers -------------------------------------------------------------------------------------


def aggregates(prefill_chunks, decode_contexts):
    """(T, E, D, Sd, U, Sp) computed directly from the batch (independent of oracle.cost)."""
    t = sum(c for c, _, _ in prefill_chunks) + len(decode_contexts)
    e = len(decode_contexts) + sum(1 for *_, emits in prefill_chunks if emits)
    sd = sum(n + 1 for n in decode_contexts)
    u = sum(c * (p + (c + 1) / 2) for c, p, _ in prefill_chunks)
    sp = sum(p for _, p, _ in prefill_chunks)
    return t, e, len(decode_contexts), sd, u, sp


def kernel_ops(params, aggs):
    out_s, out_f, out_b = np.zeros(NUM_OPS), np.zeros(NUM_OPS), np.zeros(NUM_OPS)
    step_work(params, *aggs, out_s, out_f, out_b)
    return out_s, out_f, out_b


# Toy shapes that exercise edge cases the catalog lacks: non-gated MLP, k == E, MHA.
TOY_MODELS = [
    ModelSpec(name="toy-nongated", num_layers=3, hidden_size=256, num_heads=8, num_kv_heads=8, head_dim=32,
              intermediate_size=1024, vocab_size=1000, max_context=2048, tied_embeddings=True, gated_mlp=False),
    ModelSpec(name="toy-moe-all", num_layers=2, hidden_size=128, num_heads=4, num_kv_heads=2, head_dim=32,
              intermediate_size=512, vocab_size=500, max_context=1024, tied_embeddings=False,
              num_experts=4, num_active_experts=4, expert_intermediate_size=64),
]
MODELS = list(load_models().values()) + TOY_MODELS
GPUS = list(load_gpus().values())
VLLM = get_framework("vllm")
#: the catalog's vLLM and variants that switch one term off or exaggerate the CPU side
FRAMEWORKS = [None, VLLM, dataclasses.replace(VLLM, async_scheduling=False),
              dataclasses.replace(VLLM, custom_allreduce_max_bytes=0, cudagraph_max_tokens=0),
              dataclasses.replace(VLLM, cpu_step_s=0.02, cpu_seq_s=1e-4, cudagraph_max_tokens=100)]


def valid_tps(model: ModelSpec) -> list[int]:
    return [tp for tp in (1, 2, 4, 8, 16) if model.num_heads % tp == 0
            and (model.num_kv_heads % tp == 0 or tp % model.num_kv_heads == 0)]


@st.composite
def configs(draw):
    model = draw(st.sampled_from(MODELS))
    gpu = draw(st.sampled_from(GPUS))
    tp = draw(st.sampled_from(valid_tps(model)))
    pp = draw(st.integers(1, min(4, model.num_layers)))
    dtype = draw(st.sampled_from(["bf16", "fp16", "fp8", "fp32", "auto", "mxfp4", "nvfp4"]))
    resolved = model.dtype if dtype == "auto" else dtype
    if resolved in ("mxfp4", "nvfp4") and ((not gpu.has_fp4 and not gpu.has_fp8)
                                          or (resolved == "nvfp4" and gpu.link_kind == "xgmi")):
        dtype = "bf16"   # FP4 this GPU cannot run (test_architectures checks the error)
    kv_dtype = draw(st.sampled_from([None, "auto", "fp8", "bf16"]))
    parallel = {}
    if model.is_moe and draw(st.booleans()):   # attention DP + expert-parallel MoE
        dp = draw(st.sampled_from([1, 2, 4]))
        if model.num_experts % (tp * dp) == 0:
            parallel = dict(dp=dp, expert_parallel=True,
                            expert_imbalance=draw(st.floats(1.0, float(tp * dp))))
    overrides = draw(st.fixed_dictionaries({}, optional={
        "eff_compute": st.floats(0.1, 1.0), "eff_memory": st.floats(0.1, 1.0),
        "scheduler_overhead_s": st.floats(0.0, 0.01), "max_num_seqs": st.integers(1, 400)}))
    framework = draw(st.sampled_from(FRAMEWORKS))
    return dict(model=model, gpu=gpu, tp=tp, pp=pp, dtype=dtype, kv_dtype=kv_dtype, framework=framework,
                **overrides, **parallel)


batches = st.tuples(
    st.lists(st.tuples(st.integers(1, 8192), st.integers(0, 65536), st.booleans()), max_size=4),
    st.lists(st.integers(1, 131072), max_size=64),
)


# -- differential ------------------------------------------------------------------------------


@given(cfg=configs(), batch=batches)
def test_kernel_matches_reference(cfg, batch):
    chunks, decodes = batch
    params = build_cost_params(**cfg)
    aggs = aggregates(chunks, decodes)
    out_s, _, _ = kernel_ops(params, aggs)
    ref = reference_step(prefill_chunks=chunks, decode_contexts=decodes, **cfg)
    assert list(ref) == list(OP_NAMES)
    assert_allclose(out_s, [ref[k] for k in OP_NAMES], rtol=1e-12, atol=0)
    assert_allclose(step_time_s(params, *aggs), sum(ref.values()), rtol=1e-12, atol=0)


@given(cfg=configs(), batch=batches)
@settings(max_examples=25)
def test_breakdown_sums_to_step_time(cfg, batch):
    params = build_cost_params(**cfg)
    aggs = aggregates(*batch)
    out = np.full(NUM_OPS, np.nan)
    step_breakdown(params, *aggs, out)
    assert_allclose(out, kernel_ops(params, aggs)[0], rtol=0, atol=0)
    assert_allclose(math.fsum(out), step_time_s(params, *aggs), rtol=1e-13)
    assert (out >= 0).all()


@given(chunks=st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 9000)), max_size=5),
       decodes=st.lists(st.integers(1, 50_000), max_size=20))
@settings(max_examples=25)
def test_step_aggregates_match_batch(chunks, decodes):
    mine = aggregates([(c, p, True) for c, p in chunks], decodes)
    assert step_aggregates(prefill_chunks=chunks, decode_contexts=decodes) == pytest.approx(mine, rel=1e-15)


def test_empty_step_is_free():
    params = build_cost_params("llama-3.1-8b", "h100-sxm", tp=2, pp=2)
    assert step_time_s(params, 0, 0, 0, 0.0, 0.0, 0.0) == 0.0
    out_s, out_f, out_b = kernel_ops(params, (0, 0, 0, 0.0, 0.0, 0.0))
    assert not out_s.any() and not out_f.any() and not out_b.any()
    assert sum(reference_step(get_model("llama-3.1-8b"), get_gpu("h100-sxm"), tp=2, pp=2).values()) == 0.0


def test_params_layout():
    params = build_cost_params("llama-3.1-8b", "h100-sxm")
    assert params.dtype == np.float64 and params.flags.c_contiguous and params.shape == (len(PARAM_NAMES),)
    p = params_to_dict(params)
    assert p["num_layers"] == 32 and p["allreduce_calls"] == 0 and p["pp_handoffs"] == 0
    assert p["qkv_weight_bytes"] == 4096 * (32 + 16) * 128 * 2
    assert p["kv_bytes_per_token"] == 2 * 8 * 128 * 2
    assert build_cost_params(get_model("llama-3.1-8b"), get_gpu("h100-sxm")).tolist() == params.tolist()


# -- a hand-worked case ------------------------------------------------------------------------

IDEAL = GpuSpec(name="ideal", memory_gib=80, mem_bw_gbps=1000, peak_tflops_bf16=100, peak_tflops_fp8=0,
                link_bw_gbps=100, eff_compute=1.0, eff_memory=1.0, layer_overhead_s=0.0, step_overhead_s=0.0,
                link_latency_s=0.0)
TINY = ModelSpec(name="tiny", num_layers=2, hidden_size=1024, num_heads=8, num_kv_heads=2, head_dim=128,
                 intermediate_size=4096, vocab_size=1000, max_context=4096, tied_embeddings=False)


def test_hand_worked_single_decode():
    # One decode token with 99 cached tokens (ctx = 100), bf16, 1 TB/s, 100 TFLOP/s, no overheads.
    params = build_cost_params(TINY, IDEAL)
    out_s, out_f, out_b = kernel_ops(params, (1, 1, 1, 100.0, 0.0, 0.0))
    ops = dict(zip(OP_NAMES, out_s))
    # QKV: 1024 x (8 + 2·2)·128 = 1024 x 1536 weights; memory-bound: (w + 1·(1024 + 1536)) · 2 B / 1e12 B/s
    assert ops["qkv_proj"] == pytest.approx(2 * (1024 * 1536 + 1024 + 1536) * 2 / 1e12, rel=1e-12)
    assert out_f[0] == pytest.approx(2 * 2 * 1024 * 1536, rel=1e-12)
    # gate+up 1024 x 8192, down 4096 x 1024
    assert ops["mlp_gate_up"] == pytest.approx(2 * (1024 * 8192 + 1024 + 8192) * 2 / 1e12, rel=1e-12)
    assert ops["mlp_down"] == pytest.approx(2 * (4096 * 1024 + 4096 + 1024) * 2 / 1e12, rel=1e-12)
    # decode attention reads 100 tokens x 2 (K, V) x 2 heads x 128 x 2 B, plus Q and O (2 x 8 x 128 x 2 B)
    assert ops["attention_decode"] == pytest.approx(2 * (100 * 2 * 2 * 128 * 2 + 2 * 8 * 128 * 2) / 1e12, rel=1e-12)
    assert ops["attention_prefill"] == 0.0
    # LM head: 1024 x 1000 weights + (1024 + 1000) activations, memory-bound, once (not per layer)
    assert ops["lm_head"] == pytest.approx((1024 * 1000 + 2024) * 2 / 1e12, rel=1e-12)
    assert ops["allreduce"] == ops["pp_handoff"] == ops["overhead"] == 0.0


def test_hand_worked_prefill_is_compute_bound():
    # 1000-token chunk after 24 cached: attention pairs = 1000 · (24 + 1001/2) = 524,500
    params = build_cost_params(TINY, IDEAL)
    aggs = step_aggregates(prefill_chunks=[(1000, 24)])
    assert aggs == (1000, 1, 0, 0, 524_500.0, 24)
    ops = dict(zip(OP_NAMES, kernel_ops(params, aggs)[0]))
    assert ops["qkv_proj"] == pytest.approx(2 * 2 * 1000 * 1024 * 1536 / 100e12, rel=1e-12)
    assert ops["attention_prefill"] == pytest.approx(2 * 4 * 8 * 128 * 524_500 / 100e12, rel=1e-12)


def test_tp_allreduce_and_pp_handoff_hand_worked():
    gpu = dataclasses.replace(IDEAL, link_latency_s=1e-5)
    ops = dict(zip(OP_NAMES, kernel_ops(build_cost_params(TINY, gpu, tp=2, pp=2), (10, 0, 10, 1000.0, 0.0, 0.0))[0]))
    # 2 all-reduces per layer x 2 layers, each 2(2-1)/2 x 10 x 1024 x 2 B over 100 GB/s + 10 us
    assert ops["allreduce"] == pytest.approx(4 * (10 * 1024 * 2 / 100e9 + 1e-5), rel=1e-12)
    # one hand-off of hidden + residual (2 x 10 x 1024 x 2 B)
    assert ops["pp_handoff"] == pytest.approx(2 * 10 * 1024 * 2 / 100e9 + 1e-5, rel=1e-12)


# -- sanity properties -------------------------------------------------------------------------


@pytest.mark.parametrize("model,gpu", [("llama-3.1-8b", "h100-sxm"), ("llama-2-7b", "a100-80g"),
                                       ("qwen2.5-7b", "l40s"), ("mistral-7b", "a40")])
def test_decode_batch_1_is_weight_bandwidth_bound(model, gpu):
    m, g = get_model(model), get_gpu(gpu)
    r = step_cost(m, g, decode_batch=1, decode_context=512, scheduler_overhead_s=0.0)
    ideal_ms = weight_bytes(m, "bf16") / (g.mem_bw_gbps * 1e9 * g.eff_memory) * 1e3
    assert 0.95 * ideal_ms < r["total_ms"] < 1.35 * ideal_ms
    params = build_cost_params(m, g)
    _, flops, nbytes = kernel_ops(params, step_aggregates(decode_contexts=[512]))
    machine_balance = g.peak_tflops_bf16 * 1e12 / (g.mem_bw_gbps * 1e9)
    assert (flops[:4] / nbytes[:4] < machine_balance / 50).all()   # linear ops far below the ridge


def test_4k_prefill_is_compute_bound():
    m, g = get_model("llama-3.1-8b"), get_gpu("h100-sxm")
    params = build_cost_params(m, g)
    _, flops, nbytes = kernel_ops(params, step_aggregates(prefill_chunks=[(4096, 0)]))
    machine_balance = g.peak_tflops_bf16 * 1e12 / (g.mem_bw_gbps * 1e9)
    assert (flops[:5] / nbytes[:5] > 2 * machine_balance).all()
    r = step_cost(m, g, prefill_tokens=4096, scheduler_overhead_s=0.0)
    linear_ms = sum(r["ops"][f"{k}_ms"] for k in OP_NAMES[:4])
    ideal_ms = 2 * 4096 * (m.num_params - m.embedding_params) / (g.peak_tflops_bf16 * 1e12 * g.eff_compute) * 1e3
    assert ideal_ms < linear_ms < 1.15 * ideal_ms


@pytest.mark.parametrize("kwargs", [dict(prefill_tokens=4096), dict(decode_batch=64, decode_context=2000)])
def test_tp2_halves_linear_time_and_adds_allreduce(kwargs):
    m, g = get_model("llama-3.1-70b"), get_gpu("h100-sxm")
    one, two = (step_cost(m, g, tp=tp, **kwargs) for tp in (1, 2))
    for op in OP_NAMES[:4]:
        assert 0.45 < two["ops"][f"{op}_ms"] / one["ops"][f"{op}_ms"] < 0.62, op
    assert one["ops"]["allreduce_ms"] == 0.0 and two["ops"]["allreduce_ms"] > 0.0
    # 2 per layer, each sending 2(tp-1)/tp = 1 x T x h x 2 bytes
    assert two["link_bytes"] == pytest.approx(2 * 80 * 1.0 * one["aggregates"]["num_tokens"] * 8192 * 2)


def test_pp_adds_only_handoffs():
    m, g = get_model("llama-3.1-70b"), get_gpu("h100-sxm")
    one, four = (step_cost(m, g, tp=2, pp=pp, prefill_tokens=1000, decode_batch=8) for pp in (1, 4))
    assert four["total_ms"] - one["total_ms"] == pytest.approx(four["ops"]["pp_handoff_ms"], rel=1e-9)
    assert four["ops"]["pp_handoff_ms"] == pytest.approx(3 * (2 * 1008 * 8192 * 2 / (450e9 * g.eff_link)
                                                              + g.link_latency_s) * 1e3, rel=1e-12)


@pytest.mark.parametrize("kwargs,ratio", [
    (dict(decode_batch=1, decode_context=100), 0.5),     # reads 2 of 8 experts
    (dict(prefill_tokens=4096), 0.5),                    # computes 2 of 8 experts per token
    (dict(decode_batch=32, decode_context=100), 1.0),    # 32 tokens touch ~all 8 experts: no cheaper to read
])
def test_moe_cheaper_than_dense_of_same_total_size(kwargs, ratio):
    moe = get_model("mixtral-8x7b")
    dense = dataclasses.replace(moe, name="dense-47b", num_experts=0, num_active_experts=0,
                                expert_intermediate_size=0, intermediate_size=8 * 14336)
    assert dense.num_params == pytest.approx(moe.num_params, rel=1e-3)
    g = get_gpu("h100-sxm")
    assert step_cost(moe, g, tp=2, **kwargs)["total_ms"] < ratio * step_cost(dense, g, tp=2, **kwargs)["total_ms"]


def test_moe_expected_distinct_experts():
    g = dataclasses.replace(IDEAL, roofline_overlap=0.0)
    m = get_model("qwen3-30b-a3b")
    params = build_cost_params(m, g)
    per_expert = params_to_dict(params)["down_expert_bytes"]
    for t, expected in ((1, 8.0), (2, 128 * (1 - (1 - 8 / 128) ** 2)), (10_000, 128.0)):
        _, _, nbytes = kernel_ops(params, (t, 0, t, float(2 * t), 0.0, 0.0))
        act = t * params_to_dict(params)["down_act_bytes_per_token"]
        assert (nbytes[3] / m.num_layers - act) / per_expert == pytest.approx(expected, rel=1e-9)


def test_fp8_uses_fp8_peak_only_where_the_gpu_has_it():
    m = get_model("llama-3.1-70b")
    for name, speedup in (("h100-sxm", True), ("a100-80g", False)):
        g = get_gpu(name)
        bf16 = step_cost(m, g, tp=4, dtype="bf16", prefill_tokens=8192)["ops"]["mlp_gate_up_ms"]
        fp8 = step_cost(m, g, tp=4, dtype="fp8", prefill_tokens=8192)["ops"]["mlp_gate_up_ms"]
        assert (fp8 < 0.6 * bf16) if speedup else (fp8 == pytest.approx(bf16, rel=0.02))
        # decode is weight-bandwidth bound: 1-byte weights help everywhere
        bf16 = step_cost(m, g, tp=4, dtype="bf16", decode_batch=1)["ops"]["mlp_down_ms"]
        fp8 = step_cost(m, g, tp=4, dtype="fp8", decode_batch=1)["ops"]["mlp_down_ms"]
        assert fp8 < 0.6 * bf16


@given(cfg=configs(), ctx=st.integers(1, 50_000), extra=st.integers(1, 50_000), batch=st.integers(1, 64))
@settings(max_examples=30)
def test_monotone_in_context_and_batch(cfg, ctx, extra, batch):
    params = build_cost_params(**cfg)
    base = step_time_s(params, *aggregates([], [ctx] * batch))
    assert step_time_s(params, *aggregates([], [ctx + extra] * batch)) >= base
    assert step_time_s(params, *aggregates([(extra, ctx, True)], [ctx] * batch)) > base
    # One more sequence never makes a step cheaper on the bare roofline. With a serving
    # framework it can: vLLM's custom all-reduce switches from one-shot to the cheaper
    # two-shot algorithm above a message size (and CUDA-graph padding rounds batches up),
    # as the real kernels do; tests/test_cost_terms.py checks those terms on their own.
    if cfg["framework"] is None or cfg["tp"] == 1:
        assert step_time_s(params, *aggregates([], [ctx] * (batch + 1))) >= base


def test_build_cost_params_rejects_bad_sharding_and_overrides():
    with pytest.raises(ScenarioError, match="does not divide the 32 attention heads"):
        build_cost_params("llama-3.1-8b", "h100-sxm", tp=3)
    with pytest.raises(ScenarioError, match="exceeds the 32 layers"):
        build_cost_params("llama-3.1-8b", "h100-sxm", pp=33)
    with pytest.raises(ScenarioError, match="eff_memory"):
        build_cost_params("llama-3.1-8b", "h100-sxm", eff_memory=1.5)
    with pytest.raises(ScenarioError, match="unknown dtype"):
        build_cost_params("llama-3.1-8b", "h100-sxm", dtype="int4")
    with pytest.raises(ScenarioError, match="unknown model"):
        build_cost_params("llama-9", "h100-sxm")


def test_step_time_does_not_allocate():
    from numba.core.runtime import _nrt_python, rtsys

    from oracle.kernels._jit import jit
    if not hasattr(step_time_s, "py_func"):
        pytest.skip("JIT disabled")

    @jit(cache=False)
    def loop(params, n):
        total = 0.0
        for i in range(n):
            total += step_time_s(params, 100 + i % 7, 10, 10, 5000.0 + i, 4000.0, 64.0)
        return total

    params = build_cost_params("mixtral-8x7b", "h100-sxm", tp=2, pp=2)
    loop(params, 10)
    was_enabled = _nrt_python.memsys_stats_enabled()
    _nrt_python.memsys_enable_stats()
    try:
        counts = []
        for n in (10, 10_000):   # the Python->jit call itself may allocate once; the loop must not
            before = rtsys.get_allocation_stats()
            loop(params, n)
            counts.append(rtsys.get_allocation_stats().alloc - before.alloc)
    finally:
        if not was_enabled:
            _nrt_python.memsys_disable_stats()
    assert counts[0] == counts[1] <= 1


# -- CLI ---------------------------------------------------------------------------------------

REQUIRED_OPS = {"qkv_proj_ms", "attn_out_proj_ms", "mlp_gate_up_ms", "mlp_down_ms", "attention_prefill_ms",
                "attention_decode_ms", "lm_head_ms", "allreduce_ms", "overhead_ms"}


def _app():
    from oracle.cli import build_app
    return build_app()


def test_cli_cost_json():
    res = CliRunner().invoke(_app(), ["cost", "--model", "llama-2-7b", "--gpu", "a100-80g", "--tp", "1",
                                      "--prefill-tokens", "512", "--prefill-context", "100", "--decode-batch", "8",
                                      "--decode-context", "1000", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert REQUIRED_OPS <= set(out["ops"])
    assert {"total_ms", "flops", "bytes"} <= set(out)
    assert out["total_ms"] == pytest.approx(sum(out["ops"].values()), rel=1e-12)
    ref = reference_step(get_model("llama-2-7b"), get_gpu("a100-80g"), prefill_chunks=[(512, 100, True)],
                         decode_contexts=[1000] * 8, framework=VLLM)       # --framework vllm is the default
    assert out["total_ms"] == pytest.approx(sum(ref.values()) * 1e3, rel=1e-12)
    assert set(out["sources"]) == set(OP_NAMES) and all(out["sources"].values())
    assert out["request"]["api_server_ms"] == pytest.approx(VLLM.api_server_s * 1e3)
    assert out["config"]["framework"] == "vllm" and out["config"]["padded_tokens"] == 520
    assert out["memory"]["num_gpu_blocks"] > 1000 and out["memory"]["kv_bytes_per_token_per_gpu"] == 524288


def test_cli_cost_reports_a_model_that_does_not_fit():
    res = CliRunner().invoke(_app(), ["cost", "-m", "llama-3.1-70b", "-g", "h100-sxm", "--decode-batch", "1",
                                      "--json"])
    assert res.exit_code == 0, res.output
    mem = json.loads(res.stdout)["memory"]
    assert mem["num_gpu_blocks"] is None and "does not fit on 1× h100-sxm" in mem["error"]


def test_cli_cost_table_and_alias():
    res = CliRunner().invoke(_app(), ["cost", "-m", "Llama2-7B", "-g", "H100-SXM", "--decode-batch", "4"])
    assert res.exit_code == 0, res.output
    assert "llama-2-7b on h100-sxm" in res.output and "attention_decode" in res.output


@pytest.mark.parametrize("args,needle", [
    (["--model", "llama-9b", "--gpu", "h100-sxm", "--decode-batch", "1"], "--model: unknown model 'llama-9b'"),
    (["--model", "llama-2-7b", "--gpu", "h100", "--decode-batch", "1"], "--gpu: unknown GPU 'h100'"),
    (["--model", "llama-2-7b", "--gpu", "h100-sxm"], "nothing to price"),
    (["--model", "llama-2-7b", "--gpu", "h100-sxm", "--tp", "3", "--decode-batch", "1"], "tp=3 does not divide"),
    (["--model", "llama-2-7b", "--gpu", "h100-sxm", "--decode-batch", "1", "--decode-context", "0"],
     "--decode-context: must be >= 1"),
])
def test_cli_cost_user_errors_are_one_line(args, needle):
    res = CliRunner().invoke(_app(), ["cost", *args])
    assert res.exit_code == 1, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
