"""Scenario files: TOML -> a validated, frozen :class:`Scenario` (DESIGN.md §7, §9).

Every section is read through :class:`oracle._config.Table`, so a bad value is reported as
``file: key.path: reason`` and unknown keys get a "did you mean" hint. Defaults follow vLLM
where vLLM has the setting (block_size 16, max_num_seqs 256, max_num_batched_tokens 8192,
gpu_memory_utilization 0.9, chunked prefill on, prefix caching on).
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oracle._config import Table, key_position
from oracle.catalog import get_gpu, get_model, gpu_from_table, model_from_table
from oracle.engine.inputs import DECODE_ROUTER_NAMES, ROUTER_NAMES
from oracle.errors import OracleError, Problems, ScenarioError, Skip, read_text_file
from oracle.lora import (DEFAULT_LORA_DISK_BW_GBPS, DEFAULT_LORA_HOST_BW_GBPS, check_lora_framework,
                         lora_buffer_bytes_per_gpu)
from oracle.memory import check_dtype_on_gpu, check_expert_parallel, compute_num_gpu_blocks, resolve_kv_dtype
from oracle.specdec import check_budget, parse_speculative
from oracle.workload.spec import max_prompt_tokens, parse_workload

DTYPES = ("bf16", "fp16", "fp8", "mxfp4", "nvfp4")
KV_DTYPES = ("auto", "bf16", "fp16", "fp8")
ROUTERS = tuple(ROUTER_NAMES)
OUTPUT_FORMATS = ("parquet", "csv")
OUTPUT_STYLES = ("default", "original")


@dataclass(frozen=True)
class SimulationConfig:
    """When to stop generating requests and what to leave out of the summary."""

    duration_s: float | None = None   # generate arrivals in [0, duration_s)
    num_requests: int | None = None   # or stop after this many requests (all turns counted)
    warm_up_s: float = 0.0            # requests arriving before this are simulated, not summarised


@dataclass(frozen=True)
class FrameworkConfig:
    """One ``[[frameworks]]`` entry: a serving-engine configuration (vLLM v1)."""

    name: str = "vllm"
    type: str = "vllm"
    tp: int = 1                                 # tensor parallel size (GPUs per stage)
    pp: int = 1                                 # pipeline parallel stages
    replicas: int = 1                           # data-parallel copies
    router: str = "round_robin"                 # how requests are spread over replicas
    block_size: int = 16                        # tokens per KV block
    num_gpu_blocks: int | str | None = None     # pinned KV blocks per replica, "unlimited", or from memory
    gpu_memory_utilization: float = 0.9         # share of GPU memory vLLM may use
    max_num_seqs: int = 256                     # max running sequences per replica
    max_num_batched_tokens: int = 8192          # token budget per step
    max_model_len: int | None = None            # default: the model's context length
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    scheduler_reserve_full_isl: bool = True     # vLLM: admit only if the whole known sequence fits
    dtype: str | None = None                    # weights dtype override (default: [model].dtype)
    kv_cache_dtype: str | None = None           # KV dtype override (default: [model].kv_cache_dtype)
    scheduler_overhead_s: float | None = None   # per-step CPU time (default: framework catalog / GPU)
    api_server_s: float | None = None           # per-request time outside the engine (default: framework catalog)
    async_scheduling: bool | None = None        # vLLM async scheduling (default: framework catalog; vllm: on)
    kv_offload: Any = None                      # host KV tier (oracle.kv_offload.KvOffloadConfig), None: off
    enable_lora: bool = False                   # vLLM --enable-lora (oracle.lora)
    max_loras: int = 1                          # distinct LoRA adapters in a batch (GPU slots)
    max_lora_rank: int = 16                     # rank of the GPU LoRA buffers (adapters padded to it)
    max_cpu_loras: int | None = None            # adapters cached in host memory (default: max_loras)
    lora_host_bw_gbps: float = DEFAULT_LORA_HOST_BW_GBPS   # host -> GPU adapter copy, GB/s
    lora_disk_bw_gbps: float = DEFAULT_LORA_DISK_BW_GBPS   # disk -> host adapter read, GB/s
    model: Any = None                           # its own ModelSpec (``model = ...``), else [model]
    data_parallel_size: int = 1                 # attention-DP ranks sharing the MoE layers (each one replica)
    expert_parallel: bool = False               # vLLM --enable-expert-parallel: EP size tp x data_parallel_size
    expert_imbalance: float = 1.0               # busiest EP rank's routed tokens / the mean

    @property
    def ep_size(self) -> int:
        """Expert-parallel size (1 without expert parallelism)."""
        return self.tp * self.data_parallel_size if self.expert_parallel else 1
    prefill: Any = None       # PoolConfig: prefill pool of a disaggregated deployment (None: aggregated)
    decode: Any = None        # PoolConfig: its decode pool
    kv_transfer: Any = None   # KvTransferConfig: the link between them
    speculative: Any = None                     # oracle.specdec.SpecConfig ([frameworks.speculative]), None: off

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def disaggregated(self) -> bool:
        return self.prefill is not None

    def shape(self, sep: str = "x") -> str:
        """``4x tp1 pp1``, or ``1P x tp2 pp1 + 1D x tp2 pp1`` for a disaggregated entry."""
        if not self.disaggregated:
            return f"{self.replicas}{sep} tp{self.tp} pp{self.pp}"
        p, d = (pool_framework(self, w) for w in POOLS)
        return f"{p.replicas}P x tp{p.tp} pp{p.pp} + {d.replicas}D x tp{d.tp} pp{d.pp}"

    @property
    def num_gpus(self) -> int:
        if self.disaggregated:
            return sum(pool_framework(self, which).num_gpus for which in POOLS)
        return self.tp * self.pp * self.replicas


@dataclass(frozen=True)
class PoolConfig:
    """``prefill = { ... }`` / ``decode = { ... }`` of a ``[[frameworks]]`` entry: a pool of
    replicas with its own engine settings (None: the entry's own value)."""

    replicas: int = 1
    tp: int | None = None
    pp: int | None = None
    gpu: str | None = None                 # catalog GPU of this pool (default: [hardware] gpu)
    router: str | None = None
    num_gpu_blocks: int | str | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    enable_chunked_prefill: bool | None = None
    enable_prefix_caching: bool | None = None
    scheduler_overhead_s: float | None = None


@dataclass(frozen=True)
class KvTransferConfig:
    """``kv_transfer = { link, bandwidth_gbps?, latency_s?, overhead_s? }``: the link a decode
    replica pulls a prompt's KV over (catalog ``links.toml``; given values override it)."""

    link: str = "infiniband"
    bandwidth_gbps: float = 50.0   # per GPU and direction, GB/s
    latency_s: float = 5e-6
    overhead_s: float = 1e-4


POOLS = ("prefill", "decode")
POOL_KEYS = tuple(f.name for f in dataclasses.fields(PoolConfig))


def pool_framework(fw: FrameworkConfig, which: str) -> FrameworkConfig:
    """The aggregated-style config of one pool: the entry's settings with the pool's own."""
    pool = getattr(fw, which)
    own = {k: getattr(pool, k) for k in POOL_KEYS if k != "gpu" and getattr(pool, k) is not None}
    return dataclasses.replace(fw, name=f"{fw.name}:{which}", prefill=None, decode=None, kv_transfer=None, **own)


def pool_scenario(scenario: Scenario, fw: FrameworkConfig, which: str) -> tuple[Scenario, FrameworkConfig]:
    """(scenario with the pool's GPU, the pool's config) of one pool of a disaggregated entry."""
    pool = getattr(fw, which)
    sc = scenario if pool.gpu is None else dataclasses.replace(scenario, gpu=get_gpu(pool.gpu))
    return sc, pool_framework(fw, which)


# The defaults of a [[frameworks]] entry, defined once (above): the parser, the legacy
# converter and `oracle cost` read them here.
FRAMEWORK_DEFAULTS = FrameworkConfig()
FRAMEWORK_TYPES = ("vllm",)


@dataclass(frozen=True)
class SloConfig:
    """Service-level objectives for goodput (a request meets them when all given hold)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None


@dataclass(frozen=True)
class OutputConfig:
    dir: str | None = None      # default: runs/<scenario name>
    steps: bool = False         # write steps.parquet (one row per engine step)
    format: str = "parquet"     # also "csv": requests.csv in the original tool's layout
    summary_json: str | None = None   # extra copy of the (first framework's) summary.json here
    requests_csv: str | None = None   # extra copy of requests.csv (original layout) here
    percentiles: tuple[float, ...] | None = None  # extra latency percentiles in those copies
    style: str = "default"      # "original": requests.csv values and summary keys as the original tool wrote them
    reported_duration_s: float | None = None  # style "original": simulation.total_duration_s of the summary


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. ``raw`` keeps the parsed TOML dict (for sweeps and reports)."""

    name: str
    seed: int
    simulation: SimulationConfig
    model: Any            # oracle.catalog.ModelSpec
    dtype: str
    kv_cache_dtype: str   # as written ("auto" allowed); framework_dtypes() gives concrete names
    gpu: Any              # oracle.catalog.GpuSpec
    workload: Any         # oracle.workload.spec.WorkloadSpec
    frameworks: tuple[FrameworkConfig, ...]
    slo: SloConfig
    output: OutputConfig
    path: Path | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def model_of(self, fw: FrameworkConfig):
        """The model a framework serves: its own ``model``, else the scenario's ``[model]``."""
        return fw.model if fw.model is not None else self.model

    def framework(self, name: str) -> FrameworkConfig:
        for fw in self.frameworks:
            if fw.name == name:
                return fw
        raise ScenarioError(f"no framework named {name!r}; have: {', '.join(f.name for f in self.frameworks)}",
                            file=self.path, key="frameworks")


# ---------------------------------------------------------------------------------------
def load_scenario(path: str | Path, *, overrides: dict[str, Any] | None = None) -> Scenario:
    """Read and validate a scenario TOML file; errors name the file and the key path.

    ``overrides`` maps dotted key paths (``frameworks.0.replicas``) to values applied to the
    parsed TOML before validation (used by sweeps).
    """
    path = Path(path)
    raw = read_toml(path)
    if overrides:
        raw = apply_overrides(raw, overrides, file=path)
    return scenario_from_dict(raw, base_dir=path.parent, file=path)


def read_toml(path: Path) -> dict:
    text = read_text_file(path, error=ScenarioError, expected="a TOML file")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"TOML syntax error: {exc}", file=path) from None


def apply_overrides(raw: dict, overrides: dict[str, Any], *, file: Path | str | None = None) -> dict:
    """Return a deep copy of ``raw`` with each dotted key path set (list indices allowed)."""
    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(node, list):
                idx = _index(part, node, dotted, file)
                node = node[idx]
            else:
                if part not in node or not isinstance(node[part], (dict, list)):
                    node[part] = [] if nxt.isdigit() else {}
                node = node[part]
                if isinstance(node, list) and nxt.isdigit() and int(nxt) == len(node):
                    node.append({})
        last = parts[-1]
        if isinstance(node, list):
            node[_index(last, node, dotted, file)] = value
        else:
            node[last] = value
    return out


def _index(part: str, node: list, dotted: str, file) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ScenarioError(f"index {part!r} out of range (have {len(node)} entries)", file=file, key=dotted)
    return int(part)


def scenario_from_dict(raw: dict, *, base_dir: Path | None = None, file: str | Path | None = None) -> Scenario:
    """Validate a scenario given as a dict with the TOML structure.

    Every problem is reported: one is raised as a ScenarioError, several as an
    :class:`~oracle.errors.ErrorList` (``exc.problems``), in file order.
    """
    problems = Problems()
    sc = None
    with problems.guard():
        sc = _parse(raw, base_dir=Path(base_dir) if base_dir else Path.cwd(), file=file, problems=problems)
    problems.items.sort(key=lambda exc: key_position(raw, exc.key))
    problems.raise_if_any(file=file)
    return sc


def _parse(raw: dict, *, base_dir: Path, file, problems: Problems) -> Scenario:
    """Parse every section; a problem is recorded (``problems``) and the parse goes on with
    whatever can still be checked. Checks across sections run only on sections without problems."""
    guard = problems.guard
    top = Table(raw, problems=problems)
    name = top.str("name", Path(file).stem if file else "scenario")
    if top.ok("name") and not name.strip():
        top.report("name", "must not be empty")
    seed = top.int("seed", 0, lo=0, hi=2**63 - 1)
    top.str("description", "")

    sim, sim_t = parse_simulation(top)

    model, dtype, kv_dtype, model_ok = None, "bf16", "auto", False
    with guard():
        mark = len(problems)
        model_t = top.table("model")
        with guard():
            if model_t.has("architecture"):
                model_t.str("name", "")
                model = model_from_table(model_t.table("architecture"))
            else:
                model = get_model(model_t.str("name"), key=model_t.key("name"))
        dtype = model_t.str("dtype", "bf16", choices=DTYPES)
        kv_dtype = model_t.str("kv_cache_dtype", "auto", choices=KV_DTYPES)
        model_ok = model is not None and problems.clean_since(mark)
        model_t.done()

    gpu, gpu_ok = None, False
    with guard():
        mark = len(problems)
        hw_t = top.table("hardware")
        with guard():
            if hw_t.has("gpu") and isinstance(hw_t.raw["gpu"], dict):
                gpu = gpu_from_table(hw_t.table("gpu"))
            else:
                gpu = get_gpu(hw_t.str("gpu"), key=hw_t.key("gpu"))
        overrides = {k: hw_t.float(k, None, lo=0.0, hi=1.0, lo_open=True) for k in ("eff_compute", "eff_memory")}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if overrides and gpu is not None:
            gpu = dataclasses.replace(gpu, **overrides)
        gpu_ok = gpu is not None and problems.clean_since(mark)
        hw_t.done()

    workload, wl_t, workload_ok = None, None, False
    with guard():
        mark = len(problems)
        wl_t = top.table("workload")
        workload = parse_workload(wl_t, base_dir=base_dir)
        workload_ok = problems.clean_since(mark)
    check_workload_ends(sim, sim_t, wl_t, workload)

    frameworks: list[FrameworkConfig] = []
    with guard():
        fw_tables = top.tables("frameworks", [{}])
        if not fw_tables:
            top.report("frameworks", "needs at least one [[frameworks]] entry", required=True)
        parsed = []   # (framework, its table)
        for i, t in enumerate(fw_tables):
            with guard():
                parsed.append(_parse_framework(t, i, model=model if model_ok else None,
                                               gpu=gpu if gpu_ok else None, dtype=dtype, kv_dtype=kv_dtype,
                                               lora=workload.lora if workload_ok else None))
        named = [(i, fw.name) for i, (fw, t) in enumerate(parsed) if t.ok("name")]
        for j, (i, n) in enumerate(named):
            if n in [m for _, m in named[:j]]:
                problems.add(ScenarioError(f"duplicate framework name {n!r}", key=f"frameworks.{i}.name"))
        frameworks = [fw for fw, _ in parsed]
        longest = max_prompt_tokens(workload) if workload_ok else None
        if workload_ok and workload.timeout_s is not None:
            for i, (fw, _) in enumerate(parsed):
                if fw.disaggregated:
                    problems.add(ScenarioError("client timeouts (workload.timeout_s) are not modelled with "
                                               "prefill/decode pools yet", key=f"frameworks.{i}.prefill"))
        if longest is not None:
            for fw, t in parsed:
                if t.ok("max_model_len") and fw.max_model_len is not None and longest > fw.max_model_len:
                    problems.add(ScenarioError(
                        f"prompts can be {longest} tokens, longer than max_model_len = {fw.max_model_len} "
                        f"of framework {fw.name!r}; lower the prompt max or raise max_model_len",
                        key="workload.clients"))

    slo = None
    with guard():
        slo_t = top.table("slo", {})
        d = SloConfig()
        slo = SloConfig(ttft_ms=slo_t.float("ttft_ms", d.ttft_ms, lo=0.0, lo_open=True),
                        tpot_ms=slo_t.float("tpot_ms", d.tpot_ms, lo=0.0, lo_open=True),
                        e2e_ms=slo_t.float("e2e_ms", d.e2e_ms, lo=0.0, lo_open=True))
        slo_t.done()

    output = None
    with guard():
        out_t = top.table("output", {})
        d = OutputConfig()
        pcts = out_t.any("percentiles", d.percentiles)
        if pcts is not None:
            if not isinstance(pcts, list) or not all(isinstance(p, (int, float)) and not isinstance(p, bool)
                                                     and 0 < p <= 100 for p in pcts):
                out_t.report("percentiles", f"must be a list of numbers in (0, 100], got {pcts!r}")
                pcts = None
            else:
                pcts = tuple(float(p) for p in pcts)
        style = out_t.str("style", d.style, choices=OUTPUT_STYLES)
        reported = out_t.float("reported_duration_s", d.reported_duration_s, lo=0.0, lo_open=True)
        if out_t.has("reported_duration_s") and out_t.ok("style") and style != "original":
            out_t.report("reported_duration_s", "only applies with style = \"original\"")
        output = OutputConfig(dir=out_t.str("dir", d.dir), steps=out_t.bool("steps", d.steps),
                              format=out_t.str("format", d.format, choices=OUTPUT_FORMATS),
                              summary_json=out_t.str("summary_json", d.summary_json),
                              requests_csv=out_t.str("requests_csv", d.requests_csv), percentiles=pcts,
                              style=style, reported_duration_s=reported)
        out_t.done()
    top.done()
    if problems:
        raise Skip()
    return Scenario(name=name, seed=seed, simulation=sim, model=model, dtype=dtype,
                    kv_cache_dtype=kv_dtype, gpu=gpu,
                    workload=workload, frameworks=tuple(frameworks), slo=slo, output=output,
                    path=Path(file) if file else None, raw=raw)


def parse_simulation(top: Table) -> tuple[SimulationConfig | None, Table | None]:
    """The ``[simulation]`` table -> (config, the table); ``(None, None)`` if it is not a table."""
    sim = sim_t = None
    with top.guard():
        sim_t = top.table("simulation", {})
        d = SimulationConfig()
        sim = SimulationConfig(
            duration_s=sim_t.float("duration_s", d.duration_s, lo=0.0, lo_open=True),
            num_requests=sim_t.int("num_requests", d.num_requests, lo=1),
            warm_up_s=sim_t.float("warm_up_s", d.warm_up_s, lo=0.0),
        )
        sim_t.done()
    return sim, sim_t


def check_workload_ends(sim: SimulationConfig | None, sim_t: Table | None, wl_t: Table | None,
                        workload=None) -> None:
    """A generated workload (not a trace) needs ``duration_s`` and/or ``num_requests`` to end,
    unless every client is a closed-loop client with its own request count (``workload``:
    the parsed WorkloadSpec, if any)."""
    self_limited = workload is not None and workload.clients and all(
        c is not None and c.closed_loop is not None and c.closed_loop.num_requests is not None
        for c in workload.clients)
    if (sim is not None and sim_t is not None and wl_t is not None and sim_t.ok("duration_s", "num_requests")
            and not wl_t.has("trace") and sim.duration_s is None and sim.num_requests is None
            and not self_limited):
        sim_t.report(None, "set duration_s and/or num_requests so the generated workload ends")


# vLLM SchedulerConfig / CacheConfig options that change which tokens a step schedules and
# that the engine does not model (it follows their defaults): rejected by name, not ignored.
UNMODELLED_VLLM_KEYS = {
    "long_prefill_token_threshold": "0: no cap on a prefill chunk",
    "long_prefill_token_threshold_adaptive": "false",
    "max_num_scheduled_tokens": "max_num_batched_tokens",
    "max_num_active_seqs": "max_num_seqs",
    "prefill_schedule_interval": "1: prefills may be scheduled every step",
    "watermark": "0.0: no free blocks held back at admission",
    "policy": "\"fcfs\"",
    "scheduling_policy": "\"fcfs\"",
    "num_lookahead_slots": "0",
    "disable_hybrid_kv_cache_manager": "one full-attention KV group",
}


def _check_feature_combinations(t: Table, f: dict) -> None:
    """Features the engine does not model together yet are refused by name (each one alone is
    checked against the plain-Python reference engine and, where vLLM has it, vLLM itself)."""
    pools = f.get("prefill") is not None or f.get("decode") is not None
    spec = f.get("speculative") is not None
    offload = f.get("kv_offload") is not None
    lora = bool(f.get("enable_lora"))
    for key, on, other, also in (("kv_offload", offload, "prefill/decode pools", pools),
                                 ("speculative", spec, "prefill/decode pools", pools),
                                 ("speculative", spec, "kv_offload", offload),
                                 ("enable_lora", lora, "prefill/decode pools", pools),
                                 ("enable_lora", lora, "speculative decoding", spec),
                                 ("enable_lora", lora, "kv_offload", offload)):
        if on and also:
            t.report(key, f"is not modelled together with {other} yet: use one of them per framework")
    if f.get("async_scheduling") and spec:
        t.report("async_scheduling", "async scheduling is not modelled with speculative decoding yet: leave "
                                     "async_scheduling unset (it is then off for this framework) or false")
    if f.get("async_scheduling") and t.ok("pp") and f["pp"] > 1:
        t.report("async_scheduling", "vLLM 0.33 does not support async scheduling with pipeline parallelism "
                                     "(VllmConfig: 'not supported by the V1 model runner'): leave it unset or false")


def _parse_framework(t: Table, i: int, *, model, gpu, dtype: str, kv_dtype: str,
                     lora=None) -> tuple[FrameworkConfig, Table]:
    """One ``[[frameworks]]`` entry -> (config, its table: ``t.ok(key)`` says which values were valid).

    ``model`` / ``gpu`` are None when their sections have problems: the checks that need them
    are skipped (``max_model_len`` is then only checked to be >= 1). A framework's own
    ``model`` (a catalog name, or a table like ``[model]``: ``name`` or ``architecture``)
    replaces the scenario's for it."""
    d = FRAMEWORK_DEFAULTS
    own_model = None
    if t.has("model"):
        with t.guard():
            own_model = _framework_model(t)
        model = own_model   # None when it has a problem: the checks that need it are skipped
    max_ctx = int(model.max_context) if model is not None else None   # max_model_len's default
    f = dict(
        name=t.str("name", d.name if i == 0 else f"{d.name}-{i}"),
        type=t.str("type", d.type, choices=FRAMEWORK_TYPES),
        tp=t.int("tp", d.tp, lo=1, hi=1024),
        pp=t.int("pp", d.pp, lo=1, hi=1024),
        replicas=t.int("replicas", d.replicas, lo=1, hi=100_000),
        router=t.str("router", d.router, choices=ROUTERS),
        block_size=t.int("block_size", d.block_size, lo=1, hi=4096),
        gpu_memory_utilization=t.float("gpu_memory_utilization", d.gpu_memory_utilization, lo=0.0, hi=1.0,
                                       lo_open=True),
        max_num_seqs=t.int("max_num_seqs", d.max_num_seqs, lo=1, hi=1_000_000),
        max_num_batched_tokens=t.int("max_num_batched_tokens", d.max_num_batched_tokens, lo=1, hi=10_000_000),
        max_model_len=t.int("max_model_len", max_ctx, lo=1, hi=max_ctx),
        enable_chunked_prefill=t.bool("enable_chunked_prefill", d.enable_chunked_prefill),
        enable_prefix_caching=t.bool("enable_prefix_caching", d.enable_prefix_caching),
        scheduler_reserve_full_isl=t.bool("scheduler_reserve_full_isl", d.scheduler_reserve_full_isl),
        dtype=t.str("dtype", d.dtype, choices=DTYPES),
        kv_cache_dtype=t.str("kv_cache_dtype", d.kv_cache_dtype, choices=KV_DTYPES),
        scheduler_overhead_s=t.float("scheduler_overhead_s", d.scheduler_overhead_s, lo=0.0, hi=10.0),
        api_server_s=t.float("api_server_s", d.api_server_s, lo=0.0, hi=10.0),
        async_scheduling=t.bool("async_scheduling") if t.has("async_scheduling") else d.async_scheduling,
        enable_lora=t.bool("enable_lora", d.enable_lora),
        max_loras=t.int("max_loras", d.max_loras, lo=1, hi=4096),
        max_lora_rank=t.int("max_lora_rank", d.max_lora_rank, lo=1, hi=512),
        max_cpu_loras=t.int("max_cpu_loras", d.max_cpu_loras, lo=1, hi=1_000_000),
        lora_host_bw_gbps=t.float("lora_host_bw_gbps", d.lora_host_bw_gbps, lo=0.0, lo_open=True),
        lora_disk_bw_gbps=t.float("lora_disk_bw_gbps", d.lora_disk_bw_gbps, lo=0.0, lo_open=True),
        model=own_model,
        data_parallel_size=t.int("data_parallel_size", d.data_parallel_size, lo=1, hi=100_000),
        expert_parallel=t.bool("expert_parallel", d.expert_parallel),
        expert_imbalance=t.float("expert_imbalance", d.expert_imbalance, lo=1.0, hi=1024.0),
    )
    if t.has("kv_offload"):
        from oracle.kv_offload import parse_kv_offload
        with t.guard():
            f["kv_offload"] = parse_kv_offload(t.table("kv_offload"))
        if t.ok("enable_prefix_caching") and not f["enable_prefix_caching"]:
            t.report("kv_offload", "needs enable_prefix_caching = true (the host tier is keyed by "
                                   "the prefix cache's block hashes, as vLLM's offloading connector)")
    if t.has("prefill") or t.has("decode") or t.has("kv_transfer"):
        with t.guard():
            f.update(_parse_pools(t, f, model=model, gpu=gpu, dtype=dtype, kv_dtype=kv_dtype))
    check_lora_framework(t, f, lora)
    if t.ok("name") and (not f["name"].strip() or "/" in f["name"] or f["name"] in (".", "..")):
        t.report("name", f"must be a non-empty name usable as a folder, got {f['name']!r}")
    if t.has("num_gpu_blocks"):
        v = t.any("num_gpu_blocks")
        if v == "unlimited":
            f["num_gpu_blocks"] = "unlimited"
        elif isinstance(v, int) and not isinstance(v, bool):
            f["num_gpu_blocks"] = t.int("num_gpu_blocks", None, lo=2)
        else:
            t.report("num_gpu_blocks", f"must be an integer >= 2 or \"unlimited\", got {v!r}")
    if (t.ok("enable_chunked_prefill", "max_num_batched_tokens", "max_model_len") and f["max_model_len"] is not None
            and not f["enable_chunked_prefill"] and f["max_num_batched_tokens"] < f["max_model_len"]):
        t.report("max_num_batched_tokens",
                 f"must be >= max_model_len ({f['max_model_len']}) when enable_chunked_prefill = false "
                 f"(got {f['max_num_batched_tokens']}); lower max_model_len or turn chunked prefill on")
    if model is not None and t.ok("tp") and model.num_kv_heads and f["tp"] > model.num_heads:
        t.report("tp", f"tensor parallel size {f['tp']} exceeds the model's {model.num_heads} attention heads")
    if t.ok("replicas", "data_parallel_size") and f["replicas"] % f["data_parallel_size"]:
        t.report("replicas", f"must be a multiple of data_parallel_size ({f['data_parallel_size']}): each DP rank is "
                             f"one replica, got {f['replicas']}")
    if model is not None and t.ok("tp", "data_parallel_size", "expert_parallel", "expert_imbalance"):
        try:
            check_expert_parallel(model, f["tp"], f["data_parallel_size"], f["expert_parallel"], f["expert_imbalance"])
        except ScenarioError as exc:
            key = ("expert_parallel" if "expert parallelism needs" in exc.reason or "divide" in exc.reason else
                   "expert_imbalance" if "imbalance" in exc.reason else "data_parallel_size")
            t.report(key, exc.reason)
    if model is not None and gpu is not None and t.ok("dtype"):
        try:
            check_dtype_on_gpu(_dtypes(FrameworkConfig(dtype=f["dtype"]), dtype, kv_dtype)[0], gpu, model)
        except ScenarioError as exc:
            t.report("dtype" if f["dtype"] else None, f"{exc.reason} (model dtype)" if not f["dtype"] else exc.reason)
    if t.has("speculative"):
        with t.guard():
            f["speculative"] = parse_speculative(t.table("speculative"), model)
            if t.ok("max_num_batched_tokens", "max_model_len", "enable_chunked_prefill"):
                check_budget(t, f["speculative"], f["max_num_batched_tokens"], f["max_model_len"],
                             f["enable_chunked_prefill"])
    for key in ("num_speculative_tokens", "speculative_config"):
        if t.has(key):
            t.report(key, "speculative decoding is set in a [frameworks.speculative] table: method, "
                          "num_speculative_tokens, acceptance (see README)")
    for key, default in UNMODELLED_VLLM_KEYS.items():
        if t.has(key):
            t.report(key, f"is a vLLM scheduler option that changes which tokens are scheduled and is not "
                          f"modelled; the engine follows vLLM 0.33.0's default ({default})")
    _check_feature_combinations(t, f)
    ok = t.ok()
    t.done()
    fw = FrameworkConfig(**f)
    if ok and model is not None and gpu is not None and fw.num_gpu_blocks is None and not fw.disaggregated:
        try:  # the model must leave room for KV blocks on these GPUs
            _memory_num_gpu_blocks(model, gpu, fw, *_dtypes(fw, dtype, kv_dtype))
        except OracleError as exc:
            t.report(None, exc.reason)
    return fw, t


def _framework_model(t: Table):
    """``model = "name"`` or ``[frameworks.model]`` with ``name`` or ``architecture``."""
    from oracle.catalog import get_model, model_from_table
    if isinstance(t.raw["model"], str):
        return get_model(t.str("model"), key=t.key("model"))
    mt = t.table("model")
    if mt.has("architecture"):
        mt.str("name", "")
        model = model_from_table(mt.table("architecture"))
    else:
        model = get_model(mt.str("name"), key=mt.key("name"))
    mt.done()
    return model


def _parse_pools(t: Table, f: dict, *, model, gpu, dtype: str, kv_dtype: str) -> dict:
    """``prefill``, ``decode`` and ``kv_transfer`` of a ``[[frameworks]]`` entry (README
    "Prefill/decode disaggregation"); ``f``: the entry's other values."""
    if not (t.has("prefill") and t.has("decode")):
        missing = "decode" if t.has("prefill") else "prefill"
        t.report(missing if t.has("prefill") or t.has("decode") else "kv_transfer",
                 "a disaggregated deployment needs both a prefill and a decode pool "
                 "(prefill = { replicas = ... }, decode = { replicas = ... })", required=True)
    if t.has("replicas"):
        t.report("replicas", "the replicas of a disaggregated deployment are set per pool "
                             "(prefill.replicas, decode.replicas), not for the whole entry")
    if t.has("router"):
        t.report("router", "set a router per pool (prefill.router, decode.router)")
    pools = {which: _parse_pool(t.table(which), which) for which in POOLS}
    link = _parse_kv_transfer(t.table("kv_transfer", {}))
    out = {"prefill": pools["prefill"], "decode": pools["decode"], "kv_transfer": link}
    if model is None or gpu is None:
        return out
    fw = FrameworkConfig(**{**FRAMEWORK_DEFAULTS.__dict__, **f, **out})
    for which in POOLS:
        pt = t.table(which)
        pool_fw = pool_framework(fw, which)
        pool_gpu = get_gpu(pools[which].gpu) if pools[which].gpu else gpu
        if model.num_kv_heads and pool_fw.tp > model.num_heads:
            pt.report("tp", f"tensor parallel size {pool_fw.tp} exceeds the model's {model.num_heads} attention heads")
        if pool_fw.max_model_len is not None and not pool_fw.enable_chunked_prefill \
                and pool_fw.max_num_batched_tokens < pool_fw.max_model_len:
            pt.report("max_num_batched_tokens", f"must be >= max_model_len ({pool_fw.max_model_len}) when "
                                                f"enable_chunked_prefill = false")
        blocks = pool_fw.num_gpu_blocks
        if blocks is None:
            try:
                blocks = _memory_num_gpu_blocks(model, pool_gpu, pool_fw, *_dtypes(pool_fw, dtype, kv_dtype))
            except OracleError as exc:
                pt.report(None, exc.reason)
                continue
        if which == "decode" and isinstance(blocks, int) and pool_fw.max_model_len is not None \
                and (blocks - 1) * pool_fw.block_size < pool_fw.max_model_len:
            # vLLM refuses to start such an engine (kv_cache_utils.check_enough_kv_cache_memory)
            pt.report(None, f"the decode pool's KV cache holds {(blocks - 1) * pool_fw.block_size} tokens per "
                            f"replica, less than one request of max_model_len = {pool_fw.max_model_len}; give "
                            f"it more memory (tp, gpu_memory_utilization, num_gpu_blocks) or lower max_model_len")
    return out


def _parse_pool(pt: Table, which: str) -> PoolConfig:
    """One ``prefill``/``decode`` table: replicas is required, every other key optional."""
    routers = tuple(DECODE_ROUTER_NAMES) if which == "decode" else ROUTERS
    v = dict(
        replicas=pt.int("replicas", lo=1, hi=100_000),
        tp=pt.int("tp", None, lo=1, hi=1024), pp=pt.int("pp", None, lo=1, hi=1024),
        gpu=pt.str("gpu", None),
        router=pt.str("router", None, choices=routers),
        gpu_memory_utilization=pt.float("gpu_memory_utilization", None, lo=0.0, hi=1.0, lo_open=True),
        max_num_seqs=pt.int("max_num_seqs", None, lo=1, hi=1_000_000),
        max_num_batched_tokens=pt.int("max_num_batched_tokens", None, lo=1, hi=10_000_000),
        enable_chunked_prefill=pt.bool("enable_chunked_prefill", True) if pt.has("enable_chunked_prefill") else None,
        enable_prefix_caching=pt.bool("enable_prefix_caching", True) if pt.has("enable_prefix_caching") else None,
        scheduler_overhead_s=pt.float("scheduler_overhead_s", None, lo=0.0, hi=10.0),
    )
    if v["gpu"] is not None:
        with pt.guard():
            get_gpu(v["gpu"], key=pt.key("gpu"))
    if pt.has("num_gpu_blocks"):
        nb = pt.any("num_gpu_blocks")
        if nb == "unlimited":
            v["num_gpu_blocks"] = "unlimited"
        elif isinstance(nb, int) and not isinstance(nb, bool):
            v["num_gpu_blocks"] = pt.int("num_gpu_blocks", None, lo=2)
        else:
            pt.report("num_gpu_blocks", f"must be an integer >= 2 or \"unlimited\", got {nb!r}")
    pt.done()
    return PoolConfig(**v)


def _parse_kv_transfer(lt: Table) -> KvTransferConfig:
    """``kv_transfer``: a catalog link (default infiniband) with optional overrides."""
    from oracle.catalog import load_links
    links = load_links()
    name = lt.str("link", KvTransferConfig.link, choices=tuple(sorted(links)))
    spec = links.get(name, links[KvTransferConfig.link])
    cfg = KvTransferConfig(link=name,
                           bandwidth_gbps=lt.float("bandwidth_gbps", spec.bandwidth_gbps, lo=0.0, lo_open=True),
                           latency_s=lt.float("latency_s", spec.latency_s, lo=0.0, hi=10.0),
                           overhead_s=lt.float("overhead_s", spec.overhead_s, lo=0.0, hi=10.0))
    lt.done()
    return cfg


def _dtypes(fw: FrameworkConfig, dtype: str, kv_cache_dtype: str) -> tuple[str, str]:
    """(weights, KV) dtype names for a framework: its overrides, else the [model] ones. A
    framework that overrides the weights dtype alone gets ``"auto"`` KV for them."""
    weights = fw.dtype or dtype
    kv = fw.kv_cache_dtype or (kv_cache_dtype if fw.dtype is None else "auto")
    return weights, kv


def framework_dtypes(scenario: Scenario, fw: FrameworkConfig) -> tuple[str, str]:
    """(weights dtype, KV-cache dtype) for a framework, concrete: ``"auto"`` KV follows vLLM
    (the activation dtype; FP8 weights keep a 16-bit cache), see ``oracle.memory.resolve_kv_dtype``."""
    weights, kv = _dtypes(fw, scenario.dtype, scenario.kv_cache_dtype)
    return weights, resolve_kv_dtype(kv, weights, scenario.model_of(fw))


def _memory_num_gpu_blocks(model, gpu, fw: FrameworkConfig, dtype: str, kv_dtype: str) -> int:
    lora = lora_buffer_bytes_per_gpu(model, fw.max_loras, fw.max_lora_rank, tp=fw.tp, pp=fw.pp) \
        if fw.enable_lora else 0.0
    return int(compute_num_gpu_blocks(model, gpu, tp=fw.tp, pp=fw.pp, block_size=fw.block_size,
                                      gpu_memory_utilization=fw.gpu_memory_utilization, dtype=dtype,
                                      kv_dtype=kv_dtype, max_num_batched_tokens=fw.max_num_batched_tokens,
                                      max_num_seqs=fw.max_num_seqs, ep=fw.ep_size, lora_bytes_per_gpu=lora))


def resolve_num_gpu_blocks(scenario: Scenario, fw: FrameworkConfig) -> int:
    """KV blocks per replica including the null block; -1 means unlimited."""
    if fw.num_gpu_blocks == "unlimited":
        return -1
    if isinstance(fw.num_gpu_blocks, int):
        return fw.num_gpu_blocks
    return _memory_num_gpu_blocks(scenario.model_of(fw), scenario.gpu, fw, *framework_dtypes(scenario, fw))
