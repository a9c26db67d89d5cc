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

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path

from oracle._config import Table, did_you_mean
from oracle.errors import ScenarioError

__all__ = ["ModelSpec", "GpuSpec", "FrameworkSpec", "load_models", "load_gpus", "load_frameworks", "get_model",
           "get_gpu", "get_framework", "model_from_table", "gpu_from_table", "framework_from_table", "gpu_defaults",
           "model_aliases", "aliases_of", "LINK_KINDS"]

_HERE = Path(__file__).resolve().parent
MODELS_TOML = _HERE / "models.toml"
GPUS_TOML = _HERE / "gpus.toml"
FRAMEWORKS_TOML = _HERE / "frameworks.toml"
LINKS_TOML = _HERE / "links.toml"

DTYPES = ("bf16", "fp16", "fp8", "fp32")
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
    dtype: the checkpoint's ``torch_dtype`` (``"auto"`` resolves to it).
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

    @property
    def is_moe(self) -> bool:
        """True for a mixture-of-experts model (``num_experts > 0``)."""
        return self.num_experts > 0

    @property
    def attn_params_per_layer(self) -> int:
        """Weights of one layer's attention: QKV ``h·d·(n_h + 2·n_kv)`` + output ``n_h·d·h``."""
        h, d = self.hidden_size, self.head_dim
        return h * d * (self.num_heads + 2 * self.num_kv_heads) + self.num_heads * d * h

    @property
    def mlp_matrices(self) -> int:
        """Weight matrices per MLP (or per expert): 3 for a gated MLP, else 2."""
        return 3 if self.gated_mlp else 2

    @property
    def mlp_params_per_layer(self) -> int:
        """Weights of one layer's MLP; for MoE all experts plus the router (``h·E``)."""
        h = self.hidden_size
        if self.is_moe:
            return self.num_experts * self.mlp_matrices * h * self.expert_intermediate_size + h * self.num_experts
        return self.mlp_matrices * h * self.intermediate_size

    @property
    def active_mlp_params_per_layer(self) -> int:
        """MLP weights one token uses in one layer (k experts + router for MoE)."""
        h = self.hidden_size
        if self.is_moe:
            return (self.num_active_experts * self.mlp_matrices * h * self.expert_intermediate_size
                    + h * self.num_experts)
        return self.mlp_matrices * h * self.intermediate_size

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
        return (self.num_layers * (self.attn_params_per_layer + self.mlp_params_per_layer)
                + self.embedding_params + self.norm_params)

    @property
    def num_active_params(self) -> int:
        """Parameters used per token (= ``num_params`` for dense models)."""
        return (self.num_layers * (self.attn_params_per_layer + self.active_mlp_params_per_layer)
                + self.embedding_params + self.norm_params)


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

    @property
    def memory_bytes(self) -> int:
        """On-board memory in bytes."""
        return int(round(self.memory_gib * 2**30))

    @property
    def has_fp8(self) -> bool:
        """True when the GPU has FP8 tensor cores."""
        return self.peak_tflops_fp8 > 0


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
        step lasts ``max(gpu, cpu)`` instead of ``gpu + cpu``.
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
    dtype = t.str("dtype", "bf16", choices=DTYPES)
    source = t.str("source", "")
    t.done()
    return ModelSpec(name=model_name, num_layers=num_layers, hidden_size=hidden, num_heads=num_heads,
                     num_kv_heads=num_kv_heads, head_dim=head_dim, intermediate_size=intermediate,
                     vocab_size=vocab, max_context=max_context, tied_embeddings=tied, gated_mlp=gated,
                     num_experts=num_experts, num_active_experts=active,
                     expert_intermediate_size=expert_inter, source=source, dtype=dtype)


def _fitted_values(t: Table, defaults: dict[str, float]) -> dict[str, float]:
    out = {}
    for k in _FITTED_KEYS:
        # efficiencies are fractions in (0, 1]; overheads are seconds in [0, 1]
        out[k] = t.float(k, defaults[k], lo=0.0, hi=1.0, lo_open=k.startswith("eff_"))
    return out


def gpu_from_table(t: Table, *, name: str | None = None) -> GpuSpec:
    """Build a :class:`GpuSpec` from a validated table (``[hardware.custom]``).

    Required keys: ``memory_gib, mem_bw_gbps, peak_tflops_bf16``. Optional: ``name``
    (default ``name`` argument or ``"custom"``), ``peak_tflops_fp8`` (0),
    ``link_bw_gbps`` (32, PCIe Gen4 x16 per direction), ``source``, ``calibration_note``, and
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
    link = t.float("link_bw_gbps", 32.0, lo=0.0, lo_open=True)
    link_kind = t.str("link_kind", "nvlink" if link > 64.0 else "pcie",
                      choices=LINK_KINDS)
    source = t.str("source", "")
    fitted = _fitted_values(t, defaults)
    has_own = any(t.has(k) for k in _FITTED_KEYS)
    note = t.str("calibration_note", "" if has_own else str(defaults["calibration_note"]))
    e2e_note = t.str("e2e_calibration_note", "")
    t.done()
    return GpuSpec(name=gpu_name, memory_gib=memory, mem_bw_gbps=bw, peak_tflops_bf16=bf16,
                   peak_tflops_fp8=fp8, link_bw_gbps=link, source=source, calibration_note=note,
                   link_kind=link_kind, e2e_calibration_note=e2e_note, **fitted)


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
