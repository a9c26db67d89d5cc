"""Model and GPU catalogs: datasheet / ``config.json`` facts with their sources.

The facts live in ``models.toml`` and ``gpus.toml`` next to this file; each entry names its
source. Lookups are case-insensitive and accept aliases (``"Llama2-7B"`` -> ``llama-2-7b``);
unknown names raise :class:`~oracle.errors.ScenarioError` with a did-you-mean hint and the
list of known names. Scenario files can also describe a model or GPU inline
(``[model.architecture]``, ``[hardware.custom]``): :func:`model_from_table` and
:func:`gpu_from_table` validate such tables with the same rules (unknown keys rejected).

Units: memory in GiB (2**30 bytes), bandwidths in GB/s (1e9 bytes/s), peaks in TFLOP/s
(1e12 FLOP/s), times in seconds.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from oracle._config import Table, did_you_mean
from oracle.errors import ScenarioError

__all__ = ["ModelSpec", "GpuSpec", "FrameworkSpec", "load_models", "load_gpus", "load_frameworks", "get_model",
           "get_gpu", "get_framework", "model_from_table", "gpu_from_table", "framework_from_table", "gpu_defaults",
           "model_aliases", "aliases_of", "LINK_KINDS", "FP4_DTYPES", "OPTIONAL_GPU_KEYS", "gpu_table_items"]

_HERE = Path(__file__).resolve().parent
MODELS_TOML = _HERE / "models.toml"
GPUS_TOML = _HERE / "gpus.toml"
FRAMEWORKS_TOML = _HERE / "frameworks.toml"
LINKS_TOML = _HERE / "links.toml"

DTYPES = ("bf16", "fp16", "fp8", "fp32", "mxfp4", "nvfp4")
#: 4-bit weight formats (block-scaled: MXFP4 = E2M1 + an 8-bit scale per 32 values, NVFP4 = E2M1 + an
#: FP8 scale per 16 values); they apply to the MLP / expert weights only (see ``oracle.memory``)
FP4_DTYPES = ("mxfp4", "nvfp4")
#: GpuSpec fields added after inline GPU tables were first written: a table written from a
#: spec (legacy conversion, replay calibration) carries them only when they are non-zero
OPTIONAL_GPU_KEYS = ("peak_tflops_fp4",)
#: GPU-to-GPU link kinds: NVLink (through NVSwitch or a bridge), PCIe, AMD Infinity Fabric (xGMI)
LINK_KINDS = ("nvlink", "pcie", "xgmi")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shape (from its Hugging Face ``config.json``).

    Attributes
    ----------
    name: catalog name (lower case, e.g. ``"llama-3.1-8b"``).
    num_layers: decoder layers L.
    hidden_size: model width h.
    num_heads: query heads n_h.
    num_kv_heads: key/value heads n_kv (GQA; = n_h for MHA).
    head_dim: d, width of one head (``h / n_h`` unless the config says otherwise).
    intermediate_size: dense MLP width f (for MoE models: kept for reference, unused).
    vocab_size: V, rows of the embedding and of the LM head.
    max_context: ``max_position_embeddings``, tokens.
    tied_embeddings: the LM head shares the embedding matrix.
    gated_mlp: SwiGLU-style MLP (gate + up + down = 3·h·f weights) rather than up + down.
    num_experts: E, experts per MoE layer (0 = dense model; every layer is MoE otherwise).
    num_active_experts: k, experts each token is routed to (top-k).
    expert_intermediate_size: f_e, MLP width of one expert.
    source: where the numbers come from.
    dtype: the checkpoint's weight dtype (``"auto"`` resolves to it): its ``torch_dtype``, or the
        ``quantization_config`` format (``fp8`` block-quantized DeepSeek, ``mxfp4`` gpt-oss).
    shared_expert_intermediate_size: f_s, total MLP width of the shared expert(s) every token
        runs in each MoE layer besides its top-k (DeepSeek ``n_shared_experts ×
        moe_intermediate_size``, Llama 4 ``intermediate_size``); 0 = none.
    num_dense_layers: layers of an MoE model whose MLP is dense, of width ``intermediate_size``
        (DeepSeek ``first_k_dense_replace``; Llama 4 Maverick's non-MoE layers of
        ``interleave_moe_layer_step = 2``, of width ``intermediate_size_mlp``); 0 = every layer MoE.
    kv_lora_rank: MLA (DeepSeek multi-head latent attention) when > 0: the compressed KV width r;
        the cache holds ``r + qk_rope_head_dim`` values per token per layer, shared by all heads.
    q_lora_rank: MLA query compression width (0: a plain query projection).
    qk_rope_head_dim, qk_nope_head_dim, v_head_dim: MLA per-head widths (``head_dim`` is
        ``qk_nope_head_dim + qk_rope_head_dim``).
    sliding_window: W, tokens a windowed layer attends to (Mistral / gpt-oss ``sliding_window``;
        Llama 4's chunked local attention ``attention_chunk_size`` is bounded the same way); 0 = none.
    num_window_layers: how many of the layers use the window (the others attend to the full
        context); ``num_layers`` when every layer is windowed.
    """

    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_context: int
    tied_embeddings: bool
    gated_mlp: bool = True
    num_experts: int = 0
    num_active_experts: int = 0
    expert_intermediate_size: int = 0
    source: str = ""
    dtype: str = "bf16"
    shared_expert_intermediate_size: int = 0
    num_dense_layers: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope_head_dim: int = 0
    qk_nope_head_dim: int = 0
    v_head_dim: int = 0
    sliding_window: int = 0
    num_window_layers: int = 0

    @property
    def is_moe(self) -> bool:
        """True for a mixture-of-experts model (``num_experts > 0``)."""
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        """True for multi-head latent attention (``kv_lora_rank > 0``)."""
        return self.kv_lora_rank > 0

    @property
    def uses_new_architecture(self) -> bool:
        """True when the model uses a feature added with issue 17 (MLA, windowed layers, shared
        experts, dense layers in an MoE model, an FP4 checkpoint): summaries then describe it."""
        return bool(self.is_mla or self.sliding_window or self.shared_expert_intermediate_size
                    or self.num_dense_layers or self.dtype in FP4_DTYPES)

    def describe(self) -> str:
        """One line: attention kind (MHA/GQA/MLA, windowed layers) and MLP (dense, MoE with its
        extras), e.g. ``"MLA r=512+64; MoE 256 experts top-8 + shared expert, 3 dense layers"``."""
        if self.is_mla:
            attn = f"MLA r={self.kv_lora_rank}+{self.qk_rope_head_dim}"
        else:
            attn = "MHA" if self.num_kv_heads == self.num_heads else "GQA"
        if self.sliding_window:
            attn += f", {self.num_window_layers}/{self.num_layers} layers window {self.sliding_window:,}"
        if not self.is_moe:
            return f"{attn}; dense MLP"
        mlp = f"MoE {self.num_experts} experts top-{self.num_active_experts}"
        if self.shared_expert_intermediate_size:
            mlp += " + shared expert"
        if self.num_dense_layers:
            mlp += f", {self.num_dense_layers} dense layers"
        return f"{attn}; {mlp}"

    @property
    def num_moe_layers(self) -> int:
        """Layers with an MoE MLP (0 for dense models)."""
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    @property
    def num_full_attention_layers(self) -> int:
        """Layers attending to the whole context (all but the windowed ones)."""
        return self.num_layers - self.num_window_layers

    @property
    def kv_values_per_token_per_layer(self) -> int:
        """KV-cache values one layer stores per token over all heads: ``2·n_kv·d``, or
        ``kv_lora_rank + qk_rope_head_dim`` with MLA (one latent vector shared by the heads)."""
        if self.is_mla:
            return self.kv_lora_rank + self.qk_rope_head_dim
        return 2 * self.num_kv_heads * self.head_dim

    @property
    def attn_params_per_layer(self) -> int:
        """Weights of one layer's attention: QKV ``h·d·(n_h + 2·n_kv)`` + output ``n_h·d·h``; with
        MLA (:meth:`mla_params`) the query, latent KV and output projections."""
        if self.is_mla:
            return int(sum(self.mla_params(1).values()))
        h, d = self.hidden_size, self.head_dim
        return h * d * (self.num_heads + 2 * self.num_kv_heads) + self.num_heads * d * h

    def mla_params(self, tp: int) -> dict[str, float]:
        """MLA projection weights of one layer on one GPU of a ``tp`` group (vLLM's
        ``DeepseekV2MLAAttention``): ``q_a`` (h × q_lora, replicated), ``q_b`` (q_lora ×
        n_h·(nope+rope), split), or ``q`` (h × n_h·(nope+rope)) without query compression;
        ``kv_a`` (h × (r + rope), replicated), ``kv_b`` (r × n_h·(nope + v), split), ``o``
        (n_h·v × h, split). The small norms of the latent vectors are left out."""
        h, nh = self.hidden_size, self.num_heads / tp
        qk = self.qk_nope_head_dim + self.qk_rope_head_dim
        out = {"q_a": h * self.q_lora_rank, "q_b": self.q_lora_rank * nh * qk} if self.q_lora_rank else \
            {"q": h * nh * qk}
        out["kv_a"] = h * (self.kv_lora_rank + self.qk_rope_head_dim)
        out["kv_b"] = self.kv_lora_rank * nh * (self.qk_nope_head_dim + self.v_head_dim)
        out["o"] = nh * self.v_head_dim * h
        return out

    @property
    def mlp_matrices(self) -> int:
        """Weight matrices per MLP (or per expert): 3 for a gated MLP, else 2."""
        return 3 if self.gated_mlp else 2

    @property
    def mlp_params_per_layer(self) -> int:
        """Weights of one (MoE, if the model is) layer's MLP; for MoE all experts, the shared
        expert(s) and the router (``h·E``)."""
        h = self.hidden_size
        if self.is_moe:
            return ((self.num_experts * self.expert_intermediate_size + self.shared_expert_intermediate_size)
                    * self.mlp_matrices * h + h * self.num_experts)
        return self.mlp_matrices * h * self.intermediate_size

    @property
    def active_mlp_params_per_layer(self) -> int:
        """MLP weights one token uses in one (MoE) layer (k experts, shared expert(s), router)."""
        h = self.hidden_size
        if self.is_moe:
            return ((self.num_active_experts * self.expert_intermediate_size + self.shared_expert_intermediate_size)
                    * self.mlp_matrices * h + h * self.num_experts)
        return self.mlp_matrices * h * self.intermediate_size

    @property
    def dense_mlp_params(self) -> int:
        """Weights of the dense MLPs of an MoE model's ``num_dense_layers`` (0 otherwise)."""
        return self.num_dense_layers * self.mlp_matrices * self.hidden_size * self.intermediate_size

    @property
    def embedding_params(self) -> int:
        """Embedding plus (untied) LM-head weights: ``V·h`` or ``2·V·h``."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def norm_params(self) -> int:
        """RMSNorm weights: two per layer plus the final norm (``(2L + 1)·h``)."""
        return (2 * self.num_layers + 1) * self.hidden_size

    @property
    def num_params(self) -> int:
        """Total parameters (biases ignored: Qwen2.5's QKV biases are < 0.01 % of weights)."""
        return (self.num_layers * self.attn_params_per_layer + self._mlp_layers * self.mlp_params_per_layer
                + self.dense_mlp_params + self.embedding_params + self.norm_params)

    @property
    def num_active_params(self) -> int:
        """Parameters used per token (= ``num_params`` for dense models)."""
        return (self.num_layers * self.attn_params_per_layer + self._mlp_layers * self.active_mlp_params_per_layer
                + self.dense_mlp_params + self.embedding_params + self.norm_params)

    @property
    def _mlp_layers(self) -> int:
        """Layers whose MLP is :attr:`mlp_params_per_layer` (all but an MoE model's dense ones)."""
        return self.num_layers - self.num_dense_layers


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model: datasheet facts plus fitted efficiency factors.

    Attributes
    ----------
    name: catalog name (``"h100-sxm"``).
    memory_gib: on-board memory, GiB.
    mem_bw_gbps: peak DRAM bandwidth, GB/s (1e9 bytes/s).
    peak_tflops_bf16: dense BF16/FP16 tensor-core peak, TFLOP/s.
    peak_tflops_fp8: dense FP8 peak, TFLOP/s; 0 when the GPU has no FP8 tensor cores.
    peak_tflops_fp4: dense FP4 (MXFP4/NVFP4) peak, TFLOP/s; 0 when the GPU has no FP4 tensor
        cores (FP4 weights then run weight-only at the 16-bit peak, see ``oracle.cost``).
    link_bw_gbps: GPU-to-GPU bandwidth per direction, GB/s (NVLink, else PCIe).
    eff_compute: achievable fraction of peak FLOP/s in GEMMs (fitted).
    eff_memory: achievable fraction of peak DRAM bandwidth (fitted).
    layer_overhead_s: fixed time per layer of the small kernels (norms, rotary, activation,
        residual add), seconds.
    step_overhead_s: per-step CPU time (scheduler, input preparation, sampling), seconds.
    link_latency_s: fixed latency of one collective / point-to-point transfer, seconds.
    source: the datasheet(s) the facts come from.
    calibration_note: where the fitted factors come from.
    kernel_overhead_s: fixed time added to each GEMM kernel, seconds.
    roofline_overlap: fraction of the shorter of (compute, memory) time that is not hidden
        under the longer one: ``t = max(c, m) + overlap·min(c, m)``; 0 = pure roofline.
    eff_attn_compute: achievable fraction of peak FLOP/s in attention kernels
        (None: ``eff_compute``).
    eff_attn_memory: achievable fraction of DRAM bandwidth when attention reads the KV
        cache (None: ``eff_memory``).
    attn_overhead_s: fixed time of an attention kernel, seconds (None: ``kernel_overhead_s``).
    eff_link: achievable fraction of ``link_bw_gbps`` in NCCL collectives.
    eff_elementwise: achievable fraction of DRAM bandwidth in the small per-layer kernels
        (norms, rotary, activation, residual add, KV-cache write) (None: ``eff_memory``).
    link_kind: ``"nvlink"``, ``"pcie"`` or ``"xgmi"``: whether the GPUs of a TP group share a
        direct all-to-all link (NVLink/NVSwitch, Infinity Fabric), which a framework's custom
        all-reduce needs; over PCIe every all-reduce is NCCL's.
    custom_ar_latency_s: fixed time of one custom (one-shot / two-shot) all-reduce over the
        link, seconds (framework all-reduce of small messages; NCCL's is ``link_latency_s``).
    e2e_calibration_note: which factors were fitted end to end on real serving runs
        (``oracle calibrate-e2e``), on what, and with which errors ("" if none).
    host_link_gbps: GPU <-> host-memory bandwidth per direction, effective GB/s (PCIe Gen4 x16
        ~25, Gen5 x16 ~50, NVLink-C2C ~450): KV offload loads (``oracle.kv_offload``).
    host_link_latency_s: fixed time of one host -> GPU KV load (copy launch and DMA setup).
    """

    name: str
    memory_gib: float
    mem_bw_gbps: float
    peak_tflops_bf16: float
    peak_tflops_fp8: float
    link_bw_gbps: float
    eff_compute: float
    eff_memory: float
    layer_overhead_s: float
    step_overhead_s: float
    link_latency_s: float
    source: str = ""
    calibration_note: str = ""
    kernel_overhead_s: float = 0.0
    roofline_overlap: float = 0.0
    eff_attn_compute: float | None = None
    eff_attn_memory: float | None = None
    attn_overhead_s: float | None = None
    eff_link: float = 1.0
    eff_elementwise: float | None = None
    link_kind: str = "nvlink"
    custom_ar_latency_s: float = 0.0
    e2e_calibration_note: str = ""
    peak_tflops_fp4: float = 0.0
    host_link_gbps: float = 25.0
    host_link_latency_s: float = 1e-5

    @property
    def memory_bytes(self) -> int:
        """On-board memory in bytes."""
        return int(round(self.memory_gib * 2**30))

    @property
    def has_fp8(self) -> bool:
        """True when the GPU has FP8 tensor cores."""
        return self.peak_tflops_fp8 > 0

    @property
    def has_fp4(self) -> bool:
        """True when the GPU has FP4 tensor cores."""
        return self.peak_tflops_fp4 > 0


@dataclass(frozen=True)
class FrameworkSpec:
    """A serving framework's constants: its request path and what its engine does around the
    GPU kernels (``frameworks.toml``; units: seconds, bytes, tokens).

    Attributes
    ----------
    name: catalog name (the ``[[frameworks]] type``, e.g. ``"vllm"``).
    api_server_s: per-request time on the request path outside the engine: HTTP, tokenization,
        hand-over to the engine, detokenization and streaming of the first token. Added to
        TTFT and E2E (the simulator shifts each request's arrival into the engine by it).
    async_scheduling: the engine prepares step k+1 on the CPU while the GPU runs step k, so a
        step lasts ``max(gpu, cpu)`` instead of ``gpu + cpu``, and step k+1 is scheduled before
        step k's outputs exist (vLLM ``AsyncScheduler``; oracle/engine/README.md "Async
        scheduling"). A ``[[frameworks]]`` entry may override it.
    cudagraph_max_tokens: steps of at most this many tokens run a captured CUDA graph padded
        to the next capture size (0: no CUDA graphs); capped at ``2 x max_num_seqs`` (vLLM).
    custom_allreduce_max_bytes: all-reduce messages up to this size use the framework's own
        one-shot / two-shot all-reduce when the GPUs are linked all-to-all (NVLink, xGMI);
        larger ones and PCIe use NCCL (0: NCCL only).
    cpu_step_s: CPU time per step (scheduling, input preparation, output processing);
        None: the GPU catalog's ``step_overhead_s``.
    cpu_seq_s: CPU time per emitting sequence per step.
    source: where the constants come from.
    calibration_note: which constants were fitted, on what.
    """

    name: str
    api_server_s: float = 0.0
    async_scheduling: bool = False
    cudagraph_max_tokens: int = 0
    custom_allreduce_max_bytes: int = 0
    cpu_step_s: float | None = None
    cpu_seq_s: float = 0.0
    source: str = ""
    calibration_note: str = ""


@dataclass(frozen=True)
class LinkSpec:
    """A link a decode replica pulls KV over in a disaggregated deployment (``links.toml``).

    Attributes
    ----------
    name: catalog name (``"infiniband"``).
    bandwidth_gbps: per GPU and direction, GB/s (1e9 bytes/s).
    latency_s: one-way latency of a transfer, seconds.
    overhead_s: fixed cost per request transfer, seconds.
    source: where the figures come from.
    """

    name: str
    bandwidth_gbps: float
    latency_s: float
    overhead_s: float
    source: str = ""


# -- validation of one table ---------------------------------------------------------------

_FITTED_KEYS = ("eff_compute", "eff_memory", "roofline_overlap", "kernel_overhead_s",
                "eff_elementwise", "layer_overhead_s", "eff_attn_compute", "eff_attn_memory",
                "attn_overhead_s", "eff_link", "link_latency_s", "step_overhead_s", "custom_ar_latency_s")


def model_from_table(t: Table, *, name: str | None = None) -> ModelSpec:
    """Build a :class:`ModelSpec` from a validated table (``[model.architecture]``).

    Required keys: ``num_layers, hidden_size, num_heads, intermediate_size, vocab_size,
    max_context``. Optional: ``name`` (default ``name`` argument or ``"custom"``),
    ``num_kv_heads`` (= num_heads), ``head_dim`` (= hidden_size / num_heads),
    ``tied_embeddings`` (false), ``gated_mlp`` (true), ``num_experts`` (0),
    ``num_active_experts``, ``expert_intermediate_size`` (required when num_experts > 0),
    ``shared_expert_intermediate_size`` and ``num_dense_layers`` (0; MoE only), MLA's
    ``kv_lora_rank`` (0), ``q_lora_rank``, ``qk_rope_head_dim``, ``qk_nope_head_dim``,
    ``v_head_dim``, ``sliding_window`` (0; < max_context), ``num_window_layers`` (all layers),
    ``dtype`` ("bf16"), ``source`` (""). Unknown keys are errors; ``t.done()`` is called.
    """
    model_name = t.str("name", name or "custom")
    num_layers = t.int("num_layers", lo=1, hi=100_000)
    hidden = t.int("hidden_size", lo=1)
    num_heads = t.int("num_heads", lo=1)
    num_kv_heads = t.int("num_kv_heads", num_heads, lo=1)
    if t.ok("num_kv_heads") and (num_kv_heads > num_heads or num_heads % num_kv_heads):
        t.report("num_kv_heads", f"must divide num_heads ({num_heads}), got {num_kv_heads}")
    if not t.has("head_dim") and hidden % num_heads:
        t.report("head_dim", f"is required when hidden_size ({hidden}) is not a multiple of "
                             f"num_heads ({num_heads})")
    head_dim = t.int("head_dim", hidden // num_heads, lo=1)
    intermediate = t.int("intermediate_size", lo=1)
    vocab = t.int("vocab_size", lo=1)
    max_context = t.int("max_context", lo=1)
    tied = t.bool("tied_embeddings", False)
    gated = t.bool("gated_mlp", True)
    num_experts = t.int("num_experts", 0, lo=0)
    if num_experts:
        active = t.int("num_active_experts", lo=1, hi=num_experts)
        expert_inter = t.int("expert_intermediate_size", lo=1)
    else:
        active = t.int("num_active_experts", 0, lo=0, hi=0)
        expert_inter = t.int("expert_intermediate_size", 0, lo=0, hi=0)
    moe_zero = {} if num_experts else {"hi": 0}   # MoE-only keys must stay 0 for a dense model
    shared = t.int("shared_expert_intermediate_size", 0, lo=0, **moe_zero)
    dense_layers = t.int("num_dense_layers", 0, lo=0, hi=num_layers - 1 if num_experts else 0)
    arch = {"shared_expert_intermediate_size": shared, "num_dense_layers": dense_layers}
    arch.update(_mla_keys(t, head_dim))
    window = t.int("sliding_window", 0, lo=0)
    if t.ok("sliding_window") and window >= max_context:
        t.report("sliding_window", f"must be smaller than max_context ({max_context}) (a window as long as the "
                                   f"context is full attention; leave it 0), got {window}")
    arch["sliding_window"] = window
    arch["num_window_layers"] = t.int("num_window_layers", num_layers if window else 0, lo=1 if window else 0,
                                      hi=num_layers if window else 0)
    dtype = t.str("dtype", "bf16", choices=DTYPES)
    source = t.str("source", "")
    t.done()
    return ModelSpec(name=model_name, num_layers=num_layers, hidden_size=hidden, num_heads=num_heads,
                     num_kv_heads=num_kv_heads, head_dim=head_dim, intermediate_size=intermediate,
                     vocab_size=vocab, max_context=max_context, tied_embeddings=tied, gated_mlp=gated,
                     num_experts=num_experts, num_active_experts=active,
                     expert_intermediate_size=expert_inter, source=source, dtype=dtype, **arch)


_MLA_DIMS = ("qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")


def _mla_keys(t: Table, head_dim: int) -> dict[str, int]:
    """MLA keys of a model table: ``kv_lora_rank`` > 0 needs the three per-head widths (and
    ``head_dim = qk_nope_head_dim + qk_rope_head_dim``); without it they must be absent."""
    rank = t.int("kv_lora_rank", 0, lo=0)
    if not rank:
        for key in ("q_lora_rank", *_MLA_DIMS):
            t.int(key, 0, lo=0, hi=0)
        return {}
    out = {"kv_lora_rank": rank, "q_lora_rank": t.int("q_lora_rank", 0, lo=0)}
    for key in _MLA_DIMS:
        out[key] = t.int(key, lo=1)
    if t.ok(*_MLA_DIMS) and head_dim != out["qk_nope_head_dim"] + out["qk_rope_head_dim"]:
        t.report("head_dim", f"must be qk_nope_head_dim + qk_rope_head_dim "
                             f"({out['qk_nope_head_dim'] + out['qk_rope_head_dim']}) for MLA, got {head_dim}")
    return out


def gpu_table_items(spec: GpuSpec) -> dict:
    """A spec's fields as an inline ``[hardware.gpu]`` table would hold them (no ``name``; None
    and "" left out, :data:`OPTIONAL_GPU_KEYS` only when non-zero)."""
    out = {}
    for f in dataclasses.fields(spec):
        v = getattr(spec, f.name)
        if f.name == "name" or v is None or v == "" or (f.name in OPTIONAL_GPU_KEYS and not v):
            continue
        out[f.name] = v
    return out


def _fitted_values(t: Table, defaults: dict[str, float]) -> dict[str, float]:
    out = {}
    for k in _FITTED_KEYS:
        # efficiencies are fractions in (0, 1]; overheads are seconds in [0, 1]
        out[k] = t.float(k, defaults[k], lo=0.0, hi=1.0, lo_open=k.startswith("eff_"))
    return out


def gpu_from_table(t: Table, *, name: str | None = None) -> GpuSpec:
    """Build a :class:`GpuSpec` from a validated table (``[hardware.custom]``).

    Required keys: ``memory_gib, mem_bw_gbps, peak_tflops_bf16``. Optional: ``name``
    (default ``name`` argument or ``"custom"``), ``peak_tflops_fp8`` (0), ``peak_tflops_fp4`` (0),
    ``link_bw_gbps`` (32, PCIe Gen4 x16 per direction), ``host_link_gbps`` (25, PCIe Gen4 x16
    effective), ``host_link_latency_s`` (1e-5), ``source``, ``calibration_note``, and
    every fitted factor (``eff_compute``, ``eff_memory``, ``roofline_overlap``,
    ``kernel_overhead_s``, ``eff_elementwise``, ``layer_overhead_s``, ``eff_attn_compute``, ``eff_attn_memory``,
    ``attn_overhead_s``, ``eff_link``, ``link_latency_s``, ``step_overhead_s``,
    ``custom_ar_latency_s``), which default to the catalog's ``[defaults]`` (derived from the
    A100/A40 calibration), ``link_kind`` (``"nvlink"`` when ``link_bw_gbps`` is given and above
    PCIe Gen5 x16's 64 GB/s, else ``"pcie"``) and ``e2e_calibration_note``.
    Unknown keys are errors; ``t.done()`` is called.
    """
    defaults = gpu_defaults()
    gpu_name = t.str("name", name or "custom")
    memory = t.float("memory_gib", lo=0.0, lo_open=True)
    bw = t.float("mem_bw_gbps", lo=0.0, lo_open=True)
    bf16 = t.float("peak_tflops_bf16", lo=0.0, lo_open=True)
    fp8 = t.float("peak_tflops_fp8", 0.0, lo=0.0)
    fp4 = t.float("peak_tflops_fp4", 0.0, lo=0.0)
    link = t.float("link_bw_gbps", 32.0, lo=0.0, lo_open=True)
    link_kind = t.str("link_kind", "nvlink" if link > 64.0 else "pcie",
                      choices=LINK_KINDS)
    source = t.str("source", "")
    fitted = _fitted_values(t, defaults)
    has_own = any(t.has(k) for k in _FITTED_KEYS)
    note = t.str("calibration_note", "" if has_own else str(defaults["calibration_note"]))
    e2e_note = t.str("e2e_calibration_note", "")
    host_link = t.float("host_link_gbps", 25.0, lo=0.0, lo_open=True, hi=1e5)
    host_latency = t.float("host_link_latency_s", 1e-5, lo=0.0, hi=1.0)
    t.done()
    return GpuSpec(name=gpu_name, memory_gib=memory, mem_bw_gbps=bw, peak_tflops_bf16=bf16,
                   peak_tflops_fp8=fp8, peak_tflops_fp4=fp4, link_bw_gbps=link, source=source, calibration_note=note,
                   link_kind=link_kind, e2e_calibration_note=e2e_note, host_link_gbps=host_link,
                   host_link_latency_s=host_latency, **fitted)


# -- the catalog files -----------------------------------------------------------------------

def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:  # a broken catalog is a packaging bug, but say where
        raise ScenarioError(f"invalid TOML: {exc}", file=path) from None


def _load_section(path: Path, section: str, parse, *, also: tuple[str, ...] = ()) -> dict:
    """Every entry of the catalog file's ``[section.<name>]`` tables, parsed by ``parse(table,
    name=...)``; each must name its ``source``. ``also``: other top-level tables the file may
    hold (read elsewhere). Problems name the file."""
    root = Table(_read_toml(path))
    out = {}
    try:
        for other in also:
            root.table(other)
        tables = root.table(section)
        root.done()
        for name in tables.raw:
            t = tables.table(name)
            spec = parse(t, name=name)
            if not spec.source:
                raise t.error("source", "is required in the catalog")
            out[name] = spec
    except ScenarioError as exc:
        raise _with_file(exc, path) from None
    return out


def _with_file(exc: ScenarioError, path: Path) -> ScenarioError:
    return exc.with_context(file=path)  # type: ignore[return-value]


@functools.cache
def gpu_defaults() -> dict[str, float | str]:
    """The ``[defaults]`` table of gpus.toml: fitted factors for GPUs without their own."""
    raw = _read_toml(GPUS_TOML)
    t = Table(raw.get("defaults", {}), "defaults")
    try:
        out: dict[str, float | str] = {k: t.float(k, lo=0.0) for k in _FITTED_KEYS}
        out["calibration_note"] = t.str("calibration_note")
        t.done()
    except ScenarioError as exc:
        raise _with_file(exc, GPUS_TOML) from None
    return out


@functools.cache
def _models_and_aliases() -> tuple[dict[str, ModelSpec], dict[str, str], dict[str, tuple[str, ...]]]:
    raw = _read_toml(MODELS_TOML)
    root = Table(raw)
    models: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    listed: dict[str, tuple[str, ...]] = {}
    try:
        section = root.table("models")
        root.done()
        for name in section.raw:
            t = section.table(name)
            names = t.any("aliases", [])
            if not isinstance(names, list) or not all(isinstance(a, str) for a in names):
                raise t.error("aliases", "must be an array of strings")
            spec = model_from_table(t, name=name)
            if spec.name != name:
                raise t.error("name", f"must match the table name {name!r}")
            if not spec.source:
                raise t.error("source", "is required in the catalog")
            models[name] = spec
            listed[name] = tuple(names)
            for alias in [name, *names]:
                key = alias.lower()
                if aliases.get(key, name) != name:
                    raise t.error("aliases", f"{alias!r} already names {aliases[key]!r}")
                aliases[key] = name
    except ScenarioError as exc:
        raise _with_file(exc, MODELS_TOML) from None
    return models, aliases, listed


def load_models() -> dict[str, ModelSpec]:
    """All catalog models by name (cached; do not mutate the returned dict)."""
    return _models_and_aliases()[0]


def model_aliases() -> dict[str, str]:
    """Lower-cased alias (including each name itself) -> catalog model name."""
    return _models_and_aliases()[1]


def aliases_of(name: str) -> tuple[str, ...]:
    """The aliases a catalog model lists, as written in models.toml."""
    return _models_and_aliases()[2][name]


@functools.cache
def load_gpus() -> dict[str, GpuSpec]:
    """All catalog GPUs by name (cached; do not mutate the returned dict)."""
    return _load_section(GPUS_TOML, "gpus", gpu_from_table, also=("defaults",))


def _unknown(kind: str, name: str, known: list[str], key: str) -> ScenarioError:
    low = name.strip().lower()
    starts = [k for k in known if k.startswith(low)] if low else []
    if len(starts) == 1:
        hint = f" (did you mean '{starts[0]}'?)"
    elif starts:
        hint = " (did you mean one of " + ", ".join(f"'{k}'" for k in starts) + "?)"
    else:
        hint = did_you_mean(low, known)
    return ScenarioError(f"unknown {kind} {name!r}{hint}; known {kind}s: {', '.join(known)}", key=key)


def get_model(name: str, *, key: str = "model.name") -> ModelSpec:
    """Look a model up by name or alias, case-insensitively.

    Raises ScenarioError(key=key) naming the closest match and all known models.
    """
    if not isinstance(name, str):
        raise ScenarioError(f"must be a string, got {name!r}", key=key)
    models, aliases, _ = _models_and_aliases()
    canonical = aliases.get(name.strip().lower())
    if canonical is None:
        raise _unknown("model", name, sorted(models), key)
    return models[canonical]


def get_gpu(name: str, *, key: str = "hardware.gpu") -> GpuSpec:
    """Look a GPU up by name, case-insensitively (``"H100-SXM"`` works).

    Raises ScenarioError(key=key) naming the closest match and all known GPUs.
    """
    if not isinstance(name, str):
        raise ScenarioError(f"must be a string, got {name!r}", key=key)
    gpus = load_gpus()
    spec = gpus.get(name.strip().lower())
    if spec is None:
        raise _unknown("GPU", name, sorted(gpus), key)
    return spec


# -- frameworks ------------------------------------------------------------------------------

def framework_from_table(t: Table, *, name: str | None = None) -> FrameworkSpec:
    """Build a :class:`FrameworkSpec` from a validated table (a ``[frameworks.<name>]`` entry).

    Every key is optional and defaults to "nothing modelled" (no API-server time, no async
    scheduling, no CUDA graphs, NCCL only, the GPU's ``step_overhead_s``). Unknown keys are
    errors; ``t.done()`` is called.
    """
    spec = FrameworkSpec(
        name=t.str("name", name or "custom"),
        api_server_s=t.float("api_server_s", 0.0, lo=0.0, hi=10.0),
        async_scheduling=t.bool("async_scheduling", False),
        cudagraph_max_tokens=t.int("cudagraph_max_tokens", 0, lo=0, hi=1_000_000),
        custom_allreduce_max_bytes=t.int("custom_allreduce_max_bytes", 0, lo=0, hi=2**40),
        cpu_step_s=t.float("cpu_step_s", None, lo=0.0, hi=10.0),
        cpu_seq_s=t.float("cpu_seq_s", 0.0, lo=0.0, hi=1.0),
        source=t.str("source", ""),
        calibration_note=t.str("calibration_note", ""),
    )
    t.done()
    return spec


@functools.cache
def load_frameworks() -> dict[str, FrameworkSpec]:
    """All catalog frameworks by name (cached; do not mutate the returned dict)."""
    return _load_section(FRAMEWORKS_TOML, "frameworks", framework_from_table)


def link_from_table(t: Table, *, name: str | None = None) -> LinkSpec:
    """Build a :class:`LinkSpec` from a ``[links.<name>]`` table (``t.done()`` is called)."""
    spec = LinkSpec(name=name or "custom", bandwidth_gbps=t.float("bandwidth_gbps", lo=0.0, lo_open=True),
                    latency_s=t.float("latency_s", lo=0.0), overhead_s=t.float("overhead_s", lo=0.0),
                    source=t.str("source", ""))
    t.done()
    return spec


@functools.cache
def load_links() -> dict[str, LinkSpec]:
    """All catalog KV-transfer links by name (cached; do not mutate the returned dict)."""
    return _load_section(LINKS_TOML, "links", link_from_table)


def get_framework(name: str, *, key: str = "frameworks.type") -> FrameworkSpec:
    """Look a serving framework up by name (``"vllm"``); ``"none"`` is the bare roofline (no
    framework terms). Raises ScenarioError(key=key) naming the known ones."""
    if not isinstance(name, str):
        raise ScenarioError(f"must be a string, got {name!r}", key=key)
    low = name.strip().lower()
    if low == "none":
        return FrameworkSpec(name="none", source="no framework: the roofline alone")
    frameworks = load_frameworks()
    spec = frameworks.get(low)
    if spec is None:
        raise _unknown("framework", name, sorted([*frameworks, "none"]), key)
    return spec
