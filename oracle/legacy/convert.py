"""An original-LLMPerfOracle config (YAML or JSON) -> this project's scenario (a TOML dict).

The top-level sections of the original and where they go:

=================================  ==========================================================
``simulation``                     ``seed``, ``[simulation].duration_s`` (with ``workload``)
``model_characteristics_db_path``  the model profiles: ``[model.architecture]`` (oracle.legacy.models)
``hardware_profile``               ``[hardware]`` (see :mod:`oracle.legacy.frameworks`)
``workload``                       ``[workload]`` (see :mod:`oracle.legacy.workload`)
``frameworks_to_test``             ``[[frameworks]]`` and ``[model]``
``metrics_config``                 ``[simulation].warm_up_s`` and ``[output]`` (``style = "original"``)
=================================  ==========================================================

Everything approximated or dropped becomes a :class:`~oracle.legacy.common.Note`, written as a
comment next to the TOML key it concerns.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from oracle.errors import OracleError, Problems, ScenarioError, read_text_file
from oracle.legacy import toml_writer
from oracle.legacy.common import (APPROXIMATED, DROPPED, NOTE, Context, Note, fmt, integer, join, mapping,
                                  number, string)
from oracle.legacy.frameworks import convert_frameworks, convert_hardware
from oracle.legacy.workload import convert_workload
from oracle.scenario import FRAMEWORK_DEFAULTS

LEGACY_SUFFIXES = (".yaml", ".yml", ".json")
TOP_KEYS = ("simulation", "model_characteristics_db_path", "hardware_profile", "workload", "frameworks_to_test",
            "metrics_config")
SIMULATION_KEYS = ("max_simulation_time", "random_seed", "lod")
METRICS_KEYS = ("percentiles_to_calculate", "warm_up_duration_s", "output_summary_json_path",
                "output_requests_csv_path")


@dataclass
class Conversion:
    """The result of converting one original config.

    raw: the scenario as a dict with the TOML structure (``scenario_from_dict`` takes it).
    notes: what was approximated, dropped or is worth knowing.
    origins: TOML key path -> the original key path it came from (for error messages).
    """

    source: Path
    raw: dict
    notes: list[Note]
    origins: dict[str, str]

    def counts(self) -> dict[str, int]:
        out = {APPROXIMATED: 0, DROPPED: 0, NOTE: 0}
        for n in self.notes:
            out[n.kind] += 1
        return out

    def to_toml(self) -> str:
        """The scenario as TOML text, with the notes as comments."""
        comments: dict[str, list[str]] = {}
        header_notes = []
        for n in self.notes:
            key = _existing_key(self.raw, n.toml_key)
            if key is None:
                header_notes.append(n.line())
            else:
                comments.setdefault(key, []).append(n.line())
        c = self.counts()
        header = [f"Converted from {self.source.name} (an original-LLMPerfOracle config) by `oracle convert`.",
                  f"{c[APPROXIMATED]} setting(s) approximated, {c[DROPPED]} dropped: see the comments marked "
                  "'approximated' and 'dropped' (and docs/coming-from-original.md).",
                  "Settings the original file leaves out take this project's defaults (vLLM's where vLLM has one).",
                  ""]
        if header_notes:
            header += header_notes + [""]
        return toml_writer.dumps(self.raw, comments=comments, header=header)

    def original_key(self, toml_key: str | None) -> str | None:
        """The original key path for a TOML key path (longest recorded prefix), or None."""
        if not toml_key:
            return None
        parts = toml_key.split(".")
        for n in range(len(parts), 0, -1):
            k = ".".join(parts[:n])
            if k in self.origins:
                return self.origins[k]
        return None


def _existing_key(raw: dict, key: str | None) -> str | None:
    """``key`` if that path exists in ``raw``, else its longest existing prefix (None: the root)."""
    if not key:
        return None
    node, found = raw, []
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            break
        found.append(part)
    if isinstance(node, list) and node and all(isinstance(x, dict) for x in node):
        found.append("0")   # an array of tables: the comment goes above its first entry
    return ".".join(found) or None


def read_legacy(path: str | Path) -> dict:
    """Parse a YAML or JSON original config; syntax errors name the file and line."""
    path = Path(path)
    text = read_text_file(path, error=ScenarioError, expected="a YAML or JSON file")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"JSON syntax error: {exc.msg} (column {exc.colno})", file=path,
                                line=exc.lineno) from None
    else:
        import yaml   # lazy: pyyaml (~0.02 s) only for YAML configs; `oracle validate` imports this module
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            context = getattr(exc, "context", None)
            reason = f"YAML syntax error: {problem}" + (f" ({context})" if context else "")
            if mark is not None:
                reason += f" (column {mark.column + 1})"
            raise ScenarioError(reason, file=path, line=mark.line + 1 if mark is not None else None) from None
    if not isinstance(data, dict):
        raise ScenarioError("must be a mapping of sections (simulation, workload, frameworks_to_test, ...), got "
                            + ("an empty file" if data is None else type(data).__name__), file=path)
    return data


def convert_legacy(data: dict, *, source: str | Path = "legacy.yaml") -> Conversion:
    """Convert a parsed original config; errors name ``source`` and the original key path."""
    source = Path(source)
    try:
        return _convert(data, source)
    except OracleError as exc:
        raise exc.with_context(file=source) from None


def convert_file(path: str | Path) -> Conversion:
    """Read and convert an original config file."""
    return convert_legacy(read_legacy(path), source=path)


def _convert(data: dict, source: Path) -> Conversion:
    """Convert section by section; every problem found is raised at the end, together."""
    ctx = Context()
    problems = Problems()
    guard = problems.guard
    ctx.unknown_keys(data, TOP_KEYS, "", None)
    if "frameworks_to_test" not in data:
        problems.add(ScenarioError("is required: the frameworks to simulate", key="frameworks_to_test"))
    if "workload" not in data:
        problems.add(ScenarioError("is required: the client profiles that generate requests", key="workload"))
    sim_raw: dict = {}
    with guard():
        sim_raw = mapping(data.get("simulation", {}), "simulation")
        ctx.unknown_keys(sim_raw, SIMULATION_KEYS, "simulation", "simulation")
    name = re.sub(r"\s+", "_", source.stem) or "legacy"
    raw: dict = {"name": name, "seed": 0, "description": f"converted from {source.name} (original LLMPerfOracle)"}
    with guard():
        seed = integer(sim_raw, "random_seed", "simulation", lo=0)
        if seed is None:
            ctx.note(NOTE, "no simulation.random_seed: seed 0", toml_key="seed")
        else:
            raw["seed"] = seed
            ctx.origin("seed", "simulation.random_seed")
    if "lod" in sim_raw:
        ctx.note(DROPPED, f"lod = {sim_raw['lod']!r} has no meaning here: every engine step is simulated",
                 toml_key="simulation", origin="simulation.lod")

    workload = sim = reported = max_time = None
    if "workload" in data:
        with guard():
            workload, sim = convert_workload(data["workload"], ctx)
    with guard():
        max_time = number(sim_raw, "max_simulation_time", "simulation", lo=0.0, lo_open=True)
        if sim is not None:
            reported = max_time if max_time is not None else sim.get("duration_s")
            _durations(sim, max_time, ctx)
    metrics: dict = {}
    with guard():
        metrics = mapping(data.get("metrics_config", {}), "metrics_config")
        ctx.unknown_keys(metrics, METRICS_KEYS, "metrics_config", "output")
    with guard():
        warm = number(metrics, "warm_up_duration_s", "metrics_config", lo=0.0)
        if warm is not None and sim is not None:
            sim["warm_up_s"] = warm
            ctx.origin("simulation.warm_up_s", "metrics_config.warm_up_duration_s")
    raw["simulation"] = sim

    fws = None
    models: list = []
    if "frameworks_to_test" in data:
        with guard():
            fws = convert_frameworks(data["frameworks_to_test"], ctx, workload=data.get("workload"))
    if fws is not None:
        with guard():
            models = _models(data, fws, source, ctx)
            raw["model"] = models[0][0]
            for i, (table, _spec) in enumerate(models[1:], start=1):
                if table != models[0][0]:   # dtype: [model]'s (FP16) for every framework
                    fws[i]["toml"]["model"] = table["name"] if "name" in table else \
                        {k: v for k, v in table.items() if k != "dtype"}
                    ctx.origin(f"frameworks.{i}.model", fws[i]["model_key"])
            ctx.origin("model", fws[0]["model_key"])
    if "hardware_profile" not in data:
        problems.add(ScenarioError("is required: the compute devices", key="hardware_profile"))
    elif fws is not None:
        num_gpus = sum(math.prod(f["toml"].get(k, getattr(FRAMEWORK_DEFAULTS, k)) for k in ("tp", "pp", "replicas"))
                       for f in fws)
        with guard():
            raw["hardware"] = convert_hardware(data["hardware_profile"], ctx,
                                               gpu_ids=[g for f in fws for g in f["gpu_ids"]], num_gpus=num_gpus,
                                               gpu_sets=[s for f in fws for s in f["gpu_sets"]])
            ctx.origin("hardware", "hardware_profile.compute_devices")
    raw["workload"] = workload
    if fws is not None and len(models) == len(fws):
        for f, (_table, spec) in zip(fws, models):
            _chunked_prefill(f["toml"], spec, ctx, fws.index(f))
        raw["frameworks"] = [f["toml"] for f in fws]
    ctx.note(NOTE, "the original leaks KV blocks (it does not free all of a finished request's blocks) and so "
                   "stalls after a few hundred requests, leaving the rest pending; that bug is not copied: blocks "
                   "are freed and reused as vLLM does, so long runs finish requests the original left pending")
    ctx.note(NOTE, "the original sizes a GPU's KV pool as gpu_memory_utilization x memory / block bytes, without "
                   "subtracting the weights or activations (24,719 blocks for its Llama3-70B profile on a 576 GB "
                   "GH200, where the weights alone take 141 GB); that over-statement is not copied: the pool is "
                   "what vLLM leaves after the weights and its activation reserve (17,908 blocks there)")
    with guard():
        output = _output(metrics, ctx)
        output["style"] = "original"
        ctx.note(NOTE, "style = \"original\": requests.csv and summary.json read as the original's (req_<n> ids, "
                       "SUCCESS / OOM_KV_BLOCK status, TTFT from the start of prefill in the CSV, count / std / min, "
                       "gpu_utilization, ...; see oracle/metrics/original.py)", toml_key="output.style")
        if reported is not None:
            output["reported_duration_s"] = reported
            ctx.origin("output.reported_duration_s", "simulation.max_simulation_time" if max_time is not None
                       else "workload.total_duration")
        raw["output"] = output
    problems.raise_if_any()
    return Conversion(source=source, raw=raw, notes=ctx.notes, origins=ctx.origins)


def _durations(sim: dict, max_time: float | None, ctx: Context) -> None:
    total = sim.get("duration_s")
    if max_time is None:
        if total is None and "num_requests" not in sim:
            raise ScenarioError("is required (or workload.total_duration / total_requests_to_generate) so the "
                                "workload ends", key="simulation.max_simulation_time")
        return
    if total is None or max_time < total:
        sim["duration_s"] = max_time
        ctx.origin("simulation.duration_s", "simulation.max_simulation_time")
    ctx.note(NOTE, f"max_simulation_time = {fmt(max_time)} s: arrivals stop at duration_s; requests still running "
                   "then are simulated to completion here (the original stopped the clock and left them "
                   "unfinished)", toml_key="simulation.duration_s", origin="simulation.max_simulation_time")


def _models(data: dict, fws: list[dict], source: Path, ctx: Context) -> list[tuple[dict, object]]:
    """Per framework entry: (its TOML model table, the ModelSpec), from the profile file or the catalog."""
    from oracle.catalog import get_model
    from oracle.legacy import models as M
    db = db_path = None
    key = "model_characteristics_db_path"
    if key in data:
        raw_path = string(data, key, "")
        db_path = M.find_db(raw_path, source) if raw_path else None
        if db_path is None:
            ctx.note(NOTE, f"{key} {raw_path!r} not found (looked beside the config, in the folders above it and in "
                           "the working directory): model_profile_id is read as a catalog model",
                     toml_key="model", origin=key)
        else:
            db = M.read_db(db_path, key)
            ctx.origin("model.architecture", key)
    out = []
    problems = Problems()
    for i, f in enumerate(fws):
        with problems.guard():
            tk = "model" if i == 0 else f"frameworks.{i}.model"
            found = M.lookup(db, f["model"]) if db is not None else None
            if found is not None:
                table = M.profile_model(f["model"], found[0], found[1], db_path, ctx, tk, f["model_key"])
                from oracle._config import Table
                from oracle.catalog import model_from_table
                spec = model_from_table(Table(dict(table["architecture"]), f"{tk}.architecture"))
            else:
                if db is not None:
                    ctx.note(NOTE, f"model_profile_id {f['model']!r} is not in {db_path.name}: read as a catalog "
                                   "model", toml_key=tk, origin=f["model_key"])
                spec = get_model(f["model"], key=f["model_key"])
                table = {"name": spec.name, "dtype": "fp16"}
                ctx.note(NOTE, f"model_profile_id {f['model']!r} = catalog model {spec.name!r}; FP16 weights and KV "
                               "cache, as the original's profiles assume", toml_key=tk, origin=f["model_key"])
            out.append((table, spec))
    problems.raise_if_any()
    return out


def _chunked_prefill(fw: dict, model, ctx: Context, i: int = 0) -> None:
    """vLLM without chunked prefill needs a token budget >= max_model_len; keep the file valid."""
    if fw.get("enable_chunked_prefill", FRAMEWORK_DEFAULTS.enable_chunked_prefill):
        return
    budget = fw.get("max_num_batched_tokens", FRAMEWORK_DEFAULTS.max_num_batched_tokens)
    max_len = fw.get("max_model_len", int(model.max_context))
    if budget < max_len:
        fw["max_model_len"] = budget
        ctx.note(APPROXIMATED, f"enable_chunked_prefill = false with max_num_batched_tokens = {budget}: vLLM needs "
                               f"max_model_len <= the budget, so max_model_len = {budget} (longer prompts are "
                               "rejected)", toml_key=f"frameworks.{i}.max_model_len")


def _output(metrics: dict, ctx: Context) -> dict:
    out: dict = {}
    p = "metrics_config"
    if "percentiles_to_calculate" in metrics:
        pk = join(p, "percentiles_to_calculate")
        v = metrics["percentiles_to_calculate"]
        if not isinstance(v, list) or not v or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       and math.isfinite(x) for x in v):
            raise ScenarioError(f"must be a non-empty list of numbers, got {v!r}", key=pk)
        fractions = all(0 < x <= 1 for x in v)
        pcts = [round(x * 100, 9) if fractions else float(x) for x in v]
        for x, orig in zip(pcts, v):
            if not 0 < x <= 100:
                raise ScenarioError(f"percentiles must be fractions in (0, 1] or percents in (0, 100], got {orig!r}",
                                    key=pk)
        out["percentiles"] = [int(x) if float(x).is_integer() else x for x in pcts]
        ctx.origin("output.percentiles", pk)
        ctx.note(NOTE, ("fractions " if fractions else "") + f"{v} -> percentiles {out['percentiles']} (summary "
                       "keys p50, p99, ...; p50/p90/p95/p99 are always there)", toml_key="output.percentiles",
                 origin=pk)
    for src, dst in (("output_summary_json_path", "summary_json"), ("output_requests_csv_path", "requests_csv")):
        s = string(metrics, src, p)
        if s is not None:
            out[dst] = s
            ctx.origin(f"output.{dst}", join(p, src))
    if "summary_json" in out or "requests_csv" in out:
        ctx.note(NOTE, "summary.json / requests.csv of the (first) framework are also written at the paths the "
                       "original config names (relative to the working directory); the full results go to "
                       "runs/<name>/<framework>/ (or --out)", toml_key="output")
    if "requests_csv" in out:
        out["format"] = "csv"
    return out
