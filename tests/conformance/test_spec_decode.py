"""vLLM's scheduler with speculative decoding against the engine.

vLLM runs with ``SpeculativeConfig(method="ngram")`` (no lookahead or draft slots) or
``method="draft_model"`` (k lookahead slots, one draft slot per request); the driver
(``vllm_driver``) answers each verification with the engine's own accepted length and feeds
the drafts back through ``Scheduler.update_draft_token_ids``. Every hand-made case runs with
both, and hypothesis-generated workloads of every theme with a random variant; the jitted
engine and the reference must match vLLM exactly (the "Speculative decoding" section of
oracle/engine/README.md).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("vllm", minversion="0.33.0",
                    reason="vLLM not installed (pip install -e '.[conformance]')")

from conformance.harness import check  # noqa: E402
from conformance.test_generated import SLOW  # noqa: E402
from conformance.workloads import hand_made, workloads  # noqa: E402

pytestmark = pytest.mark.usefixtures("vllm_session")

#: name -> (k, lookahead slots, draft slots, per-position acceptance rates)
VARIANTS = {
    "ngram_k3": (3, 0, 0, (0.8, 0.5, 0.3)),
    "draft_model_k2": (2, 2, 1, (0.9, 0.6)),
    "ngram_k1_all": (1, 0, 0, (1.0,)),
}


def with_spec(case, variant: str, seed: int = 0):
    """The case with speculative decoding (the token budget raised where the variant needs it)."""
    k, lookahead, slots, rates = VARIANTS[variant]
    c = case.config
    budget = max(c.max_num_batched_tokens, 1 + k + slots)
    if not c.enable_chunked_prefill:
        budget = max(budget, c.max_model_len + slots)
    cfg = replace(c, num_speculative_tokens=k, spec_num_lookahead_tokens=lookahead, spec_draft_slots=slots,
                  spec_acceptance=rates, spec_seed=seed, max_num_batched_tokens=budget)
    return replace(case, name=f"{case.name}+{variant}", config=cfg, inputs=None)


def _check(case):
    report, kind = check(case)
    if report is not None:
        pytest.fail(f"[{kind}] workload {case.name}: {case.describe()}\n\n{report}", pytrace=False)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("name", list(hand_made()))
def test_hand_made_spec(name, variant):
    _check(with_spec(hand_made()[name], variant, seed=len(name)))


@settings(max_examples=40, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_generated_spec(data):
    case = data.draw(workloads("mixed"), label="case")
    variant = data.draw(st.sampled_from(list(VARIANTS)), label="variant")
    _check(with_spec(case, variant, seed=data.draw(st.integers(0, 2**31), label="seed")))
