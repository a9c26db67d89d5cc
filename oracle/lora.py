"""Multi-LoRA: the workload option (which adapter each request names), the framework keys'
checks, the adapters' sizes, the cost parameters of ``oracle.kernels.lora`` and the
per-adapter prefix-cache hashes.

    [workload]
    lora = { adapters = 100, popularity = "zipf", zipf_s = 1.1, rank = 16, fraction = 1.0 }

    [[frameworks]]
    enable_lora = true      # vLLM --enable-lora
    max_loras = 4           # distinct adapters in a batch (GPU slots), vLLM default 1
    max_lora_rank = 16      # the GPU buffers' rank (vLLM default 16)
    max_cpu_loras = 16      # adapters cached in host memory (default: max_loras)

A conversation (a session) names one adapter; a request outside a session draws its own.
Adapters are numbered from 0 (vLLM's ``lora_int_id`` is that + 1); with ``popularity =
"zipf"`` adapter k is chosen with probability proportional to ``1/(k+1)^zipf_s`` (adapter 0
the most popular), with ``"uniform"`` equally; ``fraction`` of the sessions and lone
requests use an adapter, the others the base model. Draws come from the scenario seed.

This module imports no numba (``oracle validate`` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POPULARITIES = ("zipf", "uniform")
#: vLLM ``LoRAConfig.max_lora_rank`` allows these (``MaxLoRARanks``).
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
#: Host -> GPU copy of an adapter (PCIe 4.0 x16: 32 GB/s per direction, ~25 GB/s reached
#: by pinned copies; NVIDIA "How to Optimize Data Transfers in CUDA C/C++"), GB/s.
DEFAULT_LORA_HOST_BW_GBPS = 25.0
#: Reading an adapter's safetensors from local disk into host memory (one NVMe SSD's
#: sequential read, PCIe 3.0 x4 class), GB/s.
DEFAULT_LORA_DISK_BW_GBPS = 2.0
_SEED_TAG = 0x4C6F5241   # "LoRA": the adapters' random stream, apart from the workload's


@dataclass(frozen=True)
class LoraWorkloadSpec:
    """``[workload] lora = {...}``: which adapter each request names."""

    adapters: int = 1            # number of distinct adapters
    popularity: str = "zipf"     # "zipf" | "uniform"
    zipf_s: float = 1.1          # Zipf exponent (popularity "zipf")
    rank: int = 16               # every adapter's rank r
    fraction: float = 1.0        # share of sessions / lone requests that use an adapter


def parse_lora_workload(t) -> LoraWorkloadSpec:
    """The ``[workload].lora`` table (an ``oracle._config.Table``)."""
    d = LoraWorkloadSpec()
    spec = LoraWorkloadSpec(adapters=t.int("adapters", d.adapters, lo=1, hi=1_000_000),
                            popularity=t.str("popularity", d.popularity, choices=POPULARITIES),
                            zipf_s=t.float("zipf_s", d.zipf_s, lo=0.0, lo_open=True, hi=100.0),
                            rank=t.int("rank", d.rank, lo=1, hi=max(MAX_LORA_RANKS)),
                            fraction=t.float("fraction", d.fraction, lo=0.0, hi=1.0, lo_open=True))
    if t.has("zipf_s") and t.ok("popularity") and spec.popularity != "zipf":
        t.report("zipf_s", "only applies with popularity = \"zipf\"")
    t.done()
    return spec


def check_lora_framework(t, f: dict, lora: LoraWorkloadSpec | None) -> None:
    """Cross-checks of one ``[[frameworks]]`` entry's LoRA keys (``t``: its Table, ``f``: the
    parsed values) against the workload's ``lora`` (None: no adapters named)."""
    if t.ok("max_lora_rank") and f["max_lora_rank"] not in MAX_LORA_RANKS:
        t.report("max_lora_rank", f"must be one of {', '.join(map(str, MAX_LORA_RANKS))} (vLLM's LoRAConfig), "
                                  f"got {f['max_lora_rank']}")
    if t.ok("max_loras", "max_cpu_loras") and f["max_cpu_loras"] is not None \
            and f["max_cpu_loras"] < f["max_loras"]:
        t.report("max_cpu_loras", f"must be >= max_loras ({f['max_loras']}), got {f['max_cpu_loras']}")
    if not f["enable_lora"]:
        for key in ("max_loras", "max_lora_rank", "max_cpu_loras", "lora_host_bw_gbps", "lora_disk_bw_gbps"):
            if t.has(key):
                t.report(key, "only applies with enable_lora = true")
        if lora is not None and t.ok("enable_lora"):
            t.report("enable_lora", "the workload names LoRA adapters ([workload].lora): set enable_lora = true "
                                    "(vLLM refuses a LoRA request without --enable-lora)")
        return
    if lora is not None and t.ok("max_lora_rank") and lora.rank > f["max_lora_rank"]:
        t.report("max_lora_rank", f"the workload's adapters have rank {lora.rank}, above max_lora_rank = "
                                  f"{f['max_lora_rank']} (vLLM refuses to load them)")


# ----------------------------------------------------------------------------- adapters
def assign_adapters(spec: LoraWorkloadSpec, session: np.ndarray, seed: int) -> np.ndarray:
    """The adapter of each request (i4[n], -1: the base model): one draw per session (its
    turns share it) and per request outside a session, from the seed's own stream."""
    session = np.asarray(session, np.int64)
    n = session.shape[0]
    unit = np.where(session >= 0, session, -1 - np.arange(n, dtype=np.int64))
    uniq, inv = np.unique(unit, return_inverse=True)
    rng = np.random.default_rng([int(seed), _SEED_TAG])
    k = np.arange(spec.adapters, dtype=np.float64)
    w = (k + 1.0) ** -spec.zipf_s if spec.popularity == "zipf" else np.ones(spec.adapters)
    drawn = rng.choice(spec.adapters, size=uniq.shape[0], p=w / w.sum()).astype(np.int32)
    if spec.fraction < 1.0:
        drawn[rng.random(uniq.shape[0]) >= spec.fraction] = -1
    return drawn[inv]


def mix_adapter_hashes(hash_offsets: np.ndarray, hashes: np.ndarray, adapter: np.ndarray) -> np.ndarray:
    """Block hashes with each request's adapter mixed in (CSR ``hash_offsets`` i8[n+1]): vLLM
    puts the LoRA into every block's extra keys (``kv_cache_utils._gen_lora_extra_hash_keys``),
    so requests of different adapters never share cached blocks; equal tokens and adapter
    still give equal hashes. Requests without an adapter keep theirs. Never 0."""
    counts = np.diff(np.asarray(hash_offsets, np.int64))
    a = np.repeat(np.asarray(adapter, np.int64), counts)
    with np.errstate(over="ignore"):
        x = hashes ^ ((a + 1).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15))
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    x[x == 0] = 1
    return np.where(a >= 0, x, hashes)


# ---------------------------------------------------------------------------------- cost
def adapted_width(model, tp: int = 1) -> tuple[int, int]:
    """``(W_shard, W_full)``: Σ over layers and adapted matrices of ``d_in + d_out`` on one
    GPU of a TP group, and for the whole adapter. Adapted: q, k, v, o and the MLP's gate, up,
    down (vLLM's packed ``qkv_proj`` / ``gate_up_proj`` / ``down_proj`` LoRA layers); MoE
    experts carry no adapter here (attention only). Column-parallel layers (q, k, v, gate,
    up) keep A whole and shard B's output; row-parallel ones (o, down) shard A's input
    (vLLM ``ColumnParallelLinearWithLoRA`` / ``RowParallelLinearWithLoRA``)."""
    h, d = model.hidden_size, model.head_dim
    q, kv = model.num_heads * d, model.num_kv_heads * d
    attn_full = (h + q) + 2 * (h + kv) + (q + h)
    attn_shard = (h + q // tp) + 2 * (h + max(kv // tp, d)) + (q // tp + h)
    mlp_full = mlp_shard = 0
    if not model.num_experts:
        f = model.intermediate_size
        ups = 2 if model.gated_mlp else 1
        mlp_full = ups * (h + f) + (f + h)
        mlp_shard = ups * (h + f // tp) + (f // tp + h)
    L = model.num_layers
    return L * (attn_shard + mlp_shard), L * (attn_full + mlp_full)


def adapter_bytes(model, rank: int, dtype_bytes: float = 2.0) -> float:
    """Bytes of one adapter of rank r (A and B of every adapted matrix: ``r · W_full``)."""
    return float(rank * adapted_width(model)[1] * dtype_bytes)


def lora_buffer_bytes_per_gpu(model, max_loras: int, max_lora_rank: int, *, tp: int = 1, pp: int = 1,
                              dtype_bytes: float = 2.0) -> float:
    """GPU memory of vLLM's LoRA weight buffers on one GPU: ``max_loras`` slots of A and B
    padded to ``max_lora_rank`` for every adapted layer (``lora_a_stacked`` /
    ``lora_b_stacked``, allocated at start-up), taken from the KV cache's share."""
    return float(max_loras * max_lora_rank * adapted_width(model, tp)[0] / pp * dtype_bytes)


def build_lora_params(model, gpu, *, tp: int = 1, pp: int = 1, max_lora_rank: int = 16, rank: int = 16,
                      host_bw_gbps: float = DEFAULT_LORA_HOST_BW_GBPS,
                      disk_bw_gbps: float = DEFAULT_LORA_DISK_BW_GBPS) -> np.ndarray:
    """The ``oracle.kernels.lora`` parameter vector (:data:`~oracle.kernels.lora.LORA_PARAM_NAMES`)
    for a model on a GPU, 16-bit adapters (vLLM keeps LoRA weights in the activation dtype).

    Compute and bytes are one GPU's of the TP group, all ``pp`` stages in sequence (the
    layers of a replica); loads: each GPU reads the whole adapter from disk and copies its
    shard to the GPU, the ``pp`` stages in parallel."""
    from oracle.catalog import get_gpu, get_model   # noqa: PLC0415
    from oracle.kernels.lora import LORA_PARAM_NAMES   # noqa: PLC0415 (numba)
    model = get_model(model) if isinstance(model, str) else model
    gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
    w_shard, w_full = adapted_width(model, tp)
    ab = 2.0
    lora_layers = 4 if model.num_experts else 7   # q, k, v, o (+ gate, up, down)
    vals = {
        "flops_per_token": 2.0 * max_lora_rank * w_shard,
        "weight_bytes_per_adapter": max_lora_rank * w_shard * ab,
        # x read by the shrinks, y read and written by the expands (~ 2·(d_in + d_out) 16-bit
        # values per adapted matrix), the rank-r intermediates in fp32 written and read
        "act_bytes_per_token": 2.0 * w_shard * ab + model.num_layers * lora_layers * max_lora_rank * 4 * 2,
        "s_per_flop": 1.0 / (gpu.peak_tflops_bf16 * 1e12 * gpu.eff_compute),
        "s_per_byte": 1.0 / (gpu.mem_bw_gbps * 1e9 * gpu.eff_memory),
        # shrink + expand per packed LoRA layer (qkv, o, gate_up, down; 2 without an MLP adapter)
        "kernels_s": 2.0 * (2 if model.num_experts else 4) * model.num_layers * gpu.kernel_overhead_s,
        "load_host_s": rank * w_shard * ab / pp / (host_bw_gbps * 1e9),
        "load_disk_s": rank * w_full * ab / (disk_bw_gbps * 1e9),
    }
    return np.array([vals[k] for k in LORA_PARAM_NAMES], np.float64)


def lora_terms(params: np.ndarray, num_lora_tokens: int, num_adapters: int) -> dict[str, float]:
    """The LoRA terms of one step as ``oracle cost`` prints them (seconds, FLOPs, bytes)."""
    from oracle.kernels.lora import LORA_PARAM_NAMES, lora_step_time_s   # noqa: PLC0415
    p = dict(zip(LORA_PARAM_NAMES, (float(v) for v in params)))
    return {"num_lora_tokens": int(num_lora_tokens), "num_adapters": int(num_adapters),
            "flops": p["flops_per_token"] * num_lora_tokens,
            "bytes": p["weight_bytes_per_adapter"] * num_adapters + p["act_bytes_per_token"] * num_lora_tokens,
            "punica_s": float(lora_step_time_s(params, num_lora_tokens, num_adapters)),
            "adapter_load_host_s": p["load_host_s"], "adapter_load_disk_s": p["load_disk_s"]}


def add_lora_to_step_cost(result: dict, params: np.ndarray, num_adapters: int, *, max_lora_rank: int,
                          rank: int) -> dict:
    """Add the LoRA terms to an ``oracle.cost.step_cost`` result (every token of the step
    names one of ``num_adapters`` adapters): the punica kernels join the ops and the total;
    ``result["lora"]`` holds the terms and the load time of one adapter (paid before a step
    that needs it, not included)."""
    num_tokens = int(result["aggregates"]["num_tokens"])
    terms = lora_terms(params, num_tokens, num_adapters)
    terms.update(max_lora_rank=max_lora_rank, rank=rank)
    result["lora"] = terms
    result["ops"]["lora_punica_ms"] = terms["punica_s"] * 1e3
    result["total_ms"] += terms["punica_s"] * 1e3
    result["flops"] += terms["flops"]
    result["bytes"] += terms["bytes"]
    result["sources"]["lora_punica"] = (
        f"shrink + expand per LoRA layer: 2·r·(d_in + d_out) FLOPs per token and adapted matrix at "
        f"r = max_lora_rank = {max_lora_rank} (vLLM pads the GPU buffers); weights of {num_adapters} "
        f"adapter(s) read once; roofline max(FLOPs, bytes) + kernel time [gpu]")
    return result
