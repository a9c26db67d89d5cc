"""inference-perf configs -> scenarios (inference-perf 0.7: ``inference_perf/config/``,
``loadgen/load_generator.py``, ``loadgen/load_timer.py``, ``utils/numeric/distribution/``).

Accepted: a config YAML (``inference-perf --config_file config.yml``), also the ``config.yaml``
an inference-perf run saves with its results; or an ``inference-perf --a.b value ...`` command
line (dotted overrides, as its quick start shows) in a shell file or after ``--``. Every load
stage is one benchmark (stages run one after another, each simulated from an empty server),
written to ``OUT/stage_<k>/`` by ``oracle simulate``.

=============================================  ====================================================================
``load.type: constant``, stage ``rate``,       ``int(rate * duration)`` requests, Poisson arrivals at ``rate``,
``duration``                                   none after ``duration``. Approximated: inference-perf draws
                                               exponential gaps and scales them to end exactly at ``duration``
``load.type: poisson``                         the same load (a Poisson count per second, spread over the second)
``load.type: concurrent``, stage               a closed-loop client of ``concurrency_level`` users sending
``num_requests``, ``concurrency_level``        ``num_requests`` requests in all. Approximated: inference-perf
                                               splits the level over its workers, each with its own semaphore
``data.type: random``,                         lengths from inference-perf's ``generate_distribution``: normal
``input_distribution`` / ``output_distribution``  clipped to [min, max] (exact); fixed (exact); uniform (continuous
(``min``, ``max``, ``mean``, ``std_dev``,      then rounded: approximated by integers uniform on [min, max]);
``type``)                                      lognormal shifted by min, skew_normal, poisson: approximated
``data.type: shared_prefix`` (``num_groups``,  ``num_groups`` system prompts of ``system_prompt_len`` tokens, one
``num_prompts_per_group``, ``system_prompt_len``,  picked uniformly per request, then ``question_len`` tokens;
``question_len``, ``output_len``)              output ``output_len``. Approximated: inference-perf re-sends the same
                                               ``num_groups x num_prompts_per_group`` prompts in turn, so whole
                                               prompts hit the cache after the first round (``oracle replay`` of a
                                               result folder reproduces that exactly)
``load.request_timeout``                       ``[workload] timeout_s``
``load.base_seed``, ``server.model_name``      the scenario seed, the model (catalog name)
=============================================  ====================================================================

Not simulated (named in a warning): ``load.sweep`` (an adaptive saturation probe: give the
stages it found), trace and session replays, other data types (they need datasets and a
tokenizer), ``load.interval`` (stages are simulated apart), worker limits, circuit breakers,
LoRA splits. The config names no GPU: an H100 SXM is assumed, and a note says so.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

from oracle.importers import APPROXIMATED, DEFAULT_GPU, NOT_SIMULATED, NOTE, Imported, ImportError_
from oracle.importers.common import catalog_model, iter_flags, read_mapping, skeleton

TOOL = "inference-perf"
LOAD_TYPES = ("constant", "poisson", "concurrent")
DATA_TYPES = ("random", "shared_prefix")
TOP_KEYS = ("load", "data", "api", "server", "metrics", "report", "storage", "tokenizer", "circuit_breakers")
# generate_distribution defaults (inference_perf.config.common.Distribution)
DIST_DEFAULTS = {"min": 10, "max": 1024, "mean": 512, "std_dev": 200, "type": "normal"}


def looks_like_inference_perf(doc: dict) -> bool:
    return isinstance(doc, dict) and "load" in doc and set(doc) <= set(TOP_KEYS) | {"app"}


def import_inference_perf(path: Path) -> Imported:
    doc = read_mapping(Path(path))
    if not isinstance(doc, dict):
        raise ImportError_("an inference-perf config must be a mapping", file=path)
    imp = convert_config(doc, name=Path(path).stem, source=Path(path))
    _server_file(imp, Path(path))
    return imp


def _server_file(imp: Imported, path: Path) -> None:
    """A result folder's ``exp-config.yaml`` (the server's vLLM settings, as ``oracle replay``
    reads it) next to the config or one folder up sets ``[[frameworks]]``."""
    for cand in (path.parent / "exp-config.yaml", path.parent.parent / "exp-config.yaml"):
        if cand.is_file():
            from oracle.replay.server import read_server_file
            values, notes = read_server_file(cand)
            keys = {"tp": "tp", "max_num_seqs": "max_num_seqs", "max_num_batched_tokens": "max_num_batched_tokens",
                    "max_model_len": "max_model_len", "gpu_memory_utilization": "gpu_memory_utilization",
                    "block_size": "block_size", "enable_prefix_caching": "enable_prefix_caching",
                    "enable_chunked_prefill": "enable_chunked_prefill", "num_gpu_blocks": "num_gpu_blocks"}
            for _, raw in imp.benchmarks or [("", imp.raw)]:
                fw = raw["frameworks"][0]
                for k, v in values.items():
                    if k in keys:
                        fw[keys[k]] = v
            imp.note(NOTE, "server", f"the server settings come from {cand.name} next to the results", "frameworks.0")
            for n in notes:
                imp.note(NOTE, cand.name, n)
            return


def import_inference_perf_command(words: list[str], *, source: Path | None = None) -> Imported:
    """``inference-perf --config_file x.yml --load.type ... --load.stages '[...]'``: dotted overrides."""
    w = list(words)
    if w and w[0].endswith("inference-perf"):
        w = w[1:]
    cfg: dict[str, Any] = {}
    for flag, val in iter_flags(w, "true"):
        key = flag[2:]
        if key in ("config_file", "config-file"):
            path = Path(val)
            if not path.is_absolute() and source is not None:
                path = source.parent / path
            base = read_mapping(path)
            cfg = _merge(base if isinstance(base, dict) else {}, cfg)
            continue
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = _value(val)
    return convert_config(cfg, name="inference-perf", source=source)


def _value(v: str) -> Any:
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _enum(v: Any) -> str:
    return str(v.get("value") if isinstance(v, dict) else v).lower() if v is not None else ""


def dist_of(d: Any, where: str, imp: Imported, toml_key: str) -> Any:
    """An inference-perf Distribution (or int) as a scenario distribution."""
    if isinstance(d, (int, float)) and not isinstance(d, bool):
        return int(d)
    if not isinstance(d, dict):
        raise ImportError_(f"must be a number of tokens or a distribution table, got {d!r}", key=where)
    d = {**DIST_DEFAULTS, **d}
    std = math.sqrt(d["variance"]) if d.get("variance") is not None else float(d["std_dev"])
    lo, hi, mean = int(d["min"]), int(d["max"]), float(d["mean"])
    kind = _enum(d["type"]) or "normal"
    if kind == "fixed":
        return int(mean)
    if kind == "normal":
        if std == 0:
            return int(round(min(max(mean, lo), hi)))
        return {"dist": "normal", "mean": mean, "std": std, "min": lo, "max": hi}
    if kind == "uniform":
        imp.note(APPROXIMATED, where, "continuous uniform rounded to integers: simulated as integers uniform on "
                 "[min, max] (the two ends weigh half as much in inference-perf)", toml_key)
        return {"dist": "uniform", "min": lo, "max": hi}
    imp.note(APPROXIMATED, where, f"{kind} lengths: simulated as a lognormal of the same mean and std_dev, clipped "
             "to [min, max]" if kind == "lognormal" else f"{kind} lengths: simulated as a normal of the same mean "
             "and std_dev, clipped to [min, max]", toml_key)
    if kind == "lognormal" and mean > 0:
        sigma = math.sqrt(math.log(1 + (std / mean) ** 2))
        return {"dist": "lognormal", "mean": mean, "sigma": sigma, "min": lo, "max": hi}
    return {"dist": "normal", "mean": mean, "std": max(std, 0.0), "min": lo, "max": hi}


def convert_config(cfg: dict, *, name: str, source: Path | None) -> Imported:
    load = cfg.get("load") or {}
    kind = _enum(load.get("type", "constant"))
    if kind not in LOAD_TYPES:
        raise ImportError_(f"load type {kind!r} is not supported; supported: {', '.join(LOAD_TYPES)}", file=source,
                           key="load.type")
    stages = load.get("stages")
    if load.get("sweep"):
        raise ImportError_("load.sweep (an adaptive saturation probe) is not supported: give the stages as "
                           "load.stages", file=source, key="load.sweep")
    if isinstance(stages, str):
        stages = _value(stages)
    if not isinstance(stages, list) or not stages:
        raise ImportError_("load.stages must be a non-empty list", file=source, key="load.stages")
    benches: list[tuple[str, dict]] = []
    first: Imported | None = None
    for k, st in enumerate(stages):
        if not isinstance(st, dict):
            raise ImportError_("must be a table", file=source, key=f"load.stages.{k}")
        label, raw, imp = _stage(cfg, kind, k, st, name=name, source=source)
        benches.append((label, raw))
        first = first or imp
    first.benchmarks = benches
    if len(benches) > 1:
        first.note(NOTE, "load.stages", f"{len(benches)} stages; this scenario is the first, `oracle simulate "
                   f"{source.name if source else 'FILE'}` runs them all (each from an empty server)")
    return first


def _stage(cfg: dict, kind: str, k: int, st: dict, *, name: str, source) -> tuple[str, dict, Imported]:
    server = cfg.get("server") or {}
    tok = cfg.get("tokenizer") or {}
    model_name = server.get("model_name") or tok.get("pretrained_model_name_or_path")
    if not model_name:
        raise ImportError_("no model: set server.model_name", file=source, key="server.model_name")
    model = catalog_model(model_name, where="server.model_name", file=source)
    load = cfg.get("load") or {}
    seed = int(load.get("base_seed", 0) or 0)
    label = f"stage_{k}"
    raw = skeleton(re.sub(r"[^A-Za-z0-9._-]+", "-", f"{name}-{label}").strip("-"), model, seed=seed,
                   gpu=DEFAULT_GPU)
    imp = Imported(tool=TOOL, source=source, raw=raw)
    client: dict = {"name": "inference-perf"}
    _data(cfg.get("data") or {}, client, imp, source)
    key = "workload.clients.0"
    if kind == "concurrent":
        try:
            n, level = int(st["num_requests"]), int(st["concurrency_level"])
        except (KeyError, TypeError, ValueError):
            raise ImportError_("a concurrent stage needs num_requests and concurrency_level", file=source,
                               key=f"load.stages.{k}") from None
        client["concurrency"] = min(level, n)
        client["num_requests"] = n
        imp.note(APPROXIMATED, "load.type: concurrent", f"{level} users over {n} requests; inference-perf splits "
                 "the level over its workers, each with its own semaphore", f"{key}.concurrency")
    else:
        try:
            rate, duration = float(st["rate"]), float(st["duration"])
        except (KeyError, TypeError, ValueError):
            raise ImportError_("a stage needs rate and duration", file=source, key=f"load.stages.{k}") from None
        client["arrival"] = {"process": "poisson", "rate": rate}
        raw["simulation"] = {"duration_s": duration, "num_requests": int(rate * duration)}
        imp.note(APPROXIMATED, f"load.type: {kind}", f"Poisson arrivals at {rate:g}/s, at most int(rate x duration) "
                 f"= {int(rate * duration)} requests in {duration:g} s; inference-perf "
                 + ("scales its exponential gaps to end exactly at the duration" if kind == "constant" else
                    "draws a Poisson count per second and spreads it over that second"), f"{key}.arrival")
    raw["workload"]["clients"] = [client]
    if load.get("request_timeout"):
        raw["workload"]["timeout_s"] = float(load["request_timeout"])
    for opt in ("lora_traffic_split", "circuit_breakers", "trace"):
        if load.get(opt):
            imp.note(NOT_SIMULATED, f"load.{opt}", "not simulated")
    if k > 0 or len(load.get("stages") or []) > 1:
        imp.note(NOTE, "load.interval", "each stage is simulated from an empty server (the real server keeps its "
                 "prefix cache between stages, and waits load.interval between them)")
    if not (server.get("ignore_eos", False)):
        imp.note(NOTE, "server.ignore_eos", "not set: a real server may stop a request at its end-of-sequence "
                 "token; the simulated requests always produce their full output length")
    imp.note(NOTE, "GPU", f"the config does not name the GPU: {DEFAULT_GPU} assumed (edit [hardware].gpu)",
             "hardware.gpu")
    return label, raw, imp


def _data(data: dict, client: dict, imp: Imported, source) -> None:
    kind = _enum(data.get("type", "mock"))
    key = "workload.clients.0"
    if kind == "random":
        client["prompt_tokens"] = dist_of(data.get("input_distribution") or {}, "data.input_distribution", imp,
                                          f"{key}.prompt_tokens")
        client["output_tokens"] = dist_of(data.get("output_distribution") or {}, "data.output_distribution", imp,
                                          f"{key}.output_tokens")
    elif kind == "shared_prefix":
        sp = data.get("shared_prefix") or {}
        groups = int(sp.get("num_groups", sp.get("num_unique_system_prompts", 10)))
        per = int(sp.get("num_prompts_per_group", sp.get("num_users_per_system_prompt", 10)))
        sys_len = sp.get("system_prompt_len", 100)
        if not isinstance(sys_len, int):
            d = {**DIST_DEFAULTS, **sys_len}
            imp.note(APPROXIMATED, "data.shared_prefix.system_prompt_len", "a distribution: its mean is used")
            sys_len = int(round(float(d["mean"])))
        client["system_prompt_tokens"] = int(sys_len)
        client["num_system_prompts"] = groups
        q = sp.get("question_distribution") or sp.get("question_len", 50)
        o = sp.get("output_distribution") or sp.get("output_len", 50)
        client["prompt_tokens"] = dist_of(q, "data.shared_prefix.question_len", imp, f"{key}.prompt_tokens")
        client["output_tokens"] = dist_of(o, "data.shared_prefix.output_len", imp, f"{key}.output_tokens")
        imp.note(APPROXIMATED, "data.shared_prefix", f"{groups} shared system prompts, one picked uniformly per "
                 f"request; inference-perf re-sends the same {groups * per} prompts in turn, so whole prompts hit "
                 "the cache after the first round (`oracle replay` of a result folder reproduces that)",
                 f"{key}.num_system_prompts")
        if sp.get("enable_multi_turn_chat"):
            imp.note(NOT_SIMULATED, "data.shared_prefix.enable_multi_turn_chat", "each request is simulated alone")
    else:
        raise ImportError_(f"data type {kind!r} is not supported; supported: {', '.join(DATA_TYPES)} (the others "
                           "need a dataset or a tokenizer)", file=source, key="data.type")
