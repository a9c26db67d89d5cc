"""Python API: ``oracle.simulate(scenario)`` for notebooks, scripts and the CLI.

    import oracle
    res = oracle.simulate("scenarios/quickstart.toml")          # nothing written
    res.summary["latency"]["time_to_first_token_ms"]["p99"]
    res.requests                                                # polars DataFrame
    res.write("runs/quickstart")                                # summary.json, requests.parquet, ...

``scenario`` may be a path (TOML, or a YAML/JSON config of the original LLMPerfOracle), a
dict with the TOML structure, or a :class:`~oracle.scenario.Scenario`.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from oracle.engine.disagg import KvLink, PDInputs
from oracle.engine.inputs import DECODE_ROUTER_NAMES, EngineConfig, EngineInputs, EngineOutputs
from oracle.errors import OracleError, ScenarioError
from oracle.host_memory import check_memory, check_workload_size
from oracle.kv_offload import host_tier_params
from oracle.legacy import load_legacy_scenario
from oracle.memory import kv_bytes_per_token
from oracle.metrics.compare import comparison_table
from oracle.metrics.output import default_out_dir, write_results
from oracle.metrics.summary import build_summary, request_table, step_table
from oracle.metrics.writers import check_out_dir
from oracle.specdec import draft_params, engine_fields
from oracle.scenario import POOLS, FrameworkConfig, Scenario, framework_dtypes, load_scenario, \
    pool_scenario, resolve_num_gpu_blocks, scenario_from_dict
from oracle.workload import build_workload


@dataclass
class FrameworkResult:
    """Results of one ``[[frameworks]]`` entry."""

    name: str
    summary: dict[str, Any]
    requests: pl.DataFrame
    steps: pl.DataFrame | None
    outputs: EngineOutputs = field(repr=False)
    workload: Any = field(default=None, repr=False)   # the requests this framework served


@dataclass
class SimulationResult:
    """Everything a run produced; nothing is written until :meth:`write`."""

    scenario: Scenario
    workload: Any
    frameworks: dict[str, FrameworkResult]
    wall_time_s: float = 0.0

    @property
    def first(self) -> FrameworkResult:
        return next(iter(self.frameworks.values()))

    @property
    def summary(self) -> dict[str, Any]:
        """The first (often only) framework's summary; see :attr:`summaries` for all."""
        return self.first.summary

    @property
    def summaries(self) -> dict[str, dict[str, Any]]:
        return {k: v.summary for k, v in self.frameworks.items()}

    @property
    def requests(self) -> pl.DataFrame:
        return self.first.requests

    @property
    def steps(self) -> pl.DataFrame | None:
        return self.first.steps

    def comparison(self) -> pl.DataFrame:
        """One row per framework with the headline metrics."""
        return comparison_table(self.summaries)

    def write(self, out_dir: str | Path | None = None, *, format=None, start_time_s: float | None = None) -> Path:
        """Write every framework's results atomically under ``out_dir/<framework>/``.

        ``format``: ``parquet`` (default), ``csv``, ``vllm-bench``, ``prometheus`` or several
        (see :func:`oracle.metrics.output.write_results`; the last two need the steps table:
        simulate with ``record_steps=True`` or ``format=...``)."""
        return write_results(self, out_dir=out_dir, format=format, start_time_s=start_time_s)


def as_scenario(scenario: str | Path | dict | Scenario, *, seed: int | None = None) -> Scenario:
    """Accept a path, a dict or a Scenario; apply a seed override.

    A path may be a scenario TOML, an original-LLMPerfOracle YAML/JSON, or a benchmark tool's
    config (a file with a ``vllm bench serve`` command, a GuideLLM spec, an inference-perf
    config: ``oracle.importers``), converted in memory."""
    if isinstance(scenario, Scenario):
        sc = scenario
    elif isinstance(scenario, dict):
        sc = scenario_from_dict(scenario)
    else:
        path = Path(scenario)
        from oracle.importers import detect, import_file, load_imported  # lazy: benchmark-tool configs only
        kind = detect(path)
        if kind is not None:   # a benchmark tool's config (vllm bench serve, GuideLLM, inference-perf)
            sc = load_imported(import_file(path, kind))
        elif path.suffix.lower() in (".yaml", ".yml", ".json"):
            sc = load_legacy_scenario(path)
        else:
            sc = load_scenario(path)
    if seed is not None:
        sc = dataclasses.replace(sc, seed=int(seed))
    return sc


def engine_config(scenario: Scenario, fw: FrameworkConfig, *, num_gpu_blocks: int | None = None,
                  record_steps: bool | None = None) -> EngineConfig:
    """``num_gpu_blocks``: KV blocks per replica as :func:`~oracle.scenario.resolve_num_gpu_blocks`
    gives them (-1: unlimited); resolved here when None."""
    if num_gpu_blocks is None:
        num_gpu_blocks = resolve_num_gpu_blocks(scenario, fw)
    return EngineConfig(
        num_replicas=fw.replicas, router=DECODE_ROUTER_NAMES[fw.router], block_size=fw.block_size,
        num_gpu_blocks=num_gpu_blocks, max_num_seqs=fw.max_num_seqs,
        max_num_batched_tokens=fw.max_num_batched_tokens, max_model_len=fw.max_model_len,
        enable_chunked_prefill=fw.enable_chunked_prefill, enable_prefix_caching=fw.enable_prefix_caching,
        scheduler_reserve_full_isl=fw.scheduler_reserve_full_isl,
        async_scheduling=framework_spec(fw).async_scheduling,
        record_steps=scenario.output.steps if record_steps is None else record_steps,
        warm_up_s=scenario.simulation.warm_up_s, **engine_fields(fw.speculative, scenario.seed),
        **dict(zip(("host_kv_blocks", "host_load_s_per_block", "host_load_latency_s"),
                   host_tier_params(scenario, fw))),
        max_loras=fw.max_loras if fw.enable_lora else 0,
        max_cpu_loras=(fw.max_cpu_loras or fw.max_loras) if fw.enable_lora else 0)


def framework_spec(fw: FrameworkConfig):
    """The catalog's :class:`~oracle.catalog.FrameworkSpec` of ``fw.type`` with the entry's own
    ``api_server_s`` and ``async_scheduling`` when it sets them."""
    import dataclasses

    from oracle.catalog import get_framework
    spec = get_framework(fw.type)
    if fw.api_server_s is not None:
        spec = dataclasses.replace(spec, api_server_s=fw.api_server_s)
    if fw.async_scheduling is not None:
        spec = dataclasses.replace(spec, async_scheduling=fw.async_scheduling)
    elif spec.async_scheduling and (fw.pp > 1 or getattr(fw, "speculative", None) is not None):
        # vLLM turns its default async scheduling off with pipeline parallelism (VllmConfig);
        # with speculative decoding it is off here because the two are not modelled together
        spec = dataclasses.replace(spec, async_scheduling=False)
    return spec


def cost_params(scenario: Scenario, fw: FrameworkConfig) -> np.ndarray:
    from oracle.cost import build_cost_params   # lazy: numba (~0.4 s); `oracle validate` imports this module
    dtype, kv = framework_dtypes(scenario, fw)
    return build_cost_params(scenario.model_of(fw), scenario.gpu, tp=fw.tp, pp=fw.pp, dtype=dtype, kv_dtype=kv,
                             scheduler_overhead_s=fw.scheduler_overhead_s, framework=framework_spec(fw),
                             max_num_seqs=fw.max_num_seqs, dp=fw.data_parallel_size,
                             expert_parallel=fw.expert_parallel, expert_imbalance=fw.expert_imbalance)


def engine_inputs(scenario: Scenario, fw: FrameworkConfig, workload, *, hashes=None,
                  num_gpu_blocks: int | None = None, record_steps: bool | None = None) -> EngineInputs:
    """Bundle a workload and a framework config for the engine (``hashes``: a precomputed
    ``(hash_offsets, hashes)`` pair for ``fw.block_size``, else computed here; see
    :func:`engine_block_hashes`; ``num_gpu_blocks``: see :func:`engine_config`).

    The engine runs on its own clock: a request reaches it ``api_server_s`` after the client
    sent it (the framework's API server: HTTP, tokenization, hand-over), so arrivals and
    follow-up think times are shifted by it and the client's timeout shortened by it;
    :func:`to_client_clock` turns the engine's outputs back.
    """
    cfg = engine_config(scenario, fw, num_gpu_blocks=num_gpu_blocks, record_steps=record_steps)
    adapters = workload_adapters(scenario, workload)
    hash_offsets, block_hashes = hashes if hashes is not None else engine_block_hashes(workload, fw, adapters)
    api = framework_spec(fw).api_server_s
    timeout = scenario.workload.timeout_s
    params = cost_params(scenario, fw)
    return EngineInputs(
        config=cfg, arrival_s=workload.arrival_s + api if api else workload.arrival_s,
        prompt_tokens=workload.prompt_tokens,
        output_tokens=workload.output_tokens, session=workload.session, turn=workload.turn,
        parent=workload.parent, think_s=workload.think_s + api if api else workload.think_s,
        hash_offsets=hash_offsets, hashes=block_hashes,
        cost_params=params,
        timeout_s=None if timeout is None else np.full(len(workload), max(timeout - api, 0.0), np.float64),
        draft_cost_params=draft_params(fw.speculative, params, scenario.gpu, tp=fw.tp,
                                       dtype=framework_dtypes(scenario, fw)[0], framework=framework_spec(fw)),
        lora_adapter=adapters if fw.enable_lora else None,
        lora_params=lora_params(scenario, fw) if fw.enable_lora else None)


def pd_inputs(scenario: Scenario, fw: FrameworkConfig, workload, *, hashes=None,
              record_steps: bool | None = None) -> PDInputs:
    """The :class:`~oracle.engine.disagg.PDInputs` of a disaggregated ``[[frameworks]]`` entry:
    each pool's engine inputs (its GPU, settings and cost) and the KV link between them. The
    link's bandwidth is per GPU: the KV of a replica's shards moves over ``min(GPUs per prefill
    replica, GPUs per decode replica)`` links at once (README "Prefill/decode disaggregation")."""
    parts = {}
    for which in POOLS:
        sc_pool, fw_pool = pool_scenario(scenario, fw, which)
        parts[which] = engine_inputs(sc_pool, fw_pool, workload, hashes=hashes, record_steps=record_steps)
    sc_d, fw_d = pool_scenario(scenario, fw, "decode")
    _, fw_p = pool_scenario(scenario, fw, "prefill")
    x = fw.kv_transfer
    lanes = min(fw_p.gpus_per_replica, fw_d.gpus_per_replica)
    link = KvLink(bytes_per_token=float(kv_bytes_per_token(sc_d.model_of(fw_d), framework_dtypes(sc_d, fw_d)[1])),
                  bandwidth_bytes_s=x.bandwidth_gbps * 1e9 * lanes, latency_s=x.latency_s, overhead_s=x.overhead_s)
    return PDInputs(prefill=parts["prefill"], decode=parts["decode"], link=link)


def workload_adapters(scenario: Scenario, workload) -> np.ndarray | None:
    """The LoRA adapter of each request (i4[n], -1: none; ``oracle.lora``), None without
    ``[workload].lora``."""
    spec = scenario.workload.lora
    if spec is None:
        return None
    from oracle.lora import assign_adapters
    return assign_adapters(spec, workload.session, scenario.seed)


def lora_params(scenario: Scenario, fw: FrameworkConfig) -> np.ndarray:
    """The ``oracle.kernels.lora`` parameters of a framework with ``enable_lora``."""
    from oracle.lora import build_lora_params
    spec = scenario.workload.lora
    return build_lora_params(scenario.model_of(fw), scenario.gpu, tp=fw.tp, pp=fw.pp,
                             max_lora_rank=fw.max_lora_rank, rank=spec.rank if spec else fw.max_lora_rank,
                             host_bw_gbps=fw.lora_host_bw_gbps, disk_bw_gbps=fw.lora_disk_bw_gbps)


def to_client_clock(out: EngineOutputs, api_server_s: float) -> EngineOutputs:
    """Arrivals as the client sent them (``api_server_s`` before the engine saw them), in place.

    Every other time is the engine's: a token leaves the engine when its step ends, and the
    part of the response path that comes after (detokenization, streaming) is a per-request
    constant folded into ``api_server_s``: it adds to TTFT and E2E, never to TPOT or ITL.
    """
    if api_server_s:
        out.arrival_s = out.arrival_s - api_server_s
    return out


def engine_block_hashes(workload, fw: FrameworkConfig, adapters: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The ``(hash_offsets, hashes)`` pair the engine needs for ``fw``.

    The engine reads block hashes only with prefix caching on (lookups in the router and the
    scheduler, and caching full blocks); with it off every request gets an empty hash range
    (offset 0 into an empty array) and hashing, the costliest input to prepare, is skipped.
    With LoRA ``adapters`` (:func:`workload_adapters`) each request's hashes carry its adapter
    (``oracle.lora.mix_adapter_hashes``), stored per request.
    """
    if not fw.enable_prefix_caching:
        return np.zeros(len(workload), np.int64), np.zeros(0, np.uint64)
    if adapters is not None:
        from oracle.lora import mix_adapter_hashes
        hash_offsets, hashes = workload.block_hashes(fw.block_size)
        return hash_offsets[:-1].copy(), mix_adapter_hashes(hash_offsets, hashes, adapters)
    from oracle.engine.hashes import shared_block_hashes   # lazy: numba (~0.4 s), see cost_params
    return shared_block_hashes(workload, fw.block_size)


def load_workload(scenario: Scenario, *, max_memory_bytes: int | None = None):
    """Generate or import the scenario's workload (refusing, up front, one too big for memory)."""
    check_workload_size(scenario, max_memory_bytes=max_memory_bytes)
    try:
        return build_workload(scenario.workload, duration_s=scenario.simulation.duration_s,
                              num_requests=scenario.simulation.num_requests, seed=scenario.seed)
    except OracleError as exc:   # a generator error names a key; add the scenario file (traces name their own)
        raise exc.with_context(file=scenario.path) from None


def simulate(scenario: str | Path | dict | Scenario, *, seed: int | None = None, out_dir: str | Path | None = None,
             write: bool = False, format=None, record_steps: bool | None = None,
             frameworks: list[str] | None = None, workload=None, max_memory_bytes: int | None = None,
             progress: Callable[[str], None] | None = None, start_time_s: float | None = None) -> SimulationResult:
    """Run every framework of a scenario over one shared workload.

    Files are written only when ``write=True`` or ``out_dir`` is given. ``progress`` is
    called with a short phase description before each phase (the CLI shows it). ``format``
    (as :meth:`SimulationResult.write`) with ``vllm-bench`` or ``prometheus`` records the steps
    table, which those files are built from; ``start_time_s``: Unix time of simulated t = 0 in
    the Prometheus file.
    """
    t0 = time.perf_counter()
    sc = as_scenario(scenario, seed=seed)
    if format is not None:
        from oracle.metrics.output import NEEDS_STEPS, parse_formats
        if set(parse_formats(format)) & set(NEEDS_STEPS):
            record_steps = True
    fws = [fw for fw in sc.frameworks if frameworks is None or fw.name in frameworks]
    if frameworks is not None and not fws:
        raise ScenarioError(f"no framework among {frameworks} in the scenario", file=sc.path, key="frameworks")
    say = progress or (lambda _msg: None)
    if write or out_dir is not None:   # fail before simulating, not after
        check_out_dir(Path(out_dir) if out_dir is not None else default_out_dir(sc))
        for extra in (sc.output.summary_json, sc.output.requests_csv):
            if extra:
                check_out_dir(Path(extra).parent)
    if workload is None:
        say("generating workload")
        workload = load_workload(sc, max_memory_bytes=max_memory_bytes)
    num_gpu_blocks = {fw.name: resolve_num_gpu_blocks(sc, fw) for fw in fws if not fw.disaggregated}
    pools = [pool_scenario(sc, fw, which) for fw in fws if fw.disaggregated for which in POOLS]
    num_gpu_blocks.update({pf.name: resolve_num_gpu_blocks(ps, pf) for ps, pf in pools})  # per replica; -1: unlimited
    check_memory(sc, [fw for fw in fws if not fw.disaggregated] + [pf for _, pf in pools], workload, num_gpu_blocks,
                 max_memory_bytes=max_memory_bytes)
    results: dict[str, FrameworkResult] = {}
    hash_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}   # block size (0: caching off) -> hashes
    for k, fw in enumerate(fws, start=1):
        say(f"simulating framework {k}/{len(fws)}: {fw.name} ({len(workload):,} requests, {fw.shape(' x')})")
        t1 = time.perf_counter()
        keep_steps = sc.output.steps if record_steps is None else record_steps
        if _closed_loop_by_duration(sc):
            wl_fw, inputs, out = _simulate_closed_loop(sc, fw, workload, record_steps)
        else:
            wl_fw = workload
            key = fw.block_size if fw.enable_prefix_caching else 0
            if key not in hash_cache:
                hash_cache[key] = engine_block_hashes(workload, fw, workload_adapters(sc, workload))
            # style "original" reports the GPUs' busy time, which the steps give
            inputs, out = _inputs_and_run(sc, fw, workload, hashes=hash_cache[key],
                                          num_gpu_blocks=num_gpu_blocks.get(fw.name),
                                          record_steps=keep_steps or sc.output.style == "original")
        results[fw.name] = _collect(sc, fw, wl_fw, inputs, out, wall=time.perf_counter() - t1,
                                    keep_steps=keep_steps)
    res = SimulationResult(scenario=sc, workload=workload, frameworks=results,
                           wall_time_s=time.perf_counter() - t0)
    if write or out_dir is not None:
        say("writing results")
        res.write(out_dir, format=format, start_time_s=start_time_s)
    return res


def _inputs_and_run(sc: Scenario, fw: FrameworkConfig, workload, *, hashes=None, num_gpu_blocks: int | None = None,
                    record_steps: bool | None = None):
    """Build the engine inputs of one framework entry (aggregated or disaggregated) and run
    them; returns ``(inputs, outputs on the client's clock)``."""
    if fw.disaggregated:
        inputs = pd_inputs(sc, fw, workload, hashes=hashes, record_steps=record_steps)
    else:
        inputs = engine_inputs(sc, fw, workload, hashes=hashes, num_gpu_blocks=num_gpu_blocks,
                               record_steps=record_steps)
    return inputs, to_client_clock(_run_engine(inputs), framework_spec(fw).api_server_s)


def _closed_loop_by_duration(sc: Scenario) -> bool:
    from oracle.workload.closed_loop import needs_resolution
    return sc.workload.trace is None and needs_resolution(sc.workload, sc.simulation.duration_s)


def _simulate_closed_loop(sc: Scenario, fw: FrameworkConfig, workload, record_steps: bool | None):
    """Closed-loop users stop sending at duration_s, which depends on the engine: the
    framework's own workload is settled by simulating (``oracle.workload.closed_loop``)."""
    from oracle.workload.closed_loop import simulate_closed_loop  # lazy: closed-loop scenarios only
    last: dict[str, Any] = {}

    def run(wl, final: bool) -> EngineOutputs:
        last["inputs"], out = _inputs_and_run(sc, fw, wl, record_steps=record_steps if final else False)
        return out

    wl, out = simulate_closed_loop(sc.workload, workload, duration_s=sc.simulation.duration_s,
                                   num_requests=sc.simulation.num_requests, seed=sc.seed, run=run)
    return wl, last["inputs"], out


def _run_engine(inputs: EngineInputs | PDInputs) -> EngineOutputs:
    from oracle.engine.loop import run_engine   # lazy: numba (~0.4 s), see cost_params
    try:
        if isinstance(inputs, PDInputs):
            from oracle.engine.pd import run_pd_engine
            return run_pd_engine(inputs)
        return run_engine(inputs)
    except SystemError as exc:
        # Ctrl-C / SIGTERM while the compiled engine runs: numba reports the handler's
        # KeyboardInterrupt as a SystemError caused by it; give the caller the interrupt itself
        if isinstance(exc.__cause__ or exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    except MemoryError:
        raise OracleError("out of memory while simulating; reduce num_requests/duration or the number of "
                          "replicas, or pin num_gpu_blocks instead of \"unlimited\"") from None


def _collect(sc: Scenario, fw: FrameworkConfig, workload, inputs: EngineInputs | PDInputs, out: EngineOutputs,
             *, wall: float, keep_steps: bool = True) -> FrameworkResult:
    requests = request_table(workload, out, warm_up_s=sc.simulation.warm_up_s, kv_offload=fw.kv_offload is not None)
    _, kv_dtype = framework_dtypes(sc, fw)
    if isinstance(inputs, PDInputs):   # the kv_cache section is the decode pool's; both in "disaggregation"
        _, kv_dtype = framework_dtypes(*pool_scenario(sc, fw, "decode"))
        out.pd["num_gpu_blocks"] = {w: getattr(inputs, w).resolved_num_gpu_blocks() for w in POOLS}
    cfg = inputs.decode.config if isinstance(inputs, PDInputs) else inputs.config
    summary = build_summary(sc, fw, requests, out, num_gpu_blocks=cfg.num_gpu_blocks,
                            kv_bytes_per_token=kv_bytes_per_token(sc.model_of(fw), kv_dtype), wall_time_s=wall)
    if sc.output.style == "original":
        from oracle.metrics.original import adjust_summary  # lazy: only converted original-tool configs
        adjust_summary(summary, sc, requests, out.steps, fw.replicas)
    steps = step_table(out) if keep_steps else None
    return FrameworkResult(name=fw.name, summary=summary, requests=requests, steps=steps, outputs=out,
                           workload=workload)

