"""`vllm bench serve` command lines -> scenarios (oracle/importers/vllm_bench.py), the round trip
command -> simulate -> vllm_bench.json -> `oracle report A.json B.json`.

The command lines are the examples of vLLM's benchmark documentation (vllm/benchmarks/README.md
and docs/contributing/benchmarks.md, vLLM 0.33), shortened where they name servers or files.
"""

from __future__ import annotations

import json
import shlex
import tomllib

import numpy as np
import pytest
from data_sources import ROOT
from typer.testing import CliRunner

import oracle
from oracle.cli import build_app
from oracle.errors import OracleError
from oracle.importers import detect, import_args, import_file
from oracle.importers.vllm_bench import split_commands, uniform_lengths
from oracle.workload import build_workload

EXAMPLE = ROOT / "scenarios" / "vllm_bench"


def imported(cmd: str):
    return import_args(shlex.split(cmd))


def client(imp) -> dict:
    return imp.raw["workload"]["clients"][0]


def test_documented_random_example():
    # docs: "vllm bench serve --model meta-llama/Llama-2-7b-chat-hf --dataset-name random
    #        --random-input-len 2048 --random-output-len 128 --request-rate 10 --num-prompts 100"
    imp = imported("vllm bench serve --backend vllm --model meta-llama/Llama-2-7b-chat-hf --dataset-name random "
                   "--random-input-len 2048 --random-output-len 128 --request-rate 10 --num-prompts 100")
    c = client(imp)
    assert imp.raw["model"]["name"] == "llama-2-7b"
    assert c["prompt_tokens"] == 2048 and c["output_tokens"] == 128
    assert c["arrival"] == {"process": "poisson", "rate": 10.0}
    assert imp.raw["simulation"] == {"num_requests": 100}
    assert any(n.field == "--request-rate" and n.kind == "approximated" for n in imp.notes)
    assert any("--backend" in n.field for n in imp.notes)      # no effect, said so
    sc = imp.scenario()
    assert sc.workload.clients[0].arrival.rate == 10.0


def test_documented_prefix_repetition_example():
    imp = imported("vllm bench serve --backend openai --model meta-llama/Llama-2-7b-chat-hf "
                   "--dataset-name prefix_repetition --num-prompts 100 --prefix-repetition-prefix-len 512 "
                   "--prefix-repetition-suffix-len 128 --prefix-repetition-num-prefixes 5 "
                   "--prefix-repetition-output-len 128")
    c = client(imp)
    assert (c["system_prompt_tokens"], c["num_system_prompts"], c["prompt_tokens"], c["output_tokens"]) == \
        (512, 5, 128, 128)
    assert c["concurrency"] == 100 and c["num_requests"] == 100      # rate inf: all at t = 0
    sc = imp.scenario()
    wl = build_workload(sc.workload, duration_s=None, num_requests=None, seed=0)
    assert len(wl) == 100 and (wl.prompt_tokens == 640).all() and (wl.arrival_s[wl.parent < 0] == 0).all()
    res = oracle.simulate(sc)
    assert res.summary["prefix_caching"]["cross_request_hit_rate"] > 0.8   # 5 shared 512-token prefixes


def test_documented_sharegpt_example(tmp_path):
    data = [{"conversations": [{"from": "human", "value": "x" * 400}, {"from": "gpt", "value": "y" * 800}]},
            {"conversations": [{"from": "human", "value": "z" * 40}, {"from": "gpt", "value": "w" * 2000}]},
            {"conversations": [{"from": "human", "value": "a"}]},                     # one turn: skipped
            {"conversations": [{"from": "human", "value": "q" * 8}, {"from": "gpt", "value": "r" * 8}]}]
    (tmp_path / "ShareGPT_V3_unfiltered_cleaned_split.json").write_text(json.dumps(data))
    cmd = ("vllm bench serve --backend vllm --model NousResearch/Hermes-3-Llama-3.1-8B --endpoint /v1/completions "
           f"--dataset-name sharegpt --dataset-path {tmp_path}/ShareGPT_V3_unfiltered_cleaned_split.json "
           "--num-prompts 10")
    with pytest.raises(OracleError, match="'NousResearch/Hermes-3-Llama-3.1-8B' is not in the catalog"):
        imported(cmd)
    imp = imported(cmd.replace("NousResearch/Hermes-3-Llama-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"))
    c = client(imp)
    # 4 characters per token; vLLM's filter drops the 2-token prompt (< 4 tokens)
    assert c["prompt_tokens"] == {"dist": "empirical", "values": [100, 10]}
    assert c["output_tokens"] == {"dist": "empirical", "values": [200, 500]}
    assert any(n.kind == "approximated" and "sharegpt" in n.field for n in imp.notes)
    imp.scenario()


def test_max_concurrency_is_a_closed_loop():
    imp = imported("vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --dataset-name random "
                   "--random-input-len 1000 --random-output-len 200 --random-range-ratio 0.1 "
                   "--num-prompts 300 --max-concurrency 32 --ignore-eos --goodput ttft:500 tpot:50 "
                   "--metric-percentiles 50,90,99 --seed 7")
    c = client(imp)
    assert c["concurrency"] == 32 and c["num_requests"] == 300 and "arrival" not in c
    assert c["prompt_tokens"] == {"dist": "uniform", "min": 900, "max": 1100}
    # vLLM's own float arithmetic: ceil(200 * (1 + 0.1)) = ceil(220.00000000000003) = 221
    assert c["output_tokens"] == {"dist": "uniform", "min": 180, "max": 221}
    assert imp.raw["slo"] == {"ttft_ms": 500.0, "tpot_ms": 50.0}
    assert imp.raw["output"]["percentiles"] == [50.0, 90.0, 99.0] and imp.raw["seed"] == 7
    assert not imp.warnings()


def test_lengths_follow_vllms_sampling_interval():
    # vllm.benchmarks.datasets.utils.get_sampling_params: [floor(L(1-r)), ceil(L(1+r))], output >= 1
    assert uniform_lengths(1024, 0.0, at_least_one=True) == 1024
    assert uniform_lengths(1000, 0.25, at_least_one=True) == {"dist": "uniform", "min": 750, "max": 1250}
    assert uniform_lengths(3, 0.5, at_least_one=True) == {"dist": "uniform", "min": 1, "max": 5}
    imp = imported('vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --random-range-ratio '
                   '\'{"input": 0.5, "output": 0.0}\' --random-prefix-len 100')
    c = client(imp)
    assert c["prompt_tokens"] == {"dist": "uniform", "min": 512, "max": 1536} and c["output_tokens"] == 128
    assert c["system_prompt_tokens"] == 100
    assert c["concurrency"] == 1000      # defaults: 1000 prompts, all at once


def test_burstiness_and_unmappable_flags():
    imp = imported("vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --request-rate 4 --burstiness 0.25 "
                   "--max-concurrency 8 --num-prompts 50 --some-new-flag 3")
    c = client(imp)
    assert c["arrival"] == {"process": "gamma", "rate": 4.0, "cv": 2.0}     # shape 0.25 = 1 / cv**2
    fields = {n.field: n.kind for n in imp.warnings()}
    assert fields["--max-concurrency"] == "not simulated" and fields["--some-new-flag"] == "not simulated"
    assert imported("vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --request-rate 4 --burstiness inf"
                    ).raw["workload"]["clients"][0]["arrival"]["process"] == "constant"


@pytest.mark.parametrize("cmd, key, fragment", [
    ("vllm bench serve --dataset-name random", "--model", "--model is required"),
    ("vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --dataset-name sonnet", "--dataset-name",
     "not supported"),
    ("vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --ramp-up-strategy linear", "--ramp-up-strategy",
     "ramp-up"),
    ("vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --random-range-ratio 1.5", "--random-range-ratio",
     "[0, 1)"),
    ("vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --goodput ttfb:3", "--goodput", "unknown SLO"),
])
def test_refused_commands_name_the_flag(cmd, key, fragment):
    with pytest.raises(OracleError) as info:
        imported(cmd)
    assert info.value.key == key and fragment in info.value.reason, info.value.message


def test_shell_file_with_a_server_line(tmp_path):
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/bash\nexport HF_TOKEN=x\n"
                      "CUDA_VISIBLE_DEVICES=0,1 vllm serve meta-llama/Llama-3.1-70B-Instruct -tp 2 "
                      "--max-num-seqs 64 --no-enable-prefix-caching --kv-cache-dtype fp8 --max-model-len 8192 &\n"
                      "sleep 60  # wait for the server\n"
                      "vllm bench serve --model meta-llama/Llama-3.1-70B-Instruct \\\n"
                      "   --random-input-len 512 --num-prompts 20 --max-concurrency 4  # comment\n")
    assert detect(script) == "vllm-bench"
    imp = import_file(script)
    fw = imp.raw["frameworks"][0]
    assert (fw["tp"], fw["max_num_seqs"], fw["enable_prefix_caching"], fw["kv_cache_dtype"], fw["max_model_len"]) \
        == (2, 64, False, "fp8", 8192)
    assert imp.raw["model"]["name"] == "llama-3.1-70b"
    assert tomllib.loads(imp.to_toml()) == imp.raw
    assert split_commands("a && b; c | d\nx \\\n y")[:3] == [["a"], ["b"], ["c"]]


def test_convert_and_simulate_the_command(tmp_path):
    runner = CliRunner()
    cmd = ["vllm", "bench", "serve", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--num-prompts", "40",
           "--max-concurrency", "4", "--random-input-len", "256", "--random-output-len", "32", "--ignore-eos"]
    r = runner.invoke(build_app(), ["convert", "--", *cmd])
    assert r.exit_code == 0, r.output
    raw = tomllib.loads(r.stdout)
    assert raw["workload"]["clients"][0]["concurrency"] == 4
    r = runner.invoke(build_app(), ["simulate", "--out", str(tmp_path / "run"), "-q", "--", *cmd])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "run" / "vllm" / "vllm_bench.json").read_text())   # the default format here
    assert doc["num_prompts"] == 40 and doc["max_concurrency"] == 4 and doc["request_rate"] == "inf"
    assert set(doc["input_lens"]) == {256}
    r = runner.invoke(build_app(), ["simulate", "--", "vllm", "serve", "x"])
    assert r.exit_code == 1 and "vllm bench serve" in r.output


def test_readme_round_trip(tmp_path):
    """README: the bundled command -> oracle simulate -> oracle report measured vs simulated."""
    runner = CliRunner()
    r = runner.invoke(build_app(), ["simulate", str(EXAMPLE / "bench.sh"), "--out", str(tmp_path / "bench"), "-q"])
    assert r.exit_code == 0, r.output
    sim = tmp_path / "bench" / "vllm" / "vllm_bench.json"
    measured = json.loads((EXAMPLE / "example_result.json").read_text())
    doc = json.loads(sim.read_text())
    for key in ("num_prompts", "max_concurrency", "request_rate", "total_input_tokens", "total_output_tokens"):
        assert doc[key] == measured[key], key
    r = runner.invoke(build_app(), ["report", str(EXAMPLE / "example_result.json"), str(sim), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["baseline"] == "example_result.json"
    rows = {row["key"]: row for row in rep["rows"]}
    assert rows["p99_ttft_ms"]["values"]["vllm_bench.json"] == pytest.approx(doc["p99_ttft_ms"])
    assert rows["completed"]["relative_change"]["vllm_bench.json"] == 0.0
    r = runner.invoke(build_app(), ["report", str(EXAMPLE / "example_result.json"), str(sim)])
    assert r.exit_code == 0 and "TTFT p99" in r.output and "Latency (ms)" in r.output
    r = runner.invoke(build_app(), ["report", str(EXAMPLE / "example_result.json"), str(tmp_path / "bench")])
    assert r.exit_code == 1 and "not both" in r.output


def test_simulated_lengths_match_vllms_draws_in_distribution():
    imp = imported("vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --random-input-len 1000 "
                   "--random-output-len 100 --random-range-ratio 0.5 --num-prompts 4000 --max-concurrency 4")
    sc = imp.scenario()
    wl = build_workload(sc.workload, duration_s=None, num_requests=None, seed=1)
    rng = np.random.default_rng(0)   # vLLM: rng.integers(low, high + 1)
    ref = rng.integers(500, 1501, size=4000)
    assert wl.prompt_tokens.min() >= 500 and wl.prompt_tokens.max() <= 1500
    assert abs(wl.prompt_tokens.mean() - ref.mean()) < 15
    assert abs(wl.output_tokens.mean() - 100) < 2
