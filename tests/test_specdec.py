"""Speculative decoding: the scenario table and its errors, the accepted-length model, the
drafter's cost, a hand-worked engine case, and the summary / report / ``oracle cost`` output.
(Differential and property tests: tests/test_engine_diff.py, tests/test_engine_invariants.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from engine_cases import ReqSpec, build_inputs, cost_model, draft_step_time_fn_for, head_draft_params, step_time_fn_for
from reference.engine import run_reference
from typer.testing import CliRunner

from oracle.cli import build_app
from oracle.engine.inputs import EngineConfig
from oracle.engine.specdec import accepted_table, verification_uniforms
from oracle.errors import ScenarioError
from oracle.scenario import scenario_from_dict
from oracle.specdec import DEFAULT_ACCEPTANCE, draft_head_params, spec_step_cost

run_engine = pytest.importorskip("oracle.engine.loop").run_engine


def _scenario(speculative=None, model="llama-3.1-8b", **fw) -> dict:
    fw = {"name": "f", **fw}
    if speculative is not None:
        fw["speculative"] = speculative
    return {"name": "s", "seed": 3, "simulation": {"num_requests": 40}, "model": {"name": model},
            "hardware": {"gpu": "h100-sxm"},
            "workload": {"clients": [{"name": "c", "arrival": {"process": "poisson", "rate": 20.0},
                                      "prompt_tokens": {"dist": "uniform", "min": 10, "max": 200},
                                      "output_tokens": {"dist": "uniform", "min": 1, "max": 80}}]},
            "frameworks": [fw]}


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("spec, kw, key, fragment", [
    ({"num_speculative_tokens": 3}, {}, "frameworks.0.speculative.num_speculative_tokens", "needs a method"),
    ({"method": "eagle3", "acceptance_rate": 0.7}, {}, "frameworks.0.speculative.num_speculative_tokens",
     "is required"),
    ({"method": "eagle3", "num_speculative_tokens": 0, "acceptance_rate": 0.7}, {},
     "frameworks.0.speculative.num_speculative_tokens", ">= 1"),
    ({"method": "medusa", "num_speculative_tokens": 2}, {}, "frameworks.0.speculative.method", "unknown value"),
    ({"method": "draft_model", "num_speculative_tokens": 2, "acceptance_rate": 0.7}, {},
     "frameworks.0.speculative.draft_model", "is required"),
    ({"method": "draft_model", "draft_model": "qwen2.5-7b", "num_speculative_tokens": 2, "acceptance_rate": 0.7},
     {}, "frameworks.0.speculative.draft_model", "same vocabulary"),
    ({"method": "eagle", "draft_model": "llama-3.1-8b", "num_speculative_tokens": 2, "acceptance_rate": 0.7},
     {}, "frameworks.0.speculative.draft_model", "only for method"),
    ({"method": "eagle", "num_speculative_tokens": 2, "acceptance": [0.8]}, {},
     "frameworks.0.speculative.acceptance", "list of 2 rates"),
    ({"method": "eagle", "num_speculative_tokens": 2, "acceptance": [0.5, 0.8]}, {},
     "frameworks.0.speculative.acceptance", "cannot increase"),
    ({"method": "eagle", "num_speculative_tokens": 2, "acceptance": [0.8, 0.0]}, {},
     "frameworks.0.speculative.acceptance", "(0, 1]"),
    ({"method": "eagle", "num_speculative_tokens": 2, "acceptance": [0.8, 0.5], "acceptance_rate": 0.7}, {},
     "frameworks.0.speculative.acceptance_rate", "not both"),
    ({"method": "ngram", "num_speculative_tokens": 2}, {}, "frameworks.0.speculative.acceptance",
     "no published default"),
    ({"method": "mtp", "num_speculative_tokens": 2, "acceptnce_rate": 0.7}, {},
     "frameworks.0.speculative.acceptnce_rate", "did you mean"),
    ({"method": "ngram", "num_speculative_tokens": 4, "acceptance_rate": 0.5}, {"max_num_batched_tokens": 4},
     "frameworks.0.max_num_batched_tokens", ">= 5"),
    (None, {"num_speculative_tokens": 3}, "frameworks.0.num_speculative_tokens", "[frameworks.speculative]"),
])
def test_bad_speculative_tables(spec, kw, key, fragment):
    with pytest.raises(ScenarioError) as exc:
        scenario_from_dict(_scenario(spec, **kw))
    assert key in str(exc.value) and fragment in str(exc.value), str(exc.value)


def test_speculative_table_defaults_and_vllm_settings():
    fw = scenario_from_dict(_scenario({"method": "mtp", "num_speculative_tokens": 2})).frameworks[0]
    s = fw.speculative
    assert s.acceptance == pytest.approx((0.85, 0.85 ** 2)) and "2412.19437" in s.acceptance_source
    assert (s.num_lookahead_tokens, s.draft_slots) == (2, 0)
    fw = scenario_from_dict(_scenario({"method": "draft_model", "draft_model": "llama-3.1-8b",
                                       "num_speculative_tokens": 4, "acceptance": [0.9, 0.7, 0.5, 0.5]},
                                      model="llama-3.1-70b", tp=4)).frameworks[0]
    assert (fw.speculative.num_lookahead_tokens, fw.speculative.draft_slots) == (4, 1)
    fw = scenario_from_dict(_scenario({"method": "ngram", "num_speculative_tokens": 3,
                                       "acceptance_rate": 0.5})).frameworks[0]
    assert fw.speculative.acceptance == pytest.approx((0.5, 0.25, 0.125))
    assert (fw.speculative.num_lookahead_tokens, fw.speculative.draft_slots) == (0, 0)
    assert scenario_from_dict(_scenario()).frameworks[0].speculative is None
    assert set(DEFAULT_ACCEPTANCE) == {"mtp"}


# ------------------------------------------------------------------------------ acceptance
def test_accepted_table_is_a_function_of_seed_request_and_position():
    out = np.array([5, 300, 1, 40], np.int32)
    rates = (0.9, 0.6, 0.3)
    off, acc = accepted_table(out, rates, seed=11)
    assert off.tolist() == [0, 5, 305, 306] and acc.shape == (346,) and acc.dtype == np.int8
    off2, acc2 = accepted_table(out, rates, seed=11)
    np.testing.assert_array_equal(acc, acc2)
    # request 1's entries do not depend on the other requests
    _, alone = accepted_table(np.array([0, 300], np.int32), rates, seed=11)
    np.testing.assert_array_equal(alone, acc[5:305])
    assert not np.array_equal(accepted_table(out, rates, seed=12)[1], acc)
    # accepted = #{i: u < rate_i} with the same uniforms
    u = verification_uniforms(11, np.repeat(np.arange(4), out), np.concatenate([np.arange(n) for n in out]))
    np.testing.assert_array_equal(acc, (u[:, None] < np.array(rates)).sum(1))
    assert np.all(accepted_table(out, (1.0, 1.0), seed=0)[1] == 2)


def test_accepted_lengths_follow_the_per_position_rates():
    rates = (0.8, 0.55, 0.3, 0.1)
    _, acc = accepted_table(np.array([200_000], np.int32), rates, seed=5)
    for i, r in enumerate(rates):  # P(accepted >= i + 1) = rate_i; 200k draws: sd < 0.0012
        assert abs(np.mean(acc >= i + 1) - r) < 0.006
    assert abs(acc.mean() - sum(rates)) < 0.01


# ------------------------------------------------------------------------------ cost
def test_draft_head_is_one_layer_without_cpu_terms():
    from oracle.cost import params_to_dict
    target = params_to_dict(cost_model()[0])
    head = params_to_dict(draft_head_params(cost_model()[0]))
    assert head["num_layers"] == 1.0 and target["num_layers"] == 32.0
    assert head["step_overhead_s"] == head["cpu_seq_s"] == head["cpu_overlap"] == 0.0
    assert head["lm_weight_bytes"] == target["lm_weight_bytes"]
    assert head["qkv_weight_bytes"] == target["qkv_weight_bytes"]


def test_spec_step_cost_by_hand():
    """Verification = a chunk of k + 1 queries after the context per sequence (LM head on each);
    drafter = a pass over those tokens + (k - 1) one-token passes per sequence."""
    from oracle.catalog import get_gpu, get_model
    from oracle.kernels.cost import step_time_s
    params = cost_model()[0]
    b, c, k = 8, 1000, 3
    res = spec_step_cost(get_model("llama-3.1-8b"), get_gpu("h100-sxm"), method="eagle3", k=k, decode_batch=b,
                         decode_context=c, acceptance=(0.8, 0.6, 0.4))
    q = k + 1
    verify = step_time_s(params, b * q, b * q, 0, 0.0, b * q * (c + (q + 1) / 2), b * c)
    head = draft_head_params(params)
    draft = step_time_s(head, b * q, b, 0, 0.0, b * q * (c + (q + 1) / 2), b * c)
    draft += sum(step_time_s(head, b, b, b, b * (c + q) + j * b, 0.0, 0.0) for j in range(1, k))
    assert res["verify_ms"] == pytest.approx(verify * 1e3, rel=1e-12)
    assert res["draft_ms"] == pytest.approx(draft * 1e3, rel=1e-12)
    assert res["expected_tokens_per_sequence"] == pytest.approx(2.8)
    assert res["ms_per_output_token"] == pytest.approx((verify + draft) * 1e3 / 2.8)
    assert 0 < res["draft_ms"] < res["verify_ms"] and res["plain_decode_step_ms"] < res["verify_ms"]
    ngram = spec_step_cost(get_model("llama-3.1-8b"), get_gpu("h100-sxm"), method="ngram", k=k, decode_batch=b,
                           decode_context=c)
    assert ngram["draft_ms"] == 0.0 and "speedup" not in ngram


def test_oracle_cost_spec_terms_and_errors():
    app = build_app()
    r = CliRunner().invoke(app, ["cost", "-m", "llama-3.1-70b", "-g", "h100-sxm", "--tp", "4", "--decode-batch", "16",
                                 "--spec-method", "draft_model", "--draft-model", "llama-3.1-8b", "-k", "4",
                                 "--acceptance-rate", "0.7", "--json"])
    assert r.exit_code == 0, r.output
    spec = json.loads(r.output)["speculative"]
    assert spec["draft_model"] == "llama-3.1-8b" and spec["draft_ms"] > 0 and spec["verify_ms"] > 0
    r = CliRunner().invoke(app, ["cost", "-m", "llama-3.1-8b", "-g", "h100-sxm", "--decode-batch", "4",
                                 "--spec-method", "eagle", "-k", "2"])
    assert r.exit_code == 0 and "Speculative decoding (eagle, k = 2)" in r.output.replace("\n", " "), r.output
    for args, fragment in ((["--decode-batch", "4", "-k", "2"], "needs a method"),
                           (["--decode-batch", "4", "--spec-method", "draft_model", "-k", "2"], "--draft-model"),
                           (["--prefill-tokens", "10", "--spec-method", "eagle", "-k", "2"], "--decode-batch"),
                           (["--decode-batch", "4", "--spec-method", "draft_model", "-k", "2",
                             "--draft-model", "qwen2.5-7b"], "same vocabulary")):
        r = CliRunner().invoke(app, ["cost", "-m", "llama-3.1-8b", "-g", "h100-sxm", *args])
        assert r.exit_code == 1 and fragment in r.output, r.output


# ------------------------------------------------------------------------------ engine
def _run_both(specs, cfg, draft=None):
    inp = build_inputs(specs, cfg, draft_cost_params=draft)
    ref = run_reference(inp, step_time_fn_for(inp), debug=True, draft_step_time_fn=draft_step_time_fn_for(inp))
    jit = run_engine(inp)
    return inp, ref, jit


def test_hand_worked_single_request():
    """p = 4, o = 7, k = 2, every draft accepted, block size 2, lookahead 2:
    step 1 prefill 4 (emits 1, num_computed 4, blocks cdiv(4 + 2, 2) = 3);
    step 2 verifies 1 + 2 (emits 3: generated 4, num_computed 7, blocks cdiv(7 + 2, 2) = 5);
    step 3 verifies 1 + 2 (emits 3, clipped to the 3 left: done, blocks freed). 10 tokens
    computed, 4 drafts. (The steps table shows the blocks held after each step.)"""
    cfg = EngineConfig(block_size=2, num_speculative_tokens=2, spec_num_lookahead_tokens=2,
                       spec_acceptance=(1.0, 1.0), record_steps=True)
    inp, ref, jit = _run_both([ReqSpec([1, 2, 3, 4], [5, 6, 7, 8, 9, 10, 11])], cfg)
    for out in (ref, jit):
        assert out.num_steps == 3 and out.computed_tokens.tolist() == [10]
        assert (out.spec_drafts, out.spec_accepted, out.spec_verifications) == (4, 4, 2)
        assert out.steps["kv_blocks_used"].tolist() == [3, 5, 0]
        assert out.steps["num_prefill_tokens"].tolist() == [4, 3, 3]
        assert int(out.itl_hist.sum()) == 2  # one gap per step after the first token
    assert inp.max_blocks().tolist() == [8]  # cdiv(min(4 + 7 + 2 + 2, max_model_len), 2)


def test_rejections_roll_back_and_reuse_slots():
    """Nothing accepted (rates tiny, seed fixed): every step emits one token, verifies 1 + k
    tokens, and the rejected slots stay allocated (blocks cover num_computed + 1 + k: 10 + 4,
    11 + 4, 12 + 4, 13 + 4 tokens after steps 2-5)."""
    cfg = EngineConfig(block_size=4, num_speculative_tokens=3, spec_acceptance=(1e-9, 1e-9, 1e-9),
                       record_steps=True)
    _, ref, jit = _run_both([ReqSpec(list(range(10)), list(range(100, 106)))], cfg)
    for out in (ref, jit):
        assert out.num_steps == 6 and out.spec_accepted == 0 and out.spec_drafts == 15
        assert out.computed_tokens.tolist() == [10 + 5 * 4]
        assert out.steps["kv_blocks_used"].tolist() == [3, 4, 4, 4, 5, 0]


def test_same_seed_same_results_and_spec_off_unchanged():
    specs = [ReqSpec(list(range(i, i + 30)), list(range(50)), arrival_s=0.001 * i) for i in range(12)]
    base = EngineConfig(block_size=4, num_gpu_blocks=80, max_num_batched_tokens=64)
    off = run_engine(build_inputs(specs, base))
    on = EngineConfig(**{**base.__dict__, "num_speculative_tokens": 3, "spec_num_lookahead_tokens": 3,
                         "spec_acceptance": (0.7, 0.5, 0.3), "spec_seed": 9})
    a = run_engine(build_inputs(specs, on, draft_cost_params=head_draft_params()))
    b = run_engine(build_inputs(specs, on, draft_cost_params=head_draft_params()))
    np.testing.assert_array_equal(a.completion_s, b.completion_s)
    assert (a.spec_drafts, a.spec_accepted) == (b.spec_drafts, b.spec_accepted) and a.spec_accepted > 0
    assert a.num_steps < off.num_steps and off.spec_drafts == 0
    c = run_engine(build_inputs(specs, EngineConfig(**{**on.__dict__, "spec_seed": 10}),
                                draft_cost_params=head_draft_params()))
    assert c.spec_accepted != a.spec_accepted or not np.array_equal(c.completion_s, a.completion_s)


# ------------------------------------------------------------------------------ summary
def test_summary_and_report_show_spec_decoding():
    import oracle
    from oracle.report.tables import SPEC_ROWS, run_tables
    raw = _scenario({"method": "eagle3", "num_speculative_tokens": 3, "acceptance": [0.8, 0.6, 0.4]})
    raw["frameworks"].insert(0, {"name": "off"})
    res = oracle.simulate(raw)
    on, off = res.frameworks["f"].summary, res.frameworks["off"].summary
    assert "speculative_decoding" not in off
    sd = on["speculative_decoding"]
    assert sd["method"] == "eagle3" and sd["num_draft_tokens"] > 0
    assert sd["acceptance_rate"] == pytest.approx(sd["num_accepted_tokens"] / sd["num_draft_tokens"])
    assert sd["mean_acceptance_length"] == pytest.approx(1 + sd["num_accepted_tokens"] / sd["num_verifications"])
    assert 1.0 < sd["mean_acceptance_length"] <= 4.0
    tables = run_tables(res.summaries)
    spec = [t for t in tables if t.title == "Speculative decoding"]
    assert spec and len(spec[0].rows) == len(SPEC_ROWS)
