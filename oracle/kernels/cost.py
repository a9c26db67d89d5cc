"""Roofline step-time kernels (DESIGN §5): one forward pass of one replica, from per-step aggregates.

The engine calls :func:`step_time_s` once per simulated step inside its own compiled loop, so
it is scalar-only (no allocation, no loops). ``oracle.cost.build_cost_params`` precomputes
everything that does not depend on the batch into a float64 vector ``params`` (layout:
:data:`PARAM_NAMES`); the kernels only combine it with the step's aggregates. Rates are stored as reciprocals
(seconds per FLOP or byte) so that a step costs multiplications, not divisions (~60 ns).

Step aggregates (all ``float``-convertible, counts are tokens or sequences)::

    num_tokens          T   tokens scheduled this step (decode tokens + prefill chunk tokens)
    num_emit            E   sequences that emit a token this step (the LM head runs for these)
    num_decode          D   decode sequences (exactly 1 new token after >= 1 computed token)
    decode_ctx_sum      Sd  Σ_decode ctx, ctx = context length including the new token
    prefill_attn_units  U   Σ_chunks c·(p + (c+1)/2)   (causal query×key pairs of the chunks)
    prefill_ctx_sum     Sp  Σ_chunks p                 (prefix tokens read from the KV cache)

    chunk of c tokens after p computed/cached tokens:

        |<------- p (cached, read) ------->|<--- c (computed now) --->|
        query i of the chunk attends to p + i + 1 keys  ->  Σ_i = c·(p + (c+1)/2)

Times are seconds on one GPU of the TP group, summed over the ``pp`` pipeline stages run in
sequence (no micro-batch overlap). Each op is a roofline::

    t(flops, bytes) = max(c, m) + overlap · min(c, m),  c = flops / flop_rate,  m = bytes / byte_rate

(``overlap = 0`` is the pure roofline ``max``; the calibrated value accounts for compute and
memory traffic that small GEMMs fail to overlap), plus fixed kernel times.

Framework terms (zero / off unless ``build_cost_params`` is given a serving framework):

* CUDA graphs: a step of ``T <= cudagraph_max_tokens`` tokens runs a captured graph padded to
  the next capture size (vLLM: 1, 2, 4, then multiples of 8 below 256, of 16 from 256), so the
  token-parallel ops (GEMMs, small ops, all-reduce) see the padded count ``Tp``::

      Tp = 1, 2, 4 (T <= 4);  8·ceil(T/8) (T < 256);  16·ceil(T/16) (T >= 256);  T if T > cap

* tensor-parallel all-reduce, per call, message ``m = Tp·h·act_bytes``::

      custom (m <= custom_max):  lat_custom + bytes / link_rate,
          bytes = (tp-1)·m one-shot (m < oneshot_max), 2(tp-1)/tp·m two-shot
      NCCL ring (otherwise):     lat_nccl + 2(tp-1)/tp·m / link_rate

* CPU time of a step ``cpu = step_overhead_s + cpu_seq_s·E`` (scheduling, input preparation,
  output processing); with async scheduling (``cpu_overlap = 1``) it runs while the GPU runs
  the step and only the excess shows: ``step = max(gpu, cpu)``; otherwise ``gpu + cpu``.
"""

from __future__ import annotations

import math

import numpy as np

from oracle.kernels._jit import jit, kernel

#: Layout of the ``params`` vector (float64, C-contiguous, shape ``(NUM_PARAMS,)``).
#: Per-layer quantities are for one GPU of the TP group (heads, widths, vocab divided by tp).
PARAM_NAMES = (
    "num_layers",               # 0  L, layers over all pipeline stages
    "linear_s_per_flop",        # 1  1 / (peak (weight dtype) × eff_compute), s/FLOP
    "mem_s_per_byte",           # 2  1 / (DRAM bandwidth × eff_memory), s/byte
    "overlap",                  # 3  roofline overlap factor in [0, 1]
    "kernel_s",                 # 4  fixed time of one GEMM kernel, s
    "attn_s_per_flop",          # 5  1 / (16-bit peak × eff_attn_compute), s/FLOP
    "attn_s_per_byte",          # 6  1 / (DRAM bandwidth × eff_attn_memory), s/byte
    "attn_kernel_s",            # 7  fixed time of one attention kernel, s
    "lm_s_per_flop",            # 8  1 / (16-bit peak × eff_compute) (the LM head is never FP8), s/FLOP
    "qkv_flops_per_token",      # 9  per layer
    "qkv_weight_bytes",         # 10 per layer
    "qkv_expert_bytes",         # 11 per layer per distinct expert touched (0)
    "qkv_act_bytes_per_token",  # 12 per layer
    "out_flops_per_token",      # 13
    "out_weight_bytes",         # 14
    "out_expert_bytes",         # 15
    "out_act_bytes_per_token",  # 16
    "up_flops_per_token",       # 17 gate+up (MoE: router + k experts)
    "up_weight_bytes",          # 18 dense MLP weights (MoE: router weights)
    "up_expert_bytes",          # 19 one expert's gate+up weights (0 for dense)
    "up_act_bytes_per_token",   # 20
    "down_flops_per_token",     # 21
    "down_weight_bytes",        # 22
    "down_expert_bytes",        # 23
    "down_act_bytes_per_token",  # 24
    "num_experts",              # 25 E (0 for dense models)
    "log1m_active_frac",        # 26 log(1 − k/E) (0 for dense; −inf when k == E)
    "q_dim",                    # 27 query heads per GPU × head_dim
    "kv_bytes_per_token",       # 28 per layer per GPU: 2 · kv_heads_per_gpu · d · kv_bytes
    "qo_bytes_per_token",       # 29 per layer: read Q + write O, 2 · q_dim · act_bytes
    "lm_flops_per_emit",        # 30 2 · h · V/tp
    "lm_weight_bytes",          # 31 h · V/tp · bytes
    "lm_act_bytes_per_emit",    # 32 (h + V/tp) · act_bytes
    "allreduce_calls",          # 33 2·L when tp > 1, else 0
    "allreduce_bytes_per_token",  # 34 2(tp−1)/tp · h · act_bytes sent per GPU per call
    "link_s_per_byte",          # 35 1 / (link bandwidth × eff_link), s/byte
    "link_latency_s",           # 36 fixed latency of one collective / send, s
    "pp_handoffs",              # 37 pp − 1
    "handoff_bytes_per_token",  # 38 hidden state + residual, 2 · h · act_bytes
    "elem_bytes_per_token",     # 39 per layer: norms, residual add, rotary, activation, KV write
    "layer_overhead_s",         # 40 fixed time of one layer's small kernels, s
    "step_overhead_s",          # 41 per-step CPU/scheduler time, s
    "elem_s_per_byte",          # 42 1 / (DRAM bandwidth × eff_elementwise) (small kernels), s/byte
    "cudagraph_max_tokens",     # 43 steps of <= this many tokens are padded to a CUDA-graph size (0: no graphs)
    "ar_msg_bytes_per_token",   # 44 h · act_bytes: one all-reduce message, per token
    "ar_custom_max_bytes",      # 45 messages up to this size use the custom all-reduce (0: NCCL only)
    "ar_custom_latency_s",      # 46 fixed time of one custom all-reduce, s
    "ar_oneshot_max_bytes",     # 47 custom one-shot below this message size, two-shot from it
    "ar_oneshot_bytes_per_token",  # 48 (tp−1) · h · act_bytes read per GPU per token in a one-shot
    "cpu_seq_s",                # 49 CPU time per emitting sequence, s
    "cpu_overlap",              # 50 1: CPU overlaps the GPU step (async scheduling), 0: adds to it
    # -- architectures (issue 17); each is neutral for the models and settings that predate it
    "mlp_s_per_flop",           # 51 1 / (peak (MLP weight dtype) × eff_compute): FP4 MLPs; = [1] otherwise
    "mlp_layers",               # 52 layers whose MLP is [17:25] (MoE models: the MoE layers), = L otherwise
    "dense_up_flops_per_token",  # 53 an MoE model's dense layers: gate+up, as [17:21]
    "dense_up_weight_bytes",    # 54
    "dense_up_expert_bytes",    # 55 (0)
    "dense_up_act_bytes_per_token",  # 56
    "dense_down_flops_per_token",  # 57 their down projection, as [21:25]
    "dense_down_weight_bytes",  # 58
    "dense_down_expert_bytes",  # 59 (0)
    "dense_down_act_bytes_per_token",  # 60
    "dense_layers",             # 61 an MoE model's layers with a dense MLP (0: none)
    "a2a_calls",                # 62 expert-parallel all-to-alls per step: 2 (dispatch, combine) × MoE layers
    "a2a_bytes_per_token",      # 63 bytes one GPU sends per token per all-to-all
    "prefill_q_dim",            # 64 as [27] for prefill attention (MLA prefill runs unabsorbed), = [27] otherwise
    "window",                   # 65 W, keys a windowed layer attends to (0: none)
    "window_layers",            # 66 layers with the window ([0] − [66] attend to the full context)
)
NUM_PARAMS = len(PARAM_NAMES)

#: Order of the per-op outputs of :func:`step_breakdown` / :func:`step_work`.
#: ``overhead`` is the GPU's fixed per-layer time; ``cpu`` the CPU time the step waits for
#: (all of it without async scheduling, the excess over the GPU time with it).
OP_NAMES = ("qkv_proj", "attn_out_proj", "mlp_gate_up", "mlp_down", "attention_prefill",
            "attention_decode", "lm_head", "allreduce", "overhead", "pp_handoff", "elementwise",
            "moe_all_to_all", "cpu")
#: ops of the GPU side (all but ``cpu``)
NUM_GPU_OPS = len(OP_NAMES) - 1
NUM_OPS = len(OP_NAMES)


@jit(inline="always")
def _roofline(flops, nbytes, s_per_flop, s_per_byte, overlap):
    """Seconds of one op: ``max(c, m) + overlap·min(c, m)``, ``c = flops·s_per_flop``, ``m = nbytes·s_per_byte``."""
    c = flops * s_per_flop
    m = nbytes * s_per_byte
    if c >= m:
        return c + overlap * m
    return m + overlap * c


@jit(inline="always")
def _experts_touched(params, t):
    """Expected distinct experts one MoE layer reads for ``t`` tokens: E·(1 − (1 − k/E)^t); 0 if dense."""
    if params[25] == 0.0:
        return 0.0
    return params[25] * (1.0 - math.exp(t * params[26]))


@jit(inline="always")
def _padded_tokens(params, t):
    """Tokens the token-parallel ops run on: ``t`` padded to vLLM's CUDA-graph capture size
    (1, 2, 4, multiples of 8 below 256, of 16 from 256) when ``t <= params[43]``, else ``t``."""
    if t > params[43]:
        return t
    if t <= 4.0:
        return 1.0 if t <= 1.0 else (2.0 if t <= 2.0 else 4.0)
    if t < 256.0:
        return 8.0 * math.ceil(t / 8.0)
    return 16.0 * math.ceil(t / 16.0)


@jit(inline="always")
def _linear(params, base, t, touched, num_layers=-1.0, s_per_flop=-1.0):
    """One GEMM type over ``num_layers`` layers (default all) at ``s_per_flop`` (default the
    linear rate): (seconds, FLOPs, DRAM bytes); constants at params[base:base+4]."""
    if num_layers < 0.0:
        num_layers = params[0]
    if s_per_flop < 0.0:
        s_per_flop = params[1]
    flops = t * params[base]
    nbytes = params[base + 1] + touched * params[base + 2] + t * params[base + 3]
    sec = _roofline(flops, nbytes, s_per_flop, params[2], params[3]) + params[4]
    return num_layers * sec, num_layers * flops, num_layers * nbytes


@jit(inline="always")
def _mlp(params, base, dense_base, t, touched):
    """An MLP GEMM (gate+up or down) over its layers: the MoE (or dense) layers' at params[base:],
    plus an MoE model's dense layers' at params[dense_base:] when it has any."""
    s, f, b = _linear(params, base, t, touched, params[52], params[51])
    if params[61] > 0.0:
        s2, f2, b2 = _linear(params, dense_base, t, 0.0, params[61], params[51])
        s += s2
        f += f2
        b += b2
    return s, f, b


@jit(inline="always")
def _attention(params, tq, ctx_units, kv_tokens, num_layers=-1.0, q_dim=-1.0):
    """Attention over ``num_layers`` layers (default all) for ``tq`` query tokens: (seconds,
    FLOPs, DRAM bytes).

    ``ctx_units``: Σ query×key pairs; ``kv_tokens``: KV-cache tokens read; ``q_dim``: FLOPs per
    pair / 4 (default params[27]).
    """
    if num_layers < 0.0:
        num_layers = params[0]
    if q_dim < 0.0:
        q_dim = params[27]
    flops = 4.0 * q_dim * ctx_units
    nbytes = kv_tokens * params[28] + tq * params[29]
    sec = _roofline(flops, nbytes, params[5], params[6], params[3]) + params[7] * min(tq, 1.0)
    return num_layers * sec, num_layers * flops, num_layers * nbytes


@jit(inline="always")
def _attention_prefill(params, tq, units, prefix):
    """Prefill attention of ``tq`` chunk tokens (``units`` query×key pairs, ``prefix`` cached
    tokens read). Windowed layers (params[66] > 0) see at most W keys per query: pairs
    ``min(U, tq·W)``, KV read ``min(Sp, W) + tq`` (the step's chunks bounded as one)."""
    win_layers = params[66]
    if win_layers <= 0.0:
        return _attention(params, tq, units, prefix + tq, params[0], params[64])
    s, f, b = _attention(params, tq, units, prefix + tq, params[0] - win_layers, params[64])
    w = params[65]
    s2, f2, b2 = _attention(params, tq, min(units, tq * w), min(prefix, w) + tq, win_layers, params[64])
    return s + s2, f + f2, b + b2


@jit(inline="always")
def _attention_decode(params, d, keys):
    """Decode attention of ``d`` sequences reading ``keys`` keys in all. Windowed layers read
    ``min(Sd, D·W)`` (exact when every context is at least W, or none exceeds it)."""
    win_layers = params[66]
    if win_layers <= 0.0:
        return _attention(params, d, keys, keys)
    s, f, b = _attention(params, d, keys, keys, params[0] - win_layers)
    wkeys = min(keys, d * params[65])
    s2, f2, b2 = _attention(params, d, wkeys, wkeys, win_layers)
    return s + s2, f + f2, b + b2


@jit(inline="always")
def _lm_head(params, e):
    """LM head for ``e`` emitting sequences (weights read once if any): (seconds, FLOPs, bytes)."""
    any_emit = min(e, 1.0)
    flops = e * params[30]
    nbytes = any_emit * params[31] + e * params[32]
    sec = _roofline(flops, nbytes, params[8], params[2], params[3]) + any_emit * params[4]
    return sec, flops, nbytes


@jit(inline="always")
def _link(calls, t, bytes_per_token, params):
    """``calls`` NCCL transfers of ``t · bytes_per_token`` bytes: (seconds, link bytes)."""
    nbytes = t * bytes_per_token
    return calls * (nbytes * params[35] + params[36]), calls * nbytes


@jit(inline="always")
def _allreduce(params, t):
    """The step's tensor-parallel all-reduces of ``t`` tokens' hidden states: (seconds, link bytes).

    The framework's custom all-reduce (one-shot below ``params[47]`` bytes, two-shot above) up to
    ``params[45]`` bytes per message, NCCL's ring above it (module docstring)."""
    if params[33] == 0.0:
        return 0.0, 0.0
    msg = t * params[44]
    if msg <= params[45]:
        per_token = params[48] if msg < params[47] else params[34]
        nbytes = t * per_token
        return params[33] * (nbytes * params[35] + params[46]), params[33] * nbytes
    return _link(params[33], t, params[34], params)


@jit(inline="always")
def _cpu(params, e, gpu_s):
    """CPU time the step waits for: all of ``step_overhead_s + cpu_seq_s·e`` without overlap,
    its excess over the GPU time ``gpu_s`` with it."""
    cpu = params[41] + params[49] * e
    if params[50] > 0.0:
        return max(cpu - gpu_s, 0.0)
    return cpu


@jit(inline="always")
def _elementwise(params, t):
    """Norms, residual add, rotary, activation and KV-cache write over all layers: (s, bytes)."""
    nbytes = params[0] * t * params[39]
    return nbytes * params[42], nbytes


@kernel
def step_time_s(params, num_tokens, num_emit, num_decode, decode_ctx_sum, prefill_attn_units,
                prefill_ctx_sum):
    """Predicted duration of one step, seconds (float); 0.0 when ``num_tokens == 0``.

    Parameters (all in)
    -------------------
    params: float64[::1], shape (NUM_PARAMS,), from ``oracle.cost.build_cost_params``.
    num_tokens, num_emit, num_decode: counts (T, E, D), see the module docstring.
    decode_ctx_sum, prefill_attn_units, prefill_ctx_sum: token sums (Sd, U, Sp).

    Equals ``step_breakdown(...).sum()`` (same order of additions) without allocating.
    """
    t = float(num_tokens)
    if t <= 0.0:
        return 0.0
    d = float(num_decode)
    tp = _padded_tokens(params, t)
    touched = _experts_touched(params, t)
    total = _linear(params, 9, tp, touched)[0]
    total += _linear(params, 13, tp, touched)[0]
    total += _mlp(params, 17, 53, tp, touched)[0]
    total += _mlp(params, 21, 57, tp, touched)[0]
    total += _attention_prefill(params, t - d, float(prefill_attn_units), float(prefill_ctx_sum))[0]
    total += _attention_decode(params, d, float(decode_ctx_sum))[0]
    total += _lm_head(params, float(num_emit))[0]
    total += _allreduce(params, tp)[0]
    total += params[0] * params[40]
    total += _link(params[37], tp, params[38], params)[0]
    total += _elementwise(params, tp)[0]
    total += _link(params[62], tp, params[63], params)[0]
    total += _cpu(params, float(num_emit), total)
    return total


@jit
def step_work(params, num_tokens, num_emit, num_decode, decode_ctx_sum, prefill_attn_units,
              prefill_ctx_sum, out_s, out_flops, out_bytes):
    """Per-op seconds, FLOPs and bytes of one step (order: :data:`OP_NAMES`).

    Parameters
    ----------
    params (in): float64[::1], shape (NUM_PARAMS,).
    num_tokens .. prefill_ctx_sum (in): the step aggregates, as for :func:`step_time_s`.
    out_s (out): float64[::1], shape (NUM_OPS,), seconds per op, summed over layers.
    out_flops (out): float64[::1], shape (NUM_OPS,), FLOPs per op on one GPU.
    out_bytes (out): float64[::1], shape (NUM_OPS,), DRAM bytes per op on one GPU, except for
        ``allreduce``, ``pp_handoff`` and ``moe_all_to_all``, which hold bytes sent over the GPU link.

    All outputs are zero when ``num_tokens == 0``.
    """
    out_s[:] = 0.0
    out_flops[:] = 0.0
    out_bytes[:] = 0.0
    t = float(num_tokens)
    if t <= 0.0:
        return
    d = float(num_decode)
    tp = _padded_tokens(params, t)
    touched = _experts_touched(params, t)
    for i in range(2):
        out_s[i], out_flops[i], out_bytes[i] = _linear(params, 9 + 4 * i, tp, touched)
    for i in range(2, 4):
        out_s[i], out_flops[i], out_bytes[i] = _mlp(params, 9 + 4 * i, 45 + 4 * i, tp, touched)
    out_s[4], out_flops[4], out_bytes[4] = _attention_prefill(params, t - d, float(prefill_attn_units),
                                                              float(prefill_ctx_sum))
    out_s[5], out_flops[5], out_bytes[5] = _attention_decode(params, d, float(decode_ctx_sum))
    out_s[6], out_flops[6], out_bytes[6] = _lm_head(params, float(num_emit))
    out_s[7], out_bytes[7] = _allreduce(params, tp)
    out_s[8] = params[0] * params[40]
    out_s[9], out_bytes[9] = _link(params[37], tp, params[38], params)
    out_s[10], out_bytes[10] = _elementwise(params, tp)
    out_s[11], out_bytes[11] = _link(params[62], tp, params[63], params)
    gpu = 0.0
    for i in range(out_s.shape[0] - 1):   # every op but cpu, in the order step_time_s adds them
        gpu += out_s[i]
    out_s[12] = _cpu(params, float(num_emit), gpu)


@jit
def step_breakdown(params, num_tokens, num_emit, num_decode, decode_ctx_sum, prefill_attn_units,
                   prefill_ctx_sum, out_ops):
    """Per-op seconds of one step into ``out_ops`` (float64[::1], shape (NUM_OPS,), out).

    Order :data:`OP_NAMES`; ``out_ops.sum() == step_time_s(...)`` up to rounding. Allocates
    two scratch arrays (not for the hot loop: use :func:`step_time_s` there).
    """
    scratch = np.empty(out_ops.shape[0])
    scratch2 = np.empty(out_ops.shape[0])
    step_work(params, num_tokens, num_emit, num_decode, decode_ctx_sum, prefill_attn_units,
              prefill_ctx_sum, out_ops, scratch, scratch2)

