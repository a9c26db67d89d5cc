"""`--format vllm-bench` (vllm_bench.json) and `--format prometheus` (metrics.prom): a simulated
run in the files vLLM's benchmark and vLLM's Prometheus endpoint produce.

The Prometheus export is loaded with the real `promtool tsdb create-blocks-from openmetrics`
(Debian package `prometheus`) and queried through a real Prometheus server; those tests skip
only when the binaries are absent.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import oracle
from oracle.cli import build_app
from oracle.metrics import prometheus as prom
from oracle.metrics.token_times import token_times

START = 1_750_000_000.0   # Unix time of simulated t = 0 in the tests

SCENARIO = {
    "name": "fmt", "seed": 3,
    "simulation": {"num_requests": 160},
    "model": {"name": "llama-3.1-8b"}, "hardware": {"gpu": "h100-sxm"},
    "workload": {"clients": [
        {"name": "bench", "concurrency": 12,
         "prompt_tokens": {"dist": "uniform", "min": 200, "max": 1200},
         "output_tokens": {"dist": "uniform", "min": 10, "max": 200},
         "system_prompt_tokens": 512, "num_system_prompts": 2}]},
    "frameworks": [{"name": "vllm", "replicas": 2, "router": "round_robin"}],
    "slo": {"ttft_ms": 200},
}

# vllm/benchmarks/serve.py: the keys of a --save-result --save-detailed file (generation task)
VLLM_BENCH_KEYS = {
    "date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts", "request_rate",
    "burstiness", "max_concurrency", "duration", "completed", "failed", "total_input_tokens",
    "total_output_tokens", "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
    "input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times", "queue_times", "generated_texts",
    "errors", "max_output_tokens_per_s", "max_concurrent_requests", "rtfx",
    *(f"{s}_{m}_ms" for s in ("mean", "median", "std", "p99") for m in ("ttft", "tpot", "itl", "e2el")),
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fmt")
    res = oracle.simulate(SCENARIO, out_dir=out, format="vllm-bench,prometheus", start_time_s=START)
    return res, out / "vllm"


def test_token_times_match_the_engine(run):
    """Rebuilt from the steps: first = first token, last = completion, largest gap = the engine's."""
    res, _ = run
    req, fr = res.requests, res.first
    off, times, approx = token_times(req, fr.steps, max_num_batched_tokens=8192)
    assert approx == 0
    first, comp = req["first_token_s"].to_numpy(), req["completion_s"].to_numpy()
    out_tok, max_itl = req["output_tokens"].to_numpy(), req["max_itl_ms"].to_numpy() / 1e3
    for i in range(req.height):
        t = times[off[i]:off[i + 1]]
        assert t.shape[0] == out_tok[i]
        assert t[0] == first[i] and math.isclose(t[-1], comp[i], rel_tol=1e-12)
        if out_tok[i] > 1:
            assert np.all(np.diff(t) > 0)
            assert math.isclose(np.diff(t).max(), max_itl[i], rel_tol=1e-9), i


def test_token_times_with_preemptions_keep_their_ends():
    raw = json.loads(json.dumps(SCENARIO))
    raw["frameworks"] = [{"name": "vllm", "num_gpu_blocks": 400}]   # tight KV: preemptions
    res = oracle.simulate(raw, record_steps=True)
    req = res.requests
    assert req["preemptions"].sum() > 0
    off, times, approx = token_times(req, res.steps, max_num_batched_tokens=8192)
    assert approx > 0
    comp = req["completion_s"].to_numpy()
    for i in range(req.height):
        t = times[off[i]:off[i + 1]]
        assert t.shape[0] == req["output_tokens"][i] and math.isclose(t[-1], comp[i], rel_tol=1e-12)
        assert np.all(np.diff(t) >= 0)


def test_vllm_bench_json_has_vllms_layout_and_numbers(run):
    res, folder = run
    doc = json.loads((folder / "vllm_bench.json").read_text())
    assert VLLM_BENCH_KEYS <= set(doc), VLLM_BENCH_KEYS - set(doc)
    s = res.summary
    assert doc["num_prompts"] == 160 and doc["completed"] == s["requests"]["successful"] == 160
    assert doc["max_concurrency"] == 12 and doc["request_rate"] == "inf" and doc["failed"] == 0
    assert doc["total_output_tokens"] == sum(doc["output_lens"]) == int(res.requests["output_tokens"].sum())
    assert math.isclose(doc["duration"], res.requests["completion_s"].max())
    assert math.isclose(doc["request_throughput"], 160 / doc["duration"])
    ttft = np.array(doc["ttfts"])
    lat = np.array(doc["latencies"])
    for i, itl in enumerate(doc["itls"]):
        assert len(itl) == doc["output_lens"][i] - 1
        assert math.isclose(ttft[i] + sum(itl), lat[i], rel_tol=1e-9)
    # send order, and the statistics as vLLM computes them
    assert doc["start_times"] == sorted(doc["start_times"])
    assert math.isclose(doc["mean_ttft_ms"], ttft.mean() * 1000)
    assert math.isclose(doc["p99_e2el_ms"], np.percentile(lat, 99) * 1000)
    all_itl = np.concatenate([np.array(x) for x in doc["itls"]])
    assert math.isclose(doc["median_itl_ms"], np.median(all_itl) * 1000)
    assert math.isclose(doc["p99_ttft_ms"], s["latency"]["time_to_first_token_ms"]["p99"], rel_tol=1e-9)
    assert math.isclose(doc["request_goodput"], s["goodput"]["requests_per_second"] * s["simulation"]
                        ["effective_duration_s"] / doc["duration"], rel_tol=1e-9)
    assert doc["oracle"]["simulated"] is True


def test_vllm_bench_json_reads_back_with_the_replay_reader(run):
    """The project's reader of real `vllm bench serve` files takes the simulated one unchanged."""
    from oracle.replay.vllm_bench import load_vllm_bench
    _, folder = run
    with pytest.raises(Exception, match="max_concurrency"):   # replay refuses a client-side cap
        load_vllm_bench(folder / "vllm_bench.json")
    doc = json.loads((folder / "vllm_bench.json").read_text())
    doc["max_concurrency"] = None
    alt = folder.parent / "uncapped.json"
    alt.write_text(json.dumps(doc))
    plan = load_vllm_bench(alt)
    m = plan.stages[0].measured
    assert m.count_ok == 160
    assert math.isclose(m.latency_ms["ttft"]["mean"], doc["mean_ttft_ms"])
    np.testing.assert_array_equal(plan.stages[0].prompt_tokens, doc["input_lens"])


def test_start_time_option_and_bad_format(tmp_path):
    runner = CliRunner()
    r = runner.invoke(build_app(), ["simulate", "scenarios/closed_loop_base.toml", "--out", str(tmp_path / "a"),
                                    "--format", "prometheus", "--start-time", "2025-06-01T00:00:00Z", "-q"])
    assert r.exit_code == 0, r.output
    text = (tmp_path / "a" / "vllm" / "metrics.prom").read_text()
    assert ' 1748736000.000\n' in text and text.endswith("# EOF\n")
    assert (tmp_path / "a" / "vllm" / "steps.parquet").is_file()
    r = runner.invoke(build_app(), ["simulate", "scenarios/closed_loop_base.toml", "--out", str(tmp_path / "b"),
                                    "--format", "csv,grafana"])
    assert r.exit_code == 1 and "--format must be one of parquet, csv, vllm-bench, prometheus" in r.output
    assert not (tmp_path / "b").exists()


# -- Prometheus ------------------------------------------------------------------------------

def parse_openmetrics(text: str) -> dict[tuple[str, frozenset], list[tuple[float, float]]]:
    """{(sample name, labels): [(timestamp, value), ...]} of an OpenMetrics document."""
    series: dict = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+) (\S+)$')
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = line_re.match(line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        series.setdefault((m.group(1), labels), []).append((float(m.group(4)), float(m.group(3))))
    return series


def last(series, name, **labels) -> float:
    """The last value of ``name`` summed over the series whose labels include ``labels``."""
    total = 0.0
    for (n, lab), points in series.items():
        if n == name and set(labels.items()) <= lab:
            total += points[-1][1]
    return total


def test_prometheus_export_names_labels_and_totals(run):
    res, folder = run
    text = (folder / "metrics.prom").read_text()
    assert text.endswith("# EOF\n")
    series = parse_openmetrics(text)
    s, req = res.summary, res.requests
    names = {n for n, _ in series}
    for n in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
              "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total", "vllm:generation_tokens_total",
              "vllm:prompt_tokens_total", "vllm:request_success_total", "vllm:iteration_tokens_total_bucket",
              "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_bucket",
              "vllm:e2e_request_latency_seconds_bucket", "vllm:request_queue_time_seconds_count"):
        assert n in names, n
    for (n, lab) in series:
        keys = {k for k, _ in lab}
        assert {"model_name", "engine"} <= keys, (n, keys)
        assert dict(lab)["model_name"] == "llama-3.1-8b" and dict(lab)["engine"] in {"0", "1"}
    # every series: one sample per second from START, increasing timestamps
    for points in series.values():
        ts = [t for t, _ in points]
        assert ts[0] == START and np.all(np.diff(ts) == 1.0)
    # totals at the end equal the run's
    assert last(series, "vllm:request_success_total", finished_reason="length") == 160
    assert last(series, "vllm:generation_tokens_total") == req["output_tokens"].sum()
    assert last(series, "vllm:prompt_tokens_total") == req["prompt_tokens"].sum()
    assert last(series, "vllm:prefix_cache_queries_total") == s["prefix_caching"]["prefix_cache_queries"]
    assert last(series, "vllm:prefix_cache_hits_total") == s["prefix_caching"]["prefix_cache_hits"] > 0
    assert last(series, "vllm:iteration_tokens_total_count") == s["simulation"]["num_steps"]
    assert last(series, "vllm:iteration_tokens_total_sum") == (
        res.steps["num_decode"].sum() + res.steps["num_prefill_tokens"].sum() + 160)
    assert last(series, "vllm:time_to_first_token_seconds_count") == 160
    assert math.isclose(last(series, "vllm:time_to_first_token_seconds_sum"), req["ttft_ms"].sum() / 1e3)
    assert last(series, "vllm:inter_token_latency_seconds_count") == req["output_tokens"].sum() - 160
    for r in (0, 1):   # per engine: the requests routed there
        assert last(series, "vllm:e2e_request_latency_seconds_count", engine=str(r)) == \
            int((req["replica"] == r).sum())


def test_prometheus_histograms_use_vllms_buckets(run):
    _, folder = run
    series = parse_openmetrics((folder / "metrics.prom").read_text())

    def les(name):
        out = {dict(lab)["le"] for n, lab in series if n == name and dict(lab)["engine"] == "0"}
        return sorted(out, key=lambda x: math.inf if x == "+Inf" else float(x))
    assert les("vllm:time_to_first_token_seconds_bucket")[:4] == ["0.001", "0.005", "0.01", "0.02"]
    assert les("vllm:time_to_first_token_seconds_bucket")[-3:] == ["640.0", "2560.0", "+Inf"]
    assert les("vllm:e2e_request_latency_seconds_bucket")[:2] == ["0.3", "0.5"]
    assert les("vllm:iteration_tokens_total_bucket")[:3] == ["1.0", "8.0", "16.0"]
    # request_tokens: vLLM's 1-2-5 series up to max_model_len (131072 for llama-3.1-8b)
    assert les("vllm:request_prompt_tokens_bucket")[-2:] == ["100000.0", "+Inf"]
    assert prom.float_to_go_string(1e6) == "1e+06" and prom.float_to_go_string(2560) == "2560.0"
    # cumulative: buckets never decrease along le, nor over time
    for (n, lab), points in series.items():
        if n.endswith("_total") or n.endswith("_count"):
            v = [p[1] for p in points]
            assert v == sorted(v), n


needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None,
                                    reason="promtool not installed (Debian package: prometheus)")
needs_prometheus = pytest.mark.skipif(shutil.which("prometheus") is None,
                                      reason="prometheus not installed (Debian package: prometheus)")


def create_blocks(prom_file: Path, db: Path) -> str:
    proc = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(prom_file), str(db)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@needs_promtool
def test_promtool_loads_the_export(run, tmp_path):
    _, folder = run
    out = create_blocks(folder / "metrics.prom", tmp_path / "db")
    assert "BLOCK ULID" in out
    (tmp_path / "db" / "wal").mkdir(exist_ok=True)      # `tsdb dump` reads a (here empty) WAL too
    dump = subprocess.run(["promtool", "tsdb", "dump", "--match", '{__name__="vllm:request_success_total"}',
                           str(tmp_path / "db")], capture_output=True, text=True, timeout=120)
    assert dump.returncode == 0, dump.stderr
    lines = dump.stdout.splitlines()
    assert any('finished_reason="length"' in ln and 'engine="1"' in ln for ln in lines)
    assert lines and all(ln.split()[-1].isdigit() for ln in lines)     # millisecond timestamps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_promtool
@needs_prometheus
def test_a_real_prometheus_answers_queries_on_the_export(run, tmp_path):
    res, folder = run
    create_blocks(folder / "metrics.prom", tmp_path / "db")
    (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = _free_port()
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'db'}", "--storage.tsdb.retention.time=100y",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("prometheus did not become ready: " + proc.stderr.read1().decode(errors="replace"))
        end = START + math.ceil(res.requests["completion_s"].max())

        def query(q: str) -> list:
            url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q, "time": end})
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
            assert body["status"] == "success", body
            return body["data"]["result"]
        ok = query('sum(vllm:request_success_total{finished_reason="length"})')
        assert float(ok[0]["value"][1]) == 160
        per_engine = query('sum by (engine) (vllm:e2e_request_latency_seconds_count)')
        assert {r["metric"]["engine"] for r in per_engine} == {"0", "1"}
        # a Grafana-dashboard style query: the run's p99 TTFT from the histogram
        p99 = query(f'histogram_quantile(0.99, sum by (le) (increase(vllm:time_to_first_token_seconds_bucket'
                    f'[{int(end - START) + 60}s])))')
        assert 0 < float(p99[0]["value"][1]) < 5
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
