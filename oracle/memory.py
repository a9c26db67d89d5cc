"""GPU memory model: weight bytes, KV bytes per token and the KV block pool size (DESIGN §4.3).

Sizes are bytes (int) unless a name says otherwise. Everything here is per *replica
configuration* (``tp`` × ``pp`` GPUs) and follows vLLM's layout:

* tensor parallelism splits query heads, the MLP width, experts' widths and the vocabulary
  ``tp`` ways; key/value heads are split too, but are *replicated* when ``tp > num_kv_heads``
  (each GPU then holds ``ceil(num_kv_heads / tp) = 1`` KV head), as vLLM does;
* pipeline parallelism splits the layers ``pp`` ways; the busiest stage has
  ``ceil(L / pp)`` layers, and vLLM sizes every GPU's pool for the worst GPU;
* ``dtype = "fp8"`` means FP8 weights (vLLM ``--quantization fp8``): the embedding and the
  LM head stay in the model's 16-bit dtype, and the KV cache too unless ``kv_dtype = "fp8"``.

The pool size is vLLM's rule::

    num_gpu_blocks = floor((gpu_memory × gpu_memory_utilization − weights_per_gpu
                            − activation_reserve) / (block_size × kv_bytes_per_token_per_gpu))

where ``weights_per_gpu`` is about ``weights / (tp·pp)`` and ``kv_bytes_per_token_per_gpu``
about ``kv_bytes_per_token / (tp·pp)`` (exactly, with replicated KV heads and uneven stages).

(The simulator's own use of host RAM is checked in ``oracle.host_memory``.)
"""

from __future__ import annotations

import math

from oracle.catalog import DTYPES, GpuSpec, ModelSpec
from oracle.errors import CapacityError, ScenarioError

__all__ = ["dtype_bytes", "resolve_dtype", "resolve_kv_dtype", "weight_bytes", "kv_bytes_per_token",
           "kv_heads_per_gpu", "layers_per_stage", "weight_bytes_per_gpu", "kv_bytes_per_token_per_gpu",
           "activation_reserve_bytes", "compute_num_gpu_blocks", "check_parallel", "FIXED_RESERVE_BYTES"]

_DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp8": 1, "fp32": 4}

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
        if weights == "fp8":
            return _sixteen_bit(model)
        return weights
    return resolve_dtype(kv_dtype, model)


def _sixteen_bit(model: ModelSpec | None) -> str:
    if model is not None and model.dtype in ("bf16", "fp16"):
        return model.dtype
    return "bf16"


def dtype_bytes(dtype: str, *, model: ModelSpec | None = None) -> int:
    """Bytes per element: bf16/fp16 → 2, fp8 → 1, fp32 → 4; ``"auto"`` → the model's dtype."""
    return _DTYPE_BYTES[resolve_dtype(dtype, model)]


def _embedding_dtype(model: ModelSpec, dtype: str) -> str:
    """Embedding/LM-head/norm dtype: the weight dtype, but 16-bit when weights are FP8."""
    weights = resolve_dtype(dtype, model)
    return _sixteen_bit(model) if weights == "fp8" else weights


def weight_bytes(model: ModelSpec, dtype: str = "auto") -> int:
    """All weights of the model in ``dtype`` (embeddings/LM head/norms 16-bit under FP8), bytes."""
    wb = dtype_bytes(dtype, model=model)
    eb = _DTYPE_BYTES[_embedding_dtype(model, dtype)]
    layers = model.num_layers * (model.attn_params_per_layer + model.mlp_params_per_layer)
    return layers * wb + (model.embedding_params + model.norm_params) * eb


def kv_bytes_per_token(model: ModelSpec, kv_dtype: str = "auto") -> int:
    """KV-cache bytes per token over the whole model (all TP shards): ``2·L·n_kv·d·bytes``."""
    return 2 * model.num_layers * model.num_kv_heads * model.head_dim * dtype_bytes(kv_dtype, model=model)


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads one GPU holds: ``n_kv / tp``, or 1 (replicated) when ``tp > n_kv``."""
    return -(-model.num_kv_heads // tp)


def layers_per_stage(model: ModelSpec, pp: int) -> int:
    """Layers on the busiest pipeline stage: ``ceil(L / pp)``."""
    return -(-model.num_layers // pp)


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


def weight_bytes_per_gpu(model: ModelSpec, dtype: str = "auto", *, tp: int = 1, pp: int = 1) -> int:
    """Weights on the busiest GPU of a ``tp × pp`` replica, bytes.

    That GPU holds ``ceil(L/pp)`` layers with their query heads, MLP (or every expert's)
    width split ``tp`` ways, ``ceil(n_kv/tp)`` KV heads, the replicated norms and MoE router,
    and one ``V/tp × h`` vocabulary matrix per pipeline end (both embedding and untied LM
    head when ``pp == 1``).
    """
    check_parallel(model, tp, pp)
    wb = dtype_bytes(dtype, model=model)
    eb = _DTYPE_BYTES[_embedding_dtype(model, dtype)]
    h, d = model.hidden_size, model.head_dim
    q_heads = model.num_heads // tp
    kv_heads = kv_heads_per_gpu(model, tp)
    attn = h * d * (q_heads + 2 * kv_heads) + q_heads * d * h
    if model.is_moe:
        mlp = model.num_experts * model.mlp_matrices * h * model.expert_intermediate_size / tp
        router = h * model.num_experts
    else:
        mlp = model.mlp_matrices * h * model.intermediate_size / tp
        router = 0
    layers = layers_per_stage(model, pp)
    vocab_mats = 1 if (pp > 1 or model.tied_embeddings) else 2
    vocab = vocab_mats * model.vocab_size * h / tp
    norms = (2 * layers + 1) * h
    return int(math.ceil(layers * ((attn + mlp) * wb + router * eb) + (vocab + norms) * eb))


def kv_bytes_per_token_per_gpu(model: ModelSpec, kv_dtype: str = "auto", *, tp: int = 1, pp: int = 1) -> int:
    """KV bytes one GPU stores per token: ``2 · ceil(L/pp) · ceil(n_kv/tp) · d · bytes``."""
    check_parallel(model, tp, pp)
    return (2 * layers_per_stage(model, pp) * kv_heads_per_gpu(model, tp) * model.head_dim
            * dtype_bytes(kv_dtype, model=model))


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
                           max_num_seqs: int = _DEFAULT_MAX_NUM_SEQS, lora_bytes_per_gpu: float = 0.0) -> int:
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
    weights = weight_bytes_per_gpu(model, dtype, tp=tp, pp=pp)
    reserve = activation_reserve_bytes(model, tp=tp, dtype=dtype, max_num_batched_tokens=max_num_batched_tokens,
                                       max_num_seqs=max_num_seqs)
    budget = gpu.memory_bytes * gpu_memory_utilization - weights - reserve - lora_bytes_per_gpu
    per_block = block_size * kv_bytes_per_token_per_gpu(model, kv_dtype, tp=tp, pp=pp)
    blocks = math.floor(budget / per_block) if budget > 0 else 0
    if blocks < 1:
        total = weight_bytes(model, dtype)
        raise CapacityError(
            f"{model.name} ({total / 1e9:.1f} GB of {resolve_dtype(dtype, model)} weights) does not fit on "
            f"{tp * pp}× {gpu.name} ({gpu.memory_gib:g} GiB × {gpu_memory_utilization:.2f}): "
            f"{weights / 2**30:.1f} GiB of weights and {reserve / 2**30:.1f} GiB of activations per GPU leave "
            f"no room for one KV block; use more tensor/pipeline parallelism or a bigger GPU")
    return int(blocks)
