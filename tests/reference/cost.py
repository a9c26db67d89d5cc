"""Plain-Python reference of the roofline cost model (DESIGN §5), written for clarity.

It shares nothing with ``oracle.cost`` / ``oracle.kernels.cost`` except the catalog
dataclasses: dtype rules, sharding, aggregates and every op's FLOPs/bytes are derived here
again from an explicit batch (a list of prefill chunks and decode contexts), so the
differential tests check the kernel's parameter layout, its aggregates and its formulas.

Units: seconds, FLOPs, bytes; all quantities for one GPU of the tensor-parallel group,
summed over every layer (all pipeline stages run one after the other).
"""

from __future__ import annotations

import math

from oracle.catalog import FrameworkSpec, GpuSpec, ModelSpec

BYTES = {"bf16": 2, "fp16": 2, "fp8": 1, "fp32": 4, "mxfp4": 4.25 / 8, "nvfp4": 4.5 / 8}
FP4 = ("mxfp4", "nvfp4")


def weight_dtype(model: ModelSpec, dtype: str) -> str:
    return model.dtype if dtype == "auto" else dtype


def kv_dtype_of(model: ModelSpec, dtype: str, kv_dtype: str | None) -> str:
    w = weight_dtype(model, dtype)
    if kv_dtype is None or kv_dtype == "auto":
        if w == "fp8" or w in FP4:  # FP8/FP4 weights, 16-bit activations and KV cache
            return model.dtype if model.dtype in ("bf16", "fp16") else "bf16"
        return w
    return weight_dtype(model, kv_dtype)


def capture_sizes(max_num_seqs: int | None, cap: int) -> list[int]:
    """vLLM's CUDA-graph capture sizes: [1, 2, 4] + range(8, 256, 8) + range(256, 513, 16),
    those <= min(cap, 2 x max_num_seqs)."""
    limit = cap if max_num_seqs is None else min(cap, 2 * max_num_seqs)
    sizes = [1, 2, 4] + list(range(8, 256, 8)) + list(range(256, 1 << 20, 16))
    return [s for s in sizes if s <= limit]


def reference_step(model: ModelSpec, gpu: GpuSpec, *, tp: int = 1, pp: int = 1, dtype: str = "bf16",
                   kv_dtype: str | None = None, prefill_chunks=(), decode_contexts=(),
                   scheduler_overhead_s: float | None = None, eff_compute: float | None = None,
                   eff_memory: float | None = None, framework: FrameworkSpec | None = None,
                   max_num_seqs: int | None = None, dp: int = 1, expert_parallel: bool = False,
                   expert_imbalance: float = 1.0) -> dict[str, float]:
    """Seconds per op for one step.

    prefill_chunks: ``(c, p, emits)``: ``c`` new tokens after ``p`` computed ones; ``emits``
        is True when the chunk ends its prompt (the LM head runs for it).
    decode_contexts: for each decode sequence, the tokens already in its KV cache.
    framework: a serving framework's terms (CUDA-graph padding, custom all-reduce, CPU time
        overlapped by async scheduling); None: the bare roofline.
    dp, expert_parallel, expert_imbalance: attention data parallelism with expert-parallel MoE
        (EP size tp x dp; every DP rank assumed to carry this batch).
    """
    # ---- the batch --------------------------------------------------------------------------
    prefill_tokens = sum(c for c, _, _ in prefill_chunks)
    decodes = len(decode_contexts)
    tokens = prefill_tokens + decodes
    ops = dict.fromkeys(["qkv_proj", "attn_out_proj", "mlp_gate_up", "mlp_down", "attention_prefill",
                         "attention_decode", "lm_head", "allreduce", "overhead", "pp_handoff",
                         "elementwise", "moe_all_to_all", "cpu"], 0.0)
    if tokens == 0:
        return ops
    emitting = decodes + sum(1 for _, _, emits in prefill_chunks if emits)
    causal_pairs = sum(c * (p + (c + 1) / 2) for c, p, _ in prefill_chunks)
    prefix_read = sum(p for _, p, _ in prefill_chunks)
    decode_keys = sum(n + 1 for n in decode_contexts)

    # ---- dtypes -----------------------------------------------------------------------------
    w = weight_dtype(model, dtype)
    wb = BYTES[w]
    sixteen = model.dtype if model.dtype in ("bf16", "fp16") else "bf16"
    attn_w = sixteen if w in FP4 else w       # FP4 quantizes the MLP / experts only
    attn_wb = BYTES[attn_w]
    kvb = BYTES[kv_dtype_of(model, dtype, kv_dtype)]
    act = 4 if w == "fp32" else 2          # activations, embeddings, LM head, router

    # ---- machine rates ----------------------------------------------------------------------
    ec = gpu.eff_compute if eff_compute is None else eff_compute
    em = gpu.eff_memory if eff_memory is None else eff_memory
    attn_ec = gpu.eff_compute if gpu.eff_attn_compute is None else gpu.eff_attn_compute
    attn_em = gpu.eff_memory if gpu.eff_attn_memory is None else gpu.eff_attn_memory
    attn_kernel = gpu.kernel_overhead_s if gpu.attn_overhead_s is None else gpu.attn_overhead_s
    def peak_of(dt):
        if dt in FP4:
            return gpu.peak_tflops_fp4 if gpu.peak_tflops_fp4 > 0 else gpu.peak_tflops_bf16
        if dt == "fp8":
            return gpu.peak_tflops_fp8 if gpu.peak_tflops_fp8 > 0 else gpu.peak_tflops_bf16
        if dt == "fp32":
            return gpu.peak_tflops_bf16 / 2
        return gpu.peak_tflops_bf16
    linear_peak, mlp_peak = peak_of(attn_w), peak_of(w)
    sixteen_bit_peak = gpu.peak_tflops_bf16 / 2 if w == "fp32" else gpu.peak_tflops_bf16
    bandwidth = gpu.mem_bw_gbps * 1e9
    link = gpu.link_bw_gbps * 1e9 * gpu.eff_link

    def roofline(flops, nbytes, flops_per_s, bytes_per_s):
        compute, memory = flops / flops_per_s, nbytes / bytes_per_s
        return max(compute, memory) + gpu.roofline_overlap * min(compute, memory)

    def gemm(flops, nbytes, peak=linear_peak):
        return roofline(flops, nbytes, peak * 1e12 * ec, bandwidth * em) + gpu.kernel_overhead_s

    def mlp_gemm(flops, nbytes):
        return gemm(flops, nbytes, mlp_peak)

    # ---- shapes on one GPU ------------------------------------------------------------------
    L, h, d = model.num_layers, model.hidden_size, model.head_dim
    q_heads = model.num_heads / tp
    kv_heads = math.ceil(model.num_kv_heads / tp)     # replicated when tp > num_kv_heads
    # GEMMs, small ops and all-reduce run on the CUDA-graph size when the step fits a graph
    sizes = capture_sizes(max_num_seqs, framework.cudagraph_max_tokens) if framework is not None else []
    T = min((s for s in sizes if s >= tokens), default=tokens)

    if model.kv_lora_rank:      # MLA: q_a, q_b (or q), kv_a, kv_b; then o
        r, rope, nope, v = model.kv_lora_rank, model.qk_rope_head_dim, model.qk_nope_head_dim, model.v_head_dim
        if model.q_lora_rank:
            q_w = h * model.q_lora_rank + model.q_lora_rank * q_heads * (nope + rope)
        else:
            q_w = h * q_heads * (nope + rope)
        in_w = q_w + h * (r + rope) + r * q_heads * (nope + v)
        ops["qkv_proj"] = L * gemm(T * 2 * in_w, in_w * attn_wb + T * (h + q_heads * (nope + rope) + r + rope) * act)
        o_k = q_heads * v
        decode_flops_per_key = 2 * q_heads * (2 * r + rope)      # absorbed: QK over r + rope, PV over r
        prefill_flops_per_key = 2 * q_heads * (nope + rope + v)
        qo_per_token = q_heads * (nope + rope + v) * act
        kv_per_token = (r + rope) * kvb
        rotary, kv_written = 2 * (q_heads + 1) * rope, r + rope
    else:
        qkv_n = (q_heads + 2 * kv_heads) * d
        ops["qkv_proj"] = L * gemm(T * 2 * h * qkv_n, h * qkv_n * attn_wb + T * (h + qkv_n) * act)
        o_k = q_heads * d
        decode_flops_per_key = prefill_flops_per_key = 4 * q_heads * d
        qo_per_token = 2 * q_heads * d * act
        kv_per_token = 2 * kv_heads * d * kvb
        rotary, kv_written = 2 * (q_heads + kv_heads) * d, 2 * kv_heads * d
    ops["attn_out_proj"] = L * gemm(T * 2 * o_k * h, o_k * h * attn_wb + T * (o_k + h) * act)

    up_width = 2 if model.gated_mlp else 1
    if model.is_moe:
        E, k = model.num_experts, model.num_active_experts
        ep = tp * dp if expert_parallel else 1
        moe_layers = L - model.num_dense_layers
        if ep > 1:   # E/ep whole experts per GPU; all dp ranks' tokens routed to them
            fe = model.expert_intermediate_size
            pairs = expert_imbalance * dp * k / ep
            distinct = E / ep * (1 - (1 - k / E) ** (dp * tokens))
            per_a2a = expert_imbalance * k * h * act * (ep - 1) / ep / tp
            ops["moe_all_to_all"] = 2 * moe_layers * (T * per_a2a / link + gpu.link_latency_s)
        else:
            fe = model.expert_intermediate_size / tp
            pairs = k
            distinct = E * (1 - (1 - k / E) ** tokens)     # the real tokens pick the experts
        fs = model.shared_expert_intermediate_size / tp
        up_n, up_s = up_width * fe, up_width * fs
        shared_up_act = h + up_s if fs else 0.0
        shared_down_act = fs + h if fs else 0.0
        ops["mlp_gate_up"] = moe_layers * mlp_gemm(
            T * (2 * h * E + pairs * 2 * h * up_n + 2 * h * up_s),
            h * E * act + h * up_s * wb + distinct * h * up_n * wb + T * (h + pairs * (h + up_n) + shared_up_act) * act)
        ops["mlp_down"] = moe_layers * mlp_gemm(T * (pairs * 2 * fe * h + 2 * fs * h),
                                                fs * h * wb + distinct * fe * h * wb
                                                + T * (pairs * (fe + h) + shared_down_act) * act)
        activation_elems = pairs * (up_n + fe) + up_s + fs
        if model.num_dense_layers:
            nd = model.num_dense_layers
            f = model.intermediate_size / tp
            ops["mlp_gate_up"] += nd * mlp_gemm(T * 2 * h * up_width * f, h * up_width * f * wb
                                                + T * (h + up_width * f) * act)
            ops["mlp_down"] += nd * mlp_gemm(T * 2 * f * h, f * h * wb + T * (f + h) * act)
            activation_elems = (moe_layers * activation_elems + nd * (up_width * f + f)) / L
    else:
        f = model.intermediate_size / tp
        up_n = up_width * f
        ops["mlp_gate_up"] = L * mlp_gemm(T * 2 * h * up_n, h * up_n * wb + T * (h + up_n) * act)
        ops["mlp_down"] = L * mlp_gemm(T * 2 * f * h, f * h * wb + T * (f + h) * act)
        activation_elems = up_n + f

    attn_rates = (sixteen_bit_peak * 1e12 * attn_ec, bandwidth * attn_em)
    # windowed layers: each query sees at most W keys; the step's chunks bounded as one
    W, win_layers = model.sliding_window, model.num_window_layers
    full_layers = L - win_layers
    if prefill_tokens:
        def prefill(pairs, keys_read):
            flops = prefill_flops_per_key * pairs
            nbytes = keys_read * kv_per_token + prefill_tokens * qo_per_token
            return roofline(flops, nbytes, *attn_rates) + attn_kernel
        ops["attention_prefill"] = full_layers * prefill(causal_pairs, prefix_read + prefill_tokens)
        if win_layers:
            ops["attention_prefill"] += win_layers * prefill(min(causal_pairs, prefill_tokens * W),
                                                             min(prefix_read, W) + prefill_tokens)
    if decodes:
        def decode(keys):
            return roofline(decode_flops_per_key * keys, keys * kv_per_token + decodes * qo_per_token,
                            *attn_rates) + attn_kernel
        ops["attention_decode"] = full_layers * decode(decode_keys)
        if win_layers:
            ops["attention_decode"] += win_layers * decode(min(decode_keys, decodes * W))

    if emitting:
        v = model.vocab_size / tp
        ops["lm_head"] = roofline(emitting * 2 * h * v, h * v * act + emitting * (h + v) * act,
                                  sixteen_bit_peak * 1e12 * ec, bandwidth * em) + gpu.kernel_overhead_s

    if tp > 1:
        message = T * h * act
        custom = (framework is not None and framework.custom_allreduce_max_bytes >= message
                  and gpu.link_kind in ("nvlink", "xgmi"))
        if not custom:          # NCCL ring
            per_call = 2 * (tp - 1) / tp * message / link + gpu.link_latency_s
        elif tp == 2 or (tp <= 4 and message < 512 * 1024) or (tp <= 8 and message < 256 * 1024):
            per_call = (tp - 1) * message / link + gpu.custom_ar_latency_s          # one-shot
        else:
            per_call = 2 * (tp - 1) / tp * message / link + gpu.custom_ar_latency_s  # two-shot
        ops["allreduce"] = 2 * L * per_call
    ops["overhead"] = L * gpu.layer_overhead_s
    ops["pp_handoff"] = (pp - 1) * (2 * T * h * act / link + gpu.link_latency_s)

    per_token = (7 * h + rotary + activation_elems + kv_written) * act + kv_written * kvb
    elem_eff = em if gpu.eff_elementwise is None else gpu.eff_elementwise
    ops["elementwise"] = L * T * per_token / (bandwidth * elem_eff)

    step_cpu = gpu.step_overhead_s
    if framework is not None and framework.cpu_step_s is not None:
        step_cpu = framework.cpu_step_s
    if scheduler_overhead_s is not None:
        step_cpu = scheduler_overhead_s
    cpu = step_cpu + (framework.cpu_seq_s * emitting if framework is not None else 0.0)
    gpu_time = math.fsum(ops.values())
    overlapped = framework is not None and framework.async_scheduling
    ops["cpu"] = max(cpu - gpu_time, 0.0) if overlapped else cpu
    return ops
