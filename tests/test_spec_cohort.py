"""The engine's speculative decode cohort (``oracle/engine/spec_cohort.py``) against the
reference, where it matters: long decodes (many verifications with members not visited,
trajectories walked at the join and replayed at the end), several replicas, follow-ups
released while others decode, block boundaries crossed by uneven accepted lengths, token
budgets and pools that force materializations and preemptions, ``max_model_len`` close
enough that some trajectories are clipped (those requests stay in the exact path), client
timeouts (aborts of members), draft slots and lookahead, and prefix caching on (the exact
path) as well as off (the cohort)."""

from __future__ import annotations

import random

from engine_cases import ReqSpec, add_followup_turns, build_inputs, draft_step_time_fn_for, head_draft_params, step_time_fn_for
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.engine import run_reference
from test_engine_diff import assert_same_outputs

from oracle.engine.inputs import EngineConfig, Router, cdiv
from oracle.engine.loop import run_engine


@st.composite
def long_spec_decodes(draw):
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, 4))
    lookahead = draw(st.sampled_from([0, k]))
    draft_slots = draw(st.integers(0, 1))
    block_size = draw(st.sampled_from([1, 2, 3, 4, 8, 16]))
    specs: list[ReqSpec] = []
    for root in range(draw(st.integers(1, 12))):
        prompt = [rng.randrange(1, 500) for _ in range(draw(st.integers(1, 30)))]
        out = [rng.randrange(1, 500) for _ in range(draw(st.integers(1, 120)))]
        specs.append(ReqSpec(prompt=prompt, output=out, arrival_s=draw(st.integers(0, 40)) * 0.01, session=root))
        add_followup_turns(specs, draw, rng, root, 80)
    longest = max(len(s.tokens) for s in specs)
    max_model_len = longest + draw(st.sampled_from([0, 1, 2, 3, 8, 64]))  # small: clipped trajectories
    need = cdiv(min(longest + k + lookahead, max_model_len), block_size)
    blocks = draw(st.one_of(st.just(-1), st.integers(need + 1, 4 * need + 1)))
    cfg = EngineConfig(num_replicas=draw(st.integers(1, 3)), router=draw(st.sampled_from(list(Router))),
                       block_size=block_size, num_gpu_blocks=blocks,
                       max_num_seqs=draw(st.sampled_from([2, 4, 256])),
                       max_num_batched_tokens=max(draw(st.sampled_from([8, 24, 64, 8192])), 1 + k + draft_slots),
                       max_model_len=max_model_len,
                       enable_prefix_caching=draw(st.booleans()), record_steps=True,
                       warm_up_s=draw(st.sampled_from([0.0, 0.1])),
                       num_speculative_tokens=k, spec_num_lookahead_tokens=lookahead, spec_draft_slots=draft_slots,
                       spec_acceptance=tuple(sorted((draw(st.sampled_from([1.0, 0.9, 0.6, 0.3, 0.05]))
                                                     for _ in range(k)), reverse=True)),
                       spec_seed=draw(st.integers(0, 2**31)))
    if draw(st.booleans()):  # clients that give up while their request waits or decodes
        specs = [ReqSpec(**{**s.__dict__, "timeout_s": draw(st.sampled_from([0.02, 0.1, 0.25, 1.0]))})
                 if draw(st.booleans()) else s for s in specs]
    return build_inputs(specs, cfg, draft_cost_params=head_draft_params() if draw(st.booleans()) else None)


def _compare(inputs):
    ref = run_reference(inputs, step_time_fn_for(inputs), draft_step_time_fn=draft_step_time_fn_for(inputs))
    jit = run_engine(inputs)
    assert_same_outputs(ref, jit)
    return jit


@settings(max_examples=80)
@given(long_spec_decodes())
def test_spec_cohort_matches_reference(inputs):
    _compare(inputs)


def test_spec_cohort_is_used_and_exact_on_long_decodes():
    """Long decodes with an ample pool and budget: almost every verification is taken by a
    member, never materialized; the same run with prefix caching (no cohort) agrees too."""
    specs = [ReqSpec(prompt=list(range(1, 40)), output=list(range(100, 700)), arrival_s=0.0),
             ReqSpec(prompt=list(range(1, 20)), output=list(range(500, 900)), arrival_s=0.05),
             ReqSpec(prompt=list(range(7, 30)), output=list(range(50, 450)), arrival_s=0.08)]
    for caching in (False, True):
        cfg = EngineConfig(block_size=4, num_gpu_blocks=-1, record_steps=True, enable_prefix_caching=caching,
                           num_speculative_tokens=3, spec_num_lookahead_tokens=3,
                           spec_acceptance=(0.8, 0.6, 0.45), spec_seed=5)
        jit = _compare(build_inputs(specs, cfg, draft_cost_params=head_draft_params()))
        steps = jit.diagnostics["cohort_request_steps"] + jit.diagnostics["active_request_steps"]
        assert jit.spec_verifications > 300 and jit.spec_accepted > 0
        if caching:
            assert jit.diagnostics["cohort_request_steps"] == 0
        else:
            assert jit.diagnostics["cohort_request_steps"] > 0.9 * steps
            assert jit.diagnostics["cohort_materializations"] == 0


def test_spec_cohort_materializes_before_a_preemption():
    """A pool too small for all decodes: the cohort is dissolved before the exact step that
    preempts, members rejoin afterwards, and everything matches the reference."""
    specs = [ReqSpec(prompt=list(range(1, 30)), output=list(range(100, 300)), arrival_s=0.01 * i) for i in range(6)]
    cfg = EngineConfig(block_size=4, num_gpu_blocks=120, max_num_batched_tokens=64, record_steps=True,
                       enable_prefix_caching=False, num_speculative_tokens=2, spec_num_lookahead_tokens=2,
                       spec_draft_slots=1, spec_acceptance=(0.9, 0.5), spec_seed=1)
    jit = _compare(build_inputs(specs, cfg))
    assert int(jit.preemptions.sum()) > 0
    assert jit.diagnostics["cohort_materializations"] > 0 and jit.diagnostics["cohort_request_steps"] > 0
