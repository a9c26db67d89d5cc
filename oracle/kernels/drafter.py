"""The drafter's share of a step with speculative decoding (README "Speculative decoding").

vLLM runs the drafter after the target's forward pass (``gpu_model_runner`` ->
``propose_draft_token_ids``): one pass over the step's tokens (the drafter keeps its own KV
of every token, like the target), then ``k - 1`` sequential passes of one token for each
sequence that proposes drafts (EAGLE / draft-model proposers). Each pass is priced with the
roofline step kernel on the drafter's own parameters ``dparams`` (a separate draft model, or
one decoder layer of the target plus its LM head for EAGLE / MTP heads; built by
``oracle.cost.build_draft_params``, whose CPU terms are zero: the step's CPU time is the
target's). An n-gram drafter runs on the CPU and has no parameters (empty ``dparams``).
"""

from __future__ import annotations

from oracle.kernels._jit import jit
from oracle.kernels.cost import step_time_s


@jit(inline="always")
def draft_time_s(dparams, k, num_tokens, num_decode, decode_ctx_sum, prefill_attn_units, prefill_ctx_sum,
                 num_propose, propose_ctx_sum):
    """Seconds the drafter adds to a step (0.0 with empty ``dparams``).

    Parameters (all in)
    -------------------
    dparams: float64[::1], the drafter's cost parameters (``oracle.kernels.cost.PARAM_NAMES``), or empty.
    k: draft tokens per proposing sequence.
    num_tokens .. prefill_ctx_sum: the step's aggregates (as for ``step_time_s``).
    num_propose: sequences that propose drafts (they emitted a token this step).
    propose_ctx_sum: Σ their context lengths after the step's tokens.
    """
    if dparams.shape[0] == 0 or num_tokens <= 0:
        return 0.0
    total = step_time_s(dparams, num_tokens, num_propose, num_decode, decode_ctx_sum, prefill_attn_units,
                        prefill_ctx_sum)
    for j in range(1, k):
        total += step_time_s(dparams, num_propose, num_propose, num_propose, propose_ctx_sum + j * num_propose,
                             0.0, 0.0)
    return total
