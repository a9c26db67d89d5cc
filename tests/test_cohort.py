"""The engine's lazy decode cohort (``oracle/engine/cohort.py``) against the reference, where it
matters: long decodes (many steps with members not visited), several replicas, follow-ups
released while others decode, block boundaries crossed in every bucket, token budgets that
starve part of the batch, and pools tight enough that the cohort must be materialized before
a preemption."""

from __future__ import annotations

import random

import numpy as np
from engine_cases import ReqSpec, add_followup_turns, build_inputs, step_time_fn_for
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.engine import run_reference
from test_engine_diff import assert_same_outputs

from oracle.engine.inputs import EngineConfig, Router, cdiv
from oracle.engine.loop import run_engine


@st.composite
def long_decodes(draw):
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    num_roots = draw(st.integers(1, 12))
    block_size = draw(st.sampled_from([1, 2, 3, 4, 8, 16]))
    shared = [rng.randrange(1, 50) for _ in range(draw(st.integers(0, 20)))]
    specs: list[ReqSpec] = []
    for root in range(num_roots):
        prompt = shared + [rng.randrange(1, 500) for _ in range(draw(st.integers(1, 30)))]
        out = [rng.randrange(1, 500) for _ in range(draw(st.integers(1, 90)))]
        specs.append(ReqSpec(prompt=prompt, output=out, arrival_s=draw(st.integers(0, 40)) * 0.01,
                             session=root))
        add_followup_turns(specs, draw, rng, root, 60)
    need = max(cdiv(len(s.tokens), block_size) for s in specs)
    blocks = draw(st.one_of(st.just(-1), st.integers(need + 1, 4 * need + 1)))
    cfg = EngineConfig(num_replicas=draw(st.integers(1, 3)), router=draw(st.sampled_from(list(Router))),
                       block_size=block_size, num_gpu_blocks=blocks,
                       max_num_seqs=draw(st.sampled_from([2, 4, 256])),
                       max_num_batched_tokens=draw(st.sampled_from([8, 64, 8192])),
                       max_model_len=max(len(s.tokens) for s in specs) + 8,
                       enable_prefix_caching=draw(st.booleans()), record_steps=True,
                       warm_up_s=draw(st.sampled_from([0.0, 0.1])))
    if draw(st.booleans()):  # clients that give up while their request waits or decodes
        specs = [ReqSpec(**{**s.__dict__, "timeout_s": draw(st.sampled_from([0.02, 0.1, 0.25, 1.0]))})
                 if draw(st.booleans()) else s for s in specs]
    return build_inputs(specs, cfg)


@settings(max_examples=60)
@given(long_decodes())
def test_cohort_matches_reference(inputs):
    ref = run_reference(inputs, step_time_fn_for(inputs))
    jit = run_engine(inputs)
    assert_same_outputs(ref, jit)


def test_cohort_is_used_and_exact_on_a_long_decode():
    specs = [ReqSpec(prompt=list(range(1, 40)), output=list(range(100, 400)), arrival_s=0.0),
             ReqSpec(prompt=list(range(1, 20)), output=list(range(500, 700)), arrival_s=0.05)]
    inputs = build_inputs(specs, EngineConfig(block_size=4, num_gpu_blocks=-1, record_steps=True))
    jit = run_engine(inputs)
    # almost every decode token was taken by a cohort member, and the cohort never had to be
    # dissolved (the pool is unlimited, the budget ample)
    assert jit.diagnostics["cohort_request_steps"] > 450
    assert jit.diagnostics["cohort_materializations"] == 0
    assert_same_outputs(run_reference(inputs, step_time_fn_for(inputs)), jit)
    assert np.all(np.diff(jit.steps["start_s"]) > 0)
