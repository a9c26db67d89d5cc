"""Running every benchmark of an imported spec (GuideLLM rate/stream lists, sweeps).

Each benchmark is simulated on its own and written to ``OUT/<benchmark label>/`` (the usual
results folder: ``<framework>/summary.json`` ...); one table then shows latency and throughput
per benchmark, the way benchmark suites report a load sweep (per concurrency level or rate).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from oracle.importers import Imported


def benchmark_list(imp: Imported, simulate_raw: Callable[[str, dict], Any]) -> list[tuple[str, dict]]:
    """The (label, scenario dict) of every benchmark; a GuideLLM sweep's rates come from its
    simulated synchronous and throughput benchmarks (``simulate_raw(label, raw)`` -> result)."""
    if imp.adaptive is None:
        return list(imp.benchmarks) or [("benchmark", imp.raw)]
    from oracle.importers.guidellm import adaptive_benchmarks
    done: dict[str, Any] = {}

    def throughput_of(raw: dict) -> float:
        label = raw["name"]
        done[label] = simulate_raw(label, raw)
        return float(done[label].summary["throughput"]["requests_per_second"])
    return adaptive_benchmarks(imp, throughput_of)


def folder_name(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "-", label).strip("-") or "benchmark"


def run_benchmarks(imp: Imported, *, out_dir: Path, format=None, seed: int | None = None,
                   progress: Callable[[str], None] | None = None) -> list[tuple[str, Any]]:
    """Simulate every benchmark into ``out_dir/<label>/``; returns (label, SimulationResult)."""
    import oracle
    from oracle.scenario import scenario_from_dict
    base = imp.source.parent if imp.source is not None else Path.cwd()
    cache: dict[str, Any] = {}

    def sim(label: str, raw: dict, dest: Path | None = None):
        sc = scenario_from_dict(raw, base_dir=base, file=imp.source)
        if seed is not None:
            import dataclasses
            sc = dataclasses.replace(sc, seed=int(seed))
        if progress:
            progress(f"simulating {label}")
        return oracle.simulate(sc, out_dir=dest, format=format)

    def simulate_raw(label: str, raw: dict):
        res = sim(label, raw)
        cache[raw["name"]] = res
        return res

    results = []
    for label, raw in benchmark_list(imp, simulate_raw):
        dest = Path(out_dir) / folder_name(label)
        res = cache.get(raw["name"])
        if res is not None:
            res.write(dest, format=format)
        else:
            res = sim(label, raw, dest)
        results.append((label, res))
    return results


def benchmarks_table(results: list[tuple[str, Any]]):
    """One row per benchmark (first framework): req/s, tokens/s, TTFT, TPOT, ITL, E2E."""
    from oracle.report.tables import Cell, Table, fmt_value
    t = Table(title="Benchmarks (latencies in ms)",
              columns=["benchmark", "requests", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50",
                       "ITL p50", "E2E p50", "E2E p99"])
    for label, res in results:
        s = res.summary
        lat = s["latency"]
        cells = [Cell(label), Cell(fmt_value(s["requests"]["successful"], "count")),
                 Cell(fmt_value(s["throughput"]["requests_per_second"], "float")),
                 Cell(fmt_value(s["throughput"]["output_tokens_per_second"], "float"))]
        for metric, stat in (("time_to_first_token_ms", "p50"), ("time_to_first_token_ms", "p99"),
                             ("time_per_output_token_ms", "p50"), ("inter_token_latency_ms", "p50"),
                             ("end_to_end_latency_ms", "p50"), ("end_to_end_latency_ms", "p99")):
            v = lat[metric].get(stat)
            cells.append(Cell(fmt_value(v, "float"), v))
        t.add_row(cells)
    return t
