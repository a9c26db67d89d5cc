"""GPU memory model: weight bytes, KV bytes per token and the KV block pool size (DESIGN §4.3).

Sizes are bytes (int) unless a name says otherwise. Everything here is per *replica
configuration* (``tp`` × ``pp`` GPUs) and follows vLLM's layout:

* tensor parallelism splits query heads, the MLP width, experts' widths and the vocabulary
  ``tp`` ways; key/value heads are split too, but are *replicated* when ``tp > num_kv_heads``
  (each GPU then holds ``ceil(num_kv_heads / tp) = 1`` KV head), as vLLM does;
* pipeline parallelism splits the layers ``pp`` ways; the busiest stage has
  ``ceil(L / pp)`` layers, and vLLM sizes every GPU's pool for the worst GPU;
* ``dtype = "fp8"`` means FP8 weights (vLLM ``--quantization fp8``): the embedding and the
  LM head stay in the model's 16-bit dtype, and the KV cache too unless ``kv_dtype = "fp8"``;
* ``dtype = "mxfp4" | "nvfp4"`` means 4-bit MLP / expert weights with their block scales
  (4.25 / 4.5 bits a weight), as gpt-oss's MXFP4 checkpoint and NVIDIA's NVFP4 checkpoints
  quantize them: attention projections, router, embedding and LM head stay 16-bit;
* expert parallelism (vLLM ``--enable-expert-parallel``, EP size ``ep = tp × dp``): each GPU
  holds ``E / ep`` whole experts instead of every expert's ``1/tp`` slice;
* MLA (DeepSeek): the KV cache holds one latent vector of ``kv_lora_rank + qk_rope_head_dim``
  values per token per layer, which every GPU of a TP group keeps whole (vLLM replicates it);
* sliding-window / chunked local layers: vLLM's hybrid KV cache manager
  (``vllm/v1/core/kv_cache_planning.py: _get_kv_cache_groups_uniform_page_size``) splits the
  layers into groups of ``group_size`` layers of one attention type, every block holds
  ``group_size`` layers' pages, and a request takes blocks in each group (see
  :func:`kv_cache_groups` for what the engine charges).

The pool size is vLLM's rule::

    num_gpu_blocks = floor((gpu_memory × gpu_memory_utilization − weights_per_gpu
                            − activation_reserve) / (block_size × kv_bytes_per_token_per_gpu))

where ``weights_per_gpu`` is about ``weights / (tp·pp)`` and ``kv_bytes_per_token_per_gpu``
about ``kv_bytes_per_token / (tp·pp)`` (exactly, with replicated KV heads and uneven stages).

(The simulator's own use of host RAM is checked in ``oracle.host_memory``.)
"""

from __future__ import annotations

import math

from oracle.catalog import DTYPES, FP4_DTYPES, GpuSpec, ModelSpec
from oracle.errors import CapacityError, ScenarioError

__all__ = ["dtype_bytes", "resolve_dtype", "resolve_kv_dtype", "weight_bytes", "kv_bytes_per_token",
           "kv_heads_per_gpu", "layers_per_stage", "weight_bytes_per_gpu", "kv_bytes_per_token_per_gpu",
           "activation_reserve_bytes", "compute_num_gpu_blocks", "check_parallel", "FIXED_RESERVE_BYTES",
           "check_expert_parallel", "check_dtype_on_gpu", "kv_cache_groups", "kv_bytes_per_layer_per_gpu",
           "attention_dtype", "expert_parallel_size"]

#: bytes per weight; the FP4 formats include their block scales (MXFP4: an 8-bit scale per 32
#: values, OCP MX spec; NVFP4: an FP8 scale per 16 values, NVIDIA's NVFP4 format)
_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1, "fp32": 4, "mxfp4": 4.25 / 8, "nvfp4": 4.5 / 8}

#: Memory vLLM cannot give to the KV cache whatever the batch: CUDA context, cuBLAS/NCCL
#: workspaces, CUDA-graph pools and allocator slack (vLLM logs 0.1–1 GiB of "non-torch"
#: memory and a few hundred MiB of graph memory on one GPU), bytes.
FIXED_RESERVE_BYTES = 1 * 2**30

#: Sequences in the sampler's dummy run when vLLM profiles memory (its ``max_num_seqs``).
_DEFAULT_MAX_NUM_SEQS = 256


def resolve_dtype(dtype: str, model: ModelSpec | None = None) -> str:
    """The concrete weight dtype: ``"auto"`` is the model's checkpoint dtype (``bf16`` if unknown).

    Raises ScenarioError (no key: the caller adds it) for an unknown name.
    """
    if dtype == "auto":
        return model.dtype if model is not None else "bf16"
    if dtype not in _DTYPE_BYTES:
        raise ScenarioError(f"unknown dtype {dtype!r}; choose one of: auto, {', '.join(DTYPES)}")
    return dtype


def resolve_kv_dtype(kv_dtype: str | None, dtype: str, model: ModelSpec | None = None) -> str:
    """The concrete KV-cache dtype.

    ``None``/``"auto"``: the activation dtype, i.e. the weight dtype, except that FP8 weights
    keep a 16-bit KV cache (the model's checkpoint dtype), as vLLM's ``kv_cache_dtype="auto"``.
    """
    weights = resolve_dtype(dtype, model)
    if kv_dtype is None or kv_dtype == "auto":
        if weights == "fp8" or weights in FP4_DTYPES:
            return _sixteen_bit(model)
        return weights
    kv = resolve_dtype(kv_dtype, model)
    if kv in FP4_DTYPES:
        raise ScenarioError(f"the KV cache cannot be {kv} (vLLM's kv_cache_dtype is auto, bf16, fp16 or fp8)")
    return kv


def _sixteen_bit(model: ModelSpec | None) -> str:
    if model is not None and model.dtype in ("bf16", "fp16"):
        return model.dtype
    return "bf16"


def dtype_bytes(dtype: str, *, model: ModelSpec | None = None) -> float:
    """Bytes per element: bf16/fp16 → 2, fp8 → 1, fp32 → 4, mxfp4 → 4.25/8, nvfp4 → 4.5/8;
    ``"auto"`` → the model's dtype."""
    return _DTYPE_BYTES[resolve_dtype(dtype, model)]


def _embedding_dtype(model: ModelSpec, dtype: str) -> str:
    """Embedding/LM-head/norm dtype: the weight dtype, but 16-bit when weights are FP8 or FP4."""
    weights = resolve_dtype(dtype, model)
    return _sixteen_bit(model) if weights == "fp8" or weights in FP4_DTYPES else weights


def attention_dtype(model: ModelSpec, dtype: str) -> str:
    """Dtype of the attention projections: the weight dtype, but 16-bit under FP4 (MLP-only)."""
    weights = resolve_dtype(dtype, model)
    return _sixteen_bit(model) if weights in FP4_DTYPES else weights


def weight_bytes(model: ModelSpec, dtype: str = "auto") -> int:
    """All weights of the model in ``dtype`` (embeddings/LM head/norms 16-bit under FP8 and FP4,
    attention projections 16-bit under FP4), bytes."""
    wb = dtype_bytes(dtype, model=model)
    eb = _DTYPE_BYTES[_embedding_dtype(model, dtype)]
    attn_b = _DTYPE_BYTES[attention_dtype(model, dtype)]
    mlp = (model.num_layers - model.num_dense_layers) * model.mlp_params_per_layer + model.dense_mlp_params
    total = (model.num_layers * model.attn_params_per_layer * attn_b + mlp * wb
             + (model.embedding_params + model.norm_params) * eb)
    return int(math.ceil(total)) if isinstance(total, float) else total


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str = "auto") -> int:
    """KV-cache bytes per token of context over the whole model (all TP shards, every layer
    as if full attention): ``2·L·n_kv·d·bytes``; MLA ``L·(kv_lora_rank + rope)·bytes``."""
    return int(model.num_layers * model.kv_values_per_token_per_layer * dtype_bytes(kv_dtype, model=model))


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads one GPU holds: ``n_kv / tp``, or 1 (replicated) when ``tp > n_kv``."""
    return -(-model.num_kv_heads // tp)


def layers_per_stage(model: ModelSpec, pp: int) -> int:
    """Layers on the busiest pipeline stage: ``ceil(L / pp)``."""
    return -(-model.num_layers // pp)


def expert_parallel_size(model: ModelSpec, tp: int, dp: int, expert_parallel: bool) -> int:
    """EP size: ``tp × dp`` with expert parallelism on an MoE model (vLLM's
    ``FusedMoEParallelConfig``), else 1."""
    return tp * dp if expert_parallel and model.is_moe else 1


def check_expert_parallel(model: ModelSpec, tp: int, dp: int, expert_parallel: bool,
                          expert_imbalance: float = 1.0) -> None:
    """Raise ScenarioError (no key) for expert / data parallelism the model cannot be run with:
    expert parallelism on a dense model, an EP size ``tp × dp`` that does not divide the expert
    count, attention data parallelism (``dp > 1``) without expert parallelism (use replicas for
    independent copies), an expert imbalance below 1 or above the EP size."""
    if dp < 1:
        raise ScenarioError(f"data_parallel_size must be >= 1, got {dp}")
    if expert_parallel and not model.is_moe:
        raise ScenarioError(f"expert parallelism needs an MoE model; {model.name} is dense")
    if dp > 1 and not expert_parallel:
        raise ScenarioError(f"data_parallel_size = {dp} (attention data parallelism) needs expert_parallel = true "
                            "(the DP ranks share the MoE layers as one expert-parallel group); for independent "
                            "copies of the model use replicas")
    ep = expert_parallel_size(model, tp, dp, expert_parallel)
    if model.num_experts % ep:
        raise ScenarioError(f"the expert-parallel size tp x data_parallel_size = {ep} does not divide the "
                            f"{model.num_experts} experts of {model.name}")
    if not 1.0 <= expert_imbalance <= ep:
        raise ScenarioError(f"expert_imbalance must be in [1, EP size {ep}] (the busiest rank's routed tokens "
                            f"over the mean), got {expert_imbalance}")


def check_dtype_on_gpu(dtype: str, gpu, model: ModelSpec | None = None) -> None:
    """Raise ScenarioError (no key) for FP4 weights a GPU cannot run. GPUs with FP4 tensor cores
    run them at the FP4 peak; GPUs with FP8 but no FP4 tensor cores run them weight-only (vLLM's
    Marlin / Triton MXFP4 kernels dequantize to 16 bits), which the simulator allows; a GPU with
    neither is refused. NVFP4 is NVIDIA's format: refused on AMD GPUs."""
    weights = resolve_dtype(dtype, model)
    if weights not in FP4_DTYPES:
        return
    if not gpu.has_fp4 and not gpu.has_fp8:
        raise ScenarioError(f"{weights} weights need FP4 tensor cores (Blackwell, MI355X) or, weight-only, a GPU with "
                            f"FP8 tensor cores (Hopper, Ada, MI300); {gpu.name} has neither")
    if weights == "nvfp4" and gpu.link_kind == "xgmi":
        raise ScenarioError(f"nvfp4 is NVIDIA's FP4 format; AMD's {gpu.name} runs mxfp4")


def check_parallel(model: ModelSpec, tp: int, pp: int) -> None:
    """Raise ScenarioError (no key) unless vLLM could shard ``model`` ``tp``×``pp`` ways.

    vLLM requires ``tp`` to divide the query heads, ``tp`` and the KV heads to divide one
    another (KV heads are replicated when ``tp > n_kv``), and ``pp <= L``.
    """
    if tp < 1 or pp < 1:
        raise ScenarioError(f"tp and pp must be >= 1, got tp={tp}, pp={pp}")
    if model.num_heads % tp:
        raise ScenarioError(f"tp={tp} does not divide the {model.num_heads} attention heads of {model.name}")
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        raise ScenarioError(f"tp={tp} and the {model.num_kv_heads} KV heads of {model.name} must divide "
                            "one another")
    if pp > model.num_layers:
        raise ScenarioError(f"pp={pp} exceeds the {model.num_layers} layers of {model.name}")


def weight_bytes_per_gpu(model: ModelSpec, dtype: str = "auto", *, tp: int = 1, pp: int = 1, ep: int = 1) -> int:
    """Weights on the busiest GPU of a ``tp × pp`` replica, bytes.

    That GPU holds ``ceil(L/pp)`` layers (an MoE model's dense layers counted last, so the
    busiest stage has the most MoE layers) with their query heads, MLP (or every expert's)
    width split ``tp`` ways, ``ceil(n_kv/tp)`` KV heads (MLA: :meth:`ModelSpec.mla_params`),
    the replicated norms and MoE router, and one ``V/tp × h`` vocabulary matrix per pipeline end
    (both embedding and untied LM head when ``pp == 1``). With expert parallelism (``ep > 1``)
    it holds ``E/ep`` whole experts; shared experts and dense layers stay split ``tp`` ways.
    """
    check_parallel(model, tp, pp)
    wb = dtype_bytes(dtype, model=model)
    eb = _DTYPE_BYTES[_embedding_dtype(model, dtype)]
    attn_b = _DTYPE_BYTES[attention_dtype(model, dtype)]
    h, d = model.hidden_size, model.head_dim
    q_heads = model.num_heads // tp
    kv_heads = kv_heads_per_gpu(model, tp)
    if model.is_mla:
        attn = sum(model.mla_params(tp).values())
    else:
        attn = h * d * (q_heads + 2 * kv_heads) + q_heads * d * h
    layers = layers_per_stage(model, pp)
    m = model.mlp_matrices
    dense = m * h * model.intermediate_size / tp
    if model.is_moe:
        if ep > 1:
            mlp = m * h * (model.num_experts // ep) * model.expert_intermediate_size
        else:
            mlp = model.num_experts * m * h * model.expert_intermediate_size / tp
        mlp += m * h * model.shared_expert_intermediate_size / tp
        router = h * model.num_experts
        moe_layers = min(layers, model.num_moe_layers)
    else:
        mlp, router, moe_layers = dense, 0, layers
    vocab_mats = 1 if (pp > 1 or model.tied_embeddings) else 2
    vocab = vocab_mats * model.vocab_size * h / tp
    norms = (2 * layers + 1) * h
    per_layer = attn * attn_b + mlp * wb + router * eb
    per_dense_layer = attn * attn_b + dense * wb
    return int(math.ceil(moe_layers * per_layer + (layers - moe_layers) * per_dense_layer + (vocab + norms) * eb))


def kv_bytes_per_layer_per_gpu(model: ModelSpec, kv_dtype: str = "auto", *, tp: int = 1) -> int:
    """KV bytes one GPU stores per token per layer: ``2 · ceil(n_kv/tp) · d · bytes``, or with MLA
    the whole latent vector ``(kv_lora_rank + qk_rope_head_dim) · bytes`` (not split by TP)."""
    kvb = dtype_bytes(kv_dtype, model=model)
    if model.is_mla:
        return int(model.kv_values_per_token_per_layer * kvb)
    return int(2 * kv_heads_per_gpu(model, tp) * model.head_dim * kvb)


def kv_bytes_per_token_per_gpu(model: ModelSpec, kv_dtype: str = "auto", *, tp: int = 1, pp: int = 1) -> int:
    """KV bytes one GPU stores per token of context in every layer of its stage (full
    attention): ``ceil(L/pp) ·`` :func:`kv_bytes_per_layer_per_gpu`."""
    check_parallel(model, tp, pp)
    return layers_per_stage(model, pp) * kv_bytes_per_layer_per_gpu(model, kv_dtype, tp=tp)


def kv_cache_groups(model: ModelSpec, pp: int = 1) -> tuple[int, int, int]:
    """vLLM's KV cache groups of the busiest stage: ``(group_size, full_groups, window_groups)``.

    One attention type: one group of all the stage's layers. Full and windowed layers
    (``vllm/v1/core/kv_cache_planning.py: _get_kv_cache_groups_uniform_page_size``): the group
    size is the smaller layer count of the two types, or the larger when it is below 1.5 times
    the smaller; each type fills ``ceil(layers / group_size)`` groups (the last one padded).
    A block holds ``group_size`` layers' pages; a request takes ``ceil(ctx/block)`` blocks in
    each full-attention group and at most ``ceil((W−1)/block) + 1`` in each windowed one.

    *Approximation* (the engine keeps one block table per request): the engine's pool is
    vLLM's block count divided by the full-attention groups, and a request is charged
    ``ceil(ctx/block)`` blocks; the windowed groups' blocks are not charged, which over-states
    the capacity by at most ``window_groups · (ceil((W−1)/block) + 1)`` blocks per running
    request (a model whose every layer is windowed is charged as if its layers were full).
    """
    full = -(-model.num_full_attention_layers // pp)
    window = -(-model.num_window_layers // pp)
    if not window or not full:
        return max(full, window), 1 if full else 0, 1 if window else 0
    size = min(full, window)
    if max(full, window) < 1.5 * size:
        size = max(full, window)
    return size, -(-full // size), -(-window // size)


def activation_reserve_bytes(model: ModelSpec, *, tp: int = 1, dtype: str = "auto",
                             max_num_batched_tokens: int = 8192,
                             max_num_seqs: int = _DEFAULT_MAX_NUM_SEQS) -> int:
    """Memory vLLM keeps out of the KV pool besides the weights, bytes (one GPU).

    vLLM profiles a forward pass of ``max_num_batched_tokens`` tokens plus a sampler run over
    ``max_num_seqs`` sequences and reserves the peak. Modelled as:

    * :data:`FIXED_RESERVE_BYTES` (1 GiB: CUDA context, workspaces, CUDA graphs);
    * the peak live activations of one layer: ``T · (2h + qkv_out)`` in attention and
      ``T · (2h + 3·f/tp)`` in a dense MLP (input, residual, gate+up output, activation
      output), ``T · (2h + k·(h + 3·f_e/tp))`` in an MoE layer, at the activation dtype
      (16-bit, fp32 for fp32 models), with ``T = max_num_batched_tokens``;
    * fp32 logits and probabilities for ``min(T, max_num_seqs)`` sequences: ``2 · n · V/tp · 4``.
    """
    ab = max(2, dtype_bytes(dtype, model=model))
    h, d = model.hidden_size, model.head_dim
    t = max_num_batched_tokens
    qkv_out = d * (model.num_heads // max(tp, 1) + 2 * kv_heads_per_gpu(model, tp))
    if model.is_moe:
        mlp = model.num_active_experts * (h + 3 * model.expert_intermediate_size / tp)
    else:
        mlp = 3 * model.intermediate_size / tp
    per_token = 2 * h + max(qkv_out, mlp)
    logits = 2 * min(t, max_num_seqs) * (model.vocab_size / tp) * 4
    return int(FIXED_RESERVE_BYTES + math.ceil(t * per_token * ab + logits))


def compute_num_gpu_blocks(model: ModelSpec, gpu: GpuSpec, *, tp: int = 1, pp: int = 1, block_size: int = 16,
                           gpu_memory_utilization: float = 0.9, dtype: str = "auto",
                           kv_dtype: str | None = None, max_num_batched_tokens: int = 8192,
                           max_num_seqs: int = _DEFAULT_MAX_NUM_SEQS, ep: int = 1,
                           lora_bytes_per_gpu: float = 0.0) -> int:
    """KV blocks per replica (every GPU of it holds its shard of each block), DESIGN §4.3.

    Parameters
    ----------
    model, gpu: catalog specs.
    tp, pp: tensor- and pipeline-parallel sizes (``tp·pp`` GPUs per replica).
    block_size: tokens per KV block.
    gpu_memory_utilization: fraction of each GPU's memory vLLM may use, in (0, 1].
    dtype: weight dtype (``"auto"``, ``"bf16"``, ``"fp16"``, ``"fp8"``, ``"fp32"``).
    kv_dtype: KV-cache dtype (None/``"auto"``: see :func:`resolve_kv_dtype`).
    max_num_batched_tokens, max_num_seqs: the profiling batch (see :func:`activation_reserve_bytes`).
    ep: expert-parallel size (1: experts split ``tp`` ways), see :func:`weight_bytes_per_gpu`.

    Hybrid (full + windowed) models: the blocks of the full-attention group(s), see
    :func:`kv_cache_groups`.
    lora_bytes_per_gpu: the LoRA adapters' GPU buffers (``oracle.lora.lora_buffer_bytes_per_gpu``; 0 without LoRA).

    Returns the number of blocks (int >= 1).

    Raises
    ------
    CapacityError (key None: the caller adds ``frameworks.N...``) when not even one block fits.
    ScenarioError (key None) for a dtype or ``tp``/``pp`` the model does not allow.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not 0.0 < gpu_memory_utilization <= 1.0:
        raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}")
    kv_dtype = resolve_kv_dtype(kv_dtype, dtype, model)
    weights = weight_bytes_per_gpu(model, dtype, tp=tp, pp=pp, ep=ep)
    reserve = activation_reserve_bytes(model, tp=tp, dtype=dtype, max_num_batched_tokens=max_num_batched_tokens,
                                       max_num_seqs=max_num_seqs)
    budget = gpu.memory_bytes * gpu_memory_utilization - weights - reserve - lora_bytes_per_gpu
    check_parallel(model, tp, pp)
    group_size, full_groups, _ = kv_cache_groups(model, pp)
    per_block = block_size * group_size * kv_bytes_per_layer_per_gpu(model, kv_dtype, tp=tp)
    blocks = math.floor(budget / per_block) if budget > 0 else 0
    blocks //= max(full_groups, 1)
    if blocks < 1:
        total = weight_bytes(model, dtype)
        raise CapacityError(
            f"{model.name} ({total / 1e9:.1f} GB of {resolve_dtype(dtype, model)} weights) does not fit on "
            f"{tp * pp}× {gpu.name} ({gpu.memory_gib:g} GiB × {gpu_memory_utilization:.2f}): "
            f"{weights / 2**30:.1f} GiB of weights and {reserve / 2**30:.1f} GiB of activations per GPU leave "
            f"no room for one KV block; use more tensor/pipeline parallelism or a bigger GPU")
    return int(blocks)
