"""Original-LLMPerfOracle configs: the TOML writer, the converter, `oracle convert`, and running
old YAML/JSON files directly with the same results as their converted TOML."""

from __future__ import annotations

import json
import math
import shutil
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import oracle
from oracle.cli import build_app
from oracle.errors import ScenarioError
from oracle.api import load_workload
from oracle.legacy import convert_file, convert_legacy, load_legacy_scenario, read_legacy, scenario_from_conversion
from oracle.legacy import dists as D
from oracle.legacy.toml_writer import dumps, quote
from oracle.legacy.workload import CONTINUE_PROB, MAX_TURNS, mean_turns, turns_weights
from oracle.metrics.columns import LEGACY_CSV_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "legacy"
CONFIGS = sorted(p for p in DATA.iterdir() if p.suffix in (".yaml", ".json") and not p.name.startswith("bad_"))


def invoke(*args: str):
    return CliRunner().invoke(build_app(), list(args))


def base() -> dict:
    return read_legacy(DATA / "single_gpu.yaml")


# -- TOML writer ---------------------------------------------------------------------------------

def test_writer_round_trips_the_subset_we_produce():
    d = {
        "name": 'q"uo\\te\n\ttab \x01 ünï',
        "seed": 2**62, "neg": -3, "f": 1e-05, "g": 1e20, "h": -0.0, "t": True,
        "list": [1, 2, 3], "long": list(range(200)), "floats": [0.1] * 40, "empty": [],
        "weird key": 1, "": "empty key",
        "simulation": {"duration_s": 10.0},
        "workload": {"arrival": {"process": "poisson", "rate": 2.0},
                     "clients": [{"name": "a", "prompt_tokens": {"dist": "empirical", "values": list(range(1, 300))},
                                  "conversation": {"turns": {"dist": "constant", "value": 3},
                                                   "think_time_s": {"dist": "exponential", "mean": 2.0}}},
                                 {"name": "b", "nested": {"deep": {"deeper": {"x": [1.5, 2.5]}}}}]},
        "frameworks": [{"name": "x"}, {"name": "y", "tp": 2}],
        "mixed": [1, "two", {"three": 3}],
    }
    text = dumps(d, comments={"workload.clients.0": ["a comment", "two\nlines"], "seed": ["s"]},
                 header=["head"])
    assert tomllib.loads(text) == d
    assert text.startswith("# head\n")
    assert "# two lines\n[[workload.clients]]" in text


def test_writer_rejects_what_toml_cannot_hold():
    for bad in ({"x": math.nan}, {"x": math.inf}, {"x": None}, {1: 2}, {"x": {1, 2}}):
        with pytest.raises((TypeError, ValueError)):
            dumps(bad)


def test_quote_escapes_control_characters():
    assert quote('a"b\\c\x7f\x00') == '"a\\"b\\\\c\\u007F\\u0000"'
    assert tomllib.loads(f"k = {quote(chr(0x1F) + 'é')}")["k"] == "\x1fé"


_scalars = (st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
            | st.booleans() | st.text(max_size=12))
_keys = st.text(max_size=8)
_values = st.recursive(_scalars | st.lists(_scalars, max_size=5),
                       lambda inner: st.dictionaries(_keys, inner, max_size=4)
                       | st.lists(st.dictionaries(_keys, inner, max_size=3), min_size=1, max_size=3),
                       max_leaves=20)


@given(st.dictionaries(_keys, _values, max_size=6))
def test_writer_round_trips_random_documents(d):
    assert tomllib.loads(dumps(d)) == d


# -- distributions and turns -----------------------------------------------------------------------

def test_p3_a_conversation_always_gets_a_second_turn():
    """Point 3: P(1) = 1 - c, P(k) = c * 0.3 * 0.7^(k-2) for k >= 2 (the cap takes the tail)."""
    c = 0.6
    w = turns_weights(c)
    assert len(w) == MAX_TURNS and math.isclose(sum(w), 1.0)
    q = CONTINUE_PROB
    assert math.isclose(w[0], 1 - c)
    for k in range(2, MAX_TURNS):
        assert math.isclose(w[k - 1], c * (1 - q) * q ** (k - 2))
    assert math.isclose(w[-1], c * q ** (MAX_TURNS - 2))
    assert turns_weights(0.0) == [1.0] + [0.0] * (MAX_TURNS - 1)
    # the figure: c = 0.8 gives 3.56 turns on average (the old mapping gave 2.79)
    assert round(mean_turns(0.8), 2) == 3.56
    # the converted file carries exactly these weights, and a generated workload follows them
    data = base()
    prof = data["workload"]["client_profiles"][0]
    prof.update(conversational_probability=0.8, follow_up_inter_arrival_time_dist_config={"type": "Constant",
                                                                                         "value": 0.01})
    data["workload"].pop("total_duration")
    data["workload"]["total_requests_to_generate"] = 30000
    data["simulation"]["max_simulation_time"] = 1e6
    conv = convert_legacy(data)
    turns = conv.raw["workload"]["clients"][0]["conversation"]["turns"]
    assert turns["values"] == list(range(1, 11)) and np.allclose(turns["weights"], turns_weights(0.8))
    wl = load_workload(scenario_from_conversion(conv))
    assert (wl.session >= 0).all()          # every request of the profile is a session, one-turn ones too
    per_session = np.bincount(wl.session)[:-1]        # the last session may be cut
    assert abs(per_session.mean() - 3.56) < 0.08, per_session.mean()


@pytest.mark.parametrize("a", [0.3, 1.0, 2.0, 7.5, 40.0])
def test_gamma_quantiles_match_known_values(a):
    # shape 1 is the exponential; for others check P(gamma_ppf(u)) = u through the CDF
    for u in (0.001, 0.1, 0.5, 0.9, 0.999):
        x = D.gamma_ppf(a, u)
        assert math.isclose(D._gamma_p(a, x), u, rel_tol=1e-9, abs_tol=1e-12)
        if a == 1.0:
            assert math.isclose(x, -math.log1p(-u), rel_tol=1e-9)


def test_quantile_functions_and_moments():
    par = D.parse_law({"type": "Pareto", "shape": 3.0, "scale": 10.0}, "d")
    assert math.isclose(D.quantile(par, 0.5), 10 * 2 ** (1 / 3))
    assert D.moments(par) == (15.0, 100 * 3 / (4 * 1))
    wei = D.parse_law({"type": "Weibull", "shape": 1.0, "scale": 4.0}, "d")  # = exponential, mean 4
    assert math.isclose(D.moments(wei)[0], 4.0) and math.isclose(D.quantile(wei, 0.5), 4 * math.log(2))
    ln = D.parse_law({"type": "LogNormal", "mean": 1.0, "sigma": 0.5}, "d")
    assert math.isclose(D.quantile(ln, 0.5), math.e)
    mix = D.parse_law({"type": "Mixture", "components": [{"weight": 3, "type": "Constant", "value": 1},
                                                          {"weight": 1, "type": "Constant", "value": 5}]}, "d")
    assert D.moments(mix) == (2.0, 3.0) and D.is_exactly_discrete(mix)
    assert D.discretize(mix) == [(1.0, 0.75), (5.0, 0.25)]


def test_distribution_mapping():
    data = base()
    prof = data["workload"]["client_profiles"][0]
    cases = [
        ({"type": "Fixed", "value": 7}, {"dist": "constant", "value": 7}),
        ({"type": "Exponential", "rate": 0.01}, {"dist": "exponential", "mean": 100.0}),
        ({"type": "Uniform", "low": 10, "high": 20}, {"dist": "uniform", "min": 10, "max": 20}),
        ({"type": "Normal", "mean": 50, "std": 5}, {"dist": "normal", "mean": 50, "std": 5}),
        ({"type": "LogNormal", "mean": 4.0, "sigma": 0.5}, {"dist": "lognormal", "median": math.exp(4.0), "sigma": 0.5}),
        ({"type": "lognormal", "mu": 4.0, "sigma": 0.5, "max": 900},
         {"dist": "lognormal", "median": math.exp(4.0), "sigma": 0.5, "max": 900}),
    ]
    for cfg, want in cases:
        prof["prompt_tokens_dist_config"] = dict(cfg, is_int=True)
        got = convert_legacy(data).raw["workload"]["clients"][0]["prompt_tokens"]
        assert got == want, cfg
    prof["prompt_tokens_dist_config"] = {"type": "Gamma", "shape": 2.0, "rate": 0.02, "is_int": True}
    conv = convert_legacy(data)
    got = conv.raw["workload"]["clients"][0]["prompt_tokens"]
    assert got["dist"] == "empirical" and all(isinstance(v, int) for v in got["values"])
    mean = sum(v * w for v, w in zip(got["values"], got["weights"])) / sum(got["weights"])
    assert abs(mean - 100.0) < 1.5
    assert any(n.kind == "approximated" and "Gamma(shape=2, scale=50)" in n.text for n in conv.notes)


def test_shared_arrival_stream():
    data = base()
    profs = data["workload"]["client_profiles"]
    profs.append(dict(profs[0], profile_name="second", weight=3.0))
    wl = convert_legacy(data).raw["workload"]
    assert wl["arrival"] == {"process": "poisson", "rate": 8.0, "first_arrival": "gap"}
    assert [c["share"] for c in wl["clients"]] == [0.25, 0.75]
    # different gap laws: gamma with the mixture's mean and CV
    profs[1]["inter_arrival_time_dist_config"] = {"type": "Constant", "value": 0.5}
    arr = convert_legacy(data).raw["workload"]["arrival"]
    m = 0.25 * (1 / 8) + 0.75 * 0.5
    second = 0.25 * (2 / 64) + 0.75 * 0.25
    assert arr["process"] == "gamma" and math.isclose(arr["rate"], 1 / m)
    assert math.isclose(arr["cv"], math.sqrt(second - m * m) / m)
    profs[0]["inter_arrival_time_dist_config"] = {"type": "Constant", "value": 0.5}
    assert convert_legacy(data).raw["workload"]["arrival"] == {"process": "constant", "rate": 2.0,
                                                               "first_arrival": "gap"}


def test_framework_and_metrics_mapping():
    data = base()
    conv = convert_legacy(data)
    fw = conv.raw["frameworks"][0]
    assert fw == {"name": "vllm_a100", "type": "vllm", "block_size": 16, "max_num_seqs": 128,
                  "max_num_batched_tokens": 2048, "enable_chunked_prefill": True, "enable_prefix_caching": True}
    assert conv.raw["output"] == {"percentiles": [50, 90, 95, 99], "summary_json": "results/single_gpu_summary.json",
                                  "requests_csv": "results/single_gpu_requests.csv", "format": "csv",
                                  "style": "original", "reported_duration_s": 30.0}
    assert conv.raw["simulation"] == {"duration_s": 20.0, "warm_up_s": 2.0}
    assert conv.raw["model"] == {"name": "llama-2-7b", "dtype": "fp16"}
    assert conv.raw["hardware"] == {"gpu": "a100-80g"}
    data["metrics_config"]["percentiles_to_calculate"] = [50, 99.9]
    assert convert_legacy(data).raw["output"]["percentiles"] == [50, 99.9]
    data["metrics_config"]["percentiles_to_calculate"] = [0.5, 0.999]
    assert convert_legacy(data).raw["output"]["percentiles"] == [50, 99.9]
    cfg = data["frameworks_to_test"][0]["config"]
    cfg.update(max_num_batched_tokens=8192, enable_chunked_prefill=False, tensor_parallel_size=2,
               pipeline_parallel_size=2, load_balancing_strategy="least_loaded")
    data["frameworks_to_test"].append(dict(data["frameworks_to_test"][0], name="second"))
    fw = convert_legacy(data).raw["frameworks"][0]
    assert (fw["tp"], fw["pp"], fw["replicas"], fw["router"]) == (2, 2, 2, "least_loaded")
    assert fw["max_num_batched_tokens"] == 8192 and "max_model_len" not in fw  # 8192 >= llama-2-7b's 4096
    cfg["max_num_batched_tokens"] = 2048
    fw = convert_legacy(data).raw["frameworks"][0]
    assert fw["max_model_len"] == 2048  # no chunked prefill: the budget must hold a whole prompt


def test_converted_files_are_valid_toml_equal_to_the_dict():
    for path in CONFIGS + [ROOT / "scenarios" / "legacy_example.yaml"]:
        conv = convert_file(path)
        text = conv.to_toml()
        assert tomllib.loads(text) == conv.raw, path
        assert text.startswith(f"# Converted from {path.name}")


# -- end to end ----------------------------------------------------------------------------------

def _strip_wall(summary: dict) -> dict:
    s = json.loads(json.dumps(summary))
    s["simulation"].pop("wall_time_s")
    return s


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_old_file_runs_like_its_converted_toml(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # [output] copies are relative to the working directory, as in the original
    old = tmp_path / path.name
    shutil.copy(path, old)
    res = invoke("convert", str(old), "-o", "converted.toml")
    assert res.exit_code == 0, res.output
    res = invoke("validate", "converted.toml")
    assert res.exit_code == 0 and res.stdout.startswith("ok: converted.toml"), res.output

    res = invoke("simulate", str(old), "--out", "run_old", "--quiet")
    assert res.exit_code == 0, res.output
    assert "is an original-LLMPerfOracle config; converted in memory" in res.stderr
    direct = oracle.simulate("converted.toml", out_dir="run_new")
    old_summary = json.loads(next((tmp_path / "run_old").glob("*/summary.json")).read_text())
    assert _strip_wall(old_summary) == _strip_wall(direct.summary)
    fw = direct.first.name
    assert pl.read_parquet(tmp_path / "run_old" / fw / "requests.parquet").equals(direct.requests)

    s = direct.summary
    assert s["requests"]["total"] > 50 and s["requests"]["failed"] == 0, s["requests"]
    for k in ("simulation", "requests", "throughput", "latency", "prefix_caching"):
        assert k in s
    for k in ("time_to_first_token_ms", "time_per_output_token_ms", "end_to_end_latency_ms"):
        assert {"mean", "p50", "p99", "max"} <= set(s["latency"][k])
    out = tomllib.loads(Path("converted.toml").read_text()).get("output", {})
    for p in out.get("percentiles", ()):
        assert f"p{p:g}".replace(".", "_") in s["latency"]["time_to_first_token_ms"]
    if "summary_json" in out:
        assert _strip_wall(json.loads(Path(out["summary_json"]).read_text())) == _strip_wall(old_summary)
    if "requests_csv" in out:
        cols = pl.read_csv(out["requests_csv"]).columns
        assert tuple(cols[:len(LEGACY_CSV_COLUMNS)]) == LEGACY_CSV_COLUMNS and len(cols) > len(LEGACY_CSV_COLUMNS)


def test_what_each_config_exercises():
    by = {p.stem: load_legacy_scenario(p, notice=False) for p in CONFIGS}
    assert by["single_gpu"].frameworks[0].num_gpus == 1
    assert by["chat_no_prefix_cache"].frameworks[0].enable_prefix_caching is False
    assert by["heavy_tails_apc"].frameworks[0].enable_prefix_caching is True
    tp = by["tp2_parallel"]
    assert tp.frameworks[0].tp == 2 and tp.gpu.name == "custom-accel-64gb" and tp.gpu.link_bw_gbps == 300.0
    dp = by["data_parallel"].frameworks[0]
    assert (dp.replicas, dp.router) == (2, "session_affinity")
    chat = by["chat_no_prefix_cache"].workload.clients
    assert chat[0].conversation is not None and chat[1].conversation is None
    assert [c.share for c in chat] == [0.75, 0.25]


def test_prefix_caching_off_and_on_in_converted_runs():
    on = oracle.simulate(load_legacy_scenario(DATA / "data_parallel.yaml", notice=False)).summary
    assert on["prefix_caching"]["conversational_hit_rate"] > 0.5
    off = oracle.simulate(load_legacy_scenario(DATA / "chat_no_prefix_cache.json", notice=False)).summary
    assert off["prefix_caching"]["prefix_cache_hits"] == 0


# -- the CLI and errors ----------------------------------------------------------------------------

def test_convert_prints_to_stdout_and_marks_approximations():
    res = invoke("convert", str(DATA / "heavy_tails_apc.yaml"))
    assert res.exit_code == 0, res.output
    assert tomllib.loads(res.stdout) == convert_file(DATA / "heavy_tails_apc.yaml").raw
    assert "# approximated [workload.client_profiles.0.prompt_tokens_dist_config]: Pareto" in res.stdout
    assert res.stderr == ""


def test_convert_no_check_writes_a_file_that_fails_validation(tmp_path):
    data = base()
    data["workload"]["client_profiles"][0]["prompt_tokens_dist_config"] = {"type": "Constant", "value": 9000}
    old = tmp_path / "long.yaml"
    old.write_text(yaml.safe_dump(data))
    res = invoke("convert", str(old))
    assert res.exit_code == 1 and "workload.client_profiles (converted to workload.clients): prompts can be 9000 tokens" in res.stderr, \
        res.output
    res = invoke("convert", str(old), "--no-check", "-o", str(tmp_path / "long.toml"))
    assert res.exit_code == 0 and (tmp_path / "long.toml").exists(), res.output


def _write(tmp_path: Path, data: dict, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data))
    return p


def _drop(d: dict, key: str) -> dict:
    d.pop(key)
    return d


BAD = {
    "missing_frameworks": (lambda d: _drop(d, "frameworks_to_test"), "frameworks_to_test: is required"),
    "unknown_framework_type": (lambda d: d["frameworks_to_test"][0].update(type="SGLang"),
                               "frameworks_to_test.0.type: unknown framework type 'SGLang'; the original format "
                               "knows: VLLM, ParallelVLLM"),
    "unknown_dist_type": (lambda d: d["workload"]["client_profiles"][0]["prompt_tokens_dist_config"].update(
        type="Zeta"), "workload.client_profiles.0.prompt_tokens_dist_config.type: unknown distribution type 'Zeta'"),
    "unknown_model": (lambda d: d["frameworks_to_test"][0]["config"].update(model_profile_id="GPT-5"),
                      "frameworks_to_test.0.config.model_profile_id: unknown model 'GPT-5'"),
    "missing_param": (lambda d: d["workload"]["client_profiles"][0]["max_output_tokens_dist_config"].pop("low"),
                      "workload.client_profiles.0.max_output_tokens_dist_config.low: is required"),
    "bad_router": (lambda d: d["frameworks_to_test"][0]["config"].update(num_replicas=2,
                                                                         load_balancing_strategy="magic"),
                   "frameworks_to_test.0.config.load_balancing_strategy: unknown load_balancing_strategy 'magic'"),
    "no_target": (lambda d: d["frameworks_to_test"][0].update(is_target_for_workload=False),
                  "frameworks_to_test: no framework has is_target_for_workload: true"),
    "different_gpu_kinds": (lambda d: (
        d["hardware_profile"]["compute_devices"].append(dict(d["hardware_profile"]["compute_devices"][0],
                                                             device_id="gpu1", device_type="NVIDIA_H100",
                                                             peak_tflops={"fp16": 989}, memory_gbps=3350)),
        d["frameworks_to_test"].append(dict(d["frameworks_to_test"][0], name="other",
                                            config=dict(d["frameworks_to_test"][0]["config"], gpu_id="gpu1")))),
        "hardware_profile.compute_devices.1: the frameworks use different kinds of device"),
    # the original passes LogNormal's mean to numpy as mu of ln X: e^128 tokens cannot be run, there or here
    "lognormal_mu_128": (lambda d: d["workload"]["client_profiles"][0]["prompt_tokens_dist_config"].update(
        mean=128, sigma=0.5), "workload.client_profiles.0.prompt_tokens_dist_config.mean: LogNormal mean = 128 is mu "
                              "of ln X"),
    "lognormal_mu_150": (lambda d: d["workload"]["client_profiles"][0].update(
        max_output_tokens_dist_config={"type": "LogNormal", "mean": 150, "sigma": 20, "is_int": True}),
        "workload.client_profiles.0.max_output_tokens_dist_config.mean: LogNormal mean = 150 is mu of ln X"),
    "bad_probability": (lambda d: d["workload"]["client_profiles"][0].update(conversational_probability=1.5),
                        "workload.client_profiles.0.conversational_probability: must be <= 1, got 1.5"),
    "converted_invalid": (lambda d: d["frameworks_to_test"][0]["config"].update(max_num_seqs=0),
                          "frameworks_to_test.0.config.max_num_seqs: must be >= 1"),
    "unknown_device": (lambda d: d["frameworks_to_test"][0]["config"].update(gpu_id="gpu9"),
                       "hardware_profile.compute_devices: frameworks name device(s) 'gpu9'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_old_configs_exit_1_with_the_key_path(case, tmp_path):
    mutate, expected = BAD[case]
    data = base()
    mutate(data)
    path = _write(tmp_path, data)
    for cmd in (["convert", str(path)], ["simulate", str(path), "--out", str(tmp_path / "out"), "--quiet"],
                ["validate", str(path)]):
        res = invoke(*cmd)
        assert res.exit_code == 1, (cmd, res.output)
        line = res.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: {path}: {expected}"), (cmd, line)
        assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(ScenarioError):
        load_legacy_scenario(path, notice=False)


def test_syntax_errors_name_the_line(tmp_path):
    res = invoke("convert", str(DATA / "bad_syntax.yaml"))
    assert res.exit_code == 1 and f"error: {DATA / 'bad_syntax.yaml'}:7: YAML syntax error" in res.stderr, res.output
    p = tmp_path / "broken.json"
    p.write_text('{"simulation": {"max_simulation_time": 10,}\n}')
    res = invoke("simulate", str(p), "--quiet")
    assert res.exit_code == 1 and f"error: {p}:1: JSON syntax error" in res.stderr, res.output
    for text, reason in (("", "an empty file"), ("- 1\n- 2\n", "list")):
        p = tmp_path / "odd.yml"
        p.write_text(text)
        res = invoke("convert", str(p))
        assert res.exit_code == 1 and reason in res.stderr, res.output
    res = invoke("convert", str(tmp_path / "missing.yaml"))
    assert res.exit_code == 1 and "missing.yaml: file not found" in res.stderr


def test_unknown_keys_are_notes_not_errors():
    data = base()
    data["frameworks_to_test"][0]["config"]["swap_space_gb"] = 4
    data["workload"]["client_profiles"][0]["user_id_pool"] = 10
    conv = convert_legacy(data)
    texts = [n.line() for n in conv.notes]
    assert "dropped [frameworks_to_test.0.config.swap_space_gb]: swap_space_gb: unknown key, ignored " \
           "(no equivalent here)" in texts
    assert any("workload.client_profiles.0.user_id_pool" in t for t in texts)
    assert "# dropped [frameworks_to_test.0.config.swap_space_gb]" in conv.to_toml()


def test_bundled_legacy_example_validates():
    res = invoke("validate", str(ROOT / "scenarios" / "legacy_example.yaml"))
    assert res.exit_code == 0, res.output
    assert "ok: " in res.stdout and "llama-3.1-8b on h100-sxm" in res.stdout
    assert "converted in memory" in res.stderr


# -- what the original's configs meant (issue #15), point by point -------------------------------

GH200 = DATA / "gh200_tp2_dp4.yaml"


def _notes(conv, kind=None) -> list[str]:
    return [n.line() for n in conv.notes if kind is None or n.kind == kind]


@pytest.fixture(scope="module")
def gh200_run():
    """The GH200-style config, converted where its model profile file is found, and run."""
    conv = convert_file(GH200)
    return conv, oracle.simulate(scenario_from_conversion(conv))


def test_p1_replicas_are_the_target_frameworks_not_data_parallel_size(gh200_run):
    conv, res = gh200_run
    (fw,) = conv.raw["frameworks"]
    assert (fw["tp"], fw.get("pp", 1), fw["replicas"]) == (2, 1, 4)          # TP2 x DP4, not 16 replicas
    assert any("dropped [frameworks_to_test.0.config.data_parallel_size]: data_parallel_size = 4 is never read"
               in n for n in _notes(conv))
    assert res.summary["config"]["num_gpus"] == 8
    # also when the only target says data_parallel_size: one replica
    data = base()
    data["frameworks_to_test"][0]["config"]["data_parallel_size"] = 8
    assert convert_legacy(data).raw["frameworks"][0].get("replicas", 1) == 1


def test_p2_client_links_are_not_the_gpu_interconnect(gh200_run):
    conv, _ = gh200_run
    gpu = conv.raw["hardware"]["gpu"]
    # the configured NVLink (900e9 bit/s = 112.5 GB/s, 1 us), not the client's 100 Gbit/s, 0.5 ms link
    assert (gpu["link_bw_gbps"], gpu["link_latency_s"]) == (112.5, 1e-6)
    assert gpu["name"] == "h200" and gpu["eff_compute"] == oracle.catalog.get_gpu("h200").eff_compute
    sc = scenario_from_conversion(conv)
    assert sc.gpu.link_bw_gbps == 112.5
    assert any("4 client/framework network link(s)" in n for n in _notes(conv, "dropped"))
    # a GPU matching no catalog entry: the inline table takes the same link
    data = read_legacy(GH200)
    for d in data["hardware_profile"]["compute_devices"][1:]:
        d["memory_capacity_bytes"] = 96_000_000_000
    raw = convert_legacy(data, source=GH200).raw["hardware"]["gpu"]
    assert raw["name"] == "nvidia-gh200" and (raw["link_bw_gbps"], raw["link_latency_s"]) == (112.5, 1e-6)
    # links between GPUs of different targets do not count either
    data["hardware_profile"]["network_links"].append({"source_id": "gpu1", "dest_id": "gpu2",
                                                      "bandwidth_bps": 8e9, "latency_s": 0.01})
    conv2 = convert_legacy(data, source=GH200)
    assert conv2.raw["hardware"]["gpu"]["link_bw_gbps"] == 112.5
    assert any("1 link(s) between devices that are not two GPUs of one target framework" in n for n in _notes(conv2))


def test_p4_max_turns_per_session_caps_the_turns():
    data = base()
    data["workload"]["client_profiles"][0].update(conversational_probability=0.9, follow_up_inter_arrival_time_dist_config={
        "type": "Constant", "value": 0.05})
    conv = convert_legacy(data)
    assert conv.raw["workload"]["clients"][0]["conversation"]["turns"]["values"] == list(range(1, 11))
    assert any("no workload.max_turns_per_session: conversations are capped at 10 turns" in n for n in _notes(conv))
    data["workload"]["max_turns_per_session"] = 4
    conv = convert_legacy(data)
    turns = conv.raw["workload"]["clients"][0]["conversation"]["turns"]
    assert turns["values"] == [1, 2, 3, 4] and np.allclose(turns["weights"], turns_weights(0.9, cap=4))
    assert not any("max_turns_per_session" in n for n in _notes(conv, "dropped"))
    wl = load_workload(scenario_from_conversion(conv))
    assert wl.turn.max() == 3 and (wl.turn == 3).sum() > 10
    data["workload"]["max_turns_per_session"] = 1
    assert "conversation" not in convert_legacy(data).raw["workload"]["clients"][0]


def test_p5_follow_ups_are_timed_from_the_previous_arrival_and_stop_at_the_end(gh200_run):
    conv, res = gh200_run
    assert conv.raw["workload"]["clients"][0]["conversation"]["think_from"] == "arrival"
    req = res.requests
    total = conv.raw["simulation"]["duration_s"]
    assert req["arrival_s"].max() < total                    # nothing arrives after total_duration
    assert (req["turn"] >= 1).sum() > 30
    by = {(s, t): i for i, (s, t) in enumerate(zip(req["session"], req["turn"]))}
    early = 0
    for i, (s, t) in enumerate(zip(req["session"], req["turn"])):
        if t >= 1:
            prev = by[(s, t - 1)]
            assert req["arrival_s"][i] >= req["arrival_s"][prev]
            early += req["arrival_s"][i] < req["completion_s"][prev]
    assert early > 0       # a follow-up may arrive before the previous turn has finished


def test_p6_scheduler_iteration_delay_is_no_per_step_cost():
    conv = convert_legacy(base())
    assert "scheduler_overhead_s" not in conv.raw["frameworks"][0]
    assert any("scheduler_iteration_delay_s = 0.0001: the original sleeps this long only when its loop has no work"
               in n for n in _notes(conv, "dropped"))
    sc = scenario_from_conversion(conv)
    assert sc.frameworks[0].scheduler_overhead_s is None          # the GPU's calibrated per-step time


def test_p7_prefill_chunk_size_is_not_the_token_budget(gh200_run):
    conv, _ = gh200_run
    assert conv.raw["frameworks"][0]["max_num_batched_tokens"] == 2048           # not prefill_chunk_size = 4096
    assert any("prefill_chunk_size = 4096 is not the step's token budget" in n for n in _notes(conv, "dropped"))
    assert any("3691 tokens for a TP8 GH200 config" in n for n in _notes(conv, "approximated"))
    data = base()
    data["frameworks_to_test"][0]["config"].update(prefill_chunk_size=512, max_num_batched_tokens=6000)
    assert convert_legacy(data).raw["frameworks"][0]["max_num_batched_tokens"] == 6000


def test_p8_prefix_patterns_share_prefixes_across_requests():
    path = DATA / "cross_request_caching.yaml"
    conv = convert_file(path)
    clients = conv.raw["workload"]["clients"]
    assert [(c["name"], c["share"], c.get("system_prompt_tokens", 0), c.get("system_prompt_pool")) for c in clients] == [
        ("assistant+system_prompt", 0.5, 400, "system_prompt"),
        ("assistant+few_shot_template", 0.3, 800, "few_shot_template"),
        ("assistant", 0.2, 0, None)]
    assert not any(k in n for n in _notes(conv, "dropped") for k in ("prefix_patterns", "cross_request",
                                                                    "generate_prompt_tokens"))
    s = oracle.simulate(scenario_from_conversion(conv)).summary["prefix_caching"]
    assert s["cross_request_hits"] > 30 and s["token_hit_rate"] > 0.3          # 0 hits before
    # per profile, a pattern shared by two profiles is one prefix; generate_prompt_tokens: false uses none
    data = read_legacy(path)
    prof = data["workload"]["client_profiles"][0]
    data["workload"]["client_profiles"].append(dict(prof, profile_name="other", weight=1.0, prefix_patterns=[
        {"name": "system_prompt", "prefix_length": 400, "probability": 1.0}]))
    clients = convert_legacy(data, source=path).raw["workload"]["clients"]
    assert [c["system_prompt_pool"] for c in clients if c["name"].endswith("+system_prompt")] == ["system_prompt"] * 2
    data["workload"]["generate_prompt_tokens"] = False
    conv = convert_legacy(data, source=path)
    assert all("system_prompt_tokens" not in c for c in conv.raw["workload"]["clients"])
    assert any("generate_prompt_tokens is false" in n for n in _notes(conv, "dropped"))


def test_p9_model_profile_numbers_make_an_inline_model(gh200_run):
    from oracle.memory import kv_bytes_per_token
    conv, res = gh200_run
    arch = conv.raw["model"]["architecture"]
    assert "name" not in conv.raw["model"] and "resembles catalog model 'llama-3.1-70b'" in arch["source"]
    sc = scenario_from_conversion(conv)
    assert kv_bytes_per_token(sc.model, "fp16") == 80 * 16384                  # not 80 * 4096 (the catalog's)
    assert abs(sc.model.num_params - 70_553_706_496) < 1e-3 * 70_553_706_496   # the profile's parameters
    catalog = oracle.simulate(scenario_from_conversion(convert_legacy(read_legacy(GH200), source=ROOT / "x.yaml")))
    assert catalog.scenario.model.name == "llama-3.1-70b"                      # profile file not found: the catalog
    assert res.summary["kv_cache"]["num_gpu_blocks"] < catalog.summary["kv_cache"]["num_gpu_blocks"] / 3
    # a profile the catalog does not have
    data = base()
    data["frameworks_to_test"][0]["config"]["model_profile_id"] = "TinyChat-1B"
    conv = convert_legacy(data, source=DATA / "single_gpu.yaml")
    arch = conv.raw["model"]["architecture"]
    assert (arch["num_layers"], arch["hidden_size"], arch["num_kv_heads"], arch["max_context"]) == (22, 2048, 4, 2048)
    assert "resembles catalog model" in arch["source"]
    data["workload"]["client_profiles"][0]["prompt_tokens_dist_config"] = {"type": "Uniform", "low": 10, "high": 500}
    assert oracle.simulate(scenario_from_conversion(convert_legacy(data, source=DATA / "single_gpu.yaml"))) \
        .summary["requests"]["failed"] == 0


def test_p10_constant_arrivals_start_one_gap_after_zero():
    data = base()
    data["workload"]["client_profiles"][0]["inter_arrival_time_dist_config"] = {"type": "Constant", "value": 2.0}
    data["workload"]["total_duration"] = 9
    wl = load_workload(scenario_from_conversion(convert_legacy(data)))
    assert wl.arrival_s.tolist() == [2.0, 4.0, 6.0, 8.0]


def test_p11_follow_up_prompt_is_previous_prompt_plus_output_plus_new_input(gh200_run):
    _, res = gh200_run
    wl = res.workload
    prompt_draws = set()
    for i in np.flatnonzero(wl.turn >= 1)[:200]:
        prev = int(np.flatnonzero((wl.session == wl.session[i]) & (wl.turn == wl.turn[i] - 1))[0])
        new = int(wl.prompt_tokens[i] - wl.prompt_tokens[prev] - wl.output_tokens[prev])
        assert new >= 1
        prompt_draws.add(new)
        lo, hi = wl.seg_offsets[prev], wl.seg_offsets[prev + 1]
        assert np.array_equal(wl.seg_key[wl.seg_offsets[i]:wl.seg_offsets[i] + hi - lo], wl.seg_key[lo:hi])
    assert len(prompt_draws) > 50        # new inputs are fresh draws from prompt_tokens_dist_config


def test_original_parallel_experiment_one_model_per_framework():
    conv = convert_file(DATA / "parallel_experiment.yaml")
    fws = conv.raw["frameworks"]
    assert [(f["name"], f.get("tp", 1), f.get("pp", 1), f.get("model")) for f in fws] == [
        ("llama7b_tp1", 1, 1, None), ("llama13b_tp2", 2, 1, "llama-2-13b"), ("llama7b_pp2", 1, 2, None)]
    assert conv.raw["model"]["name"] == "llama-2-7b"
    assert any("the original splits one request stream between all of them" in n for n in _notes(conv, "approximated"))
    res = oracle.simulate(scenario_from_conversion(conv))
    assert [s["config"]["model"] for s in res.summaries.values()] == ["llama-2-7b", "llama-2-13b", "llama-2-7b"]
    out = invoke("validate", str(DATA / "parallel_experiment.yaml"))
    assert out.exit_code == 0 and "llama13b_tp2 (1x tp2 pp1, llama-2-13b)" in out.stdout


def test_output_reads_as_the_originals(gh200_run, tmp_path, monkeypatch):
    conv, _ = gh200_run
    monkeypatch.chdir(tmp_path)
    res = oracle.simulate(scenario_from_conversion(conv), out_dir="run")
    s = json.loads(Path(conv.raw["output"]["summary_json"]).read_text())
    assert s["simulation"]["total_duration_s"] == 30.0                         # max_simulation_time
    for block in ("time_to_first_token_ms", "time_per_output_token_ms", "end_to_end_latency_ms"):
        assert {"count", "mean", "std", "min", "p50", "p90", "p99", "max"} <= set(s["latency"][block])
    assert 0 < s["gpu_utilization"] <= 1
    pc = s["prefix_caching"]
    assert {"average_tokens_prefilled", "cross_request_hits", "conversational_hits"} <= set(pc)
    assert "CONVERSATIONAL_MISS_UNEXPECTED_PROMPT" in pc["event_counts"]
    assert pc["conversational_hit_rate"] == pc["conversational_hits"] / s["requests"]["total"]
    csv = pl.read_csv(conv.raw["output"]["requests_csv"])
    assert tuple(csv.columns[:len(LEGACY_CSV_COLUMNS)]) == LEGACY_CSV_COLUMNS
    assert csv["request_id"][:3].to_list() == ["req_0", "req_1", "req_2"]
    assert csv["session_id"][0] == "sess_0" and csv["client_id"][0] == "client_chat_0"
    assert set(csv["status"]) == {"SUCCESS"}
    req = res.requests
    assert np.allclose(csv["ttft_ms"], (req["first_token_s"] - req["admitted_s"]) * 1e3)   # from prefill start
