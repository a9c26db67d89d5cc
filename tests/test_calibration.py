"""Calibration: the fit runs on a slice of the Vidur data, and the catalog reproduces RESULTS.md.

Data (tests/data/README.md): the slice is the bundled ``calibration_slice`` sample, which holds
every row the slice tests read (so the full files would give the same results; the
sample-provenance test checks the cut). The report is reproduced exactly on the full Vidur
files (shared-data layer) and approximately on the bundled ``calibration`` sample, a systematic
1-in-N cut of every profile.
"""

from __future__ import annotations

import dataclasses
import tomllib

import numpy as np
import pytest
from numpy.testing import assert_allclose

from data_sources import SAMPLES, SOURCES, root
from oracle import calibrate as cal
from oracle.catalog import gpu_defaults, load_gpus

RESULTS = cal.REPO_ROOT / "benchmarks" / "RESULTS.md"
SLICE = ["meta-llama/Llama-2-7b-hf"]


#: How far a median error (percentage points) may be from RESULTS.md: the full files give the
#: reported figures to their rounding; the bundled sample (every 32nd (TP, tokens) point of
#: each GEMM profile, every 40th attention shape, every 20th all-reduce size) gives them within
#: 1.1 pp (largest: defaults -> A40 gate+up, 5.65 % vs 6.72 %), so 1.5 pp is its sampling margin.
REPORT_TOLERANCE_PP = {"shared": 0.01, "bundled": 1.5}


@pytest.fixture(scope="module")
def data():
    """Llama-2-7B's A100 and A40 profiles up to 512 tokens (all rows of the full files there)."""
    return SAMPLES / "calibration_slice"


@pytest.fixture(scope="module")
def reported():
    if not RESULTS.exists():
        pytest.fail("benchmarks/RESULTS.md is missing: run python -m oracle.calibrate --results benchmarks/RESULTS.md")
    out = cal.read_results_json(RESULTS.read_text())
    assert out is not None, "no calibration-json comment in benchmarks/RESULTS.md"
    return out


def test_fit_on_a_slice_recovers_sane_factors_with_the_kernel_formula(data):
    df = cal.load_mlp(data, "a100", models=SLICE, max_tokens=512)
    assert set(df["model"].unique()) == set(SLICE) and df["num_tokens"].max() <= 512
    # deduplicated: one row per (shape, tokens, tp)
    assert df.select(["num_tokens", "tp"]).is_unique().all()
    gd = cal.gemm_data(df)
    gpu = load_gpus()["a100-80g"]
    f = cal.fit_gemm(gd, gpu)
    assert 0.4 < f["eff_compute"] <= 1 and 0.5 < f["eff_memory"] <= 1
    assert 0 <= f["roofline_overlap"] <= 1 and 0 <= f["kernel_overhead_s"] < 3e-5
    fitted = dataclasses.replace(gpu, **f)
    pred = cal.predict_gemm(gd, fitted)                      # through the cost kernel
    numpy_pred = cal.roofline_s(gd.flops, gd.nbytes, gpu.peak_tflops_bf16 * 1e12 * f["eff_compute"],
                                gpu.mem_bw_gbps * 1e9 * f["eff_memory"], f["roofline_overlap"],
                                f["kernel_overhead_s"])      # what the fit minimised
    assert_allclose(pred, numpy_pred, rtol=1e-12)
    assert cal.error_stats(pred, gd.measured_s)["median_pct"] < 10
    # a bad factor set is clearly worse than the fit
    worse = dataclasses.replace(fitted, eff_memory=fitted.eff_memory / 2)
    assert cal.error_stats(cal.predict_gemm(gd, worse), gd.measured_s)["median_pct"] > 30
    rows, meas = cal.small_op_data(df)
    small = cal.fit_small_ops(rows, meas, fitted)
    assert 0.1 < small["eff_elementwise"] <= 1 and 0 <= small["layer_overhead_s"] < 1e-4


def test_script_runs_on_a_slice_and_rewrites_only_its_section(data, tmp_path):
    catalog = tmp_path / "gpus.toml"
    catalog.write_text(cal.GPUS_TOML.read_text())
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Engine speed\n\nkeep me\n\n## Cost-model calibration\n\nold\n\n"
                       "## Later section\n\nkeep me too\n")
    args = [str(data), "--models", *SLICE, "--max-tokens", "256", "--no-attention", "--no-network",
            "--update-catalog", "--catalog", str(catalog), "--results", str(results)]
    assert cal.main(args) == 0
    text = results.read_text()
    assert "keep me\n" in text and "keep me too" in text and "\nold\n" not in text
    assert text.count(cal.RESULTS_HEADING) == 1
    assert text.index("## Engine speed") < text.index(cal.RESULTS_HEADING) < text.index("## Later section")
    summary = cal.read_results_json(text)
    new = tomllib.loads(catalog.read_text())
    for name in ("a100-40g", "a100-80g"):
        for key in ("eff_compute", "eff_memory", "roofline_overlap", "kernel_overhead_s", "eff_elementwise"):
            assert new["gpus"][name][key] == summary["fits"]["a100"][key]
    assert new["gpus"]["h100-sxm"] == tomllib.loads(cal.GPUS_TOML.read_text())["gpus"]["h100-sxm"]
    assert cal.main(args) == 0                     # rerunnable: same result
    assert cal.read_results_json(results.read_text()) == summary


def test_catalog_factors_match_the_report(reported):
    gpus, defaults = load_gpus(), gpu_defaults()
    for dev, names in cal.TARGETS.items():
        for name in names:
            for key in cal.FACTOR_KEYS:
                assert getattr(gpus[name], key) == reported["fits"][dev][key], (name, key)
    for key in cal.FACTOR_KEYS:
        assert defaults[key] == reported["fits"]["defaults"][key], key
    for dev in reported["fits"]:
        if dev not in (*cal.DEVICES, "defaults"):              # GPUs profiled with benchmarks/calibrate.py
            for key in cal.GEMM_KEYS:
                assert getattr(gpus[dev], key) == reported["fits"][dev][key], (dev, key)
    # defaults: GEMM factors are the mean over the profiled GPUs
    profiled = [d for d in reported["fits"] if d != "defaults"]
    for key in cal.GEMM_KEYS:
        assert defaults[key] == pytest.approx(np.mean([reported["fits"][d][key] for d in profiled]), rel=1e-3)


@pytest.mark.parametrize("source", SOURCES)
def test_catalog_reproduces_reported_gemm_errors(source, reported):
    data, tol = root(source) / "calibration", REPORT_TOLERANCE_PP[source]
    gpus = load_gpus()
    sets = {dev: (cal.gemm_data(cal.load_mlp(data, dev)), gpus[gpu]) for dev, gpu in cal.DEVICES.items()}
    factors = {"a100": gpus["a100-80g"], "a40": gpus["a40"], "defaults": None}
    for fit, spec in factors.items():
        for dev, (gd, base) in sets.items():
            source = reported["fits"][fit] if spec is None else {k: getattr(spec, k) for k in cal.GEMM_KEYS}
            gpu = dataclasses.replace(base, **{k: source[k] for k in cal.GEMM_KEYS})
            pred = cal.predict_gemm(gd, gpu)
            for op, want in reported["gemm_median_pct"][f"{fit}->{dev}"].items():
                m = slice(None) if op == "all" else gd.op == op
                got = cal.error_stats(pred[m], gd.measured_s[m])["median_pct"]
                assert got == pytest.approx(want, abs=tol), (fit, dev, op)
    # held out across GPUs: within the 10 % target up to the reported 0.1 pp miss
    held_out = [v for k in ("a100->a40", "a40->a100") for op, v in reported["gemm_median_pct"][k].items()]
    assert max(held_out) < 10.5


@pytest.mark.parametrize("source", SOURCES)
def test_catalog_reproduces_attention_network_and_small_op_errors(source, reported):
    data, tol = root(source) / "calibration", REPORT_TOLERANCE_PP[source]
    a100 = load_gpus()["a100-80g"]
    att = cal.load_attention(data)
    pred, meas = cal.predict_attention(att, a100), att["measured_s"].to_numpy()
    pre = att["is_prefill"].to_numpy()
    for name, m in (("prefill", pre), ("decode", ~pre)):
        got = cal.error_stats(pred[m], meas[m])["median_pct"]
        assert got == pytest.approx(reported["attention_median_pct"][name], abs=tol), name
    net = cal.load_network(data)
    pred, n = cal.predict_network(net, a100), net["num_workers"].to_numpy()
    for k in (2, 4, 8):
        got = cal.error_stats(pred[n == k], net["measured_s"].to_numpy()[n == k])["median_pct"]
        assert got == pytest.approx(reported["network_median_pct"][f"all_reduce_{k}gpu"], abs=tol), k
    for dev, gpu in cal.DEVICES.items():
        rows, meas = cal.small_op_data(cal.load_mlp(data, dev, models=None))
        got = cal.error_stats(cal.predict_small_ops(rows, load_gpus()[gpu]), meas)["median_pct"]
        assert got == pytest.approx(reported["small_ops_median_pct"][dev], abs=tol), dev
