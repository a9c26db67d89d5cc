"""``oracle report``: tables, JSON, PNG plots and report.html on real run folders.

The run folders are simulated once per session from small scenarios (two frameworks with
steps.parquet; one framework with three replicas and no steps). The sweep folder is a
synthetic ``sweep.parquet`` in the documented layout. The numbers printed in the terminal
tables are parsed back and compared with summary.json.
"""

from __future__ import annotations

import base64
import html.parser
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from oracle.cli import build_app
from oracle.metrics.compare import lookup
from oracle.report import series
from oracle.report.tables import COMPARISON_ROWS, LATENCY_METRICS, MINUS, OVERVIEW_ROWS, PREFIX_ROWS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDE = {"COLUMNS": "250"}  # rich wraps narrower tables; keep one row per line for parsing


def _scenario(name: str, frameworks: list[dict], *, steps: bool, rate: float = 3.0) -> dict:
    return {
        "name": name, "seed": 5,
        "simulation": {"duration_s": 60, "warm_up_s": 5},
        "model": {"name": "llama-3.1-8b"}, "hardware": {"gpu": "h100-sxm"},
        "workload": {"clients": [{
            "name": "chat", "arrival": {"process": "poisson", "rate": rate},
            "prompt_tokens": {"dist": "lognormal", "mean": 400, "sigma": 0.8, "max": 4096},
            "output_tokens": {"dist": "lognormal", "mean": 150, "sigma": 0.7, "max": 1024},
            "conversation": {"turns": {"dist": "uniform", "min": 1, "max": 4},
                             "think_time_s": {"dist": "constant", "value": 3}},
            "system_prompt_tokens": 800, "num_system_prompts": 4}]},
        "frameworks": frameworks,
        "slo": {"ttft_ms": 200, "tpot_ms": 30},
        "output": {"steps": steps},
    }


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    import oracle
    root = tmp_path_factory.mktemp("report")
    pair = _scenario("apc-pair", [{"name": "apc", "enable_prefix_caching": True},
                                  {"name": "no-cache", "enable_prefix_caching": False, "num_gpu_blocks": 2000}],
                     steps=True)
    oracle.simulate(pair, out_dir=root / "pair")
    single = _scenario("three-replicas", [{"name": "rr", "replicas": 3, "router": "round_robin"}], steps=False,
                       rate=5.0)
    oracle.simulate(single, out_dir=root / "single")
    _synthetic_sweep(root / "sweep")
    return {"pair": root / "pair", "single": root / "single", "sweep": root / "sweep"}


def _synthetic_sweep(path: Path) -> None:
    """sweep.parquet as `oracle sweep` writes it: point/repeat/seed/framework, dotted overrides, metrics."""
    path.mkdir(parents=True)
    rows = []
    for point, (rate, replicas) in enumerate((r, n) for r in (2.0, 4.0, 8.0, 16.0) for n in (1, 2)):
        for fw, k in (("apc", 0.6), ("no-cache", 1.0)):
            for repeat in range(2):
                sat = max(0.0, rate / replicas - 5) * k
                rows.append({"point": point, "repeat": repeat, "seed": 100 + repeat, "framework": fw,
                             "workload.clients.0.arrival.rate": rate, "frameworks.0.replicas": replicas,
                             "ttft_p50_ms": 60 * k + 150 * sat ** 2 + repeat, "ttft_p99_ms": 250 * k + 500 * sat ** 2,
                             "tpot_p50_ms": 12 + rate * k / replicas, "tpot_p99_ms": 20 + 2 * rate * k / replicas,
                             "e2e_p50_ms": 2000 + 100 * sat, "e2e_p99_ms": 6000 + 400 * sat,
                             "goodput_fraction": max(0.0, 1 - 0.08 * sat ** 2) - 0.01 * repeat,
                             "throughput_rps": min(rate, 8 / k), "preemptions": repeat})
    pl.DataFrame(rows).write_parquet(path / "sweep.parquet")


def _invoke(args: list[str], env: dict | None = None):
    result = CliRunner().invoke(build_app(), args, env={**WIDE, **(env or {})})
    return result


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def _frameworks(run: Path) -> list[str]:
    if (run / "comparison.parquet").exists():
        return [str(v) for v in pl.read_parquet(run / "comparison.parquet")["framework"]]
    return sorted(p.name for p in run.iterdir() if (p / "summary.json").exists())


# ---------------------------------------------------------------------------------------------
# Parsing the terminal tables back
def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("│").split("│")]


def _rows(text: str) -> list[list[str]]:
    return [_cells(line) for line in text.splitlines() if line.startswith("│")]


def _parse(text: str) -> tuple[float, float]:
    """(value, tolerance) from a displayed number: half a unit of its last digit."""
    m = re.match(r"^([−-]?[\d,]+(?:\.(\d+))?)", text)
    assert m, f"not a number: {text!r}"
    value = float(m.group(1).replace(",", "").replace(MINUS, "-"))
    decimals = len(m.group(2) or "")
    return value, 0.5 * 10 ** -decimals + 1e-9


def _check(shown: str, expected, kind: str, where: str) -> None:
    if expected is None:
        assert shown == "\u2013", where
        return
    if kind == "onoff":
        assert shown == ("on" if expected else "off"), where
        return
    value, tol = _parse(shown)
    scale = 100.0 if kind == "pct" else 1.0
    assert abs(value - scale * float(expected)) <= tol, f"{where}: shown {shown!r}, summary.json {expected!r}"


def test_terminal_numbers_equal_summary(runs):
    run = runs["pair"]
    names = _frameworks(run)
    summaries = {n: _summary(run / n) for n in names}
    res = _invoke(["report", str(run)])
    assert res.exit_code == 0, res.output
    rows = _rows(res.output)
    by_label = {}
    for r in rows:
        by_label.setdefault(r[0], []).append(r)
    checked = 0
    # metric x framework tables
    for spec in [s for _, specs in OVERVIEW_ROWS for s in specs] + list(PREFIX_ROWS):
        found = [r for r in by_label[spec.label] if len(r) == 1 + len(names) and "(" not in r[-1]]
        assert found, spec.label
        for row in found:  # also in the comparison (with a "(Δ)") and the configuration tables
            for name, shown in zip(names, row[1:]):
                _check(shown, lookup(summaries[name], spec.path), spec.kind, f"{spec.label} / {name}")
                checked += 1
    # latency: framework | metric | mean p50 p90 p95 p99 max
    head_line = next(line for line in res.output.splitlines() if line.startswith("┃") and " metric " in line
                     and " p50 " in line and "framework" in line)
    stats = [c.strip() for c in head_line.strip().strip("┃").split("┃")][2:]
    current = None
    lat_rows = [r for r in rows if len(r) == 2 + len(stats) and r[1] in {m[0] for m in LATENCY_METRICS}]
    assert len(lat_rows) == len(LATENCY_METRICS) * len(names)
    keys = dict((label, key) for label, key, _ in LATENCY_METRICS)
    for r in lat_rows:
        current = r[0] or current
        for stat, shown in zip(stats, r[2:]):
            _check(shown, summaries[current]["latency"][keys[r[1]]][stat], "float", f"{current} {r[1]} {stat}")
            checked += 1
    # comparison vs the first framework: "value (Δ %)"
    base = names[0]
    for spec in COMPARISON_ROWS:
        (row,) = [r for r in by_label[spec.label] if len(r) == 1 + len(names) and "(" in r[-1]]
        _check(row[1], lookup(summaries[base], spec.path), spec.kind, f"comparison {spec.label}")
        for name, shown in zip(names[1:], row[2:]):
            value_text, change_text = re.match(r"^(.*) \((.*)\)$", shown).groups()
            v, b = lookup(summaries[name], spec.path), lookup(summaries[base], spec.path)
            _check(value_text, v, spec.kind, f"comparison {spec.label} / {name}")
            if b in (None, 0) or v is None:
                assert change_text in ("n/a", "\u00b10 %"), shown
            elif change_text != "\u00b10 %":
                rel, tol = _parse(change_text.lstrip("+").replace(" %", ""))
                assert abs(rel - 100 * (v - b) / abs(b)) <= tol, f"{spec.label}: {shown}"
            checked += 1
    assert checked > 100
    assert "Comparison vs apc" in res.output


def test_json_carries_summary_unchanged(runs):
    run = runs["pair"]
    res = _invoke(["report", str(run), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    names = _frameworks(run)
    assert doc["frameworks"] == names and doc["baseline"] == names[0]
    for n in names:
        assert doc["summaries"][n] == _summary(run / n)
    base = doc["summaries"][names[0]]
    for row in doc["comparison"]["rows"]:
        path = tuple(row["path"].split("."))
        for n in names[1:]:
            v, b = lookup(doc["summaries"][n], path), lookup(base, path)
            assert row["values"][n] == v
            undefined = v is None or b is None or (b == 0 and v != 0)
            expected = None if undefined else (0.0 if b == 0 else (v - b) / abs(b))
            assert row["relative_change"][n] == (pytest.approx(expected) if expected is not None else None)
    assert doc["files"] == {"plots": [], "html": None}


def _check_png(path: Path) -> None:
    import matplotlib.image
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 15_000, f"{path} looks empty ({len(data)} bytes)"
    img = matplotlib.image.imread(io.BytesIO(data), format="png")
    h, w = img.shape[:2]
    assert w >= 800 and h >= 300, (path, img.shape)
    assert float(np.std(img[..., :3])) > 0.02, f"{path} is nearly blank"


class _PageChecker(html.parser.HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.tables = 0
        self.text: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        if tag == "table":
            self.tables += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_plots_and_html(runs):
    run = runs["pair"]
    res = _invoke(["report", str(run), "--plots"])
    assert res.exit_code == 0, res.output
    expected = {"latency_cdf.png", "throughput_over_time.png", "queue_over_time.png", "kv_cache_over_time.png",
                "cache_events.png", "prefix_hit_rate_over_time.png",
                *(f"replicas_{fw}.png" for fw in ("apc", "no-cache"))}
    assert {p.name for p in (run / "plots").glob("*.png")} == expected
    for p in (run / "plots").glob("*.png"):
        _check_png(p)
    page = (run / "report.html").read_text(encoding="utf-8")
    checker = _PageChecker()
    checker.feed(page)
    checker.close()
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    assert len(checker.images) == len(expected)
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_SIGNATURE
    assert checker.tables >= 5
    text = " ".join(checker.text)
    s = _summary(run / "apc")
    from oracle.report.tables import fmt_value
    assert fmt_value(s["latency"]["time_to_first_token_ms"]["p50"], "float") in text
    assert fmt_value(s["goodput"]["fraction"], "pct") in text
    assert "report.html" in res.output and f"{len(expected)} plots" in res.output


def test_single_framework_without_steps(runs):
    """One framework, three replicas, no steps.parquet: queue from requests.parquet, no KV plot."""
    from oracle.report import report_run
    run = runs["single"]
    doc = report_run(run, plots=False, json_out=False, html=True, console=_quiet_console())
    assert "comparison" not in doc and doc["frameworks"] == ["rr"]
    assert doc["files"]["plots"] == [] and Path(doc["files"]["html"]).is_file()
    page = Path(doc["files"]["html"]).read_text()
    assert page.count("data:image/png;base64,") == 5  # latency, throughput, queue, prefix hit rate, cache events
    assert 'id="queue_over_time"' in page and "kv_cache_over_time" not in page
    # a framework's own folder works too
    doc2 = report_run(run / "rr", plots=False, json_out=False, console=_quiet_console())
    assert doc2["summaries"]["rr"] == _summary(run / "rr")


def _quiet_console():
    from rich.console import Console
    return Console(file=io.StringIO(), width=200)


def test_sweep_folder(runs):
    run = runs["sweep"]
    res = _invoke(["report", str(run), "--json", "--plots"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    sw = doc["sweep"]
    assert set(sw["swept_variables"]) == {"workload.clients.0.arrival.rate", "frameworks.0.replicas"}
    assert sw["frameworks"] == ["apc", "no-cache"]
    df = pl.read_parquet(run / "sweep.parquet")
    assert len(sw["points"]) == df.select("point", "framework").unique().height
    for p in sw["points"]:
        part = df.filter((pl.col("workload.clients.0.arrival.rate") == p["workload.clients.0.arrival.rate"])
                         & (pl.col("frameworks.0.replicas") == p["frameworks.0.replicas"])
                         & (pl.col("framework") == p["framework"]))
        assert p["n_rows"] == 2
        assert p["ttft_p99_ms"] == pytest.approx(part["ttft_p99_ms"].mean())
        assert p["goodput_fraction"] == pytest.approx(part["goodput_fraction"].mean())
    names = sorted(Path(p).name for p in doc["files"]["plots"])
    assert names == ["sweep_frameworks_0_replicas.png", "sweep_workload_clients_0_arrival_rate.png"]
    for p in doc["files"]["plots"]:
        _check_png(Path(p))
    text = _invoke(["report", str(run)])
    assert text.exit_code == 0, text.output
    assert "Sweep: 16 point x framework rows (mean of 2 seeds each)" in text.output


FLAG_SCENARIO = """
name = "flag"
seed = 1
[simulation]
duration_s = 20
[model]
name = "llama-3.1-8b"
[hardware]
gpu = "h100-sxm"
[[workload.clients]]
name = "chat"
arrival = { process = "poisson", rate = 1.0 }
prompt_tokens = { dist = "lognormal", mean = 300, sigma = 0.5, max = 2048 }
output_tokens = { dist = "lognormal", mean = 100, sigma = 0.5, max = 512 }
[[frameworks]]
name = "solo"
[slo]
ttft_ms = 500
"""


def test_simulate_report_flag(tmp_path):
    path = tmp_path / "flag.toml"
    path.write_text(FLAG_SCENARIO)
    res = _invoke(["simulate", str(path), "--out", str(tmp_path / "out"), "--report", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "report.html").is_file()
    assert len(list((tmp_path / "out" / "plots").glob("*.png"))) == 5   # + the prefix hit rate over time
    assert "Latency (ms)" in res.output


def _broken_summary(root: Path) -> Path:
    (root / "fw").mkdir()
    (root / "fw" / "summary.json").write_text("{not json")
    return root


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "no such results folder"),
    (lambda p: p, "summary.json"),
    (lambda p: _broken_summary(p), "not valid JSON"),
])
def test_bad_run_dir_one_line_exit_1(tmp_path, make, message):
    target = make(tmp_path)
    res = CliRunner().invoke(build_app(), ["report", str(target)])
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.output
    assert str(tmp_path) in lines[0]


# ---------------------------------------------------------------------------------------------
# Binning helpers against brute force
def test_interval_mean_matches_brute_force():
    rng = np.random.default_rng(0)
    s = rng.uniform(0, 50, 300)
    e = s + rng.exponential(5, 300)
    e[::7] = np.nan  # still in the state at the end
    s[::11] = np.nan  # never entered
    edges = series.bin_edges(60, target_bins=30)
    fine = np.linspace(0, edges[-1], 120_001)[:-1] + edges[-1] / 240_000
    ee = np.where(np.isfinite(e), e, edges[-1])
    inside = ((s[None, :] <= fine[:, None]) & (fine[:, None] < ee[None, :])).sum(axis=1)
    brute = np.array([inside[(fine >= a) & (fine < b)].mean() for a, b in zip(edges[:-1], edges[1:])])
    assert np.allclose(series.interval_mean(s, e, edges), brute, atol=0.05)


def test_spread_rate_conserves_tokens_and_step_state():
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 30, 200)
    e = s + rng.exponential(3, 200)
    e[:10] = s[:10]  # single-token requests: all at once
    amounts = rng.integers(1, 300, 200)
    edges = series.bin_edges(float(e.max()) + 1)
    rate = series.spread_rate(s, e, amounts, edges)
    assert math.isclose(float((rate * np.diff(edges)).sum()), float(amounts.sum()), rel_tol=1e-9)
    # two replicas: r0 holds 5 from t=1, then 7 from t=3; r1 holds 1 from t=2
    edges = np.arange(0.0, 6.0)
    got = series.step_state_mean([0, 0, 1], [1.0, 3.0, 2.0], [5, 7, 1], edges)
    assert np.allclose(got, [0, 5, 6, 8, 8])
    assert series.bin_edges(600)[1] == 5.0 and series.bin_edges(0.3)[1] == pytest.approx(0.005)


def test_sweep_one_framework_lines_per_other_variable(runs):
    """One framework over a 2-D grid: one row of panels, one line per value of the other variable."""
    from oracle.report.sweep import short_names, sweep_plots
    df = pl.read_parquet(runs["sweep"] / "sweep.parquet").filter(pl.col("framework") == "apc")
    plots = {p.name: p for p in sweep_plots(df)}
    rate = plots["sweep_workload_clients_0_arrival_rate.png"]
    assert rate.caption.endswith("one line per frameworks.0.replicas.")
    import matplotlib.image
    h, w = matplotlib.image.imread(io.BytesIO(rate.png), format="png").shape[:2]
    assert w > h  # a single row of panels
    assert short_names(["frameworks.0.replicas", "workload.clients.0.arrival.rate", "frameworks.0.tp",
                        "frameworks.1.tp"]) == ["replicas", "rate", "frameworks.0.tp", "frameworks.1.tp"]
