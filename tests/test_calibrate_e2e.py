"""`oracle calibrate-e2e`: the end-to-end fit on hand-made runs of two models, and its pieces.

The runs are tiny inference-perf result folders written in tmp (the helpers of
test_replay.py), so a whole fit with leave-one-model-out takes seconds; the real runs in
../shared are fitted by `oracle calibrate-e2e` itself (benchmarks/FIDELITY.md).
"""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest
from typer.testing import CliRunner

from oracle.catalog import FRAMEWORKS_TOML, GPUS_TOML, get_framework, get_gpu
from oracle.cli import build_app
from oracle.replay import calibrate as cal
from test_replay import make_run, stage_doc


def _runs(tmp_path):
    """A Llama-2-7B TP1 run and a Mixtral TP2 run whose measured figures are round numbers."""
    a = make_run(tmp_path / "a", stages=((2.0, 5),), docs=[stage_doc(ok=10, ttft_s=0.03, tpot_msg_s=0.004)])
    b = make_run(tmp_path / "b", stages=((2.0, 5),), model="mistralai/Mixtral-8x7B-v0.1",
                 exp={"model": "mistralai/Mixtral-8x7B-v0.1", "tensor_parallelism": 2, "max_model_len": 4096,
                      "max_num_batched_tokens": 2048, "max_num_seqs": 128},
                 docs=[stage_doc(ok=10, ttft_s=0.06, tpot_msg_s=0.009)])
    b = b.rename(b.parent / "20260301-000000-mixtral-tp2-tiny")
    return [a, b]


def test_nelder_mead_finds_a_box_constrained_minimum():
    f = lambda x: (x[0] - 0.3) ** 2 + 10 * (x[1] - 2.0) ** 2          # noqa: E731
    x, v, n = cal.nelder_mead(f, [0.9, 0.5], [0.2, 0.5], [0.0, 0.0], [1.0, 1.5], max_evals=200, xtol=1e-4)
    assert x == pytest.approx([0.3, 1.5], abs=1e-3) and v == pytest.approx(2.5, abs=1e-4) and n <= 200


def test_set_keys_rewrites_only_the_named_sections():
    text = '# head\n[defaults]\na = 1.0\n\n[gpus.x]\nb = 2.0 # keep? no: replaced\nc = "s"\n\n[gpus.y]\nb = 3.0\n'
    out = cal.set_keys(text, {"gpus.x": {"b": 0.5, "d": 'q"uote'}, "defaults": {"a": 4.0}})
    doc = tomllib.loads(out)
    assert doc["defaults"]["a"] == 4.0 and doc["gpus"]["x"] == {"b": 0.5, "c": "s", "d": 'q"uote'}
    assert doc["gpus"]["y"] == {"b": 3.0} and out.startswith("# head\n")
    with pytest.raises(cal.ReplayError, match="no section"):
        cal.set_keys(text, {"gpus.z": {"a": 1.0}})


def test_calibrate_fits_reports_lomo_and_writes_the_catalog(tmp_path):
    runs = _runs(tmp_path)
    res = cal.calibrate(runs, gpu="h100-sxm", lomo=True, max_evals=6)
    assert set(res.factors) == {*cal.DEFAULT_FREE, "api_server_s"}
    for k in cal.DEFAULT_FREE:
        lo, hi, _ = cal.STEP_FACTORS[k]
        assert lo <= res.factors[k] <= hi
    assert res.provenance["held"] == {"eff_attn_memory": get_gpu("h100-sxm").eff_attn_memory}
    assert 0.0 <= res.factors["api_server_s"] <= cal.REQUEST_BOUNDS[1]
    assert res.in_sample["medians"]["stages"] == 2
    assert set(res.lomo) == {"llama-2-7b tp1", "mixtral-8x7b tp2", "all held out"}
    assert res.lomo["all held out"]["medians"]["stages"] == 2
    assert res.provenance["fitted_on"] and res.provenance["method"]
    # TTFT moves by api_server_s: the fitted value brings the mean TTFTs close to the measured
    errs = [abs(r["ttft_mean"]["error_pct"]) for r in res.in_sample["stages"]]
    assert max(errs) < 60
    doc = tomllib.loads(cal.to_toml(res))
    assert doc["gpus"]["h100-sxm"]["layer_overhead_s"] == res.factors["layer_overhead_s"]
    assert "eff_attn_memory" not in doc["gpus"]["h100-sxm"]
    assert doc["frameworks"]["vllm"]["api_server_s"] == res.factors["api_server_s"]
    assert "leave-one-model-out" in doc["gpus"]["h100-sxm"]["e2e_calibration_note"]
    gpus, fws = tmp_path / "gpus.toml", tmp_path / "frameworks.toml"
    gpus.write_text(GPUS_TOML.read_text())
    fws.write_text(FRAMEWORKS_TOML.read_text())
    try:
        cal.update_catalog(res, gpus_toml=gpus, frameworks_toml=fws)
    finally:   # the catalog caches were cleared: reload the real files for the other tests
        from oracle import catalog
        for fn in (catalog.load_gpus, catalog.gpu_defaults, catalog.load_frameworks):
            fn.cache_clear()
    new_gpus, old_gpus = tomllib.loads(gpus.read_text()), tomllib.loads(GPUS_TOML.read_text())
    assert new_gpus["gpus"]["h100-sxm"]["custom_ar_latency_s"] == res.factors["custom_ar_latency_s"]
    assert new_gpus["defaults"]["custom_ar_latency_s"] == res.factors["custom_ar_latency_s"]
    assert new_gpus["gpus"]["a100-80g"] == old_gpus["gpus"]["a100-80g"]
    assert tomllib.loads(fws.read_text())["frameworks"]["vllm"]["api_server_s"] == res.factors["api_server_s"]
    assert new_gpus["gpus"]["h100-sxm"]["eff_attn_memory"] == old_gpus["gpus"]["h100-sxm"]["eff_attn_memory"]


def test_cli_writes_the_calibration_file(tmp_path):
    runs = _runs(tmp_path)
    out = tmp_path / "cal.toml"
    res = CliRunner().invoke(build_app(), ["calibrate-e2e", *map(str, runs), "--no-lomo", "--max-evals", "4",
                                           "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    doc = tomllib.loads(out.read_text())
    with_attn = CliRunner().invoke(build_app(), ["calibrate-e2e", *map(str, runs), "--no-lomo", "--max-evals", "5",
                                                 "--fit-attention", "--json"])
    assert with_attn.exit_code == 0, with_attn.output
    import json
    assert "eff_attn_memory" in json.loads(with_attn.stdout)["factors"]
    assert set(doc["gpus"]["h100-sxm"]) == {*cal.DEFAULT_FREE, "e2e_calibration_note"}
    assert math.isfinite(doc["frameworks"]["vllm"]["api_server_s"])
    bad = CliRunner().invoke(build_app(), ["calibrate-e2e", str(tmp_path / "nope")])
    assert bad.exit_code == 1 and "not found" in bad.stderr


def test_runs_with_failures_are_not_fitted_on(tmp_path):
    run = make_run(tmp_path / "c", stages=((2.0, 5),), docs=[stage_doc(ok=8, failed=2)])
    with pytest.raises(cal.ReplayError, match="no run where the server kept up"):
        cal.fit(cal.load_plans([run]), gpu="h100-sxm", max_evals=4)
