"""``oracle workload generate|stats``: build a scenario's workload, or summarise a workload/trace."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from oracle.commands import typer_factory, user_errors
from oracle.commands._options import JsonOpt, SeedOpt
from oracle.errors import Problems

SCENARIO_SUFFIXES = (".toml", ".yaml", ".yml")


def register(app: typer.Typer) -> None:
    wl_app = typer_factory("Generate workloads from scenarios and inspect workloads and traces.")
    app.add_typer(wl_app, name="workload")

    @wl_app.command("generate")
    def generate(
        scenario: Annotated[Path, typer.Argument(help="Scenario TOML (a file with only \\[workload], "
                                                      "\\[simulation] and seed works too).", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Parquet file to write.", show_default=False)],
        seed: SeedOpt = None,
        num_requests: Annotated[Optional[int], typer.Option(
            "--num-requests", min=1, help="Override simulation.num_requests.")] = None,
        duration_s: Annotated[Optional[float], typer.Option(
            "--duration-s", min=0.0, help="Override simulation.duration_s.")] = None,
    ) -> None:
        """Generate (or import) a scenario's workload and write it as Parquet.

        The file is the project's own workload format: use it as a trace with
        format = "parquet", or inspect it with `oracle workload stats`.

        Examples:
          oracle workload generate scenarios/quickstart.toml -o workload.parquet
          oracle workload generate scenarios/quickstart.toml -o w.parquet --seed 3 --num-requests 100000
        """
        from oracle.workload import build_workload   # lazy: numpy, numba (see oracle.commands)
        with user_errors():
            spec, dur, num, sd = load_scenario_workload(scenario)
            wl = build_workload(spec, duration_s=duration_s if duration_s is not None else dur,
                                num_requests=num_requests if num_requests is not None else num,
                                seed=seed if seed is not None else sd)
            wl.to_parquet(out)
        sessions = int((wl.turn == 0)[wl.session >= 0].sum())
        typer.echo(f"wrote {len(wl):,} requests ({sessions:,} sessions, {wl.num_segments:,} segments) to {out}")

    @wl_app.command("stats")
    def stats(
        path: Annotated[Path, typer.Argument(help="A trace (.jsonl mooncake/token_ids, .csv azure), a workload "
                                                  ".parquet, or a scenario .toml.", show_default=False)],
        block_size: Annotated[int, typer.Option("--block-size", min=1, max=4096,
                                                help="KV block size for the ideal prefix reuse.")] = 16,
        fmt: Annotated[Optional[str], typer.Option(
            "--format", help="Trace format (mooncake, azure, token_ids, parquet); default: inferred.")] = None,
        seed: SeedOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Summarise a workload: counts, rates, length percentiles, sessions, ideal prefix reuse.

        ideal_prefix_reuse is the share of prompt tokens an unlimited prefix cache would
        serve under vLLM's rules (chained full-block hashes of prompt and output, requests in
        id order = arrival order for traces, hit capped at floor((prompt-1)/block_size) blocks).

        Examples:
          oracle workload stats ../shared/data/traces/synthetic_trace.jsonl --block-size 512
          oracle workload stats scenarios/quickstart.toml --json
        """
        from oracle.workload import build_workload   # lazy: numpy, numba (see oracle.commands)
        from oracle.workload.stats import workload_stats
        from oracle.workload.traces import read_trace
        with user_errors():
            if path.suffix.lower() in SCENARIO_SUFFIXES:
                spec, dur, num, sd = load_scenario_workload(path)
                wl = build_workload(spec, duration_s=dur, num_requests=num, seed=seed if seed is not None else sd)
            else:
                wl = read_trace(path, fmt)
            result = workload_stats(wl, block_size=block_size)
        if json_out:
            typer.echo(json.dumps(result, indent=2))
        else:
            typer.echo(format_stats(result))


def load_scenario_workload(path: Path):
    """``(WorkloadSpec, duration_s, num_requests, seed)`` of a scenario file.

    A full scenario (with ``[model]``) goes through ``oracle.scenario``; a file with only
    ``seed``, ``[simulation]`` and ``[workload]`` is validated here.
    """
    from oracle.api import as_scenario   # lazy: numpy, polars (see oracle.commands)
    from oracle.scenario import read_toml, scenario_from_dict
    path = Path(path)
    if path.suffix.lower() == ".toml":
        raw = read_toml(path)
        if "model" not in raw:
            return _workload_only(raw, path)
        sc = scenario_from_dict(raw, base_dir=path.parent, file=path)
    else:
        sc = as_scenario(path)
    return sc.workload, sc.simulation.duration_s, sc.simulation.num_requests, sc.seed


def _workload_only(raw: dict, path: Path):
    from oracle._config import Table, key_position   # lazy: numpy (see oracle.commands)
    from oracle.scenario import check_workload_ends, parse_simulation
    from oracle.workload.spec import parse_workload
    problems = Problems()
    spec = sim = seed = None
    with problems.guard():
        top = Table(raw, problems=problems)
        top.str("name", "")
        top.str("description", "")
        seed = top.int("seed", 0, lo=0, hi=2**63 - 1)
        sim, sim_t = parse_simulation(top)
        wl_t = None
        with problems.guard():
            wl_t = top.table("workload")
            spec = parse_workload(wl_t, base_dir=path.parent)
        check_workload_ends(sim, sim_t, wl_t, spec)
        top.done()
    problems.items.sort(key=lambda exc: key_position(raw, exc.key))
    problems.raise_if_any(file=path)
    return spec, sim.duration_s, sim.num_requests, seed


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == int(v) and abs(v) < 1e15:
            return f"{int(v):,}"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def format_stats(s: dict) -> str:
    """Human-readable lines for ``workload_stats`` output."""
    lines = [f"source               {s['source']}",
             f"requests             {_fmt(s['requests'])}  (follow-ups {_fmt(s['followups'])}, "
             f"sessions {_fmt(s['sessions'])}, segments {_fmt(s['segments'])})",
             f"duration_s           {_fmt(s['duration_s'])}  (rate {_fmt(s['rate_per_s'])} req/s)",
             "                     " + " ".join(f"{k:>9}" for k in ("mean", "p50", "p90", "p99", "max"))]
    for key in ("prompt_tokens", "output_tokens", "turns", "think_s"):
        d = s[key]
        lines.append(f"{key:<20} " + " ".join(f"{_fmt(d[k]):>9}" for k in ("mean", "p50", "p90", "p99", "max")))
    lines.append("clients              " + ", ".join(f"{k}: {_fmt(v)}" for k, v in s["clients"].items()))
    lines.append(f"ideal_prefix_reuse   {s['ideal_prefix_reuse']:.2%} of prompt tokens at block size "
                 f"{s['block_size']} (unlimited cache)")
    return "\n".join(lines)
