"""GuideLLM benchmark specs -> scenarios (GuideLLM 0.8: ``guidellm/benchmark/profiles/``,
``guidellm/scheduler/strategies.py``, ``guidellm/data/deserializers/synthetic.py``,
``guidellm/utils/random.py``).

Accepted forms:

* a scenario file (JSON/YAML) as GuideLLM ships them: ``{"metadata": ..., "spec": {"profile":
  ..., "data": [...], "constraints": [...]}, "benchmarks": [{"profile.streams": 1}, ...]}`` —
  each entry of ``benchmarks`` overrides dotted keys of ``spec`` and is one benchmark;
* the same keys at the top level (``profile``, ``data``, ``constraints``, ``model``), also the
  older flat form (``profile: sweep``, ``rate``, ``data: "prompt_tokens=256,output_tokens=128"``,
  ``max_seconds``, ``max_requests``);
* a ``guidellm run`` / ``guidellm benchmark`` command line in a shell file or after ``--``:
  ``--profile kind=concurrent,streams=16 --data kind=synthetic_text,prompt_tokens=256,...
  --constraint kind=max_duration,seconds=30`` (``key=value`` lists, or JSON).

A spec may hold several benchmarks (a list of rates or streams, the ``benchmarks`` list, a
sweep); each becomes its own scenario (:attr:`Imported.benchmarks`), run one after the other
by ``oracle simulate`` into ``OUT/<benchmark>/``.

==========================================  =======================================================================
profile ``synchronous``                     a closed-loop client of 1 user
``concurrent``, ``streams=N`` (or a list)   N users, each sending its next request when its previous one ends;
                                            ``rampup_duration``: user k starts at ``k * rampup / N`` (GuideLLM's
                                            ``ConcurrentStrategy``)
``throughput``, ``max_concurrency=C``       C users (GuideLLM's unlimited default: 10240), all started at once
                                            (or spread over ``rampup_duration``)
``constant`` / ``async``, ``rate=R``        open loop, constant gaps 1/R (``AsyncConstantStrategy``)
``poisson``, ``rate=R``                     open loop, Poisson at R (``AsyncPoissonStrategy``)
``sweep`` (``sweep_size`` 10,               synchronous, then throughput (``max_concurrency``, 512), then
``strategy_type`` constant)                 ``sweep_size - 2`` constant/poisson rates from ``linspace(sync rate,
                                            throughput rate, sweep_size - 1)[1:]``: the two rates come from the
                                            *simulated* synchronous and throughput benchmarks, as GuideLLM takes
                                            them from its measured ones
data ``synthetic_text``: ``prompt_tokens``  GuideLLM's ``IntegerRangeSampler``: with ``_stdev``: normal(mean,
(``_stdev``, ``_min``, ``_max``), same for  stdev) clipped to [min, max] (defaults mean -/+ 5 stdev, min >= 1);
``output_tokens``                           without: uniform integers on [min, max]; neither: constant
``prefix_tokens``, ``prefix_count``         ``prefix_count`` shared prefixes, one picked uniformly per request:
                                            system prompts
``delay`` (``_stdev``, ``_min``, ``_max``)  the think time of closed-loop users (``FloatRangeSampler``)
constraint ``max_duration``, ``seconds``    ``[simulation] duration_s`` (a list: one per benchmark)
constraint ``max_requests``, ``count``      the number of requests (a list: one per benchmark)
``random_seed`` (42)                        the scenario seed
==========================================  =======================================================================

Not simulated (named in a warning): ``turns`` > 1 (each turn is simulated as an independent
request, history not carried), ``max_concurrency`` on a rate profile, a rate ramp-up,
``cooldown``, error and saturation constraints, other data kinds. ``warmup`` becomes
``[simulation] warm_up_s`` when it is a duration (a fraction of ``max_duration`` or seconds).
The spec names no GPU and often no model: an H100 SXM and ``llama-3.1-8b`` are assumed and a
note says so.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from oracle.importers import APPROXIMATED, DEFAULT_GPU, NOT_SIMULATED, NOTE, Imported, ImportError_
from oracle.importers.common import catalog_model, iter_flags, read_mapping, skeleton

TOOL = "GuideLLM"
DEFAULT_MODEL = "llama-3.1-8b"
DEFAULT_SEED = 42
UNLIMITED_CONCURRENCY = 10240     # guidellm.settings: max_concurrency
SWEEP_MAX_CONCURRENCY = 512       # SweepProfileArgs.max_concurrency
PROFILES = ("synchronous", "concurrent", "throughput", "constant", "async", "poisson", "sweep")


def looks_like_guidellm(doc: dict) -> bool:
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else doc
    return isinstance(spec, dict) and "data" in spec and ("profile" in spec or "rate_type" in spec)


# -- reading -------------------------------------------------------------------------------------

def parse_kv(text: str) -> Any:
    """GuideLLM's option syntax: JSON/YAML, or ``kind=x,a=1,b.c=2`` (dotted keys nest)."""
    text = text.strip()
    if text.startswith("{") or text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            import yaml
            return yaml.safe_load(text)
    out: dict[str, Any] = {}
    for part in _split_commas(text):
        if not part:
            continue
        k, sep, v = part.partition("=")
        if not sep:
            raise ImportError_(f"expected key=value, got {part!r} in {text!r}")
        node = out
        keys = k.strip().split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = _scalar(v.strip())
    return out


def _split_commas(text: str) -> list[str]:
    """Split at commas outside brackets (``rate=[1,2],kind=constant``)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def _scalar(v: str) -> Any:
    if v.startswith("["):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return [_scalar(x.strip()) for x in v.strip("[]").split(",") if x.strip()]
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    return v


def import_guidellm(path: Path) -> Imported:
    doc = read_mapping(Path(path))
    if not isinstance(doc, dict):
        raise ImportError_("a GuideLLM spec must be a mapping", file=path)
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else doc
    benchmarks = doc.get("benchmarks") if isinstance(doc.get("benchmarks"), list) else None
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
    return convert_spec(spec, benchmarks, name=name or Path(path).stem, source=Path(path))


def import_guidellm_command(words: list[str], *, source: Path | None = None) -> Imported:
    """``guidellm run --profile ... --data ... --constraint ...`` (the leading words optional)."""
    w = list(words)
    while w and w[0] in ("guidellm", "run", "benchmark"):
        w = w[1:]
    spec: dict[str, Any] = {"constraints": []}
    unknown: list[str] = []
    for flag, val in iter_flags(w, ""):
        key = flag[2:].replace("-", "_")
        if key in ("profile", "backend", "data", "constraint", "warmup", "cooldown"):
            parsed = parse_kv(val) if val else {}
            if key == "constraint":
                spec["constraints"].append(parsed)
            elif key == "data":
                spec.setdefault("data", []).append(parsed)
            else:
                spec[key] = parsed
        elif key in ("rate", "max_seconds", "max_requests", "model", "random_seed", "rate_type", "target",
                     "processor", "output_path", "outputs"):
            spec[key] = _scalar(val) if key not in ("model", "target", "processor") else val
        else:
            unknown.append(flag)
    imp = convert_spec(spec, None, name="guidellm", source=source)
    for flag in unknown:
        imp.note(NOT_SIMULATED, flag, "a GuideLLM option this importer does not map; ignored")
    return imp


# -- mapping -------------------------------------------------------------------------------------

def _set_dotted(d: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = d
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {} if not isinstance(node.get(k), str) else {"kind": node[k]}
        node = node[k]
    node[keys[-1]] = value


def convert_spec(spec: dict, benchmarks: list | None, *, name: str, source: Path | None) -> Imported:
    specs = [spec]
    labels_prefix = [""]
    if benchmarks:
        specs, labels_prefix = [], []
        for entry in benchmarks:
            s = copy.deepcopy(spec)
            for k, v in (entry or {}).items():
                _set_dotted(s, k, v)
            specs.append(s)
            labels_prefix.append("")
    loads: list[tuple[str, dict, Imported]] = []
    for s in specs:
        loads += _loads(s, name=name, source=source)
    first_label, first_raw, first_imp = loads[0]
    imp = Imported(tool=TOOL, source=source, raw=first_raw, notes=first_imp.notes,
                   benchmarks=[(label, raw) for label, raw, _ in loads], adaptive=first_imp.adaptive)
    if len(loads) > 1:
        imp.note(NOTE, "benchmarks", f"{len(loads)} benchmarks ({', '.join(lb for lb, _, _ in loads)}); this "
                 f"scenario is the first, `oracle simulate {source.name if source else 'FILE'}` runs them all")
    return imp


def _profile(spec: dict, source) -> dict:
    prof = spec.get("profile", spec.get("rate_type", "sweep"))
    if isinstance(prof, str):
        prof = parse_kv(prof) if "=" in prof else {"kind": prof}
    if not isinstance(prof, dict) or "kind" not in prof:
        raise ImportError_(f"profile must name a kind, got {prof!r}", file=source, key="profile")
    prof = dict(prof)
    if "rate" in spec and spec["rate"] is not None:       # the flat form: --rate belongs to the profile
        rate = spec["rate"]
        key = {"concurrent": "streams", "sweep": "sweep_size", "throughput": "max_concurrency"}.get(prof["kind"], "rate")
        prof.setdefault(key, rate)
    if prof["kind"] not in PROFILES:
        raise ImportError_(f"profile kind {prof['kind']!r} is not supported; supported: {', '.join(PROFILES)}",
                           file=source, key="profile.kind")
    return prof


def _as_list(v) -> list:
    if v is None:
        return [None]
    if isinstance(v, str) and "," in v:
        return [_scalar(x.strip()) for x in v.split(",")]
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _constraints(spec: dict, source) -> tuple[list, list, list[str]]:
    """(durations, counts, other kinds) — lists per benchmark (one value: all benchmarks)."""
    durations, counts, other = [None], [None], []
    cons = spec.get("constraints") or []
    if isinstance(cons, dict):
        cons = [cons]
    for c in cons:
        if isinstance(c, str):
            c = parse_kv(c)
        kind = c.get("kind")
        if kind == "max_duration":
            durations = _as_list(c.get("seconds"))
        elif kind == "max_requests":
            counts = _as_list(c.get("count"))
        else:
            other.append(str(kind))
    if spec.get("max_seconds") is not None:
        durations = _as_list(spec["max_seconds"])
    if spec.get("max_requests") is not None:
        counts = _as_list(spec["max_requests"])
    return durations, counts, other


def _dist(cfg: dict, key: str, *, integer: bool) -> Any:
    """GuideLLM's Integer/FloatRangeSampler as a scenario distribution."""
    mean = cfg.get(key)
    if mean is None:
        return None
    sd, lo, hi = cfg.get(f"{key}_stdev"), cfg.get(f"{key}_min"), cfg.get(f"{key}_max")
    floor = 1 if integer else 0.0
    if lo is None:
        lo = max(floor, mean - 5 * sd) if sd else mean
    if hi is None:
        hi = mean + 5 * sd if sd else mean
    if lo == hi:
        return int(lo) if integer else float(lo)
    if not sd:
        return {"dist": "uniform", "min": lo, "max": hi}
    return {"dist": "normal", "mean": float(mean), "std": float(sd), "min": lo, "max": hi}


def _data(spec: dict, client: dict, imp: Imported, source) -> None:
    data = spec.get("data")
    if isinstance(data, list):
        if len(data) > 1:
            imp.note(NOT_SIMULATED, "data", f"{len(data)} data sources: only the first is simulated")
        data = data[0] if data else None
    if isinstance(data, str):
        data = parse_kv(data)
    if not isinstance(data, dict):
        raise ImportError_("data must be synthetic_text settings (prompt_tokens, output_tokens)", file=source,
                           key="data")
    kind = data.get("kind", data.get("type", "synthetic_text"))
    if kind != "synthetic_text":
        raise ImportError_(f"data kind {kind!r} is not supported (synthetic_text only: no dataset or tokenizer "
                           "here)", file=source, key="data.kind")
    if data.get("prompt_tokens") is None:
        raise ImportError_("synthetic_text needs prompt_tokens", file=source, key="data.prompt_tokens")
    client["prompt_tokens"] = _dist(data, "prompt_tokens", integer=True)
    out = _dist(data, "output_tokens", integer=True)
    if out is None:
        imp.note(APPROXIMATED, "data.output_tokens", "not set (the server decides): 128 assumed")
        out = 128
    client["output_tokens"] = out
    buckets = data.get("prefix_buckets")
    if buckets:
        b = buckets[0]
        if len(buckets) > 1:
            imp.note(APPROXIMATED, "data.prefix_buckets", "several buckets: the first is simulated")
        prefix_tokens, prefix_count = int(b.get("prefix_tokens", 0)), int(b.get("prefix_count", 1))
    else:
        prefix_tokens, prefix_count = int(data.get("prefix_tokens") or 0), int(data.get("prefix_count") or 1)
    if prefix_tokens > 0:
        client["system_prompt_tokens"] = prefix_tokens
        client["num_system_prompts"] = prefix_count
    turns = int(data.get("turns") or 1)
    if turns > 1:
        imp.note(APPROXIMATED, "data.turns", f"{turns} turns per conversation: each turn is simulated as an "
                 "independent request (the history of earlier turns is not carried)")
    delay = _dist(data, "delay", integer=False)
    if delay is not None:
        client["__think"] = delay
    for k in ("first_prompt_tokens", "first_output_tokens", "branches", "tool_call_turns", "server_tool_call_turns"):
        if data.get(k):
            imp.note(NOT_SIMULATED, f"data.{k}", "not simulated")


def _transient(value, duration: float | None) -> float | None:
    """warmup as seconds: a fraction (< 1) of the duration, or seconds."""
    if value in (None, 0, 0.0, {}):
        return None
    if isinstance(value, dict):
        value = value.get("value", value.get("percent"))
    if not isinstance(value, (int, float)):
        return None
    if value < 1:
        return None if duration is None else float(value) * float(duration)
    return float(value)


def _loads(spec: dict, *, name: str, source) -> list[tuple[str, dict, Imported]]:
    """Every benchmark of one spec: (label, scenario dict, notes holder)."""
    prof = _profile(spec, source)
    durations, counts, other = _constraints(spec, source)
    kind = prof["kind"]
    if kind == "sweep":
        base = _scenario(spec, prof, {"kind": "synchronous"}, durations[0], counts[0], name, source, other)
        base[2].adaptive = {"sweep_size": int(prof.get("sweep_size", 10)),
                            "strategy_type": prof.get("strategy_type", "constant"),
                            "max_concurrency": prof.get("max_concurrency", SWEEP_MAX_CONCURRENCY),
                            "duration": durations[0], "count": counts[0]}
        return [base]
    values = {"concurrent": _as_list(prof.get("streams")), "constant": _as_list(prof.get("rate")),
              "async": _as_list(prof.get("rate")), "poisson": _as_list(prof.get("rate"))}.get(kind, [None])
    n = max(len(values), len(durations), len(counts))
    out = []
    for i in range(n):
        v = values[min(i, len(values) - 1)]
        load = dict(prof)
        if kind == "concurrent":
            load["streams"] = v
        elif kind in ("constant", "async", "poisson"):
            load["rate"] = v
        out.append(_scenario(spec, prof, load, durations[min(i, len(durations) - 1)],
                             counts[min(i, len(counts) - 1)], name, source, other))
    return out


def label_of(load: dict) -> str:
    kind = load["kind"]
    if kind == "concurrent":
        return f"concurrent@{load['streams']}"
    if kind in ("constant", "async", "poisson"):
        return f"{'constant' if kind == 'async' else kind}@{float(load['rate']):.2f}"
    if kind == "throughput":
        return f"throughput@{load.get('max_concurrency') or 'unlimited'}"
    return kind


def _scenario(spec: dict, prof: dict, load: dict, duration, count, name: str, source,
              other: list[str]) -> tuple[str, dict, Imported]:
    backend = spec.get("backend") if isinstance(spec.get("backend"), dict) else {}
    model_name = spec.get("model") or backend.get("model")
    model = catalog_model(model_name, where="model", file=source) if model_name else DEFAULT_MODEL
    seed = spec.get("random_seed", DEFAULT_SEED)
    if isinstance(spec.get("seed"), dict):
        seed = spec["seed"].get("random_seed", seed)
    label = label_of(load)
    raw = skeleton(re.sub(r"[^A-Za-z0-9._@-]+", "-", f"{name}-{label}").strip("-"), model, seed=int(seed),
                   gpu=DEFAULT_GPU)
    imp = Imported(tool=TOOL, source=source, raw=raw)
    client: dict = {"name": "guidellm"}
    _data(spec, client, imp, source)
    think = client.pop("__think", None)
    kind = load["kind"]
    key = "workload.clients.0"
    rampup = float(load.get("rampup_duration") or 0.0)
    if kind in ("synchronous", "concurrent", "throughput"):
        if kind == "synchronous":
            users = 1
        elif kind == "concurrent":
            if load.get("streams") is None:
                raise ImportError_("the concurrent profile needs streams", file=source, key="profile.streams")
            users = int(load["streams"])
        else:
            users = int(load.get("max_concurrency") or UNLIMITED_CONCURRENCY)
            if count is not None:
                users = min(users, int(count))
        client["concurrency"] = users
        if rampup > 0 and kind != "synchronous":
            client["ramp_up_s"] = rampup
        if think is not None:
            client["think_time_s"] = think
        if count is not None:
            client["num_requests"] = int(count)
    else:
        rate = load.get("rate")
        if rate is None:
            raise ImportError_(f"the {kind} profile needs a rate", file=source, key="profile.rate")
        client["arrival"] = {"process": "poisson" if kind == "poisson" else "constant", "rate": float(rate)}
        if load.get("max_concurrency"):
            imp.note(NOT_SIMULATED, "profile.max_concurrency", "a cap on requests in flight with a rate profile "
                     "(a client-side queue) has no equivalent yet: requests are sent at the rate", f"{key}.arrival")
        if rampup > 0:
            imp.note(NOT_SIMULATED, "profile.rampup_duration", "the rate ramp-up is not simulated: the full rate "
                     "from the start", f"{key}.arrival")
        if think is not None:
            imp.note(NOT_SIMULATED, "data.delay", "think time applies to closed-loop (concurrent) profiles only")
        if count is not None:
            raw["simulation"]["num_requests"] = int(count)
    if duration is not None:
        raw["simulation"]["duration_s"] = float(duration)
    if duration is None and count is None:
        raise ImportError_("no stop condition: give a max_duration or max_requests constraint (GuideLLM would run "
                           "until the data ends)", file=source, key="constraints")
    raw["workload"]["clients"] = [client]
    warm = _transient(prof.get("warmup"), duration)
    if warm:
        raw["simulation"]["warm_up_s"] = warm
    elif prof.get("warmup"):
        imp.note(NOT_SIMULATED, "profile.warmup", "a warm-up by request count is not simulated")
    if prof.get("cooldown"):
        imp.note(NOT_SIMULATED, "profile.cooldown", "requests of the cool-down are counted")
    for k in other:
        imp.note(NOT_SIMULATED, f"constraint {k}", "no equivalent: the benchmark runs to its duration or count")
    if not model_name:
        imp.note(NOTE, "model", f"the spec does not name a model: {DEFAULT_MODEL} assumed (edit [model].name)",
                 "model.name")
    imp.note(NOTE, "GPU", f"the spec does not name the GPU: {DEFAULT_GPU} assumed (edit [hardware].gpu)",
             "hardware.gpu")
    if kind == "constant" or kind == "async":
        imp.note(NOTE, "profile", "constant gaps of 1/rate, as GuideLLM's AsyncConstantStrategy")
    return label, raw, imp


def sweep_rates(sync_rate: float, throughput_rate: float, sweep_size: int) -> list[float]:
    """GuideLLM SweepProfile: ``linspace(sync, throughput, sweep_size - 1)[1:]``."""
    import numpy as np
    return [float(r) for r in np.linspace(sync_rate, throughput_rate, sweep_size - 1)[1:]]


def adaptive_benchmarks(imp: Imported, throughput_of) -> list[tuple[str, dict]]:
    """A sweep's benchmarks: synchronous, throughput, then the rates between their simulated
    request throughputs (``throughput_of(raw)`` simulates a scenario dict and returns req/s)."""
    ad = imp.adaptive
    sync = copy.deepcopy(imp.raw)
    thr = copy.deepcopy(imp.raw)
    c = thr["workload"]["clients"][0]
    users = int(ad["max_concurrency"] or UNLIMITED_CONCURRENCY)
    if ad["count"] is not None:
        users = min(users, int(ad["count"]))
    c["concurrency"] = users
    thr["name"] = thr["name"].replace("synchronous", f"throughput@{ad['max_concurrency'] or 'unlimited'}")
    out = [("synchronous", sync), (f"throughput@{ad['max_concurrency'] or 'unlimited'}", thr)]
    r_sync, r_thr = throughput_of(sync), throughput_of(thr)
    for rate in sweep_rates(r_sync, r_thr, ad["sweep_size"]):
        if not rate > 0:
            continue
        raw = copy.deepcopy(imp.raw)
        c = raw["workload"]["clients"][0]
        for k in ("concurrency", "num_requests", "think_time_s", "ramp_up_s"):
            c.pop(k, None)
        c["arrival"] = {"process": "poisson" if ad["strategy_type"] == "poisson" else "constant", "rate": rate}
        if ad["count"] is not None:
            raw["simulation"]["num_requests"] = int(ad["count"])
        label = f"{ad['strategy_type']}@{rate:.2f}"
        raw["name"] = raw["name"].replace("synchronous", label)
        out.append((label, raw))
    return out
