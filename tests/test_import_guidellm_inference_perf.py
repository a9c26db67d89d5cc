"""GuideLLM specs and inference-perf configs -> scenarios (oracle/importers/guidellm.py,
oracle/importers/inference_perf.py).

GuideLLM: the benchmark scenarios GuideLLM ships (tests/data/importers/guidellm/, Apache-2.0)
and the command lines of its README. inference-perf: its README quick start, a config written
as its docs/config.md describes, and (shared-data layer) a config.yaml saved by a real run.
"""

from __future__ import annotations

import json
import math
import shlex

import numpy as np
import pytest
from data_sources import ROOT, TESTS_DATA
from typer.testing import CliRunner

from oracle.cli import build_app
from oracle.errors import OracleError
from oracle.importers import detect, import_args, import_file
from oracle.importers.guidellm import parse_kv, sweep_rates
from oracle.importers.runner import run_benchmarks
from oracle.scenario import scenario_from_dict
from oracle.workload import build_workload
from oracle.workload.dists import sample

GUIDELLM = TESTS_DATA / "importers" / "guidellm"


def fields(imp) -> dict:
    return {n.field: n.kind for n in imp.notes}


# -- GuideLLM --------------------------------------------------------------------------------

def test_guidellm_shipped_scenarios_are_detected_and_valid():
    files = sorted(GUIDELLM.glob("*.json"))
    assert len(files) == 7
    for f in files:
        assert detect(f) == "guidellm", f
        imp = import_file(f)
        assert len(imp.benchmarks) == len(json.loads(f.read_text())["benchmarks"])   # one per stream count
        for _, raw in imp.benchmarks:
            scenario_from_dict(raw, base_dir=f.parent, file=f)


def test_guidellm_concurrent_streams_and_lengths():
    imp = import_file(GUIDELLM / "concurrent-8k-800-norm.json")
    labels = [label for label, _ in imp.benchmarks]
    assert labels == ["concurrent@1", "concurrent@50", "concurrent@100", "concurrent@200", "concurrent@300"]
    c = imp.benchmarks[2][1]["workload"]["clients"][0]
    assert c["concurrency"] == 100
    # IntegerRangeSampler: normal(8000, 8500) clipped to [50, 30000]
    assert c["prompt_tokens"] == {"dist": "normal", "mean": 8000.0, "std": 8500.0, "min": 50, "max": 30000}
    assert c["output_tokens"] == {"dist": "normal", "mean": 800.0, "std": 1500.0, "min": 20, "max": 8000}
    assert imp.benchmarks[2][1]["simulation"] == {"duration_s": 450.0}
    assert fields(imp)["model"] == "note" and imp.raw["model"]["name"] == "llama-3.1-8b"


def test_guidellm_sampler_matches_ours_in_distribution():
    """GuideLLM's IntegerRangeSampler (random.gauss, clipped, rounded) vs the scenario's draws."""
    import random
    imp = import_file(GUIDELLM / "concurrent-512-2ki-norm.json")
    sc = scenario_from_dict(imp.raw)
    ours = sample(sc.workload.clients[0].prompt_tokens, np.random.default_rng(0), 20000)
    rng = random.Random(1)
    theirs = np.array([round(max(1, min(1024, rng.gauss(512, 128)))) for _ in range(20000)])
    assert abs(ours.mean() - theirs.mean()) < 4 and abs(ours.std() - theirs.std()) < 4
    assert ours.min() >= 1 and ours.max() <= 1024


def test_guidellm_prefix_and_turns():
    imp = import_file(GUIDELLM / "concurrent-1k-1k-multiturn.json")
    c = imp.raw["workload"]["clients"][0]
    assert (c["system_prompt_tokens"], c["num_system_prompts"]) == (512, 10)
    assert fields(imp)["data.turns"] == "approximated"


def test_guidellm_readme_commands():
    # README "Rate-based load testing"
    imp = import_args(shlex.split(
        "guidellm run --backend kind=openai_http,target=http://localhost:8000 --profile kind=constant,rate=10 "
        "--constraint kind=max_duration,seconds=20 --data kind=synthetic_text,prompt_tokens=128,output_tokens=256"))
    c = imp.raw["workload"]["clients"][0]
    assert c["arrival"] == {"process": "constant", "rate": 10.0}
    assert (c["prompt_tokens"], c["output_tokens"]) == (128, 256)
    assert imp.raw["simulation"] == {"duration_s": 20.0}
    # README "Benchmark controls": warm-up 10 % of ... no duration -> refused (it would never end)
    with pytest.raises(OracleError, match="no stop condition"):
        import_args(shlex.split(
            "guidellm run --backend kind=openai_http,target=http://localhost:8000 "
            "--profile kind=concurrent,streams=16,warmup=0.1,cooldown=0.1 --constraint kind=max_errors,count=5 "
            "--constraint kind=over_saturation --data kind=synthetic_text,prompt_tokens=256,output_tokens=128"))
    imp = import_args(shlex.split(
        "guidellm run --profile kind=concurrent,streams=16,warmup=0.1,cooldown=0.1 --constraint kind=max_errors,"
        "count=5 --constraint kind=max_duration,seconds=60 --data kind=synthetic_text,prompt_tokens=256,"
        "output_tokens=128"))
    assert imp.raw["simulation"] == {"duration_s": 60.0, "warm_up_s": 6.0}
    f = fields(imp)
    assert f["constraint max_errors"] == "not simulated" and f["profile.cooldown"] == "not simulated"


def test_guidellm_kv_syntax():
    assert parse_kv("kind=concurrent,streams=[1,4,8],rampup_duration=2.5") == \
        {"kind": "concurrent", "streams": [1, 4, 8], "rampup_duration": 2.5}
    assert parse_kv("kind=huggingface,load_kwargs.name=3.0.0") == {"kind": "huggingface",
                                                                   "load_kwargs": {"name": "3.0.0"}}
    assert parse_kv('{"kind": "poisson", "rate": [1, 2]}') == {"kind": "poisson", "rate": [1, 2]}


def test_guidellm_flat_legacy_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("target: http://localhost:8000\nmodel: meta-llama/Llama-3.1-8B-Instruct\nprofile: poisson\n"
                    "rate: [2, 4]\nmax_requests: 100\ndata: prompt_tokens=256,output_tokens=128\n")
    assert detect(spec) == "guidellm"
    imp = import_file(spec)
    assert [lb for lb, _ in imp.benchmarks] == ["poisson@2.00", "poisson@4.00"]
    raw = imp.benchmarks[1][1]
    assert raw["workload"]["clients"][0]["arrival"] == {"process": "poisson", "rate": 4.0}
    assert raw["simulation"] == {"num_requests": 100}


def test_guidellm_sweep_rates_come_from_simulated_benchmarks(tmp_path):
    assert sweep_rates(1.0, 9.0, 10) == pytest.approx(list(np.linspace(1, 9, 9)[1:]))
    imp = import_args(shlex.split(
        "guidellm run --model meta-llama/Llama-3.1-8B-Instruct --profile kind=sweep,sweep_size=4,max_concurrency=32 "
        "--constraint kind=max_requests,count=64 --data kind=synthetic_text,prompt_tokens=256,output_tokens=64"))
    results = run_benchmarks(imp, out_dir=tmp_path / "sweep")
    labels = [lb for lb, _ in results]
    assert labels[:2] == ["synchronous", "throughput@32"] and len(labels) == 4
    r_sync = results[0][1].summary["throughput"]["requests_per_second"]
    r_thr = results[1][1].summary["throughput"]["requests_per_second"]
    rates = [float(lb.split("@")[1]) for lb in labels[2:]]
    assert rates == pytest.approx(sweep_rates(r_sync, r_thr, 4), abs=0.006)
    assert all((tmp_path / "sweep" / lb / "vllm" / "summary.json").is_file() for lb in labels)


def test_guidellm_simulate_runs_every_benchmark(tmp_path):
    spec = json.loads((GUIDELLM / "concurrent-2ki-128-equal.json").read_text())
    spec["spec"]["constraints"] = [{"kind": "max_requests", "count": 40}]
    spec["benchmarks"] = spec["benchmarks"][:3]
    f = tmp_path / "small.json"
    f.write_text(json.dumps(spec))
    r = CliRunner().invoke(build_app(), ["simulate", str(f), "--out", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert list(doc) == ["concurrent@1", "concurrent@50", "concurrent@100"]
    assert [doc[k]["requests"]["successful"] for k in doc] == [40, 40, 40]
    ttft = [doc[k]["latency"]["time_to_first_token_ms"]["p99"] for k in doc]
    assert ttft == sorted(ttft)
    r = CliRunner().invoke(build_app(), ["convert", str(f)])
    assert r.exit_code == 0 and "3 benchmarks" in r.stdout


# -- inference-perf --------------------------------------------------------------------------

QUICKSTART = ("inference-perf --server.type vllm --server.base_url http://localhost:8000 --data.type random "
              "--load.type constant --load.stages '[{\"rate\": 10, \"duration\": 60}]' --api.streaming true")

CONFIG = """\
load:
  type: constant
  stages:
  - rate: 1
    duration: 30
  - rate: 4
    duration: 30
  request_timeout: 120
api:
  type: completion
  streaming: true
server:
  type: vllm
  model_name: meta-llama/Llama-3.1-8B-Instruct
  base_url: http://0.0.0.0:8000
  ignore_eos: true
tokenizer:
  pretrained_model_name_or_path: meta-llama/Llama-3.1-8B-Instruct
data:
  type: random
  input_distribution:
    min: 10
    max: 4096
    mean: 2048
    std_dev: 512
  output_distribution:
    min: 10
    max: 1024
    mean: 256
    std_dev: 64
    type: uniform
report:
  request_lifecycle:
    summary: true
"""


def test_inference_perf_quickstart_command():
    with pytest.raises(OracleError, match="server.model_name"):
        import_args(shlex.split(QUICKSTART))
    imp = import_args(shlex.split(QUICKSTART + " --server.model_name meta-llama/Llama-3.1-8B-Instruct"))
    c = imp.raw["workload"]["clients"][0]
    assert c["arrival"] == {"process": "poisson", "rate": 10.0}
    assert imp.raw["simulation"] == {"duration_s": 60.0, "num_requests": 600}
    # the Distribution defaults: normal(512, 200) clipped to [10, 1024]
    assert c["prompt_tokens"] == {"dist": "normal", "mean": 512.0, "std": 200.0, "min": 10, "max": 1024}


def test_inference_perf_config_file(tmp_path):
    f = tmp_path / "config.yml"
    f.write_text(CONFIG)
    assert detect(f) == "inference-perf"
    imp = import_file(f)
    assert [lb for lb, _ in imp.benchmarks] == ["stage_0", "stage_1"]
    raw = imp.benchmarks[1][1]
    c = raw["workload"]["clients"][0]
    assert c["prompt_tokens"] == {"dist": "normal", "mean": 2048.0, "std": 512.0, "min": 10, "max": 4096}
    assert c["output_tokens"] == {"dist": "uniform", "min": 10, "max": 1024}
    assert raw["workload"]["timeout_s"] == 120.0 and raw["simulation"]["num_requests"] == 120
    assert fields(imp)["data.output_distribution"] == "approximated"
    scenario_from_dict(raw)


def test_inference_perf_concurrent_and_shared_prefix(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("load:\n  type: concurrent\n  stages:\n  - num_requests: 200\n    concurrency_level: 16\n"
                 "server:\n  type: vllm\n  model_name: meta-llama/Llama-2-7b-hf\n"
                 "data:\n  type: shared_prefix\n  shared_prefix:\n    num_groups: 4\n    num_prompts_per_group: 8\n"
                 "    system_prompt_len: 300\n    question_len: 200\n    output_len: 100\n")
    imp = import_file(f)
    c = imp.raw["workload"]["clients"][0]
    assert (c["concurrency"], c["num_requests"], c["system_prompt_tokens"], c["num_system_prompts"]) == \
        (16, 200, 300, 4)
    sc = imp.scenario()
    wl = build_workload(sc.workload, duration_s=None, num_requests=None, seed=0)
    assert len(wl) == 200 and (wl.prompt_tokens == 500).all()


def test_inference_perf_unsupported(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("load:\n  type: constant\n  stages: [{rate: 1, duration: 5}]\nserver: {model_name: "
                 "meta-llama/Llama-2-7b-hf}\ndata: {type: shareGPT}\n")
    with pytest.raises(OracleError) as info:
        import_file(f)
    assert info.value.key == "data.type" and "not supported" in info.value.reason


@pytest.mark.shared_data
def test_inference_perf_config_of_a_real_run(shared_data):
    """The config.yaml a real inference-perf run saved (vllm_runs/h100-inference-perf)."""
    runs = sorted((shared_data / "vllm_runs" / "h100-inference-perf").glob("*/results/config.yaml"))
    assert runs
    for cfg in runs:
        imp = import_file(cfg)
        assert imp.tool == "inference-perf" and len(imp.benchmarks) >= 1
        for _, raw in imp.benchmarks:
            scenario_from_dict(raw, base_dir=cfg.parent, file=cfg)
            assert math.isclose(raw["simulation"]["num_requests"],
                                int(raw["workload"]["clients"][0]["arrival"]["rate"] * raw["simulation"]["duration_s"]))


def test_bundled_example_files_exist():
    assert (ROOT / "scenarios" / "vllm_bench" / "bench.sh").is_file()


def test_command_line_flags_bare_and_valued():
    """A bare flag does not swallow the flag after it (the shared command-line reader)."""
    from oracle.importers.common import iter_flags
    words = ["guidellm", "run", "--a", "--b=2", "--c", "3", "x", "--d"]
    assert list(iter_flags(words, "true")) == [("--a", "true"), ("--b", "2"), ("--c", "3"), ("--d", "true")]
