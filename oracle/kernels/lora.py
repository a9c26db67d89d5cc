"""Multi-LoRA step-time terms (vLLM punica kernels, adapter loads), from per-step aggregates.

``oracle.lora.build_lora_params`` precomputes the vector ``params`` (layout:
:data:`LORA_PARAM_NAMES`); the engine adds :func:`lora_step_time_s` and the adapter loads
of a step to the base forward time (``oracle.kernels.cost.step_time_s``).

vLLM applies a LoRA with two punica kernels per adapted linear layer (``lora_shrink``:
``x @ A`` to rank r, ``lora_expand``: ``(x A) @ B`` added to the layer's output), whatever
the batch's adapters; their GPU buffers are padded to ``max_lora_rank`` (``LoRAConfig``), so
the rank that prices a step is ``max_lora_rank``, not the adapter's. Per step::

    F = 2 · r_max · W · T_lora                       (W = Σ_layers Σ_adapted (d_in + d_out), one shard)
    B = A_step · r_max · W · weight_bytes + T_lora · act_bytes_per_token
    t = max(F · s_per_flop, B · s_per_byte) + kernels_s     (0 when T_lora = 0)

``T_lora``: tokens of requests with an adapter scheduled this step; ``A_step``: distinct
adapters among them (each adapter's weights are read once). Loads (vLLM
``LRUCacheWorkerLoRAManager.add_adapter`` / ``activate_adapter``, before the forward pass):
an adapter not in the GPU slots is copied from host memory (``load_host_s``), one not in the
CPU cache is first read from disk (``load_disk_s``).
"""

from __future__ import annotations

from oracle.kernels._jit import jit

#: Layout of the LoRA ``params`` vector (float64, shape ``(NUM_LORA_PARAMS,)``).
LORA_PARAM_NAMES = (
    "flops_per_token",          # 0  2 · r_max · W (one GPU of the TP group)
    "weight_bytes_per_adapter",  # 1  r_max · W · weight_bytes
    "act_bytes_per_token",      # 2  per lora token: x read again, shrink output, y read + written
    "s_per_flop",               # 3  1 / (16-bit peak × eff_compute)
    "s_per_byte",               # 4  1 / (DRAM bandwidth × eff_memory)
    "kernels_s",                # 5  fixed time of the step's punica kernels (2 per adapted layer)
    "load_host_s",              # 6  one adapter copied host -> GPU slot (its own rank)
    "load_disk_s",              # 7  one adapter read from disk into the CPU cache (its own rank)
)
NUM_LORA_PARAMS = len(LORA_PARAM_NAMES)


@jit
def lora_step_time_s(params, num_lora_tokens, num_adapters):
    """Seconds the punica kernels add to a step with ``num_lora_tokens`` adapter tokens of
    ``num_adapters`` distinct adapters (0 when no token has an adapter)."""
    if num_lora_tokens <= 0:
        return 0.0
    flops = params[0] * num_lora_tokens
    nbytes = params[1] * num_adapters + params[2] * num_lora_tokens
    c = flops * params[3]
    m = nbytes * params[4]
    return (c if c > m else m) + params[5]
