"""Original-LLMPerfOracle configs: the TOML writer, the converter, `oracle convert`, and running
old YAML/JSON files directly with the same results as their converted TOML."""

from __future__ import annotations

import json
import math
import shutil
import tomllib
from pathlib import Path

import polars as pl
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

import oracle
from oracle.cli import build_app
from oracle.errors import ScenarioError
from oracle.legacy import convert_file, convert_legacy, load_legacy_scenario, read_legacy
from oracle.legacy import dists as D
from oracle.legacy.toml_writer import dumps, quote
from oracle.legacy.workload import CONTINUE_PROB, MAX_TURNS, turns_weights
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

def test_turns_are_the_truncated_geometric_mixed_with_one_turn():
    c = 0.6
    w = turns_weights(c)
    assert len(w) == MAX_TURNS and math.isclose(sum(w), 1.0)
    q = CONTINUE_PROB
    assert math.isclose(w[0], (1 - c) + c * (1 - q))
    for k in range(2, MAX_TURNS):
        assert math.isclose(w[k - 1], c * q ** (k - 1) * (1 - q))
    assert math.isclose(w[-1], c * q ** (MAX_TURNS - 1))
    assert turns_weights(0.0) == [1.0] + [0.0] * (MAX_TURNS - 1)
    # mean turns of a conversational session: sum of P(T >= k) = sum q**(k-1), k = 1..10
    mean = sum((k + 1) * x for k, x in enumerate(turns_weights(1.0)))
    assert math.isclose(mean, sum(q ** k for k in range(MAX_TURNS)))


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
    assert wl["arrival"] == {"process": "poisson", "rate": 8.0}
    assert [c["share"] for c in wl["clients"]] == [0.25, 0.75]
    # different gap laws: gamma with the mixture's mean and CV
    profs[1]["inter_arrival_time_dist_config"] = {"type": "Constant", "value": 0.5}
    arr = convert_legacy(data).raw["workload"]["arrival"]
    m = 0.25 * (1 / 8) + 0.75 * 0.5
    second = 0.25 * (2 / 64) + 0.75 * 0.25
    assert arr["process"] == "gamma" and math.isclose(arr["rate"], 1 / m)
    assert math.isclose(arr["cv"], math.sqrt(second - m * m) / m)
    profs[0]["inter_arrival_time_dist_config"] = {"type": "Constant", "value": 0.5}
    assert convert_legacy(data).raw["workload"]["arrival"] == {"process": "constant", "rate": 2.0}


def test_framework_and_metrics_mapping():
    data = base()
    conv = convert_legacy(data)
    fw = conv.raw["frameworks"][0]
    assert fw == {"name": "vllm_a100", "type": "vllm", "block_size": 16, "max_num_seqs": 128,
                  "max_num_batched_tokens": 2048, "enable_chunked_prefill": True, "enable_prefix_caching": True,
                  "scheduler_overhead_s": 0.0001}
    assert conv.raw["output"] == {"percentiles": [50, 90, 95, 99], "summary_json": "results/single_gpu_summary.json",
                                  "requests_csv": "results/single_gpu_requests.csv", "format": "csv"}
    assert conv.raw["simulation"] == {"duration_s": 20.0, "warm_up_s": 2.0}
    assert conv.raw["model"] == {"name": "llama-2-7b", "dtype": "fp16"}
    assert conv.raw["hardware"] == {"gpu": "a100-80g"}
    data["metrics_config"]["percentiles_to_calculate"] = [50, 99.9]
    assert convert_legacy(data).raw["output"]["percentiles"] == [50, 99.9]
    data["metrics_config"]["percentiles_to_calculate"] = [0.5, 0.999]
    assert convert_legacy(data).raw["output"]["percentiles"] == [50, 99.9]
    cfg = data["frameworks_to_test"][0]["config"]
    cfg.update(max_num_batched_tokens=8192, enable_chunked_prefill=False, tensor_parallel_size=2,
               pipeline_parallel_size=2, num_replicas=3, load_balancing_strategy="least_loaded")
    fw = convert_legacy(data).raw["frameworks"][0]
    assert (fw["tp"], fw["pp"], fw["replicas"], fw["router"]) == (2, 2, 3, "least_loaded")
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
    "different_targets": (lambda d: d["frameworks_to_test"].append(
        dict(d["frameworks_to_test"][0], name="other",
             config=dict(d["frameworks_to_test"][0]["config"], block_size=32))),
        "frameworks_to_test.1: target frameworks differ in block_size"),
    "different_models": (lambda d: d["frameworks_to_test"].append(
        dict(d["frameworks_to_test"][0], name="other",
             config=dict(d["frameworks_to_test"][0]["config"], model_profile_id="Llama2-13B"))),
        "frameworks_to_test.1.config.model_profile_id: frameworks use different models"),
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
