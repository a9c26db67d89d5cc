"""Speculative decoding as a scenario sees it: the ``speculative`` key of a ``[[frameworks]]``
entry, the vLLM settings it implies, the acceptance model and the drafter's cost parameters.

The engine side is ``oracle/engine/specdec.py`` (semantics: ``oracle/engine/README.md``,
"Speculative decoding").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def _idx(name: str) -> int:
    """Index of a cost parameter (lazy import: ``oracle validate`` parses scenarios without numba)."""
    from oracle.kernels.cost import PARAM_NAMES
    return PARAM_NAMES.index(name)


def _without_cpu(params: np.ndarray) -> np.ndarray:
    """A copy of ``params`` without CPU terms (the step's CPU time is the target's)."""
    out = np.array(params, np.float64, copy=True)
    for name in ("step_overhead_s", "cpu_seq_s", "cpu_overlap"):
        out[_idx(name)] = 0.0
    return out


def draft_head_params(target_params: np.ndarray) -> np.ndarray:
    """Cost parameters of an EAGLE / EAGLE-3 / MTP draft head: one decoder layer of the
    target (EAGLE: "a single transformer decoder layer", Li et al. 2024, arXiv:2401.15077;
    DeepSeek-V3's MTP module: one Transformer block sharing the output head, arXiv:2412.19437
    §2.2) and the target's LM head, on the target's GPUs; no pipeline hand-offs, no CPU terms."""
    out = _without_cpu(target_params)
    num_layers = out[_idx("num_layers")]
    # every per-layer count becomes that of one average layer of the target (a dense model:
    # one layer with its MLP; an MoE model: its mix of MoE and dense MLPs, all-to-alls, windows)
    for name in ("allreduce_calls", "mlp_layers", "dense_layers", "a2a_calls", "window_layers"):
        out[_idx(name)] = out[_idx(name)] / num_layers if num_layers else 0.0
    out[_idx("num_layers")] = 1.0
    out[_idx("pp_handoffs")] = 0.0
    return out


# ------------------------------------------------------------------------------ config
#: methods (vLLM ``SpeculativeConfig.method`` names) -> (lookahead slots = k?, budget slots per
#: request): vLLM 0.33.0 ``VllmConfig.num_lookahead_tokens`` (k for EAGLE-family and draft-model
#: proposers, 0 for n-gram) and ``SpeculativeConfig.max_num_new_slots_for_drafting`` (1 for a
#: draft model, 0 otherwise; non-parallel drafting).
METHODS = {
    "draft_model": (True, 1),
    "eagle": (True, 0),
    "eagle3": (True, 0),
    "mtp": (True, 0),
    "ngram": (False, 0),
}

#: Default acceptance of a method when the scenario gives none: (rate, source). Only methods
#: with a published figure have one; the others need ``acceptance`` or ``acceptance_rate``.
DEFAULT_ACCEPTANCE = {
    "mtp": (0.85, "DeepSeek-V3 technical report (arXiv:2412.19437) §5.4.3: the acceptance rate of the "
                  "second-token (MTP) prediction is 85%-90% across generation topics; the lower end, "
                  "as a geometric rate for k > 1 (an extrapolation: only k = 1 is published)"),
}

#: Largest ``num_speculative_tokens`` (the accepted-length table is int8).
MAX_SPEC_TOKENS = 32


@dataclass(frozen=True)
class SpecConfig:
    """A framework's ``[frameworks.speculative]`` table, validated."""

    method: str                       # one of METHODS
    num_speculative_tokens: int       # k
    acceptance: tuple[float, ...]     # per-position acceptance rates (vLLM's metric), non-increasing
    acceptance_source: str = "scenario"  # where the rates come from
    draft_model: Any = None           # ModelSpec of the draft model (method "draft_model")

    @property
    def num_lookahead_tokens(self) -> int:
        return self.num_speculative_tokens if METHODS[self.method][0] else 0

    @property
    def draft_slots(self) -> int:
        return METHODS[self.method][1]

    @property
    def mean_accepted_per_verification(self) -> float:
        """Expected drafts accepted by a full verification: Σ rate_i."""
        return float(sum(self.acceptance))


def parse_speculative(t, target) -> SpecConfig | None:
    """``[frameworks.N.speculative]`` (a :class:`oracle._config.Table`) -> SpecConfig.

    ``target``: the framework's ModelSpec (None when it has a problem: the draft checks that
    need it are skipped). Errors name the key: ``num_speculative_tokens`` without a method, a
    method without ``num_speculative_tokens``, a draft model missing (or given to another
    method, or with another vocabulary than the target's: vLLM
    ``verify_equal_vocab_size_if_draft_model``), acceptance rates not in (0, 1], increasing,
    of the wrong length, or both forms given."""
    from oracle.catalog import get_model  # lazy: the catalog loads TOML files

    if not t.has("method"):
        what = "num_speculative_tokens" if t.has("num_speculative_tokens") else None
        t.report(what, "speculative decoding needs a method: one of " + ", ".join(METHODS), required=True)
    method = t.str("method", choices=METHODS)
    if not t.has("num_speculative_tokens"):
        t.report("num_speculative_tokens", f"is required with method = {method!r} (the draft tokens per step, "
                                           f"k >= 1)", required=True)
    k = t.int("num_speculative_tokens", lo=1, hi=MAX_SPEC_TOKENS)
    draft = None
    if method == "draft_model":
        if not t.has("draft_model"):
            t.report("draft_model", "is required with method = \"draft_model\" (a catalog model name)",
                     required=True)
        draft = get_model(t.str("draft_model"), key=t.key("draft_model"))
        if target is not None and draft.vocab_size != target.vocab_size:
            t.report("draft_model", f"{draft.name!r} has vocab_size {draft.vocab_size}, the target "
                                    f"{target.name!r} {target.vocab_size}: vLLM needs the same vocabulary "
                                    f"for a draft model")
    elif t.has("draft_model"):
        t.report("draft_model", f"is only for method = \"draft_model\", not {method!r}")
    rates, source = _acceptance(t, method, k)
    t.done()
    return SpecConfig(method=method, num_speculative_tokens=k, acceptance=rates, acceptance_source=source,
                      draft_model=draft)


def _acceptance(t, method: str, k: int) -> tuple[tuple[float, ...], str]:
    """The k per-position rates: ``acceptance = [...]``, ``acceptance_rate = a`` (geometric:
    rate_i = a^i), or the method's published default."""
    if t.has("acceptance") and t.has("acceptance_rate"):
        t.report("acceptance_rate", "give either acceptance (per-position rates) or acceptance_rate, not both",
                 required=True)
    if t.has("acceptance"):
        v = t.any("acceptance")
        if not isinstance(v, list) or len(v) != k or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and 0.0 < x <= 1.0 for x in v):
            t.report("acceptance", f"must be a list of {k} rates in (0, 1] (one per draft position; "
                                   f"num_speculative_tokens = {k}), got {v!r}", required=True)
        if any(b > a for a, b in zip(v, v[1:])):
            t.report("acceptance", f"per-position acceptance rates cannot increase (draft i+1 is only accepted "
                                   f"with draft i), got {v!r}", required=True)
        return tuple(float(x) for x in v), "scenario"
    if t.has("acceptance_rate"):
        a = t.float("acceptance_rate", lo=0.0, hi=1.0, lo_open=True)
        return tuple(a ** (i + 1) for i in range(k)), "scenario (geometric)"
    if method not in DEFAULT_ACCEPTANCE:
        t.report("acceptance", f"is required with method = {method!r}: give acceptance = [per-position rates] "
                               f"or acceptance_rate = a (no published default for {method!r}; acceptance "
                               f"depends on the model pair and the workload)", required=True)
    a, source = DEFAULT_ACCEPTANCE[method]
    return tuple(a ** (i + 1) for i in range(k)), source


def check_budget(t, spec: SpecConfig, max_num_batched_tokens: int, max_model_len: int | None,
                 chunked: bool) -> None:
    """The token budget must fit a verification (1 + k tokens plus the draft slots; else the
    engine could never schedule a padded admission), and without chunked prefill a whole
    prompt plus the draft slots."""
    need = 1 + spec.num_speculative_tokens + spec.draft_slots
    if max_num_batched_tokens < need:
        t.report("max_num_batched_tokens", f"must be >= {need} with speculative decoding (1 + "
                                           f"num_speculative_tokens + {spec.draft_slots} draft slot(s)), "
                                           f"got {max_num_batched_tokens}")
    if not chunked and max_model_len is not None and max_num_batched_tokens < max_model_len + spec.draft_slots:
        t.report("max_num_batched_tokens", f"must be >= max_model_len + {spec.draft_slots} with method "
                                           f"{spec.method!r} and enable_chunked_prefill = false")


def draft_params(spec: SpecConfig | None, target_params: np.ndarray, gpu, *, tp: int, dtype: str,
                 framework=None) -> np.ndarray | None:
    """The drafter's cost parameters: a draft model's own (on the target's GPUs, same tp and
    dtype), a head's (:func:`draft_head_params`), or None (n-gram: a CPU drafter, free)."""
    if spec is None or spec.method == "ngram":
        return None
    if spec.method == "draft_model":
        from oracle.cost import build_cost_params  # lazy: numba
        return _without_cpu(build_cost_params(spec.draft_model, gpu, tp=min(tp, spec.draft_model.num_heads),
                                              dtype=dtype, framework=framework))
    return draft_head_params(target_params)


def engine_fields(spec: SpecConfig | None, seed: int) -> dict:
    """The ``EngineConfig`` fields of speculative decoding (empty dict: off)."""
    if spec is None:
        return {}
    return dict(num_speculative_tokens=spec.num_speculative_tokens,
                spec_num_lookahead_tokens=spec.num_lookahead_tokens, spec_draft_slots=spec.draft_slots,
                spec_acceptance=spec.acceptance, spec_seed=int(seed))


def spec_step_cost(model, gpu, *, method: str, k: int, decode_batch: int, decode_context: int,
                   draft_model=None, acceptance: tuple[float, ...] | None = None, tp: int = 1, pp: int = 1,
                   dtype: str = "bf16", kv_dtype: str | None = None, framework=None,
                   max_num_seqs: int | None = None, scheduler_overhead_s: float | None = None) -> dict[str, Any]:
    """``oracle cost`` with speculative decoding: one step of ``decode_batch`` sequences of
    ``decode_context`` tokens that each verify ``k`` drafts (README "Speculative decoding":
    the target sees 1 + k query tokens per sequence, priced as a chunk after the context,
    LM head on each of them), the drafter's time, and the plain decode step for comparison.
    With ``acceptance`` (per-position rates): the expected tokens per sequence and step
    (1 + Σ rate_i, for a verification of all k drafts) and the time per output token."""
    from oracle.cost import build_cost_params, step_aggregates, step_time  # lazy: numba
    from oracle.kernels.cost import step_time_s
    from oracle.kernels.drafter import draft_time_s

    params = build_cost_params(model, gpu, tp=tp, pp=pp, dtype=dtype, kv_dtype=kv_dtype, framework=framework,
                               max_num_seqs=max_num_seqs, scheduler_overhead_s=scheduler_overhead_s)
    b, c, q = decode_batch, decode_context, k + 1
    plain_s = step_time(params, step_aggregates(decode_contexts=[c] * b))
    units, prefill_ctx = b * q * (c + (q + 1) / 2.0), float(b * c)
    verify_s = float(step_time_s(params, b * q, b * q, 0, 0.0, units, prefill_ctx))
    spec = SpecConfig(method=method, num_speculative_tokens=k, acceptance=acceptance or (), draft_model=draft_model)
    dparams = draft_params(spec, params, gpu, tp=tp, dtype=dtype, framework=framework)
    draft_s = 0.0 if dparams is None else float(
        draft_time_s(dparams, k, b * q, 0, 0.0, units, prefill_ctx, b, float(b * (c + q))))
    out = {"method": method, "num_speculative_tokens": k, "draft_model": getattr(draft_model, "name", None),
           "verify_ms": verify_s * 1e3, "draft_ms": draft_s * 1e3, "step_ms": (verify_s + draft_s) * 1e3,
           "plain_decode_step_ms": plain_s * 1e3}
    if acceptance:
        tokens = 1.0 + float(sum(acceptance))
        out["expected_tokens_per_sequence"] = tokens
        out["ms_per_output_token"] = out["step_ms"] / tokens
        out["plain_ms_per_output_token"] = out["plain_decode_step_ms"]
        out["speedup"] = out["plain_decode_step_ms"] / out["ms_per_output_token"] if out["step_ms"] else 0.0
    return out
