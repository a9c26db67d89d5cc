"""Hypothesis properties of engine outputs, on the reference and on the jitted engine.

Every scenario comes from ``engine_cases.scenarios`` (1-3 replicas, every router, tight /
loose / unlimited pools, chunked prefill and caching on/off, sessions, shared prefixes,
requests over ``max_model_len``). The reference runs in debug mode, so after every step it
also asserts free + used = total, ref_cnt >= 0, no block both free and owned, and a
consistent hash map (``ReferenceEngine.check_invariants``).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from engine_cases import (ReqSpec, Scenario, cost_model, draft_step_time_fn_for, scenarios, step_time_fn_for,
                          time_unit_s)
from hypothesis import given
from reference.engine import ReferenceEngine, run_reference

from oracle.engine.inputs import CacheEvent, EngineConfig, EngineInputs, EngineOutputs, Router, Status

try:
    from oracle.engine.loop import run_engine
except ImportError as exc:  # guard only while the jitted engine's imports are incomplete
    run_engine = None
    _WHY = f"jitted engine not importable: {exc}"
else:
    _WHY = "" if cost_model()[2] else "real cost kernel params not available"


def _run_reference(inputs: EngineInputs) -> EngineOutputs:
    return run_reference(inputs, step_time_fn_for(inputs), debug=True,
                         draft_step_time_fn=draft_step_time_fn_for(inputs))


def _run_jitted(inputs: EngineInputs) -> EngineOutputs:
    return run_engine(inputs)


ENGINES = [
    pytest.param(_run_reference, id="reference"),
    pytest.param(_run_jitted, id="jitted",
                 marks=pytest.mark.skipif(run_engine is None or bool(_WHY), reason=_WHY or "-")),
]


def check_output_invariants(inp: EngineInputs, out: EngineOutputs) -> None:
    cfg = inp.config
    bs = cfg.block_size
    N = inp.resolved_num_gpu_blocks()
    p = inp.prompt_tokens.astype(np.int64)
    o = inp.output_tokens.astype(np.int64)
    n = len(inp)
    status = out.status.astype(int)
    fin = status == Status.FINISHED
    rej = status == Status.REJECTED
    # Every request ends; a request is rejected exactly when it cannot ever fit.
    assert np.all(fin | rej), status
    too_big = (p + o > cfg.max_model_len) | (inp.max_blocks() > N - 1)
    np.testing.assert_array_equal(rej, too_big)
    # Rejected: no replica, no timestamps but the arrival, no event, nothing computed.
    assert np.all(out.replica[rej] == -1)
    for col in (out.admitted_s, out.first_token_s, out.completion_s, out.max_itl_s):
        assert np.all(np.isnan(col[rej]))
    assert np.all(out.cache_event[rej] == CacheEvent.NONE)
    assert np.all(out.computed_tokens[rej] == 0) and np.all(out.cached_tokens[rej] == 0)
    # Finished: timestamps ordered, replica valid.
    assert np.all((out.replica[fin] >= 0) & (out.replica[fin] < cfg.num_replicas))
    a, ad, ft, c = (out.arrival_s[fin], out.admitted_s[fin], out.first_token_s[fin],
                    out.completion_s[fin])
    assert np.all(np.isfinite(c))
    assert np.all(a <= ad) and np.all(ad <= ft) and np.all(ft <= c)
    assert np.all(np.isfinite(out.arrival_s))
    # Follow-ups arrive think_s after their parent ends (completion, or arrival if rejected).
    for i in range(n):
        par = int(inp.parent[i])
        if par >= 0:
            end = out.completion_s[par] if fin[par] else out.arrival_s[par]
            assert out.arrival_s[i] == end + inp.think_s[i]
        else:
            assert out.arrival_s[i] == inp.arrival_s[i]
    # Prefix cache accounting.
    cached = out.cached_tokens.astype(np.int64)
    assert np.all(cached[fin] <= np.maximum(p[fin] - 1, 0))
    assert np.all(cached % bs == 0)
    computed = out.computed_tokens.astype(np.int64)
    # A preempted request may find more of its prompt cached when it is admitted again
    # (blocks other requests cached meanwhile; cached_tokens is its first admission's hit),
    # but it always computes its last prompt token and every output token after the first.
    assert np.all(computed[fin] >= o[fin])
    no_pre = fin & (out.preemptions == 0)
    # (with a KV offload tier the blocks loaded from the host are not computed either)
    host = np.zeros(n, np.int64) if out.host_cached_tokens is None else out.host_cached_tokens.astype(np.int64)
    k = cfg.num_speculative_tokens
    if k:  # speculative decoding: rejected drafts are computed too, and at most k a step
        assert np.all(computed[no_pre] >= (p - cached - host + o - 1)[no_pre])
        assert 0 <= out.spec_accepted <= out.spec_drafts <= k * out.spec_verifications
        assert out.spec_verifications <= out.spec_drafts
        assert int(computed.sum()) >= int((p - cached - host + o - 1)[fin].sum()) + out.spec_drafts - out.spec_accepted
    else:
        np.testing.assert_array_equal(computed[no_pre], (p - cached - host + o - 1)[no_pre])
        assert out.spec_drafts == out.spec_accepted == out.spec_verifications == 0
    # vLLM PrefixCacheStats: first admissions apart from re-admissions after a preemption
    # (every preemption of a finished request is followed by one re-admission, but with async
    # scheduling that of a request whose last token was in flight); nothing is recorded with
    # prefix caching off.
    caching = cfg.enable_prefix_caching
    assert out.prefix_cache_queries == (int(p[fin].sum()) if caching else 0)
    assert out.prefix_cache_hits == int(cached[fin].sum())
    if cfg.async_scheduling:  # a request preempted while its last token is in flight is never re-admitted
        assert out.preempted_requests <= (int(out.preemptions[fin].sum()) if caching else 0)
    else:
        assert out.preempted_requests == (int(out.preemptions[fin].sum()) if caching else 0)
    assert out.preempted_prefix_cache_hits <= out.preempted_prefix_cache_queries
    if not caching:
        assert out.preempted_prefix_cache_queries == 0
        assert out.prefix_cache_hits == 0 and np.all(cached == 0)
        assert np.all(out.cache_event[fin] == CacheEvent.MISS_FULL)
    if cfg.num_gpu_blocks < 0:
        assert np.all(out.preemptions == 0)  # unlimited: nothing evicted or preempted
    ev = out.cache_event.astype(int)
    assert np.all((cached[fin] == 0) == np.isin(ev[fin], [CacheEvent.MISS_FULL,
                                                          CacheEvent.CONVERSATIONAL_MISS_EVICTED]))
    # Tokens and inter-token gaps (one gap per step: fewer gaps than tokens with drafts accepted).
    if k:
        assert int(out.itl_hist.sum()) <= int((o[fin] - 1).sum())
    else:
        assert int(out.itl_hist.sum()) == int((o[fin] - 1).sum())
    assert np.all(np.isnan(out.max_itl_s[fin]) == (o[fin] < 2))
    multi = fin & (o >= 2)
    assert np.all(out.max_itl_s[multi] <= out.completion_s[multi] - out.first_token_s[multi]
                  + 1e-12)
    # Routers with a simple closed form.
    if cfg.router == Router.ROUND_ROBIN:
        order = sorted(np.flatnonzero(fin), key=lambda i: (out.arrival_s[i], i))
        assert [int(out.replica[i]) for i in order] == [k % cfg.num_replicas
                                                       for k in range(len(order))]
    if cfg.router == Router.SESSION_AFFINITY:
        seen: dict[int, int] = {}
        for i in np.flatnonzero(fin):
            s = int(inp.session[i])
            if s >= 0:
                assert seen.setdefault(s, int(out.replica[i])) == int(out.replica[i])
    if cfg.num_replicas == 1:
        assert np.all(out.replica[fin] == 0)
    if out.steps is not None:
        assert len(out.steps["start_s"]) == out.num_steps
        used = out.steps["kv_blocks_used"]
        assert np.all((used >= 0) & (used <= N - 1))
        assert np.all(out.steps["duration_s"] > 0)
        assert int(out.steps["num_prefill_tokens"].sum() + out.steps["num_decode"].sum()) == \
            int(computed.sum())


@pytest.mark.parametrize("engine", ENGINES)
@given(sc=scenarios(max_requests=30))
def test_output_invariants(engine, sc: Scenario):
    inp = sc.inputs()
    check_output_invariants(inp, engine(inp))


@pytest.mark.parametrize("engine", ENGINES)
@given(sc=scenarios(max_requests=20, pool_kinds=("tight",)))
def test_output_invariants_tight_pools(engine, sc: Scenario):
    inp = sc.inputs()
    check_output_invariants(inp, engine(inp))


@pytest.mark.parametrize("engine", ENGINES)
@given(sc=scenarios(max_requests=20))
def test_prefix_stability(engine, sc: Scenario):
    """A request arriving after everything else has finished changes none of the earlier
    results (numbagg's "bigger arrays have the same beginning")."""
    check_prefix_stability(engine, sc)


@pytest.mark.parametrize("engine", ENGINES)
@given(sc=scenarios(max_requests=20, spec=True))
def test_spec_decode_invariants_and_prefix_stability(engine, sc: Scenario):
    """Speculative decoding: the invariants hold, and a late request changes nothing earlier
    (its accepted lengths depend on (seed, request, tokens generated) only)."""
    check_prefix_stability(engine, sc)


@pytest.mark.parametrize("engine", ENGINES)
@given(sc=scenarios(max_requests=15, pool_kinds=("tight",), spec=True))
def test_spec_decode_invariants_tight_pools(engine, sc: Scenario):
    inp = sc.inputs()
    check_output_invariants(inp, engine(inp))


def check_prefix_stability(engine, sc: Scenario) -> None:
    inp = sc.inputs()
    out = engine(inp)
    times = np.concatenate([out.arrival_s, out.completion_s])
    late = float(np.nanmax(times)) + time_unit_s()
    rng = random.Random(len(sc.specs))
    base = sc.specs[rng.randrange(len(sc.specs))]  # reuse a prefix: a cache hit is likely
    extra = ReqSpec(prompt=base.tokens[: max(1, len(base.tokens) - 1)], output=[7, 7, 7],
                    arrival_s=late, session=-1)
    sc2 = Scenario(sc.specs + [extra], sc.config, sc.pool_kind, draft_params=sc.draft_params)
    out2 = engine(sc2.inputs())
    n = len(sc.specs)
    for name in ("replica", "admitted_s", "first_token_s", "completion_s", "arrival_s",
                 "cached_tokens", "computed_tokens", "preemptions", "cache_event", "max_itl_s",
                 "status"):
        np.testing.assert_array_equal(getattr(out2, name)[:n], getattr(out, name), err_msg=name)
    assert out2.prefix_cache_queries >= out.prefix_cache_queries
    assert out2.prefix_cache_hits >= out.prefix_cache_hits
    assert np.all(out2.itl_hist >= out.itl_hist)
    assert out2.num_steps >= out.num_steps
    if out.steps is not None:
        k = out.num_steps
        for col, values in out.steps.items():
            np.testing.assert_array_equal(out2.steps[col][:k], values, err_msg=col)
    check_output_invariants(sc2.inputs(), out2)


def test_reference_debug_mode_runs_every_step():
    """The debug checks are actually invoked after every step."""
    sc = Scenario([ReqSpec([1, 2, 3], [4, 5], arrival_s=0.0)], EngineConfig(block_size=2))
    eng = ReferenceEngine(sc.inputs(), lambda *a: 1.0, debug=True)
    calls = []
    orig = eng.check_invariants
    eng.check_invariants = lambda: (calls.append(1), orig())
    out = eng.run()
    assert len(calls) == out.num_steps == 2
    assert out.completion_s[0] == 2.0


@pytest.mark.parametrize("engine", ENGINES)
@given(sc=scenarios(max_requests=25, timeouts=True))
def test_client_timeout_invariants(engine, sc: Scenario):
    """With clients that give up (README "Client timeouts"): every request ends FINISHED (by
    its deadline), REJECTED or TIMED_OUT (aborted, or finished too late); follow-ups leave at
    the parent's end or its deadline, whichever is first; nothing is computed for a request
    aborted before admission. (The reference's debug mode checks the pool after every step.)"""
    inp = sc.inputs()
    out = engine(inp)
    n = len(inp)
    timeout = inp.timeout_s if inp.timeout_s is not None else np.full(n, np.inf)
    status = out.status.astype(int)
    fin, rej, late = (status == Status.FINISHED), (status == Status.REJECTED), (status == Status.TIMED_OUT)
    assert np.all(fin | rej | late), status
    deadline = out.arrival_s + timeout
    assert np.all(out.completion_s[fin] <= deadline[fin])
    assert np.all(~(out.completion_s[late] <= deadline[late]))  # NaN (aborted) or after it
    assert not np.any(late & np.isinf(timeout))
    never = late & np.isnan(out.admitted_s)
    assert np.all(out.computed_tokens[never] == 0) and np.all(np.isnan(out.first_token_s[never]))
    for i in range(n):
        par = int(inp.parent[i])
        if par >= 0:
            if rej[par]:
                end = out.arrival_s[par]
            elif fin[par]:
                end = out.completion_s[par]
            else:
                end = deadline[par]
            assert out.arrival_s[i] == end + inp.think_s[i], i


# --------------------------------------------------------------------- async scheduling
@pytest.mark.parametrize("engine", ENGINES)
@given(sc=scenarios(max_requests=30, async_scheduling=True))
def test_output_invariants_async(engine, sc: Scenario):
    """The output invariants hold with async scheduling too (README "Async scheduling")."""
    inp = sc.inputs()
    check_output_invariants(inp, engine(inp))


@pytest.mark.parametrize("engine", ENGINES)
@given(sc=scenarios(max_requests=30, pool_kinds=("unlimited",), record_steps=True, async_scheduling=True))
def test_async_admission_cutoff(engine, sc: Scenario):
    """A step that starts as the replica's previous step ends was scheduled when that one
    started: it admits a request that arrived later only when it was scheduled again (vLLM's
    empty batch), i.e. when no request admitted before it is still running (no preemption
    with an unlimited pool)."""
    inp = sc.inputs()
    out = engine(inp)
    st = out.steps
    for r in range(inp.config.num_replicas):
        idx = np.flatnonzero(st["replica"] == r)
        starts, ends = st["start_s"][idx], st["start_s"][idx] + st["duration_s"][idx]
        mine = np.flatnonzero(out.replica == r)
        for k in range(1, len(idx)):
            if ends[k - 1] != starts[k]:
                continue
            admitted = mine[out.admitted_s[mine] == starts[k]]
            late = admitted[out.arrival_s[admitted] > starts[k - 1]]
            if len(late):
                before = mine[out.admitted_s[mine] < starts[k]]
                assert np.all(out.completion_s[before] <= starts[k]), (k, late)


@pytest.mark.parametrize("engine", ENGINES)
@given(sc=scenarios(max_requests=25, offload=True))
def test_offload_invariants(engine, sc: Scenario):
    """KV offload tier (README "KV offload"): the output invariants hold with loaded blocks
    counted as not computed; a load never reaches the last prompt token; blocks loaded =
    first-admission host hits (plus re-admissions'); the tier never holds more than its size;
    the load time is latency + blocks x time per block for every load."""
    inp = sc.inputs()
    out = engine(inp)
    check_output_invariants(inp, out)
    cfg = inp.config
    bs = cfg.block_size
    fin = out.status == Status.FINISHED
    host = out.host_cached_tokens.astype(np.int64)
    cached = out.cached_tokens.astype(np.int64)
    p = inp.prompt_tokens.astype(np.int64)
    assert np.all(host % bs == 0) and np.all(host[~fin] == 0)
    assert np.all(cached[fin] + host[fin] <= p[fin] - 1)
    h = out.host
    first_loads = int(np.count_nonzero(host))
    if out.preemptions.sum() == 0:
        assert h["hit_blocks"] * bs == int(host.sum()) and h["loads"] == first_loads
    else:
        assert h["hit_blocks"] * bs >= int(host.sum()) and h["loads"] >= first_loads
    assert 0 <= h["stored_blocks"] - h["evicted_blocks"] <= cfg.host_kv_blocks * cfg.num_replicas
    assert h["stored_blocks"] <= int((p[fin] // bs).sum()) * (1 + int(out.preemptions.sum())) + h["evicted_blocks"]
    assert out.host_load_s == pytest.approx(h["loads"] * cfg.host_load_latency_s
                                            + h["hit_blocks"] * cfg.host_load_s_per_block, rel=1e-9, abs=1e-12)


def check_lora_invariants(inp: EngineInputs, out: EngineOutputs) -> None:
    """Never more than max_loras distinct adapters running on a replica at a step's start
    (checked on replicas without preemptions or aborts, whose running sets the timestamps
    give: admitted at a step start, gone at the end of its last step); every adapter that
    ran was loaded at least once on some replica."""
    adapter = inp.lora_adapter
    fin = out.status == Status.FINISHED
    for r in np.unique(out.replica[out.replica >= 0]):
        on_r = (out.replica == r) & fin
        if not np.array_equal(on_r, (out.replica == r)) or out.preemptions[out.replica == r].any():
            continue
        starts = out.steps["start_s"][out.steps["replica"] == r]
        for t in starts:
            running = on_r & (out.admitted_s <= t) & (out.completion_s > t)
            used = set(adapter[running & (adapter >= 0)].tolist())
            assert len(used) <= inp.config.max_loras, (r, t, used)
    ran = set(adapter[fin & (adapter >= 0)].tolist())
    assert all(out.lora["loads_by_adapter"][a] >= 1 for a in ran)
    assert out.lora["gpu_loads"] == int(out.lora["loads_by_adapter"].sum()) >= len(ran)
    assert out.lora["disk_loads"] <= out.lora["gpu_loads"]


@pytest.mark.parametrize("engine", ENGINES)
@given(sc=scenarios(max_requests=25, lora=True, record_steps=True))
def test_lora_invariants(engine, sc: Scenario):
    inp = sc.inputs()
    out = engine(inp)
    check_output_invariants(inp, out)
    if inp.lora_adapter is not None:
        check_lora_invariants(inp, out)
