"""``frameworks_to_test`` and ``hardware_profile`` of an original config -> ``[[frameworks]]``,
``[model]`` and ``[hardware]``.

Frameworks. Only frameworks with ``is_target_for_workload: true`` (or without the key) get
requests in the original, so only they are converted; the others are dropped with a note.
The original's replicas are its target frameworks: they share the one request stream
(load-balanced by ``load_balancing_strategy``), and nothing else makes replicas
(``data_parallel_size`` and the like are never read; they are dropped with a note). Targets
with identical settings and model become one ``[[frameworks]]`` entry with ``replicas`` = their
count and ``router`` from the strategy. Targets that differ (the original's
``example_parallel_experiment``) become one entry per group of identical targets, each with
its own ``model`` where it differs from ``[model]``; here each entry is simulated on the whole
stream (approximated, noted). All targets must use one GPU type (a scenario has one).

Parallelism keys accepted (``config`` or ``config.parallelism``): tensor parallel
``tensor_parallel_size`` / ``tp_degree`` / ``tp_size`` / ``tp``; pipeline parallel
``pipeline_parallel_size`` / ``pp_stages`` / ``pp_degree`` / ``pp_size`` / ``pp``; router
``load_balancing_strategy`` (also in ``workload``).

Step budget: ``max_num_batched_tokens`` when given, else :data:`ORIGINAL_TOKEN_BUDGET` (the
original's budget for a single-GPU vLLM). ``prefill_chunk_size`` is not the budget and has no
equivalent (a chunk is bounded by the budget here); ``scheduler_iteration_delay_s`` is the
original's sleep when its loop has no work, not a per-step cost, and is dropped.

GPU. The devices the targets use (``gpu_id`` / ``gpu_ids`` / ``parallelism.gpu_ids``; all
devices if none is named) must be of one kind. Their numbers (``peak_tflops.fp16``,
``memory_capacity_bytes``, ``memory_gbps`` in GB/s) are matched against the catalog: a GPU
within :data:`GPU_TOLERANCE` on every given number (the name breaking ties) is used by name;
otherwise an inline ``[hardware.gpu]`` table carries the original numbers. Only links between
two GPUs of one target framework define the GPU-to-GPU interconnect; links to a client node
(listed among the compute devices or not) and between different targets are dropped.
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
ORIGINAL_TOKEN_BUDGET = 2048   # the original's per-step token budget of a single-GPU vLLM framework
FW = "frameworks.0"       # where notes about a target framework's settings go

TP_KEYS = ("tensor_parallel_size", "tp_degree", "tp_size", "tp")
PP_KEYS = ("pipeline_parallel_size", "pp_stages", "pp_degree", "pp_size", "pp")
DP_KEYS = ("num_replicas", "data_parallel_size", "dp_degree", "dp_size", "num_instances", "replicas")
CROSS_KEYS = ("enable_cross_request_caching", "min_prefix_cache_length", "max_prefix_cache_size",
              "prefix_eviction_policy")
LB_KEYS = ("load_balancing_strategy", "load_balancer", "router")
GPU_ID_KEYS = ("gpu_ids", "gpu_id", "device_ids", "device_id")
_PLAIN = {  # original key -> TOML key, value kind
    "block_size": ("block_size", "int"),
    "max_num_seqs": ("max_num_seqs", "int"),
    "max_num_batched_tokens": ("max_num_batched_tokens", "int"),
    "enable_prefix_caching": ("enable_prefix_caching", "bool"),
    "enable_chunked_prefill": ("enable_chunked_prefill", "bool"),
    "gpu_memory_utilization": ("gpu_memory_utilization", "float"),
    "num_gpu_blocks": ("num_gpu_blocks", "int"),
    "max_model_len": ("max_model_len", "int"),
}
_CONFIG_KEYS = set(_PLAIN) | set(TP_KEYS) | set(PP_KEYS) | set(DP_KEYS) | set(LB_KEYS) | set(GPU_ID_KEYS) | set(
    CROSS_KEYS) | {"model_profile_id", "prefill_chunk_size", "parallelism", "scheduler_iteration_delay_s"}
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
            own = Context()   # its notes go to its [[frameworks]] entry, known after grouping
            t = _one(fw, kp, name, own, lb_workload)
            t["notes"] = own.notes
            targets.append(t)
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
    with problems.guard():
        delay = number(cfg, "scheduler_iteration_delay_s", cp, lo=0.0)
        if delay is not None:
            ctx.note(DROPPED, f"scheduler_iteration_delay_s = {fmt(delay)}: the original sleeps this long only when "
                              "its loop has no work (not on every step), so a request reaching an idle framework "
                              "waits up to that long before it is scheduled; not modelled (each step's CPU time "
                              "here is the GPU's calibrated overhead)", toml_key=FW,
                     origin=join(cp, "scheduler_iteration_delay_s"))
    for keys, dst in ((TP_KEYS, "tp"), (PP_KEYS, "pp")):
        for where, wp in ((cfg, cp), (par, par_p)):
            k = first_key(where, keys)
            if k is not None and where[k] is not None:
                with problems.guard():
                    out[dst] = integer(where, k, wp, lo=1)
                    origins[dst] = join(wp, k)
                break
    for where, wp in ((cfg, cp), (par, par_p)):
        k = first_key(where, DP_KEYS)
        if k is not None:
            ctx.note(DROPPED, f"{k} = {where[k]!r} is never read by the original: its replicas are its target "
                              "frameworks (is_target_for_workload), and so they are here", toml_key=FW,
                     origin=join(wp, k))
    problems.raise_if_any()
    if "max_num_batched_tokens" not in out:
        out["max_num_batched_tokens"] = ORIGINAL_TOKEN_BUDGET
        multi = out.get("tp", 1) * out.get("pp", 1) > 1
        ctx.note(APPROXIMATED if multi else NOTE,
                 f"no max_num_batched_tokens: the original's step budget, {ORIGINAL_TOKEN_BUDGET} tokens"
                 + (" (for a single-GPU framework; for tensor/pipeline-parallel ones the original derives a "
                    "larger budget, e.g. 3691 tokens for a TP8 GH200 config, by a rule not reproduced here: "
                    "set max_num_batched_tokens to pin it)" if multi else ""),
                 toml_key=f"{FW}.max_num_batched_tokens", origin=cp)
    if chunk is not None:
        ctx.note(DROPPED, f"prefill_chunk_size = {chunk} is not the step's token budget (that is "
                          f"max_num_batched_tokens = {out['max_num_batched_tokens']}); a prefill chunk here is "
                          "bounded by the budget only", toml_key=f"{FW}.max_num_batched_tokens",
                 origin=join(cp, "prefill_chunk_size"))
    _cross_request_keys(cfg, cp, out, ctx)
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


def _cross_request_keys(cfg: dict, cp: str, out: dict, ctx: Context) -> None:
    """The original's cross-request prefix cache settings: vLLM's one prefix cache serves both."""
    apc = out.get("enable_prefix_caching", True)
    if "enable_cross_request_caching" in cfg:
        cross = boolean(cfg, "enable_cross_request_caching", cp)
        if cross and not apc:
            text = ("enable_cross_request_caching = true with enable_prefix_caching = false: nothing is cached "
                    "here (vLLM's prefix cache serves both kinds of hits)")
        elif cross:
            text = ("enable_cross_request_caching = true: vLLM's prefix cache shares any common prefix, across "
                    "requests and within conversations")
        else:
            text = ("enable_cross_request_caching = false: vLLM's prefix cache cannot be limited to "
                    "conversations, so requests sharing a prefix (prefix_patterns) also hit here")
        ctx.note(APPROXIMATED if (cross is False and apc) else NOTE, text, toml_key=FW,
                 origin=join(cp, "enable_cross_request_caching"))
    if "min_prefix_cache_length" in cfg:
        ctx.note(APPROXIMATED, f"min_prefix_cache_length = {cfg['min_prefix_cache_length']!r}: prefixes are cached "
                               "and hit in whole KV blocks (block_size tokens) here, with no other minimum",
                 toml_key=FW, origin=join(cp, "min_prefix_cache_length"))
    if "max_prefix_cache_size" in cfg:
        ctx.note(APPROXIMATED, f"max_prefix_cache_size = {cfg['max_prefix_cache_size']!r}: the prefix cache here is "
                               "the KV blocks not in use (vLLM), bounded by the KV capacity only",
                 toml_key=FW, origin=join(cp, "max_prefix_cache_size"))
    if "prefix_eviction_policy" in cfg:
        pol = str(cfg["prefix_eviction_policy"])
        lru = pol.strip().lower() in ("lru", "least_recently_used")
        ctx.note(NOTE if lru else APPROXIMATED,
                 f"prefix_eviction_policy = {pol!r}: " + ("vLLM evicts the least recently used block, the tail of a "
                                                          "prefix first" if lru else "LRU (vLLM's) is used"),
                 toml_key=FW, origin=join(cp, "prefix_eviction_policy"))


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


def _router(lb: str | None, origin: str, ctx: Context, prefix: str = FW) -> str | None:
    if lb is None:
        return None
    k = lb.strip().lower().replace("-", "_").replace(" ", "_")
    if k in ROUTERS:
        return ROUTERS[k]
    if k in ROUTERS_APPROX:
        ctx.note(APPROXIMATED, f"load_balancing_strategy {lb!r} has no equivalent: {ROUTERS_APPROX[k]} is used",
                 toml_key=f"{prefix}.router", origin=origin)
        return ROUTERS_APPROX[k]
    raise ScenarioError(f"unknown load_balancing_strategy {lb!r}; known: {', '.join(ROUTER_NAMES)} "
                        "(and approximately: " + ", ".join(ROUTERS_APPROX) + ")", key=origin)


def _same_model(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def _merge(targets: list[dict], ctx: Context, path: str) -> list[dict]:
    """Group identical targets (settings and model) into ``[[frameworks]]`` entries, in order."""
    groups: list[list[dict]] = []
    for t in targets:
        settings = {k: v for k, v in t["toml"].items() if k != "name"}
        for g in groups:
            if _same_model(g[0]["model"], t["model"]) and \
                    settings == {k: v for k, v in g[0]["toml"].items() if k != "name"}:
                g.append(t)
                break
        else:
            groups.append([t])
    out, names = [], set()
    for gi, group in enumerate(groups):
        for t in group:
            for n in t["notes"]:
                key = n.toml_key
                if key is not None and (key == FW or key.startswith(FW + ".")):
                    key = f"frameworks.{gi}" + key[len(FW):]
                ctx.note(n.kind, n.text, toml_key=key, origin=n.origin)
        entry = _group(group, gi, ctx, path, alone=len(groups) == 1)
        base, j = entry["toml"]["name"], 2
        while entry["toml"]["name"] in names:
            entry["toml"]["name"], j = f"{base}-{j}", j + 1
        names.add(entry["toml"]["name"])
        out.append(entry)
    if len(groups) > 1:
        desc = "; ".join(f"frameworks.{i}: " + ", ".join(t["path"] for t in g) for i, g in enumerate(groups))
        ctx.note(APPROXIMATED, f"{len(targets)} target frameworks with different settings or models ({desc}): the "
                               "original splits one request stream between all of them (load_balancing_strategy "
                               f"{targets[0]['lb'] or 'round_robin'!r}); here each [[frameworks]] "
                               "entry is simulated on the whole stream and the entries are compared (this project's "
                               "replicas of one entry are identical, so differing targets cannot share a stream)",
                 toml_key="frameworks", origin=path)
    return out


def _group(targets: list[dict], gi: int, ctx: Context, path: str, *, alone: bool = True) -> dict:
    first = targets[0]
    prefix = f"frameworks.{gi}"
    fw = dict(first["toml"])
    origins = {f"{prefix}.{k}": v for k, v in first["origins"].items()}
    if len(targets) > 1:
        fw["replicas"] = len(targets)
        fw["name"] = _folder_name("+".join(t["toml"]["name"] for t in targets)) if len(targets) <= 4 \
            else f"{fw['name']}-x{len(targets)}"
        ctx.note(NOTE, f"{len(targets)} target frameworks with equal settings ("
                       + ", ".join(t["path"] for t in targets) + f") = one deployment with {fw['replicas']} "
                       "data-parallel replicas sharing the request stream, as in the original",
                 toml_key=f"{prefix}.replicas", origin=path)
        origins[f"{prefix}.replicas"] = path
    lb = first["lb"]
    router = _router(lb, first["lb_origin"], ctx, prefix)
    if fw.get("replicas", FRAMEWORK_DEFAULTS.replicas) > 1:
        if router is not None:
            fw["router"] = router
            origins[f"{prefix}.router"] = first["lb_origin"]
        else:
            ctx.note(NOTE, f"no load_balancing_strategy: {FRAMEWORK_DEFAULTS.router} (the default) is used",
                     toml_key=f"{prefix}.router")
    elif lb is not None and alone:
        ctx.note(DROPPED, f"load_balancing_strategy {lb!r} is unused with one replica", toml_key=prefix,
                 origin=first["lb_origin"])
    for k, v in origins.items():
        ctx.origin(k, v)
    gpu_ids = [g for t in targets for g in t["gpu_ids"]]
    return {"toml": _ordered(fw), "model": first["model"], "model_key": first["model_key"], "gpu_ids": gpu_ids,
            "gpu_sets": [t["gpu_ids"] for t in targets], "paths": [t["path"] for t in targets]}


def _ordered(fw: dict) -> dict:
    order = ("name", "type", "tp", "pp", "replicas", "router", "block_size", "num_gpu_blocks",
             "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "max_model_len",
             "enable_chunked_prefill", "enable_prefix_caching")
    out = {"name": fw["name"], "type": FRAMEWORK_DEFAULTS.type}
    out.update({k: fw[k] for k in order if k in fw and k not in out})
    return out


# -- hardware --------------------------------------------------------------------------------------

_DEVICE_KEYS = ("device_id", "device_type", "peak_tflops", "memory_capacity_bytes", "memory_gbps",
                "processing_units")


def _client_like(did: str, d: dict) -> bool:
    text = f"{did} {d.get('device_type', '')}".lower()
    return "client" in text or re.search(r"\bcpu\b", text) is not None


def convert_hardware(raw, ctx: Context, *, gpu_ids: list[str], num_gpus: int, gpu_sets: list[list[str]] = (),
                     path: str = "hardware_profile") -> dict:
    """The ``[hardware]`` table for the devices ``gpu_ids`` (if empty: every device that is not
    a client node or CPU). ``gpu_sets``: the devices of each target framework (their links are
    the GPU-to-GPU interconnect)."""
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
    if gpu_ids:
        used_ids = list(dict.fromkeys(gpu_ids))
    else:
        used_ids = [k for k, (_, d) in by_id.items() if not _client_like(k, d)] or list(by_id)
    used = [by_id[g] for g in used_ids]
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
    own = [set(g) for g in gpu_sets if len(set(g)) > 1] if gpu_ids else [set(used_ids)]
    links = _links(hw, path, own, set(by_id), ctx)
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


def _links(hw: dict, path: str, groups: list[set[str]], device_ids: set[str],
           ctx: Context) -> list[tuple[float, float]]:
    """(bandwidth GB/s, latency s) of the links between two GPUs of one target framework
    (``groups``); the others are dropped with a note."""
    raw = hw.get("network_links")
    if raw is None:
        return []
    lp = join(path, "network_links")
    if not isinstance(raw, list):
        raise ScenarioError("must be a list of links", key=lp)
    out, client, between = [], 0, 0
    for i, link in enumerate(raw):
        link = mapping(link, join(lp, i))
        ends = {str(link.get(k)) for k in ("source_id", "dest_id", "source", "dest", "src", "dst") if k in link}
        if len(ends) == 2 and any(ends <= g for g in groups):
            bps = number(link, "bandwidth_bps", join(lp, i), lo=0.0, lo_open=True)
            lat = number(link, "latency_s", join(lp, i), default=0.0, lo=0.0)
            if bps is not None:
                out.append((bps / 8e9, lat))
        elif len(ends) == 2 and ends <= device_ids and not any(e.lower().startswith("client") for e in ends):
            between += 1
        else:
            client += 1
    if client:
        ctx.note(DROPPED, f"{client} client/framework network link(s): network transfer time is not modelled "
                          "(requests reach the engine at their arrival time); a client link is never the "
                          "GPU-to-GPU interconnect", toml_key="hardware", origin=lp)
    if between:
        ctx.note(DROPPED, f"{between} link(s) between devices that are not two GPUs of one target framework: only "
                          "links inside a framework (tensor/pipeline parallel traffic) matter", toml_key="hardware",
                 origin=lp)
    return out


def _inline_catalog_gpu(g, link_bw: float, link_latency: float) -> dict:
    """A catalog GPU as an inline ``[hardware.gpu]`` table (every number, fitted ones too), with
    another GPU-to-GPU link."""
    from oracle.catalog import gpu_table_items
    out = {"name": g.name, **gpu_table_items(g)}
    out["link_bw_gbps"] = link_bw
    out["link_latency_s"] = link_latency
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
            bw, lat = min(b for b, _ in links), max(x for _, x in links)
            if abs(bw - g.link_bw_gbps) > 0.005 * g.link_bw_gbps or abs(lat - g.link_latency_s) > 1e-9:
                ctx.note(NOTE, f"the configured GPU-to-GPU link ({fmt(bw)} GB/s, {fmt(lat * 1e6)} us) replaces the "
                               f"catalog's ({fmt(g.link_bw_gbps)} GB/s, {fmt(g.link_latency_s * 1e6)} us): the "
                               f"catalog GPU {g.name!r} is written out inline with it",
                         toml_key="hardware.gpu", origin=join(p.rsplit(".compute_devices", 1)[0], "network_links"))
                return {"gpu": _inline_catalog_gpu(g, bw, lat)}
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
