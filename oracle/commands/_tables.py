"""Short terminal summaries printed at the end of ``oracle simulate``."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def _fmt(v, unit: str = "", digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}{unit}"


def print_summary(res, dest: Path) -> None:
    # a pipe or a log file gets the whole table instead of rich's 80-column default
    console = Console() if sys.stdout.isatty() else Console(width=160)
    table = Table(title=f"{res.scenario.name}: {res.scenario.model.name} on {res.scenario.gpu.name}")
    table.add_column("framework")
    offload = any("kv_offload" in fr.summary for fr in res.frameworks.values())
    for col in ("GPUs", "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "goodput",
                "token hit", *(("host hit",) if offload else ()), "preempt"):
        table.add_column(col, justify="right")
    for name, fr in res.frameworks.items():
        s = fr.summary
        lat = s["latency"]
        host = s.get("kv_offload")
        host_cell = (_fmt(100 * host["host_token_hit_rate"], " %") if host else "-",) if offload else ()
        table.add_row(
            name, str(s["config"]["num_gpus"]),
            _fmt(s["throughput"]["requests_per_second"], digits=2),
            _fmt(s["throughput"]["output_tokens_per_second"], digits=0),
            _fmt(lat["time_to_first_token_ms"]["p50"], " ms"), _fmt(lat["time_to_first_token_ms"]["p99"], " ms"),
            _fmt(lat["time_per_output_token_ms"]["p50"], " ms"), _fmt(lat["time_per_output_token_ms"]["p99"], " ms"),
            _fmt(100 * s["goodput"]["fraction"], " %"),
            _fmt(100 * s["prefix_caching"]["token_hit_rate"], " %"), *host_cell,
            str(s["preemptions"]))
    console.print(table)
    n = res.first.summary["requests"]
    console.print(f"{n['total']:,} requests ({n['failed']:,} failed) simulated in {res.wall_time_s:.2f} s; "
                  f"results in {dest}")
