"""Cost model front end: builds the kernel's parameter vector and prices single steps.

The roofline itself lives in :mod:`oracle.kernels.cost` (DESIGN §5); this module turns a
:class:`~oracle.catalog.ModelSpec` × :class:`~oracle.catalog.GpuSpec` × parallelism × dtype
into the float64 ``params`` vector the kernels read, and offers :func:`step_cost`, a
Python-friendly one-step price used by ``oracle cost``.

Modelling choices (beyond DESIGN §5):

* Linear layers run at the weight dtype's peak (FP8 peak for ``dtype="fp8"`` on GPUs with FP8
  tensor cores, BF16 peak otherwise, as Marlin-style weight-only FP8 does; ``fp32`` at half
  the BF16 peak, i.e. TF32 tensor cores). Activations are 16-bit (32-bit for fp32 models).
* Attention and the LM head run at the 16-bit peak; the LM head reads its 16-bit weights once
  per step when any sequence emits a token and costs ``2·h·V/tp`` FLOPs per emitting sequence.
* MoE layers: each token runs ``k`` experts; the weights read per layer are those of the
  expected number of distinct experts touched by ``T`` tokens, ``E·(1 − (1 − k/E)^T)``,
  plus the router (``h × E``, replicated).
* TP all-reduce: 2 per layer, ring cost ``2(tp−1)/tp · T·h·act_bytes / (link_bw·eff_link)``
  plus latency; PP: stages run in sequence (no micro-batch overlap) with ``pp − 1`` hand-offs
  of the hidden state and residual (``2·T·h·act_bytes``) over the same link.
* Fixed costs: one kernel time per GEMM and attention kernel, ``layer_overhead_s`` per layer
  for the small kernels, ``step_overhead_s`` per step for the CPU side (scheduler, input
  preparation, sampling).

With a serving framework (``framework="vllm"``, :class:`~oracle.catalog.FrameworkSpec`; the
simulator always passes the scenario's), its terms join the roofline (kernel docstring):

* CUDA-graph padding of steps up to ``min(cudagraph_max_tokens, 2·max_num_seqs)`` tokens
  (rounded down to a capture size);
* its custom all-reduce on all-to-all links (``gpu.link_kind`` NVLink or xGMI) for messages up
  to ``custom_allreduce_max_bytes``: ``custom_ar_latency_s`` + one-shot ``(tp−1)·m`` or
  two-shot ``2(tp−1)/tp·m`` bytes over the link (one-shot below 512 KiB at TP <= 4, 256 KiB
  at TP <= 8, always at TP 2: vLLM's ``custom_all_reduce.cuh``); NCCL's ring above;
* CPU time ``cpu_step_s + cpu_seq_s·E`` per step, hidden under the GPU time with async
  scheduling (``max(gpu, cpu)``).

Without one (``framework=None``, as the op-level calibration uses it) the step is the bare
roofline: NCCL all-reduce, no padding, CPU time ``step_overhead_s`` added.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from oracle.catalog import FrameworkSpec, GpuSpec, ModelSpec, get_framework, get_gpu, get_model
from oracle.errors import ScenarioError
from oracle.kernels.cost import NUM_OPS, NUM_PARAMS, OP_NAMES, PARAM_NAMES, step_time_s, step_work
from oracle.catalog import FP4_DTYPES
from oracle.memory import (attention_dtype, check_dtype_on_gpu, check_expert_parallel, check_parallel,
                           dtype_bytes, expert_parallel_size, kv_bytes_per_layer_per_gpu, kv_heads_per_gpu,
                           resolve_dtype, resolve_kv_dtype)

__all__ = ["OP_NAMES", "PARAM_NAMES", "build_cost_params", "params_to_dict", "step_aggregates",
           "step_cost", "op_times", "step_time", "cudagraph_capture_max", "op_sources", "source_notes",
           "padded_tokens"]

#: ops whose ``bytes`` are link traffic, not DRAM traffic
_LINK_OPS = ("allreduce", "pp_handoff", "moe_all_to_all")


def _weight_peak_tflops(gpu: GpuSpec, dtype: str) -> float:
    if dtype in FP4_DTYPES:   # FP4 tensor cores, else weight-only (dequantized to 16 bits)
        return gpu.peak_tflops_fp4 if gpu.has_fp4 else gpu.peak_tflops_bf16
    if dtype == "fp8":
        return gpu.peak_tflops_fp8 if gpu.has_fp8 else gpu.peak_tflops_bf16
    if dtype == "fp32":
        return gpu.peak_tflops_bf16 / 2.0
    return gpu.peak_tflops_bf16


def cudagraph_capture_max(framework: FrameworkSpec | None, max_num_seqs: int | None) -> int:
    """The largest CUDA-graph capture size (tokens) of a framework: ``min(cudagraph_max_tokens,
    2·max_num_seqs)`` rounded down to a capture size (1, 2, 4, multiples of 8 below 256, of 16
    from 256), as vLLM's ``max_cudagraph_capture_size``; 0 without CUDA graphs."""
    if framework is None or framework.cudagraph_max_tokens <= 0:
        return 0
    cap = framework.cudagraph_max_tokens
    if max_num_seqs is not None:
        cap = min(cap, 2 * max_num_seqs)
    if cap < 8:
        return 4 if cap >= 4 else (2 if cap >= 2 else 1)
    return cap - cap % (8 if cap < 256 else 16)


def _oneshot_max_bytes(tp: int) -> float:
    """vLLM's custom all-reduce runs one-shot below this message size (``custom_all_reduce.cuh``)."""
    if tp <= 2:
        return math.inf
    if tp > 8:
        return 0.0  # two-shot only (the kernel's one-shot cases stop at world size 8)
    return 512.0 * 1024 if tp <= 4 else 256.0 * 1024


def build_cost_params(model: ModelSpec | str, gpu: GpuSpec | str, *, tp: int = 1, pp: int = 1, dtype: str = "bf16",
                      kv_dtype: str | None = None, scheduler_overhead_s: float | None = None,
                      eff_compute: float | None = None, eff_memory: float | None = None,
                      framework: FrameworkSpec | str | None = None, max_num_seqs: int | None = None,
                      dp: int = 1, expert_parallel: bool = False, expert_imbalance: float = 1.0) -> np.ndarray:
    """The kernel parameter vector for one replica configuration.

    Parameters
    ----------
    model, gpu: catalog entries (or inline ones from a scenario), or catalog names.
    tp, pp: tensor- and pipeline-parallel sizes.
    dtype: weight dtype, ``"auto" | "bf16" | "fp16" | "fp8" | "fp32" | "mxfp4" | "nvfp4"``
        (FP4: the MLP / expert weights; attention projections stay 16-bit).
    kv_dtype: KV-cache dtype (None/``"auto"``: see :func:`oracle.memory.resolve_kv_dtype`).
    scheduler_overhead_s: per-step CPU time, s (None: the framework's ``cpu_step_s``, else
        ``gpu.step_overhead_s``).
    eff_compute, eff_memory: overrides of the GPU's efficiencies in (0, 1] for GEMMs and the LM
        head (attention and the small element-wise kernels keep their own factors).
    framework: the serving framework (catalog entry or name, e.g. ``"vllm"``) whose terms join
        the roofline (module docstring); None or ``"none"``: the bare roofline.
    max_num_seqs: the engine's ``max_num_seqs`` (caps the CUDA-graph capture size at twice
        it, as vLLM does); None: no cap.
    dp: attention data-parallel ranks sharing the MoE layers (vLLM ``--data-parallel-size``
        with expert parallelism); the other ranks are assumed as loaded as this one.
    expert_parallel: vLLM ``--enable-expert-parallel``: EP size ``tp × dp``, each GPU runs
        ``E / ep`` whole experts, tokens reach them by all-to-all (dispatch + combine).
    expert_imbalance: the busiest EP rank's routed tokens over the mean (>= 1).

    Returns
    -------
    float64 array, C-contiguous, shape ``(len(PARAM_NAMES),)``, layout :data:`PARAM_NAMES`.

    Raises ScenarioError (no key) for a ``tp``/``pp`` the model cannot be sharded with, an
    unknown dtype, FP4 on a GPU that cannot run it, or expert/data parallelism the model does
    not allow (:func:`oracle.memory.check_expert_parallel`).
    """
    if isinstance(model, str):
        model = get_model(model, key="model")
    if isinstance(gpu, str):
        gpu = get_gpu(gpu, key="gpu")
    if isinstance(framework, str):
        framework = get_framework(framework, key="framework")
    if framework is not None and framework.name == "none":
        framework = None
    check_parallel(model, tp, pp)
    check_expert_parallel(model, tp, dp, expert_parallel, expert_imbalance)
    check_dtype_on_gpu(dtype, gpu, model)
    wdt = resolve_dtype(dtype, model)
    kdt = resolve_kv_dtype(kv_dtype, dtype, model)
    for name, value in (("eff_compute", eff_compute), ("eff_memory", eff_memory)):
        if value is not None and not 0.0 < value <= 1.0:
            raise ScenarioError(f"{name} must be in (0, 1], got {value}")
    if scheduler_overhead_s is not None and scheduler_overhead_s < 0:
        raise ScenarioError(f"scheduler_overhead_s must be >= 0, got {scheduler_overhead_s}")

    wb = float(dtype_bytes(wdt))
    attn_wb = float(dtype_bytes(attention_dtype(model, wdt)))   # 16-bit under FP4 (MLP-only)
    ab = 4.0 if wdt == "fp32" else 2.0            # activations
    eb = 4.0 if wdt == "fp32" else 2.0            # embedding / LM head / router weights
    kvb = float(dtype_bytes(kdt))
    ec = gpu.eff_compute if eff_compute is None else eff_compute
    em = gpu.eff_memory if eff_memory is None else eff_memory
    eca = gpu.eff_attn_compute if gpu.eff_attn_compute is not None else gpu.eff_compute
    ema = gpu.eff_attn_memory if gpu.eff_attn_memory is not None else gpu.eff_memory
    attn_kernel_s = gpu.attn_overhead_s if gpu.attn_overhead_s is not None else gpu.kernel_overhead_s
    peak16 = gpu.peak_tflops_bf16 * (0.5 if wdt == "fp32" else 1.0) * 1e12
    bw = gpu.mem_bw_gbps * 1e9

    h, d, L = float(model.hidden_size), float(model.head_dim), float(model.num_layers)
    q_heads = model.num_heads / tp
    kv_heads = float(kv_heads_per_gpu(model, tp))
    qkv_n = d * (q_heads + 2.0 * kv_heads)
    out_k = q_heads * d
    up_mats = model.mlp_matrices - 1              # gate + up (2) or up (1)

    p = dict.fromkeys(PARAM_NAMES, 0.0)
    p["num_layers"] = L
    p["linear_s_per_flop"] = 1.0 / (_weight_peak_tflops(gpu, attention_dtype(model, wdt)) * 1e12 * ec)
    p["mlp_s_per_flop"] = 1.0 / (_weight_peak_tflops(gpu, wdt) * 1e12 * ec)
    p["mem_s_per_byte"] = 1.0 / (bw * em)
    p["overlap"] = gpu.roofline_overlap
    p["kernel_s"] = gpu.kernel_overhead_s
    p["attn_s_per_flop"] = 1.0 / (peak16 * eca)
    p["attn_s_per_byte"] = 1.0 / (bw * ema)
    p["attn_kernel_s"] = attn_kernel_s
    p["lm_s_per_flop"] = 1.0 / (peak16 * ec)
    if model.is_mla:
        rot, kv_write = _set_mla(p, model, tp, attn_wb, ab)
    else:
        _set_gemm(p, "qkv", h, qkv_n, attn_wb, ab)
        _set_gemm(p, "out", out_k, h, attn_wb, ab)
        p["q_dim"] = p["prefill_q_dim"] = q_heads * d
        p["qo_bytes_per_token"] = 2.0 * q_heads * d * ab
        rot, kv_write = 2.0 * (q_heads + kv_heads) * d, 2.0 * kv_heads * d
    p["kv_bytes_per_token"] = float(kv_bytes_per_layer_per_gpu(model, kdt, tp=tp))
    p["mlp_layers"] = L
    if model.is_moe:
        act_elems = _set_moe(p, model, tp=tp, dp=dp, ep=expert_parallel_size(model, tp, dp, expert_parallel),
                             imbalance=expert_imbalance, wb=wb, ab=ab, eb=eb)
    else:
        f = model.intermediate_size / tp
        _set_gemm(p, "up", h, up_mats * f, wb, ab)
        _set_gemm(p, "down", f, h, wb, ab)
        act_elems = up_mats * f + f
    if model.sliding_window:
        p["window"] = float(model.sliding_window)
        p["window_layers"] = float(model.num_window_layers)
    vocab = model.vocab_size / tp
    p["lm_flops_per_emit"] = 2.0 * h * vocab
    p["lm_weight_bytes"] = h * vocab * eb
    p["lm_act_bytes_per_emit"] = (h + vocab) * ab
    p["allreduce_calls"] = 2.0 * L if tp > 1 else 0.0
    p["allreduce_bytes_per_token"] = 2.0 * (tp - 1) / tp * h * ab
    p["link_s_per_byte"] = 1.0 / (gpu.link_bw_gbps * 1e9 * gpu.eff_link)
    p["link_latency_s"] = gpu.link_latency_s
    p["pp_handoffs"] = float(pp - 1)
    p["handoff_bytes_per_token"] = 2.0 * h * ab
    # 2 RMSNorms (read+write h), residual add (2 reads + 1 write), rotary (read+write q, k),
    # activation, KV-cache write (read k, v; write them in the KV dtype)
    p["elem_bytes_per_token"] = ((4.0 * h + 3.0 * h + rot + act_elems + kv_write) * ab + kv_write * kvb)
    p["layer_overhead_s"] = gpu.layer_overhead_s
    cpu_step = gpu.step_overhead_s if framework is None or framework.cpu_step_s is None else framework.cpu_step_s
    p["step_overhead_s"] = cpu_step if scheduler_overhead_s is None else scheduler_overhead_s
    p["elem_s_per_byte"] = 1.0 / (bw * (gpu.eff_elementwise if gpu.eff_elementwise is not None else em))
    p["cudagraph_max_tokens"] = float(cudagraph_capture_max(framework, max_num_seqs))
    p["ar_msg_bytes_per_token"] = h * ab
    if framework is not None and gpu.link_kind in ("nvlink", "xgmi") and tp > 1:
        p["ar_custom_max_bytes"] = float(framework.custom_allreduce_max_bytes)
    p["ar_custom_latency_s"] = gpu.custom_ar_latency_s
    p["ar_oneshot_max_bytes"] = _oneshot_max_bytes(tp)
    p["ar_oneshot_bytes_per_token"] = (tp - 1) * h * ab
    if framework is not None:
        p["cpu_seq_s"] = framework.cpu_seq_s
        p["cpu_overlap"] = 1.0 if framework.async_scheduling else 0.0
    params = np.ascontiguousarray([p[n] for n in PARAM_NAMES], dtype=np.float64)
    assert params.shape == (NUM_PARAMS,)
    return params


def _set_mla(p: dict[str, float], model: ModelSpec, tp: int, wb: float, ab: float) -> tuple[float, float]:
    """MLA (vLLM ``DeepseekV2MLAAttention`` / ``MLACommonImpl``): ``qkv_proj`` is every projection
    but the output one (``q_a``, ``q_b``, ``kv_a``, ``kv_b``: 2 FLOPs a weight a token; in decode
    ``kv_b`` is absorbed into the query and output, the same FLOPs); attention FLOPs per
    query×key pair and head: decode (absorbed, over the latent cache) ``2·(2r + rope)``,
    prefill (keys and values decompressed) ``2·(nope + rope + v)``. Returns the rotary and
    KV-write element counts of the elementwise op (rope dims of the queries and the latent key;
    the latent vector written)."""
    proj = model.mla_params(tp)
    q_heads = model.num_heads / tp
    r, rope = float(model.kv_lora_rank), float(model.qk_rope_head_dim)
    qk = float(model.qk_nope_head_dim) + rope
    n_in = sum(v for k, v in proj.items() if k != "o")
    p["qkv_flops_per_token"] = 2.0 * n_in
    p["qkv_weight_bytes"] = n_in * wb
    p["qkv_act_bytes_per_token"] = (model.hidden_size + q_heads * qk + r + rope) * ab
    _set_gemm(p, "out", q_heads * model.v_head_dim, model.hidden_size, wb, ab)
    p["q_dim"] = q_heads * (2.0 * r + rope) / 2.0
    p["prefill_q_dim"] = q_heads * (qk + model.v_head_dim) / 2.0
    p["qo_bytes_per_token"] = q_heads * (qk + model.v_head_dim) * ab
    return 2.0 * (q_heads + 1.0) * rope, r + rope


def _set_moe(p: dict[str, float], model: ModelSpec, *, tp: int, dp: int, ep: int, imbalance: float, wb: float,
             ab: float, eb: float) -> float:
    """The MoE layers' MLP (and an MoE model's dense layers); returns the activation elements per
    token (elementwise op).

    Each token runs the router (``h × E``, replicated), its ``k`` experts and the shared
    expert(s) (width ``f_s``, split ``tp`` ways, folded into the same GEMM roofline). Without
    expert parallelism every GPU runs ``1/tp`` of each expert: ``k`` expert-token pairs a
    token, weights of ``E·(1 − (1 − k/E)^T)`` distinct experts. With it (EP size ``ep = tp·dp``)
    a GPU runs ``E/ep`` whole experts on the tokens of all ``dp`` ranks routed to them: the
    busiest GPU gets ``imbalance · dp · k / ep`` pairs per local token and reads the weights of
    ``E/ep · (1 − (1 − k/E)^(dp·T))`` experts; each MoE layer adds a dispatch and a combine
    all-to-all of ``imbalance · k · h · act_bytes · (ep − 1)/ep`` bytes per token over the
    link, the DP rank's tokens split over its ``tp`` GPUs.
    """
    h = float(model.hidden_size)
    E, k = float(model.num_experts), float(model.num_active_experts)
    up_mats = model.mlp_matrices - 1
    if ep > 1:
        fe = float(model.expert_intermediate_size)
        pairs = imbalance * dp * k / ep
        p["num_experts"] = E / ep
        p["log1m_active_frac"] = -math.inf if k >= E else dp * math.log1p(-k / E)
        p["a2a_calls"] = 2.0 * model.num_moe_layers
        p["a2a_bytes_per_token"] = imbalance * k * h * ab * (ep - 1) / ep / tp
    else:
        fe = model.expert_intermediate_size / tp
        pairs = k
        p["num_experts"] = E
        p["log1m_active_frac"] = -math.inf if k >= E else math.log1p(-k / E)
    fs = model.shared_expert_intermediate_size / tp
    up_n, up_s = up_mats * fe, up_mats * fs
    p["up_flops_per_token"] = 2.0 * h * E + pairs * 2.0 * h * up_n + 2.0 * h * up_s
    p["up_weight_bytes"] = h * E * eb + h * up_s * wb
    p["up_expert_bytes"] = h * up_n * wb
    p["up_act_bytes_per_token"] = (h + pairs * (h + up_n) + (h + up_s if fs else 0.0)) * ab
    p["down_flops_per_token"] = pairs * 2.0 * fe * h + 2.0 * fs * h
    p["down_weight_bytes"] = fs * h * wb
    p["down_expert_bytes"] = fe * h * wb
    p["down_act_bytes_per_token"] = (pairs * (fe + h) + (fs + h if fs else 0.0)) * ab
    act_elems = pairs * (up_n + fe) + up_s + fs    # activation: read gate+up, write f
    if model.num_dense_layers:
        f = model.intermediate_size / tp
        _set_gemm(p, "dense_up", h, up_mats * f, wb, ab)
        _set_gemm(p, "dense_down", f, h, wb, ab)
        p["mlp_layers"] = float(model.num_moe_layers)
        p["dense_layers"] = float(model.num_dense_layers)
        dense_elems = up_mats * f + f
        act_elems = (model.num_moe_layers * act_elems + model.num_dense_layers * dense_elems) / model.num_layers
    return act_elems


def _set_gemm(p: dict[str, float], prefix: str, k: float, n: float, wb: float, ab: float) -> None:
    """A dense ``[T × k] @ [k × n]`` GEMM: 2kn FLOPs and (k + n) activations per token, kn weights."""
    p[f"{prefix}_flops_per_token"] = 2.0 * k * n
    p[f"{prefix}_weight_bytes"] = k * n * wb
    p[f"{prefix}_act_bytes_per_token"] = (k + n) * ab


def params_to_dict(params: np.ndarray) -> dict[str, float]:
    """``{PARAM_NAMES[i]: params[i]}`` (for debugging and reports)."""
    return {n: float(v) for n, v in zip(PARAM_NAMES, params)}


def step_aggregates(*, prefill_chunks: list[tuple[int, int]] = (), decode_contexts: list[int] = (),
                    prefill_emits: bool = True) -> tuple[int, int, int, int, float, int]:
    """Kernel aggregates ``(T, E, D, Sd, U, Sp)`` for an explicit batch.

    Parameters
    ----------
    prefill_chunks: ``(c, p)`` pairs: a chunk of ``c`` tokens after ``p`` computed/cached ones.
    decode_contexts: per decode sequence, the tokens already in its KV cache (>= 1); the new
        token makes its context ``ctx = n + 1``.
    prefill_emits: whether each chunk is the prompt's last (so it emits the first token).
    """
    t = e = dec = sd = sp = 0
    u = 0.0
    for c, p in prefill_chunks:
        if c < 1 or p < 0:
            raise ScenarioError(f"a prefill chunk needs >= 1 token and >= 0 context, got ({c}, {p})")
        t += c
        u += c * (p + (c + 1) / 2)
        sp += p
        e += 1 if prefill_emits else 0
    for n in decode_contexts:
        if n < 1:
            raise ScenarioError(f"a decode sequence needs >= 1 token of context, got {n}")
        t += 1
        e += 1
        dec += 1
        sd += n + 1
    return t, e, dec, sd, u, sp


def op_times(params: np.ndarray, aggregates: tuple) -> dict[str, dict[str, float]]:
    """Per-op ``{"s", "flops", "bytes"}`` for one step's aggregates ``(T, E, D, Sd, U, Sp)``."""
    out_s, out_f, out_b = (np.zeros(NUM_OPS) for _ in range(3))
    t, e, dec, sd, u, sp = aggregates
    step_work(params, float(t), float(e), float(dec), float(sd), float(u), float(sp), out_s, out_f, out_b)
    return {name: {"s": float(out_s[i]), "flops": float(out_f[i]), "bytes": float(out_b[i])}
            for i, name in enumerate(OP_NAMES)}


def padded_tokens(params: np.ndarray, num_tokens: int) -> int:
    """Tokens the GEMMs of a ``num_tokens`` step run on (the CUDA-graph capture size, or itself)."""
    cap = params[PARAM_NAMES.index("cudagraph_max_tokens")]
    t = int(num_tokens)
    if t <= 0 or t > cap:
        return t
    if t <= 4:
        return 1 if t <= 1 else (2 if t <= 2 else 4)
    return -(-t // 8) * 8 if t < 256 else -(-t // 16) * 16


def step_time(params: np.ndarray, aggregates: tuple) -> float:
    """:func:`oracle.kernels.cost.step_time_s` called from Python, seconds."""
    t, e, dec, sd, u, sp = aggregates
    return float(step_time_s(params, float(t), float(e), float(dec), float(sd), float(u), float(sp)))


def _fmt_s(v: float) -> str:
    return f"{v * 1e6:.3g} us" if v < 1e-3 else f"{v * 1e3:.3g} ms"


def op_sources(gpu: GpuSpec, framework: FrameworkSpec | None = None, *, tp: int = 1, pp: int = 1,
               params: np.ndarray | None = None) -> dict[str, str]:
    """Per op of :data:`OP_NAMES`: its factors with their values and where they come from, as
    short tags: ``[gpu]`` the GPU's op-level calibration note, ``[e2e]`` its end-to-end fit note,
    ``[fw]`` the framework's note (the texts: :func:`source_notes`)."""
    e2e_keys = gpu.e2e_calibration_note.split(":", 1)[0] if gpu.e2e_calibration_note else ""

    def tag(key: str) -> str:
        return "[e2e]" if key in e2e_keys else "[gpu]"
    gemm = (f"roofline: eff_compute {gpu.eff_compute:.4g}, eff_memory {gpu.eff_memory:.4g}, overlap "
            f"{gpu.roofline_overlap:.3g}, {_fmt_s(gpu.kernel_overhead_s)}/kernel [gpu]")
    ema = gpu.eff_attn_memory if gpu.eff_attn_memory is not None else gpu.eff_memory
    eca = gpu.eff_attn_compute if gpu.eff_attn_compute is not None else gpu.eff_compute
    ako = gpu.attn_overhead_s if gpu.attn_overhead_s is not None else gpu.kernel_overhead_s
    attn = (f"KV reads at eff_attn_memory {ema:.4g} {tag('eff_attn_memory')}, FLOPs at eff_attn_compute "
            f"{eca:.4g}, {_fmt_s(ako)}/kernel [gpu]")
    out = {op: gemm for op in ("qkv_proj", "attn_out_proj", "mlp_gate_up", "mlp_down")}
    out["attention_prefill"] = out["attention_decode"] = attn
    out["lm_head"] = gemm.replace("roofline:", "roofline at the 16-bit peak:")
    link = f"{gpu.link_bw_gbps:g} GB/s {gpu.link_kind} x eff_link {gpu.eff_link:.4g}"
    nccl = f"NCCL ring: {_fmt_s(gpu.link_latency_s)} + 2(tp-1)/tp x msg / ({link}) [gpu]"
    if tp <= 1:
        out["allreduce"] = "none (tp = 1)"
    elif params is not None and params[PARAM_NAMES.index("ar_custom_max_bytes")] > 0:
        out["allreduce"] = (f"{framework.name} custom all-reduce, msg <= {framework.custom_allreduce_max_bytes / 2**20:g}"
                            f" MiB: {_fmt_s(gpu.custom_ar_latency_s)} {tag('custom_ar_latency_s')} + (tp-1) x msg "
                            f"(one-shot) or 2(tp-1)/tp x msg (two-shot) / ({link}) [fw]; larger: {nccl}")
    else:
        out["allreduce"] = nccl
    out["overhead"] = f"{_fmt_s(gpu.layer_overhead_s)}/layer, small kernels {tag('layer_overhead_s')}"
    out["pp_handoff"] = ("none (pp = 1)" if pp <= 1 else
                         f"hidden + residual: {_fmt_s(gpu.link_latency_s)} + bytes / ({link}) [gpu]")
    elem = gpu.eff_elementwise if gpu.eff_elementwise is not None else gpu.eff_memory
    out["elementwise"] = f"norms, rotary, activation, residual, KV write at eff_elementwise {elem:.4g} [gpu]"
    a2a = 0.0 if params is None else params[PARAM_NAMES.index("a2a_calls")]
    out["moe_all_to_all"] = ("none (no expert parallelism)" if not a2a else
                             f"{a2a:g} all-to-alls (dispatch + combine per MoE layer): {_fmt_s(gpu.link_latency_s)} + "
                             f"bytes / ({link}) [gpu]")
    if framework is None:
        out["cpu"] = f"step_overhead_s {_fmt_s(gpu.step_overhead_s)}/step, added (no framework) [gpu]"
    else:
        step = gpu.step_overhead_s if framework.cpu_step_s is None else framework.cpu_step_s
        out["cpu"] = (f"{_fmt_s(step)}/step + {_fmt_s(framework.cpu_seq_s)}/sequence, "
                      + ("under the GPU time (async scheduling): only the excess shows" if framework.async_scheduling
                         else "added to the GPU time") + " [fw]")
    cap = 0 if params is None else int(params[PARAM_NAMES.index("cudagraph_max_tokens")])
    if cap > 0:
        for op in ("qkv_proj", "attn_out_proj", "mlp_gate_up", "mlp_down", "elementwise", "allreduce"):
            out[op] += f"; on the CUDA-graph size for <= {cap} tokens [fw]"
    return out


def source_notes(gpu: GpuSpec, framework: FrameworkSpec | None = None) -> dict[str, str]:
    """The texts behind :func:`op_sources`' tags: ``{"gpu", "e2e", "fw"}`` (only those that apply)."""
    out = {"gpu": f"{gpu.name}: {gpu.calibration_note or gpu.source}"}
    if gpu.e2e_calibration_note:
        out["e2e"] = f"{gpu.name}: {gpu.e2e_calibration_note}"
    if framework is not None:
        out["fw"] = f"{framework.name}: {framework.source}; {framework.calibration_note}".rstrip("; ")
    return out


def step_cost(model: ModelSpec, gpu: GpuSpec, *, tp: int = 1, pp: int = 1, dtype: str = "bf16",
              kv_dtype: str | None = None, prefill_tokens: int = 0, prefill_context: int = 0,
              decode_batch: int = 0, decode_context: int = 1024, prefill_emits: bool = True,
              scheduler_overhead_s: float | None = None, eff_compute: float | None = None,
              eff_memory: float | None = None, framework: FrameworkSpec | str | None = None,
              max_num_seqs: int | None = None, dp: int = 1, expert_parallel: bool = False,
              expert_imbalance: float = 1.0) -> dict[str, Any]:
    """Price one step: an optional prefill chunk plus a batch of equal-context decodes.

    Parameters
    ----------
    prefill_tokens: tokens of the prefill chunk (0: none).
    prefill_context: tokens of that prompt already computed or cached before the chunk.
    decode_batch: decode sequences in the step (1 new token each).
    decode_context: tokens already in each decode sequence's KV cache (>= 1 when
        ``decode_batch > 0``; default 1024); attention reads ``decode_context + 1`` keys.
    prefill_emits: the chunk completes its prompt and emits the first token (LM head).
    Other parameters as for :func:`build_cost_params`.

    Returns
    -------
    ``{"total_ms", "flops", "bytes", "link_bytes", "ops": {"<op>_ms": ...}, "sources": {"<op>": ...},
    "request": {...}, "aggregates": {...}, "config": {...}}``: times in ms on one GPU of the TP
    group summed over pipeline stages and layers; ``flops`` and ``bytes`` (DRAM) per GPU;
    ``link_bytes`` sent per GPU; ``sources``: each op's factors and where they come from
    (tags ``[gpu]``, ``[e2e]``, ``[fw]``, whose texts are in ``notes``); ``request``: the
    framework's per-request time outside the steps (``api_server_ms``).
    """
    for name, value in (("prefill_tokens", prefill_tokens), ("prefill_context", prefill_context),
                        ("decode_batch", decode_batch), ("decode_context", decode_context)):
        if value < 0:
            raise ScenarioError(f"must be >= 0, got {value}", key=name)
    if decode_batch and decode_context < 1:
        raise ScenarioError("must be >= 1 when decode_batch > 0 (a decode follows >= 1 computed token)",
                            key="decode_context")
    if isinstance(framework, str):
        framework = get_framework(framework, key="framework")
    if framework is not None and framework.name == "none":
        framework = None
    params = build_cost_params(model, gpu, tp=tp, pp=pp, dtype=dtype, kv_dtype=kv_dtype,
                               scheduler_overhead_s=scheduler_overhead_s, eff_compute=eff_compute,
                               eff_memory=eff_memory, framework=framework, max_num_seqs=max_num_seqs,
                               dp=dp, expert_parallel=expert_parallel, expert_imbalance=expert_imbalance)
    chunks = [(prefill_tokens, prefill_context)] if prefill_tokens else []
    aggs = step_aggregates(prefill_chunks=chunks, decode_contexts=[decode_context] * decode_batch,
                           prefill_emits=prefill_emits)
    ops = op_times(params, aggs)
    total_s = step_time(params, aggs)
    sources = op_sources(gpu, framework, tp=tp, pp=pp, params=params)
    ep = expert_parallel_size(model, tp, dp, expert_parallel)
    if model.is_moe and aggs[0] > 0:
        e, k = model.num_experts, model.num_active_experts
        touched = e / ep * (1.0 - (1.0 - k / e) ** (aggs[0] * (dp if ep > 1 else 1)))
        tokens = f"T = {aggs[0]}" if ep == 1 else f"T = dp x {aggs[0]}"
        for op in ("mlp_gate_up", "mlp_down"):
            sources[op] += (f"; weights of {touched:.2f} of {e // ep} experts on this GPU: E/ep(1-(1-k/E)^T), k = {k}, "
                            f"{tokens}, EP size {ep}")
    sources.update({op: f"{sources[op]}; {note}" for op, note in architecture_notes(
        model, resolve_dtype(dtype, model), gpu, ep=ep, expert_imbalance=expert_imbalance).items()})
    return {
        "total_ms": total_s * 1e3,
        "flops": sum(v["flops"] for v in ops.values()),
        "bytes": sum(v["bytes"] for k, v in ops.items() if k not in _LINK_OPS),
        "link_bytes": sum(ops[k]["bytes"] for k in _LINK_OPS),
        "ops": {f"{k}_ms": v["s"] * 1e3 for k, v in ops.items()},
        "sources": sources,
        "notes": source_notes(gpu, framework),
        "request": {"api_server_ms": (framework.api_server_s if framework is not None else 0.0) * 1e3,
                    "source": ("api_server_s: HTTP, tokenization, hand-over to the engine, streaming of the first "
                               "token; added to TTFT and E2E, not to the steps [fw]" if framework is not None
                               else "no framework")},
        "aggregates": dict(zip(("num_tokens", "num_emit", "num_decode", "decode_ctx_sum",
                                "prefill_attn_units", "prefill_ctx_sum"), aggs)),
        "config": {"model": model.name, "gpu": gpu.name, "tp": tp, "pp": pp,
                   "dtype": resolve_dtype(dtype, model), "kv_dtype": resolve_kv_dtype(kv_dtype, dtype, model),
                   "dp": dp, "ep": ep, "expert_imbalance": expert_imbalance,
                   "framework": framework.name if framework is not None else "none",
                   "cudagraph_max_tokens": int(params[PARAM_NAMES.index("cudagraph_max_tokens")]),
                   "padded_tokens": padded_tokens(params, aggs[0])},
    }


def architecture_notes(model: ModelSpec, dtype: str, gpu: GpuSpec, *, ep: int = 1,
                       expert_imbalance: float = 1.0) -> dict[str, str]:
    """Per op, what the model's architecture and precision change in its formula (appended to
    :func:`op_sources` by :func:`step_cost`); empty for a plain dense 16-bit model."""
    out: dict[str, str] = {}

    def add(op: str, note: str) -> None:
        out[op] = f"{out[op]}; {note}" if op in out else note
    if model.is_mla:
        r, rope = model.kv_lora_rank, model.qk_rope_head_dim
        add("qkv_proj", f"MLA projections q_a/q_b/kv_a/kv_b (q_lora {model.q_lora_rank}, kv_lora {r})")
        add("attention_decode", f"MLA absorbed: 2(2r + rope) = {2 * (2 * r + rope)} FLOPs per head and key, "
                                f"reads the {r + rope}-value latent KV per token per layer")
        add("attention_prefill", f"MLA unabsorbed: 2(nope + rope + v) = "
                                 f"{2 * (model.qk_nope_head_dim + rope + model.v_head_dim)} FLOPs per head and key")
    if model.sliding_window:
        note = (f"{model.num_window_layers} of {model.num_layers} layers windowed (W = {model.sliding_window}): "
                "keys min(ctx, W)")
        add("attention_prefill", note + " (pairs min(U, tq W), KV read min(Sp, W) + tq)")
        add("attention_decode", note + " (keys min(Sd, D W))")
    if model.is_moe and (model.shared_expert_intermediate_size or model.num_dense_layers):
        parts = []
        if model.shared_expert_intermediate_size:
            parts.append(f"shared expert(s) of width {model.shared_expert_intermediate_size} in every MoE layer")
        if model.num_dense_layers:
            parts.append(f"{model.num_dense_layers} dense layers of width {model.intermediate_size}")
        for op in ("mlp_gate_up", "mlp_down"):
            add(op, ", ".join(parts))
    if ep > 1:
        add("moe_all_to_all", f"EP size {ep}, expert imbalance {expert_imbalance:g}")
    if dtype in FP4_DTYPES:
        peak = (f"FP4 peak {gpu.peak_tflops_fp4:g} TF/s" if gpu.has_fp4 else
                f"weight-only (no FP4 tensor cores): 16-bit peak {gpu.peak_tflops_bf16:g} TF/s")
        for op in ("mlp_gate_up", "mlp_down"):
            add(op, f"{dtype} weights ({dtype_bytes(dtype) * 8:g} bits with scales), {peak}")
        for op in ("qkv_proj", "attn_out_proj"):
            add(op, "16-bit weights (FP4 quantizes the MLP / experts only)")
    return out
