"""``frameworks_to_test`` and ``hardware_profile`` of an original config -> ``[[frameworks]]``,
``[model]`` and ``[hardware]``.

Frameworks. Only frameworks with ``is_target_for_workload: true`` (or without the key) get
requests in the original, so only they are converted; the others are dropped with a note.
Several targets share the one request stream in the original (load-balanced by
``load_balancing_strategy``), which is data parallelism: targets with identical settings
become one ``[[frameworks]]`` entry with ``replicas`` = their count (times their own replica
counts) and ``router`` from the strategy. Targets with different settings are an error
(this project's replicas are identical), and so are targets on different models or GPU types
(a scenario has one model and one GPU type).

Parallelism keys accepted (``config`` or ``config.parallelism``): tensor parallel
``tensor_parallel_size`` / ``tp_degree`` / ``tp_size`` / ``tp``; pipeline parallel
``pipeline_parallel_size`` / ``pp_stages`` / ``pp_degree`` / ``pp_size`` / ``pp``; data parallel
``num_replicas`` / ``data_parallel_size`` / ``dp_degree`` / ``dp_size`` / ``num_instances`` /
``replicas``; router ``load_balancing_strategy`` (also in ``workload``).

GPU. The devices the targets use (``gpu_id`` / ``gpu_ids`` / ``parallelism.gpu_ids``; all
devices if none is named) must be of one kind. Their numbers (``peak_tflops.fp16``,
``memory_capacity_bytes``, ``memory_gbps`` in GB/s) are matched against the catalog: a GPU
within :data:`GPU_TOLERANCE` on every given number (the name breaking ties) is used by name;
otherwise an inline ``[hardware.gpu]`` table carries the original numbers.
"""

from __future__ import annotations

import re

from oracle.catalog import load_gpus
from oracle.engine.inputs import ROUTER_NAMES
from oracle.errors import Problems, ScenarioError
from oracle.legacy.common import (APPROXIMATED, DROPPED, NOTE, Context, boolean, first_key, fmt, integer,
                                  join, mapping, number, string)
from oracle.scenario import FRAMEWORK_DEFAULTS

FRAMEWORK_TYPES = {"vllm": "VLLM", "parallelvllm": "ParallelVLLM"}
# the routers by name, also written without underscores ("roundrobin")
ROUTERS = {spelling: name for name in ROUTER_NAMES for spelling in (name, name.replace("_", ""))}
ROUTERS_APPROX = {"random": "round_robin", "weighted_random": "round_robin", "weighted_round_robin": "round_robin",
                  "least_requests": "least_loaded", "least_connections": "least_loaded",
                  "least_outstanding_requests": "least_loaded"}
GPU_TOLERANCE = 0.10
FW = "frameworks.0"       # the one [[frameworks]] entry a conversion produces

TP_KEYS = ("tensor_parallel_size", "tp_degree", "tp_size", "tp")
PP_KEYS = ("pipeline_parallel_size", "pp_stages", "pp_degree", "pp_size", "pp")
DP_KEYS = ("num_replicas", "data_parallel_size", "dp_degree", "dp_size", "num_instances", "replicas")
LB_KEYS = ("load_balancing_strategy", "load_balancer", "router")
GPU_ID_KEYS = ("gpu_ids", "gpu_id", "device_ids", "device_id")
_PLAIN = {  # original key -> TOML key, value kind
    "block_size": ("block_size", "int"),
    "max_num_seqs": ("max_num_seqs", "int"),
    "max_num_batched_tokens": ("max_num_batched_tokens", "int"),
    "enable_prefix_caching": ("enable_prefix_caching", "bool"),
    "enable_chunked_prefill": ("enable_chunked_prefill", "bool"),
    "scheduler_iteration_delay_s": ("scheduler_overhead_s", "float"),
    "gpu_memory_utilization": ("gpu_memory_utilization", "float"),
    "num_gpu_blocks": ("num_gpu_blocks", "int"),
    "max_model_len": ("max_model_len", "int"),
}
_CONFIG_KEYS = set(_PLAIN) | set(TP_KEYS) | set(PP_KEYS) | set(DP_KEYS) | set(LB_KEYS) | set(GPU_ID_KEYS) | {
    "model_profile_id", "prefill_chunk_size", "parallelism"}
_PAR_KEYS = set(TP_KEYS) | set(PP_KEYS) | set(DP_KEYS) | set(GPU_ID_KEYS) | {"strategy"}
_FW_KEYS = ("name", "type", "is_target_for_workload", "config")


def convert_frameworks(raw_list, ctx: Context, *, workload: dict, path: str = "frameworks_to_test") -> list[dict]:
    """Return ``[{"toml": fw table, "model": id, "model_key": path, "gpu_ids": [...], "path": ...}]``
    for the target frameworks, merged into data-parallel entries (see the module docstring)."""
    if not isinstance(raw_list, list) or not raw_list:
        raise ScenarioError("is required: a non-empty list of frameworks", key=path)
    lb_workload = string(workload, "load_balancing_strategy", "workload") if isinstance(workload, dict) else None
    targets = []
    problems = Problems()   # every framework is checked; their problems are raised together
    for i, fw in enumerate(raw_list):
        with problems.guard():
            kp = join(path, i)
            fw = mapping(fw, kp)
            name = string(fw, "name", kp, default=f"framework{i}")
            ftype = string(fw, "type", kp, default=...)
            if ftype.lower().replace("_", "").replace("-", "") not in FRAMEWORK_TYPES:
                raise ScenarioError(f"unknown framework type {ftype!r}; the original format knows: "
                                    + ", ".join(FRAMEWORK_TYPES.values()), key=join(kp, "type"))
            target = boolean(fw, "is_target_for_workload", kp, default=True)
            if not target:
                ctx.note(DROPPED, f"framework {name!r} has is_target_for_workload: false, so it gets no requests "
                                  "in the original; it is left out", origin=kp)
                continue
            targets.append(_one(fw, kp, name, ctx, lb_workload))
    problems.raise_if_any()
    if not targets:
        raise ScenarioError("no framework has is_target_for_workload: true, so no framework gets requests",
                            key=path)
    return _merge(targets, ctx, path)


def _one(fw: dict, kp: str, name: str, ctx: Context, lb_workload: str | None) -> dict:
    ctx.unknown_keys(fw, _FW_KEYS, kp, FW)
    cp = join(kp, "config")
    cfg = mapping(fw.get("config", {}), cp)
    ctx.unknown_keys(cfg, _CONFIG_KEYS, cp, FW)
    par_p = join(cp, "parallelism")
    par = mapping(cfg.get("parallelism"), par_p, required=False)
    ctx.unknown_keys(par, _PAR_KEYS, par_p, FW)
    problems = Problems()   # every setting is checked; the problems are raised together
    model = None
    with problems.guard():
        model = string(cfg, "model_profile_id", cp, default=...)
    out: dict = {"name": _folder_name(name)}
    origins: dict[str, str] = {"name": join(kp, "name")}
    for src, (dst, kind) in _PLAIN.items():
        if cfg.get(src) is None:   # absent, or an empty YAML value: not given
            continue
        with problems.guard():
            if kind == "int":
                out[dst] = integer(cfg, src, cp, lo=1)
            elif kind == "bool":
                out[dst] = boolean(cfg, src, cp)
            else:
                out[dst] = number(cfg, src, cp, lo=0.0)
            origins[dst] = join(cp, src)
    chunk = None
    with problems.guard():
        chunk = integer(cfg, "prefill_chunk_size", cp, lo=1)
    if chunk is not None:
        if "max_num_batched_tokens" not in out:
            out["max_num_batched_tokens"] = chunk
            origins["max_num_batched_tokens"] = join(cp, "prefill_chunk_size")
            ctx.note(APPROXIMATED, f"prefill_chunk_size = {chunk} -> max_num_batched_tokens (the per-step token "
                                   "budget, which is what bounds a prefill chunk here)", origin=join(cp, "prefill_chunk_size"))
        elif chunk != out["max_num_batched_tokens"]:
            ctx.note(DROPPED, f"prefill_chunk_size = {chunk}: a prefill chunk here is bounded by "
                              f"max_num_batched_tokens ({out['max_num_batched_tokens']}) only",
                     toml_key=f"{FW}.max_num_batched_tokens", origin=join(cp, "prefill_chunk_size"))
    for keys, dst in ((TP_KEYS, "tp"), (PP_KEYS, "pp"), (DP_KEYS, "replicas")):
        for where, wp in ((cfg, cp), (par, par_p)):
            k = first_key(where, keys)
            if k is not None and where[k] is not None:
                with problems.guard():
                    out[dst] = integer(where, k, wp, lo=1)
                    origins[dst] = join(wp, k)
                break
    problems.raise_if_any()
    strategy = string(par, "strategy", par_p)
    if strategy is not None:
        s = strategy.upper().replace("-", "_").replace("+", "_")
        known = {"NONE": (), "TP": ("tp",), "PP": ("pp",), "TP_PP": ("tp", "pp"), "PP_TP": ("tp", "pp"),
                 "DP": ("replicas",)}
        if s not in known:
            ctx.note(NOTE, f"parallelism.strategy {strategy!r} not recognised; the degrees given are used as is",
                     toml_key=FW, origin=join(par_p, "strategy"))
        else:
            for dim in ("tp", "pp"):
                if out.get(dim, getattr(FRAMEWORK_DEFAULTS, dim)) > 1 and dim not in known[s]:
                    ctx.note(NOTE, f"strategy {strategy!r} but {dim} = {out[dim]}: the degree is used",
                             toml_key=FW, origin=join(par_p, "strategy"))
    lb_key = first_key(cfg, LB_KEYS)
    lb = string(cfg, lb_key, cp) if lb_key else lb_workload
    lb_origin = join(cp, lb_key) if lb_key else "workload.load_balancing_strategy"
    gpu_ids = _gpu_ids(cfg, cp, par, par_p)
    return {"toml": out, "origins": origins, "model": model, "model_key": join(cp, "model_profile_id"),
            "gpu_ids": gpu_ids, "path": kp, "lb": lb, "lb_origin": lb_origin}


def _folder_name(name: str) -> str:
    clean = re.sub(r"[/\\]", "_", name).strip() or FRAMEWORK_DEFAULTS.name
    return FRAMEWORK_DEFAULTS.name if clean in (".", "..") else clean


def _gpu_ids(cfg: dict, cp: str, par: dict, par_p: str) -> list[str]:
    for where, wp in ((par, par_p), (cfg, cp)):
        k = first_key(where, GPU_ID_KEYS)
        if k is None:
            continue
        v = where[k]
        ids = v if isinstance(v, list) else [v]
        if not all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in ids):
            raise ScenarioError(f"must be a device id or a list of device ids, got {v!r}", key=join(wp, k))
        return [str(x) for x in ids]
    return []


def _router(lb: str | None, origin: str, ctx: Context) -> str | None:
    if lb is None:
        return None
    k = lb.strip().lower().replace("-", "_").replace(" ", "_")
    if k in ROUTERS:
        return ROUTERS[k]
    if k in ROUTERS_APPROX:
        ctx.note(APPROXIMATED, f"load_balancing_strategy {lb!r} has no equivalent: {ROUTERS_APPROX[k]} is used",
                 toml_key="frameworks.0.router", origin=origin)
        return ROUTERS_APPROX[k]
    raise ScenarioError(f"unknown load_balancing_strategy {lb!r}; known: {', '.join(ROUTER_NAMES)} "
                        "(and approximately: " + ", ".join(ROUTERS_APPROX) + ")", key=origin)


def _merge(targets: list[dict], ctx: Context, path: str) -> list[dict]:
    first = targets[0]
    for t in targets[1:]:
        if t["model"].strip().lower() != first["model"].strip().lower():
            raise ScenarioError(f"frameworks use different models ({first['model']!r} in {first['path']}, "
                                f"{t['model']!r} here); a converted scenario has one model: convert one "
                                "model per file (mark the others is_target_for_workload: false)",
                                key=t["model_key"])
        a = {k: v for k, v in first["toml"].items() if k != "name"}
        b = {k: v for k, v in t["toml"].items() if k != "name"}
        if a != b:
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ScenarioError(f"target frameworks differ in {', '.join(diff)}: the original splits one request "
                                "stream between them (heterogeneous data parallelism), which this project does "
                                "not model; give them equal settings, or keep one target "
                                "(is_target_for_workload: false on the others)", key=t["path"])
    fw = dict(first["toml"])
    origins = {f"frameworks.0.{k}": v for k, v in first["origins"].items()}
    own = fw.get("replicas", FRAMEWORK_DEFAULTS.replicas)
    if len(targets) > 1:
        fw["replicas"] = own * len(targets)
        fw["name"] = _folder_name("+".join(t["toml"]["name"] for t in targets)) if len(targets) <= 4 \
            else f"{fw['name']}-x{len(targets)}"
        ctx.note(NOTE, f"{len(targets)} target frameworks with equal settings ("
                       + ", ".join(t["path"] for t in targets) + f") = one deployment with {fw['replicas']} "
                       "data-parallel replicas sharing the request stream", toml_key="frameworks.0.replicas",
                 origin=path)
        origins["frameworks.0.replicas"] = path
    lb = first["lb"]
    router = _router(lb, first["lb_origin"], ctx)
    if fw.get("replicas", FRAMEWORK_DEFAULTS.replicas) > 1:
        if router is not None:
            fw["router"] = router
            origins["frameworks.0.router"] = first["lb_origin"]
        else:
            ctx.note(NOTE, f"no load_balancing_strategy: {FRAMEWORK_DEFAULTS.router} (the default) is used",
                     toml_key="frameworks.0.router")
    elif lb is not None:
        ctx.note(DROPPED, f"load_balancing_strategy {lb!r} is unused with one replica", toml_key=FW,
                 origin=first["lb_origin"])
    for k, v in origins.items():
        ctx.origin(k, v)
    gpu_ids = [g for t in targets for g in t["gpu_ids"]]
    return [{"toml": _ordered(fw), "model": first["model"], "model_key": first["model_key"], "gpu_ids": gpu_ids,
             "paths": [t["path"] for t in targets]}]


def _ordered(fw: dict) -> dict:
    order = ("name", "type", "tp", "pp", "replicas", "router", "block_size", "num_gpu_blocks",
             "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "max_model_len",
             "enable_chunked_prefill", "enable_prefix_caching", "scheduler_overhead_s")
    out = {"name": fw["name"], "type": FRAMEWORK_DEFAULTS.type}
    out.update({k: fw[k] for k in order if k in fw and k not in out})
    return out


# -- hardware --------------------------------------------------------------------------------------

_DEVICE_KEYS = ("device_id", "device_type", "peak_tflops", "memory_capacity_bytes", "memory_gbps",
                "processing_units")


def convert_hardware(raw, ctx: Context, *, gpu_ids: list[str], num_gpus: int,
                     path: str = "hardware_profile") -> dict:
    """The ``[hardware]`` table for the devices ``gpu_ids`` (all devices if empty)."""
    hw = mapping(raw, path)
    ctx.unknown_keys(hw, ("compute_devices", "network_links"), path, "hardware")
    devs = hw.get("compute_devices")
    dp = join(path, "compute_devices")
    if not isinstance(devs, list) or not devs:
        raise ScenarioError("is required: a non-empty list of devices", key=dp)
    by_id: dict[str, tuple[int, dict]] = {}
    for i, d in enumerate(devs):
        d = mapping(d, join(dp, i))
        did = d.get("device_id", f"device{i}")
        by_id[str(did)] = (i, d)
    missing = [g for g in gpu_ids if g not in by_id]
    if missing:
        raise ScenarioError(f"frameworks name device(s) {', '.join(map(repr, missing))} that "
                            f"hardware_profile.compute_devices does not list (have: {', '.join(by_id)})", key=dp)
    used = [by_id[g] for g in dict.fromkeys(gpu_ids)] or list(by_id.values())
    # notes about the first device only (the others must be the same kind)
    specs = [(_device(d, join(dp, i), ctx if n == 0 else Context()), join(dp, i)) for n, (i, d) in enumerate(used)]
    first, fpath = specs[0]
    for spec, sp in specs[1:]:
        if {k: v for k, v in spec.items() if k != "type"} != {k: v for k, v in first.items() if k != "type"} \
                or spec["type"] != first["type"]:
            raise ScenarioError(f"the frameworks use different kinds of device ({fpath} and {sp}); a scenario has "
                                "one GPU type", key=sp)
    if gpu_ids and len(dict.fromkeys(gpu_ids)) != num_gpus:
        ctx.note(NOTE, f"the frameworks name {len(dict.fromkeys(gpu_ids))} device(s) but use {num_gpus} GPU(s) "
                       "(tp x pp x replicas); the GPU count follows the parallelism", toml_key="hardware")
    links = _links(hw, path, set(by_id), ctx)
    return _match_gpu(first, fpath, links, ctx)


def _device(d: dict, p: str, ctx: Context) -> dict:
    ctx.unknown_keys(d, _DEVICE_KEYS, p, "hardware")
    peak = d.get("peak_tflops")
    tflops = None
    if isinstance(peak, dict):
        k = first_key(peak, ("fp16", "bf16"))
        if k is not None:
            tflops = number(peak, k, join(p, "peak_tflops"), lo=0.0, lo_open=True)
        for other in peak:
            if other not in ("fp16", "bf16"):
                ctx.note(DROPPED, f"peak_tflops.{other} is unused (weights and KV are 16-bit here)",
                         toml_key="hardware", origin=join(p, f"peak_tflops.{other}"))
    elif peak is not None:
        tflops = number(d, "peak_tflops", p, lo=0.0, lo_open=True)
    if "processing_units" in d:
        ctx.note(DROPPED, "processing_units is unused (the cost model is a roofline over peak FLOP/s and "
                          "bandwidth)", toml_key="hardware", origin=join(p, "processing_units"))
    mem = number(d, "memory_capacity_bytes", p, lo=0.0, lo_open=True)
    bw = number(d, "memory_gbps", p, lo=0.0, lo_open=True)
    return {"type": str(d.get("device_type", "")), "tflops": tflops, "memory_gib": None if mem is None else mem / 2**30,
            "bw": bw}


def _links(hw: dict, path: str, device_ids: set[str], ctx: Context) -> list[tuple[float, float]]:
    """(bandwidth GB/s, latency s) of GPU-to-GPU links; other links are dropped with a note."""
    raw = hw.get("network_links")
    if raw is None:
        return []
    lp = join(path, "network_links")
    if not isinstance(raw, list):
        raise ScenarioError("must be a list of links", key=lp)
    out, dropped = [], 0
    for i, link in enumerate(raw):
        link = mapping(link, join(lp, i))
        ends = {str(link.get(k)) for k in ("source_id", "dest_id", "source", "dest", "src", "dst") if k in link}
        if ends and ends <= device_ids and len(ends) == 2:
            bps = number(link, "bandwidth_bps", join(lp, i), lo=0.0, lo_open=True)
            lat = number(link, "latency_s", join(lp, i), default=0.0, lo=0.0)
            if bps is not None:
                out.append((bps / 8e9, lat))
        else:
            dropped += 1
    if dropped:
        ctx.note(DROPPED, f"{dropped} client/framework network link(s): network transfer time is not modelled "
                          "(requests reach the engine at their arrival time)", toml_key="hardware", origin=lp)
    return out


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower().replace("nvidia", ""))


def _match_gpu(dev: dict, p: str, links: list[tuple[float, float]], ctx: Context) -> dict:
    gpus = load_gpus()
    given = {"tflops": ("peak_tflops_bf16", "peak_tflops.fp16", "TFLOP/s"),
             "memory_gib": ("memory_gib", "memory_capacity_bytes", "GiB"), "bw": ("mem_bw_gbps", "memory_gbps", "GB/s")}
    have = {k: dev[k] for k in given if dev[k] is not None}
    dtype = _norm(dev["type"])

    def close(g) -> bool:
        return all(abs(getattr(g, given[k][0]) - v) <= GPU_TOLERANCE * v for k, v in have.items())

    def name_score(name: str) -> int:
        n = _norm(name)
        return 2 if n and n == dtype else (1 if n and (n in dtype or dtype in n) else 0)
    cands = [g for g in gpus.values() if close(g)] if have else []
    if not have:
        cands = [g for g in gpus.values() if name_score(g.name) > 0]
        if not cands:
            raise ScenarioError(f"device type {dev['type']!r} is not a catalog GPU and the device gives no "
                                "peak_tflops / memory_capacity_bytes / memory_gbps; known GPUs: "
                                + ", ".join(sorted(gpus)), key=p)
    if cands:
        def dist(g) -> float:
            return sum(abs(getattr(g, given[k][0]) - v) / v for k, v in have.items())
        g = sorted(cands, key=lambda g: (-name_score(g.name), dist(g), g.name))[0]
        diffs = [f"{given[k][1]} {fmt(v)} vs {fmt(getattr(g, given[k][0]))} {given[k][2]}" for k, v in have.items()
                 if abs(getattr(g, given[k][0]) - v) > 0.005 * v]
        text = f"device {dev['type'] or '?'!r} matches catalog GPU {g.name!r}" + (
            f" within {GPU_TOLERANCE:.0%} (original vs catalog: {'; '.join(diffs)}); the catalog's numbers and "
            "fitted efficiencies are used" if diffs else "")
        ctx.note(APPROXIMATED if diffs else NOTE, text, toml_key="hardware.gpu", origin=p)
        if links:
            bw = min(b for b, _ in links)
            if abs(bw - g.link_bw_gbps) > 0.005 * g.link_bw_gbps:
                ctx.note(APPROXIMATED, f"GPU-to-GPU link {fmt(bw)} GB/s in the original; the catalog's "
                                       f"{fmt(g.link_bw_gbps)} GB/s is used", toml_key="hardware.gpu")
        return {"gpu": g.name}
    missing = [given[k][1] for k in given if k not in have]
    if missing:
        raise ScenarioError(f"device {dev['type']!r} matches no catalog GPU, and an inline GPU needs "
                            f"{', '.join(missing)}; known GPUs: {', '.join(sorted(gpus))}", key=p)
    table = {"name": re.sub(r"[^a-z0-9.]+", "-", dev["type"].lower()).strip("-") or "custom", "memory_gib": have["memory_gib"],
             "mem_bw_gbps": have["bw"], "peak_tflops_bf16": have["tflops"],
             "source": f"converted from an original-LLMPerfOracle device ({dev['type'] or 'no type'})"}
    if links:
        table["link_bw_gbps"] = min(b for b, _ in links)
        table["link_latency_s"] = max(lat for _, lat in links)
    ctx.note(NOTE, f"device {dev['type']!r} matches no catalog GPU within {GPU_TOLERANCE:.0%}: its numbers are "
                   "used inline; efficiency factors are the catalog defaults"
                   + ("" if links else "; GPU-to-GPU links: PCIe default (32 GB/s)"), toml_key="hardware.gpu", origin=p)
    return {"gpu": table}
