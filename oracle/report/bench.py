"""``oracle report A.json B.json ...``: ``vllm bench serve`` result files side by side.

Each file is a ``vllm bench serve --save-result`` JSON: a real run's, or the one ``oracle
simulate --format vllm-bench`` writes (``vllm_bench.json``). The first file is the baseline;
every other column shows its value and the relative difference. Rows: the load (prompts,
request rate, burstiness, max concurrency), the results (completed, failed, duration,
throughputs, goodput) and for TTFT, TPOT, ITL and E2E latency every statistic the files
have (``mean``, ``median``, ``std``, ``pNN``: vLLM's ``--metric-percentiles``). Values are
read as written, never recomputed; a statistic missing from a file shows as a dash.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from oracle.errors import OracleError
from oracle.report.tables import Cell, Table, change_style, fmt_change, fmt_value, relative_change

METRICS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E"))
SETUP_ROWS = (("model", "model_id", "text"), ("prompts", "num_prompts", "count"),
              ("request rate (req/s)", "request_rate", "rate"), ("burstiness", "burstiness", "rate"),
              ("max concurrency", "max_concurrency", "count"), ("simulated", None, "text"))
RESULT_ROWS = (("completed", "completed", "count", True), ("failed", "failed", "count", False),
               ("duration (s)", "duration", "float", None),
               ("requests/s", "request_throughput", "float", True),
               ("output tokens/s", "output_throughput", "float", True),
               ("total tokens/s", "total_token_throughput", "float", True),
               ("goodput requests/s", "request_goodput", "float", True),
               ("peak output tokens/s", "max_output_tokens_per_s", "float", True))


def is_bench_file(path: Path) -> bool:
    return Path(path).suffix.lower() == ".json" and Path(path).is_file()


def load_bench(path: Path) -> dict[str, Any]:
    """A ``vllm bench serve`` result; an error names the file and the missing key."""
    from oracle.replay.common import read_json
    doc = read_json(Path(path))
    if not isinstance(doc, dict):
        raise OracleError("must be a JSON object (a vllm bench serve result)", file=path)
    for key in ("num_prompts", "completed", "duration"):
        if key not in doc:
            raise OracleError(f"not a vllm bench serve result: missing key {key!r}", file=path)
    return doc


def labels_for(paths: list[Path]) -> list[str]:
    """Short unique column labels: the file names, with parent folders where names repeat."""
    labels = [p.name for p in paths]
    depth = 1
    while len(set(labels)) < len(labels) and depth < 4:
        depth += 1
        labels = ["/".join(p.parts[-depth:]) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [f"{i}: {p}" for i, p in enumerate(paths)]
    return labels


def stat_keys(docs: list[dict]) -> list[str]:
    """mean, median, std, then the percentiles present in any file (numeric order)."""
    pcts: set[str] = set()
    for d in docs:
        for k in d:
            m = re.fullmatch(r"p([0-9.]+)_(ttft|tpot|itl|e2el)_ms", k)
            if m:
                pcts.add(m.group(1))
    return ["mean", "median", "std", *(f"p{p}" for p in sorted(pcts, key=float))]


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if v == "inf":
        return math.inf
    return float(v) if isinstance(v, (int, float)) else None


def _cell(v: Any, kind: str) -> str:
    if kind == "text":
        return "\u2013" if v is None else str(v)
    if kind == "rate":
        n = _num(v)
        return "\u2013" if n is None else ("inf" if math.isinf(n) else fmt_value(n, "float"))
    return fmt_value(_num(v), kind)


def bench_tables(docs: dict[str, dict]) -> list[Table]:
    names = list(docs)
    base = names[0]
    several = len(names) > 1
    cap = "Cells: value (relative difference vs the first file); green = better, red = worse." if several else None
    setup = Table(title="Load", columns=["setting", *names])
    for label, key, kind in SETUP_ROWS:
        if key is None:
            setup.add_row([Cell(label)] + [Cell("yes" if (d.get("oracle") or {}).get("simulated") else "no")
                                           for d in docs.values()])
        else:
            setup.add_row([Cell(label)] + [Cell(_cell(d.get(key), kind), d.get(key)) for d in docs.values()])
    results = Table(title="Results", columns=["metric", *names], caption=cap)
    for label, key, kind, better in RESULT_ROWS:
        results.add_row(_compare_row(label, [d.get(key) for d in docs.values()], kind, better))
    keys = stat_keys(list(docs.values()))
    lat = Table(title="Latency (ms)", columns=["metric", *names], caption=cap)
    for i, (m, label) in enumerate(METRICS):
        for j, k in enumerate(keys):
            key = f"{k}_{m}_ms"
            better = None if k == "std" else False
            lat.add_row(_compare_row(f"{label} {k}", [d.get(key) for d in docs.values()], "float", better),
                        end_section=j == len(keys) - 1 and i < len(METRICS) - 1)
    return [setup, results, lat]


def _compare_row(label: str, values: list, kind: str, better: bool | None) -> list[Cell]:
    b = _num(values[0])
    cells = [Cell(label), Cell(fmt_value(b, kind), b)]
    for v in values[1:]:
        n = _num(v)
        r = relative_change(n, b)
        cells.append(Cell(f"{fmt_value(n, kind)} ({fmt_change(r)})", n, change_style(r, better)))
    return cells


def bench_json(docs: dict[str, dict], paths: list[Path]) -> dict[str, Any]:
    names = list(docs)
    base = names[0]
    keys = stat_keys(list(docs.values()))
    rows = []
    for label, key, _, better in RESULT_ROWS:
        rows.append((label, key, better))
    for m, label in METRICS:
        for k in keys:
            rows.append((f"{label} {k} (ms)", f"{k}_{m}_ms", None if k == "std" else False))
    out_rows = []
    for label, key, better in rows:
        vals = {n: _num(docs[n].get(key)) for n in names}
        out_rows.append({"metric": label, "key": key, "higher_is_better": better, "values": vals,
                         "relative_change": {n: relative_change(vals[n], vals[base]) for n in names[1:]}})
    return {"files": {n: str(p) for n, p in zip(names, paths)}, "baseline": base, "rows": out_rows}


def report_bench(paths: list[Path], *, json_out: bool, console=None) -> dict[str, Any]:
    """Print (or, with ``json_out``, write to stdout as JSON) the side-by-side tables."""
    paths = [Path(p) for p in paths]
    docs = {label: load_bench(p) for label, p in zip(labels_for(paths), paths)}
    doc = bench_json(docs, paths)
    if json_out:
        import sys

        from oracle.metrics.writers import dumps
        sys.stdout.write(dumps(doc))
        sys.stdout.flush()
        return doc
    from rich.console import Console

    from oracle.report.tables import to_rich
    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=max(console.width, 240))
    console.print("[bold]vllm bench serve results[/bold]" + (f" (baseline: {next(iter(docs))})" if len(docs) > 1
                                                              else ""))
    for t in bench_tables(docs):
        console.print()
        console.print(to_rich(t))
    return doc
