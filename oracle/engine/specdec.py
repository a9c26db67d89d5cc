"""Speculative decoding in the engine (README "Speculative decoding"; vLLM 0.33.0
``Scheduler.schedule`` / ``update_from_output`` with ``spec_token_ids``).

A running request that emitted a token holds ``num_spec`` draft tokens (``k`` =
``num_speculative_tokens``, proposed by the drafter after the step). The next step
schedules its known token plus the drafts (``1 + k`` query tokens, clipped by the token
budget and ``max_model_len``); at the step's end the drafts past the accepted ones are
rejected: ``num_computed -= rejected`` and the request emits ``accepted + 1`` tokens
(clipped by its output length).

How many drafts a verification accepts is a pure function of ``(seed, request id, tokens
generated before the step)`` (:func:`accepted_drafts`, tabulated by :func:`accepted_table`
for the reference): a counter-based hash (splitmix64)
gives one uniform ``u`` per verification, and ``accepted = #{i : u < rate_i}`` for the
per-position acceptance rates ``rate_1 >= rate_2 >= ... >= rate_k`` (vLLM's metric: the
fraction of verifications whose draft i was accepted, so ``P(accepted >= i) = rate_i``). A
verification of ``s < k`` drafts (budget-clipped) accepts ``min(accepted, s)``. The jitted
engine computes it and the reference reads the table, so they see the same accepted lengths, and
the same seed gives the same accepted lengths whatever else runs.

The jitted helpers below are inlined into the scheduler's kernels; they only run with
``cfg.spec_k > 0`` (spec decoding off, the scheduler takes its original branch). Decoding
requests are kept lazily in the speculative cohort (``spec_cohort.py``) where it applies.
"""

from __future__ import annotations

import numpy as np

from oracle.engine.state import Counter
from oracle.kernels._jit import jit
from oracle.kernels.blockpool import cdiv

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (Steele, Lea & Flood 2014) of a uint64 array (wrapping arithmetic)."""
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def verification_uniforms(seed: int, request: np.ndarray, generated: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) of each verification ``(request, generated before it)``: a hash of
    ``(seed, request, generated)``, independent of every other request and of the run."""
    key = (request.astype(np.uint64) << np.uint64(32)) | generated.astype(np.uint64)
    salt = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
    bits = _splitmix64(_splitmix64(key ^ salt))
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def accepted_table(output_tokens: np.ndarray, rates, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets i8[n], accepted i1[sum(output_tokens)])``: ``accepted[offsets[q] + g]`` is the
    number of drafts request q accepts when it verifies ``len(rates)`` drafts with ``g`` output
    tokens generated before the step (``0 <= g < o``). ``rates``: per-position acceptance
    rates, non-increasing in (0, 1]."""
    out = np.ascontiguousarray(output_tokens, np.int64)
    offsets = np.zeros(out.shape[0], np.int64)
    if out.shape[0] > 1:
        np.cumsum(out[:-1], out=offsets[1:])
    acc = np.zeros(int(out.sum()), np.int8)
    _fill_accepted(out, offsets, spec_thresholds(rates), spec_keys(seed), acc)
    return offsets, acc


def spec_keys(seed: int) -> np.ndarray:
    """u8[4] of :func:`accepted_drafts`: the salt of ``seed``, splitmix64's golden ratio and
    its two multipliers (numba types no uint64 literals above 2**63)."""
    salt = _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], np.uint64))[0]
    return np.array([salt, _GOLDEN, _MIX1, _MIX2], np.uint64)


def spec_thresholds(rates) -> np.ndarray:
    """u8[k]: ``ceil(rate * 2**53)`` of each rate, so that for the 53 bits ``m`` of a uniform
    ``u = m / 2**53``, ``u < rate`` exactly when ``m < threshold`` (scaling by a power of two
    is exact, and ``m`` is an integer)."""
    return np.ceil(np.asarray(rates, np.float64) * 9007199254740992.0).astype(np.uint64)


@jit(inline="always")
def uniform_bits(q, g, keys):
    """The 53 bits ``m`` of the uniform ``u = m / 2**53`` of verification ``(q, g)``: the
    arithmetic of :func:`verification_uniforms` (``keys``: :func:`spec_keys`)."""
    return mixed_bits(((np.uint64(q) << np.uint64(32)) | np.uint64(g)) ^ keys[0], keys[1], keys[2], keys[3])


@jit(inline="always")
def mixed_bits(x, golden, mix1, mix2):
    """splitmix64(splitmix64(x)) >> 11 (x: the key xor the salt), with the constants passed
    as scalars so that a loop over keys keeps them in registers (and can be vectorized)."""
    for _ in range(2):
        x = x + golden
        x = (x ^ (x >> np.uint64(30))) * mix1
        x = (x ^ (x >> np.uint64(27))) * mix2
        x = x ^ (x >> np.uint64(31))
    return x >> np.uint64(11)


@jit(inline="always")
def accepted_of_bits(m, thresholds):
    """Drafts accepted by a verification of ``len(thresholds)`` drafts whose uniform has the
    bits ``m`` (``#{i : u < rates[i]}``; ``thresholds``: :func:`spec_thresholds`)."""
    a = 0
    for i in range(thresholds.shape[0]):
        if m < thresholds[i]:
            a += 1
    return a


@jit(inline="always")
def accepted_drafts(q, g, thresholds, keys):
    """Drafts request q accepts when it verifies ``len(thresholds)`` of them with ``g`` output
    tokens generated (the table's entry, computed where the engine needs it)."""
    return accepted_of_bits(uniform_bits(q, g, keys), thresholds)


@jit
def _fill_accepted(out, offsets, thresholds, keys, acc):
    """:func:`accepted_table`'s entries in one pass (no temporaries per output token).

    in: out i8[n] output tokens, offsets i8[n] first entry of each request, thresholds u8[k]
    (:func:`spec_thresholds`), keys u8[4] (:func:`spec_keys`).
    out: acc i1[sum(out)].
    """
    for q in range(out.shape[0]):
        for g in range(out[q]):
            acc[offsets[q] + g] = accepted_drafts(q, g, thresholds, keys)


# ---------------------------------------------------------------------- jitted helpers
@jit(inline="always")
def max_blocks(total, cfg):
    """The most blocks a request of ``total = p + o`` tokens can hold (``EngineInputs.max_blocks``)."""
    if cfg.spec_k > 0:
        total = min(total + cfg.spec_k + cfg.spec_lookahead, cfg.max_model_len)
    return cdiv(total, cfg.block_size)


@jit(inline="always")
def spec_running_tokens(q, known, budget, cfg, rs):
    """``(num_new, need)`` of running request q with ``rs.num_spec[q]`` drafts: its known
    tokens plus drafts, clipped by the budget and so that the input stays below
    ``max_model_len`` (vLLM: ``max_model_len - num_computed - 1``); ``need`` the new blocks
    for them plus ``spec_lookahead`` slots for the drafter (``allocate_slots``)."""
    nc = rs.num_computed[q]
    num_new = min(known + rs.num_spec[q] - nc, budget, cfg.max_model_len - nc - 1)
    return num_new, max(cdiv(min(nc + num_new + cfg.spec_lookahead, cfg.max_model_len), cfg.block_size)
                        - rs.num_blocks[q], 0)


@jit(inline="always")
def spec_scheduled(q, k, known, num_new, cfg, req, rs, sc):
    """Running request q is scheduled (entry ``k`` of the step): its drafts this step
    (``num_computed + num_new - known``), how many the target rejects, and whether it was a
    prefill chunk (no drafts: vLLM ``is_prefill_chunk``). Its drafts are consumed."""
    s = rs.num_computed[q] + num_new - known
    sc.sch_pf[k] = 1 if rs.num_spec[q] == 0 else 0
    sc.sch_draft[k] = 0
    sc.sch_rej[k] = 0
    if rs.num_spec[q] > 0 and s > 0:
        sc.sch_draft[k] = s
        sc.sch_rej[k] = s - min(accepted_drafts(q, rs.generated[q], req.spec_thr, req.spec_keys), s)
    rs.num_spec[q] = 0


@jit(inline="always")
def spec_pad(num_new, hit_tokens, nrun, nb, budget, cfg, sc):
    """vLLM pads an admission of a single token to ``1 + k`` (all padding drafts rejected)
    when no running request scheduled this step is a prefill chunk and something was scheduled
    or the request has computed tokens, if there is room below ``max_model_len``. ``nrun``:
    active running requests scheduled (``sc.sch_pf[:nrun]``), ``nb``: cohort members scheduled
    (verifications, never prefill chunks). Returns ``(num_new, padded, stop)``; stop: the
    padded size exceeds the budget (vLLM stops admitting)."""
    if num_new != 1 or (nrun + nb == 0 and hit_tokens == 0):
        return num_new, False, False
    for j in range(nrun):
        if sc.sch_pf[j] == 1:
            return num_new, False, False
    if hit_tokens + 1 + cfg.spec_k + 1 > cfg.max_model_len:
        return num_new, False, False
    if 1 + cfg.spec_k > budget:
        return num_new, False, True
    return 1 + cfg.spec_k, True, False


@jit(inline="always")
def spec_finish(q, k, known, emitted, cfg, req, rs, sc, counters):
    """End of step for scheduled entry ``k`` (request q, ``num_computed`` already advanced by
    its scheduled tokens; ``known`` its tokens before the step): the rejected drafts are rolled
    back (vLLM ``num_computed_tokens -= num_rejected``), the drafts counted, and a request that
    emits gets ``k`` new drafts. Returns the tokens it emits: accepted + 1, clipped by its
    output length (then, as vLLM's ``_update_request_with_output`` at a stop, ``num_computed``
    drops the tokens cut off)."""
    rej = sc.sch_rej[k]
    d = sc.sch_draft[k]
    if d > 0:
        counters[Counter.SPEC_DRAFTS.value] += d
        counters[Counter.SPEC_ACCEPTED.value] += d - rej
        counters[Counter.SPEC_VERIFICATIONS.value] += 1
    n_emit = rs.num_computed[q] - known + 1 - rej
    rs.num_computed[q] -= rej
    if not emitted:
        return 0
    rs.num_spec[q] = cfg.spec_k
    left = req.output[q] - rs.generated[q]
    if n_emit > left:  # the request stops: vLLM trims num_computed to its tokens but the last
        rs.num_computed[q] -= n_emit - left
        n_emit = left
    return n_emit
