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
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from oracle.catalog import GpuSpec, ModelSpec, get_gpu, get_model
from oracle.errors import ScenarioError
from oracle.kernels.cost import NUM_OPS, NUM_PARAMS, OP_NAMES, PARAM_NAMES, step_time_s, step_work
from oracle.memory import (check_parallel, dtype_bytes, kv_heads_per_gpu, resolve_dtype,
                           resolve_kv_dtype)

__all__ = ["OP_NAMES", "PARAM_NAMES", "build_cost_params", "params_to_dict", "step_aggregates",
           "step_cost", "op_times", "step_time"]

#: ops whose ``bytes`` are link traffic, not DRAM traffic
_LINK_OPS = ("allreduce", "pp_handoff")


def _weight_peak_tflops(gpu: GpuSpec, dtype: str) -> float:
    if dtype == "fp8":
        return gpu.peak_tflops_fp8 if gpu.has_fp8 else gpu.peak_tflops_bf16
    if dtype == "fp32":
        return gpu.peak_tflops_bf16 / 2.0
    return gpu.peak_tflops_bf16


def build_cost_params(model: ModelSpec | str, gpu: GpuSpec | str, *, tp: int = 1, pp: int = 1, dtype: str = "bf16",
                      kv_dtype: str | None = None, scheduler_overhead_s: float | None = None,
                      eff_compute: float | None = None, eff_memory: float | None = None) -> np.ndarray:
    """The kernel parameter vector for one replica configuration.

    Parameters
    ----------
    model, gpu: catalog entries (or inline ones from a scenario), or catalog names.
    tp, pp: tensor- and pipeline-parallel sizes.
    dtype: weight dtype, ``"auto" | "bf16" | "fp16" | "fp8" | "fp32"``.
    kv_dtype: KV-cache dtype (None/``"auto"``: see :func:`oracle.memory.resolve_kv_dtype`).
    scheduler_overhead_s: per-step CPU time, s (None: ``gpu.step_overhead_s``).
    eff_compute, eff_memory: overrides of the GPU's efficiencies in (0, 1] for GEMMs and the LM
        head (attention and the small element-wise kernels keep their own factors).

    Returns
    -------
    float64 array, C-contiguous, shape ``(len(PARAM_NAMES),)``, layout :data:`PARAM_NAMES`.

    Raises ScenarioError (no key) for a ``tp``/``pp`` the model cannot be sharded with or an
    unknown dtype.
    """
    if isinstance(model, str):
        model = get_model(model, key="model")
    if isinstance(gpu, str):
        gpu = get_gpu(gpu, key="gpu")
    check_parallel(model, tp, pp)
    wdt = resolve_dtype(dtype, model)
    kdt = resolve_kv_dtype(kv_dtype, dtype, model)
    for name, value in (("eff_compute", eff_compute), ("eff_memory", eff_memory)):
        if value is not None and not 0.0 < value <= 1.0:
            raise ScenarioError(f"{name} must be in (0, 1], got {value}")
    if scheduler_overhead_s is not None and scheduler_overhead_s < 0:
        raise ScenarioError(f"scheduler_overhead_s must be >= 0, got {scheduler_overhead_s}")

    wb = float(dtype_bytes(wdt))
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
    p["linear_s_per_flop"] = 1.0 / (_weight_peak_tflops(gpu, wdt) * 1e12 * ec)
    p["mem_s_per_byte"] = 1.0 / (bw * em)
    p["overlap"] = gpu.roofline_overlap
    p["kernel_s"] = gpu.kernel_overhead_s
    p["attn_s_per_flop"] = 1.0 / (peak16 * eca)
    p["attn_s_per_byte"] = 1.0 / (bw * ema)
    p["attn_kernel_s"] = attn_kernel_s
    p["lm_s_per_flop"] = 1.0 / (peak16 * ec)
    _set_gemm(p, "qkv", h, qkv_n, wb, ab)
    _set_gemm(p, "out", out_k, h, wb, ab)
    if model.is_moe:
        E, k = float(model.num_experts), float(model.num_active_experts)
        fe = model.expert_intermediate_size / tp
        up_n = up_mats * fe
        p["up_flops_per_token"] = 2.0 * h * E + k * 2.0 * h * up_n
        p["up_weight_bytes"] = h * E * eb
        p["up_expert_bytes"] = h * up_n * wb
        p["up_act_bytes_per_token"] = (h + k * (h + up_n)) * ab
        p["down_flops_per_token"] = k * 2.0 * fe * h
        p["down_expert_bytes"] = fe * h * wb
        p["down_act_bytes_per_token"] = k * (fe + h) * ab
        p["num_experts"] = E
        p["log1m_active_frac"] = -math.inf if k >= E else math.log1p(-k / E)
        act_elems = k * (up_n + fe)                # activation: read gate+up, write f
    else:
        f = model.intermediate_size / tp
        _set_gemm(p, "up", h, up_mats * f, wb, ab)
        _set_gemm(p, "down", f, h, wb, ab)
        act_elems = up_mats * f + f
    p["q_dim"] = q_heads * d
    p["kv_bytes_per_token"] = 2.0 * kv_heads * d * kvb
    p["qo_bytes_per_token"] = 2.0 * q_heads * d * ab
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
    p["elem_bytes_per_token"] = ((4.0 * h + 3.0 * h + 2.0 * (q_heads + kv_heads) * d + act_elems
                                  + 2.0 * kv_heads * d) * ab + 2.0 * kv_heads * d * kvb)
    p["layer_overhead_s"] = gpu.layer_overhead_s
    p["step_overhead_s"] = gpu.step_overhead_s if scheduler_overhead_s is None else scheduler_overhead_s
    p["elem_s_per_byte"] = 1.0 / (bw * (gpu.eff_elementwise if gpu.eff_elementwise is not None else em))
    params = np.ascontiguousarray([p[n] for n in PARAM_NAMES], dtype=np.float64)
    assert params.shape == (NUM_PARAMS,)
    return params


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


def step_time(params: np.ndarray, aggregates: tuple) -> float:
    """:func:`oracle.kernels.cost.step_time_s` called from Python, seconds."""
    t, e, dec, sd, u, sp = aggregates
    return float(step_time_s(params, float(t), float(e), float(dec), float(sd), float(u), float(sp)))


def step_cost(model: ModelSpec, gpu: GpuSpec, *, tp: int = 1, pp: int = 1, dtype: str = "bf16",
              kv_dtype: str | None = None, prefill_tokens: int = 0, prefill_context: int = 0,
              decode_batch: int = 0, decode_context: int = 1024, prefill_emits: bool = True,
              scheduler_overhead_s: float | None = None, eff_compute: float | None = None,
              eff_memory: float | None = None) -> dict[str, Any]:
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
    ``{"total_ms", "flops", "bytes", "link_bytes", "ops": {"<op>_ms": ...}, "aggregates": {...},
    "config": {...}}``: times in ms on one GPU of the TP group summed over pipeline stages and
    layers; ``flops`` and ``bytes`` (DRAM) per GPU; ``link_bytes`` sent per GPU.
    """
    for name, value in (("prefill_tokens", prefill_tokens), ("prefill_context", prefill_context),
                        ("decode_batch", decode_batch), ("decode_context", decode_context)):
        if value < 0:
            raise ScenarioError(f"must be >= 0, got {value}", key=name)
    if decode_batch and decode_context < 1:
        raise ScenarioError("must be >= 1 when decode_batch > 0 (a decode follows >= 1 computed token)",
                            key="decode_context")
    params = build_cost_params(model, gpu, tp=tp, pp=pp, dtype=dtype, kv_dtype=kv_dtype,
                               scheduler_overhead_s=scheduler_overhead_s, eff_compute=eff_compute,
                               eff_memory=eff_memory)
    chunks = [(prefill_tokens, prefill_context)] if prefill_tokens else []
    aggs = step_aggregates(prefill_chunks=chunks, decode_contexts=[decode_context] * decode_batch,
                           prefill_emits=prefill_emits)
    ops = op_times(params, aggs)
    total_s = step_time(params, aggs)
    return {
        "total_ms": total_s * 1e3,
        "flops": sum(v["flops"] for v in ops.values()),
        "bytes": sum(v["bytes"] for k, v in ops.items() if k not in _LINK_OPS),
        "link_bytes": sum(ops[k]["bytes"] for k in _LINK_OPS),
        "ops": {f"{k}_ms": v["s"] * 1e3 for k, v in ops.items()},
        "aggregates": dict(zip(("num_tokens", "num_emit", "num_decode", "decode_ctx_sum",
                                "prefill_attn_units", "prefill_ctx_sum"), aggs)),
        "config": {"model": model.name, "gpu": gpu.name, "tp": tp, "pp": pp,
                   "dtype": resolve_dtype(dtype, model), "kv_dtype": resolve_kv_dtype(kv_dtype, dtype, model)},
    }
