"""Scenario parsing and validation: good files load, bad files give exit 1 + file + key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from oracle.cli import build_app
from oracle.errors import ScenarioError
from oracle.scenario import FrameworkConfig, apply_overrides, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
BAD = Path(__file__).resolve().parent / "data" / "bad_scenarios"

# file stem -> (key path expected in the message, a fragment of the reason)
BAD_CASES = {
    "syntax_error": (None, "TOML syntax error"),
    "unknown_top_key": ("nmae", "did you mean 'name'"),
    "unknown_framework_key": ("frameworks.0.blok_size", "did you mean 'block_size'"),
    "wrong_type_tp": ("frameworks.0.tp", "must be an integer"),
    "negative_rate": ("workload.clients.0.arrival.rate", "must be > 0"),
    "unknown_model": ("model.name", "llama-9-8b"),
    "unknown_gpu": ("hardware.gpu", "h100-sxn"),
    "model_does_not_fit": ("frameworks.0", "does not fit"),
    "block_size_zero": ("frameworks.0.block_size", "must be >= 1"),
    "gpu_memory_utilization_over_one": ("frameworks.0.gpu_memory_utilization", "must be <= 1"),
    "chunked_off_small_budget": ("frameworks.0.max_num_batched_tokens", "enable_chunked_prefill = false"),
    "prompt_longer_than_max_model_len": ("workload.clients", "max_model_len"),
    "empty_client_list": ("workload.clients", "required"),
    "unknown_router": ("frameworks.0.router", "did you mean 'round_robin'"),
    "nan_duration": ("simulation.duration_s", "finite"),
    "missing_model": ("model", "is required"),
    "duplicate_framework_names": ("frameworks.1.name", "duplicate"),
    "missing_trace_file": ("workload.trace.path", "not found"),
    "num_gpu_blocks_not_a_number": ("frameworks.0.num_gpu_blocks", "unlimited"),
    "unknown_distribution": ("workload.clients.0.prompt_tokens.dist", "did you mean 'uniform'"),
    "min_greater_than_max": ("workload.clients.0.prompt_tokens", "min"),
    "no_duration_or_count": ("simulation", "duration_s"),
    "tp_exceeds_heads": ("frameworks.0.tp", "heads"),
    "negative_seed": ("seed", "must be >= 0"),
    "bad_output_format": ("output.format", "xlsx"),
    "zero_replicas": ("frameworks.0.replicas", "must be >= 1"),
    "bool_as_int": ("frameworks.0.max_num_seqs", "must be an integer"),
    "negative_warm_up": ("simulation.warm_up_s", "must be >= 0"),
    "unmodelled_vllm_option": ("frameworks.0.long_prefill_token_threshold", "not modelled"),
    "spec_without_method": ("frameworks.0.speculative.num_speculative_tokens", "needs a method"),
    "lora_without_enable_lora": ("frameworks.0.enable_lora", "set enable_lora = true"),
}


def test_every_bad_file_has_an_expectation():
    assert {p.stem for p in BAD.glob("*.toml")} == set(BAD_CASES)
    assert len(BAD_CASES) >= 15


@pytest.mark.parametrize("stem", sorted(BAD_CASES))
def test_bad_scenario_is_one_line_exit_1(stem, tmp_path, monkeypatch):
    monkeypatch.delenv("ORACLE_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    path = BAD / f"{stem}.toml"
    key, fragment = BAD_CASES[stem]
    result = CliRunner().invoke(build_app(), ["validate", str(path)])
    assert result.exit_code == 1, result.output
    msg = result.output.strip()
    assert len(msg.splitlines()) == 1, msg
    assert "Traceback" not in msg
    assert str(path) in msg, msg
    if key is not None:
        assert f"{key}:" in msg or f"{key} " in msg or msg.count(key), msg
    assert fragment in msg, msg
    # `simulate` refuses the same file the same way and writes nothing
    result = CliRunner().invoke(build_app(), ["simulate", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1, result.output
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.toml")) + sorted((ROOT / "scenarios").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_bundled_scenarios_validate(path):
    """`oracle validate scenarios/*` passes: scenarios, sweep files (every point) and old configs."""
    result = CliRunner().invoke(build_app(), ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok:")


def test_defaults_follow_vllm():
    sc = load_scenario(ROOT / "scenarios" / "quickstart.toml")
    fw = FrameworkConfig()
    assert (fw.block_size, fw.max_num_seqs, fw.max_num_batched_tokens) == (16, 256, 8192)
    assert fw.gpu_memory_utilization == 0.9
    assert fw.enable_chunked_prefill and fw.enable_prefix_caching
    assert fw.scheduler_reserve_full_isl  # vLLM 0.33 SchedulerConfig default
    assert sc.frameworks[0].max_model_len == sc.model.max_context


def test_overrides_by_dotted_path():
    raw = {"frameworks": [{"name": "a", "replicas": 1}], "workload": {"clients": [{"arrival": {"rate": 1.0}}]}}
    out = apply_overrides(raw, {"frameworks.0.replicas": 4, "workload.clients.0.arrival.rate": 8.0,
                                "hardware.gpu": "h200"})
    assert out["frameworks"][0]["replicas"] == 4
    assert out["workload"]["clients"][0]["arrival"]["rate"] == 8.0
    assert out["hardware"] == {"gpu": "h200"}
    assert raw["frameworks"][0]["replicas"] == 1  # the input is not modified
    with pytest.raises(ScenarioError, match="frameworks.3.replicas"):
        apply_overrides(raw, {"frameworks.3.replicas": 2})


def test_unlimited_and_pinned_blocks():
    base = load_scenario(ROOT / "scenarios" / "quickstart.toml").raw
    raw = apply_overrides(base, {"frameworks.0.num_gpu_blocks": "unlimited"})
    assert scenario_from_dict(raw).frameworks[0].num_gpu_blocks == "unlimited"
    raw = apply_overrides(base, {"frameworks.0.num_gpu_blocks": 1000})
    assert scenario_from_dict(raw).frameworks[0].num_gpu_blocks == 1000


@pytest.mark.parametrize("overrides, expected", [
    ({}, ("bf16", "bf16")),
    ({"model.dtype": "fp8"}, ("fp8", "bf16")),            # vLLM: "auto" KV stays 16-bit for FP8 weights
    ({"model.kv_cache_dtype": "fp8"}, ("bf16", "fp8")),
    ({"frameworks.0.dtype": "fp8"}, ("fp8", "bf16")),
    ({"frameworks.0.kv_cache_dtype": "fp16"}, ("bf16", "fp16")),
])
def test_framework_dtypes_follow_vllm_auto(overrides, expected):
    from oracle.scenario import framework_dtypes, resolve_num_gpu_blocks
    raw = apply_overrides(load_scenario(ROOT / "scenarios" / "quickstart.toml").raw, overrides)
    sc = scenario_from_dict(raw)
    assert framework_dtypes(sc, sc.frameworks[0]) == expected
    blocks = resolve_num_gpu_blocks(sc, sc.frameworks[0])
    assert blocks > 1000 and (expected[1] != "fp8" or blocks > 50_000)  # an fp8 cache holds twice the blocks


def test_scheduler_reserve_full_isl_reaches_the_engine():
    from oracle.api import engine_config
    base = load_scenario(ROOT / "scenarios" / "quickstart.toml").raw
    for value in (True, False):
        sc = scenario_from_dict(apply_overrides(base, {"frameworks.0.scheduler_reserve_full_isl": value}))
        assert sc.frameworks[0].scheduler_reserve_full_isl is value
        assert engine_config(sc, sc.frameworks[0]).scheduler_reserve_full_isl is value


def test_a_framework_may_serve_its_own_model():
    import copy

    import oracle
    from oracle.scenario import resolve_num_gpu_blocks
    base = load_scenario(ROOT / "scenarios" / "quickstart.toml").raw
    base = apply_overrides(base, {"simulation.duration_s": 5.0})
    raw = copy.deepcopy(base)
    raw["frameworks"] = [dict(raw["frameworks"][0], name="own-8b"),
                         dict(raw["frameworks"][0], name="qwen", model="qwen3-8b"),
                         dict(raw["frameworks"][0], name="inline", model={"architecture": {
                             "name": "tiny", "num_layers": 4, "hidden_size": 1024, "num_heads": 8,
                             "intermediate_size": 2048, "vocab_size": 32000, "max_context": 65536}})]
    sc = scenario_from_dict(raw)
    a, b, c = sc.frameworks
    assert a.model is None and sc.model_of(a) is sc.model
    assert sc.model_of(b).name == "qwen3-8b" and sc.model_of(c).name == "tiny"
    assert resolve_num_gpu_blocks(sc, c) > resolve_num_gpu_blocks(sc, a)
    res = oracle.simulate(sc)
    assert [s["config"]["model"] for s in res.summaries.values()] == [sc.model.name, "qwen3-8b", "tiny"]
    assert res.summaries["inline"]["latency"]["time_per_output_token_ms"]["p50"] < \
        res.summaries["own-8b"]["latency"]["time_per_output_token_ms"]["p50"]
    raw["frameworks"][1]["model"] = "qwen-9"
    with pytest.raises(ScenarioError, match="frameworks.1.model"):
        scenario_from_dict(raw)
