"""Generated workloads: totals, determinism, conversations, patterns, system prompts, Parquet."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle.errors import ScenarioError
from oracle.workload import Workload, build_workload
from oracle.workload.spec import (ArrivalSpec, ClientSpec, ConversationSpec, DistSpec, WorkloadSpec, constant,
                                  max_prompt_tokens, max_total_tokens)
from oracle.workload.table import COLUMNS, KIND_OUTPUT, KIND_SYSTEM, KIND_TOOL, KIND_USER

LOGN_P = DistSpec(dist="lognormal", mean=600.0, sigma=0.9, max=8192.0)
LOGN_O = DistSpec(dist="lognormal", mean=220.0, sigma=0.7, max=2048.0)
TURNS = DistSpec(dist="uniform", min=1.0, max=8.0)


def chat(name="chat", rate=4.0, pattern="chat", turns=TURNS, sys_tokens=600, num_sys=8, **kw) -> ClientSpec:
    conv = ConversationSpec(pattern=pattern, turns=turns, think_time_s=constant(5.0, integer=False),
                            branch_prob=kw.pop("branch_prob", 0.0),
                            tool_output_tokens=kw.pop("tool", DistSpec(dist="uniform", min=50, max=60)
                                                      if pattern == "agent" else None))
    return ClientSpec(name=name, prompt_tokens=kw.pop("prompt", LOGN_P), output_tokens=kw.pop("output", LOGN_O),
                      arrival=kw.pop("arrival", ArrivalSpec(rate=rate)), conversation=conv,
                      system_prompt_tokens=sys_tokens, num_system_prompts=num_sys, **kw)


def gen(*clients, n=None, duration=None, seed=0, arrival=None) -> Workload:
    wl = build_workload(WorkloadSpec(clients=tuple(clients), arrival=arrival), duration_s=duration,
                        num_requests=n, seed=seed)
    return wl.validate()


def segs(wl: Workload, i: int) -> list[tuple[int, int]]:
    lo, hi = wl.seg_offsets[i], wl.seg_offsets[i + 1]
    return list(zip(wl.seg_key[lo:hi].tolist(), wl.seg_len[lo:hi].tolist()))


def kind(key: int) -> int:
    return key >> 60


def same_arrays(a: Workload, b: Workload) -> bool:
    names = [*COLUMNS, "seg_offsets", "seg_key", "seg_len"]
    return all(np.array_equal(getattr(a, c), getattr(b, c), equal_nan=c in ("arrival_s", "think_s")) for c in names)


def test_num_requests_is_exact_and_ids_are_session_contiguous():
    wl = gen(chat(), n=5000)
    assert len(wl) == 5000
    follow = wl.parent >= 0
    assert np.array_equal(wl.parent[follow], np.flatnonzero(follow) - 1)
    assert np.array_equal(wl.turn[follow], wl.turn[wl.parent[follow]] + 1)
    assert np.isnan(wl.arrival_s[follow]).all() and (wl.think_s[follow] == 5.0).all()
    assert (wl.think_s[~follow] == 0).all() and (wl.turn[~follow] == 0).all()
    assert np.all(np.diff(wl.arrival_s[~follow]) >= 0) and wl.arrival_s[0] == 0
    assert np.array_equal(np.unique(wl.session), np.arange((~follow).sum()))


def test_same_seed_same_workload_and_prefix_stability():
    a, b = gen(chat(), n=3000, seed=7), gen(chat(), n=3000, seed=7)
    assert same_arrays(a, b)
    assert not same_arrays(a, gen(chat(), n=3000, seed=8))
    big = gen(chat(), n=20_000, seed=7)  # more chunks: the first 3000 requests do not change
    assert same_arrays(a, big.slice(3000))


def test_duration_and_rate():
    wl = gen(chat(rate=50.0, turns=constant(1)), duration=200.0, seed=1)
    assert wl.arrival_s.max() < 200.0
    assert abs(len(wl) - 10_000) < 5 * math.sqrt(10_000)
    both = gen(chat(rate=50.0, turns=constant(1)), duration=200.0, n=1234, seed=1)
    assert len(both) == 1234 and same_arrays(both, wl.slice(1234))
    with pytest.raises(ScenarioError, match="duration_s and/or"):
        gen(chat())


def test_constant_arrivals():
    c = dataclasses.replace(chat(turns=constant(1)), arrival=ArrivalSpec("constant", 2.0))
    wl = gen(c, n=100)
    np.testing.assert_allclose(wl.arrival_s, np.arange(100) * 0.5)


def test_chat_history_accumulates_via_segments_and_hashes():
    wl = gen(chat(), n=3000, seed=2)
    total = wl.total_tokens()
    h_off, h = wl.block_hashes(16)
    for r in np.flatnonzero(wl.parent >= 0)[:400]:
        p = r - 1
        mine, theirs = segs(wl, r), segs(wl, p)
        assert mine[:len(theirs)] == theirs  # turn k's whole sequence starts turn k+1's prompt
        assert len(mine) == len(theirs) + 2
        (uk, ul), (ok, ol) = mine[-2:]
        assert kind(uk) == KIND_USER and kind(ok) == KIND_OUTPUT
        assert wl.prompt_tokens[r] == total[p] + ul and wl.output_tokens[r] == ol
        shared = total[p] // 16
        assert np.array_equal(h[h_off[r]:h_off[r] + shared], h[h_off[p]:h_off[p] + shared])
        if h_off[r] + shared < h_off[r + 1]:
            assert h[h_off[r] + shared] not in set(h[h_off[p]:h_off[p + 1]].tolist())
    # every new content (user message, output) has its own key
    last_two = np.concatenate([wl.seg_key[wl.seg_offsets[1:] - 2], wl.seg_key[wl.seg_offsets[1:] - 1]])
    assert np.unique(last_two).size == 2 * len(wl)


def test_system_prompts_shared_by_group():
    wl = gen(chat(num_sys=8, turns=constant(1)), n=4000, seed=3)
    first = wl.seg_key[wl.seg_offsets[:-1]]
    assert all(kind(k) == KIND_SYSTEM for k in first.tolist())
    assert (wl.seg_len[wl.seg_offsets[:-1]] == 600).all()
    groups, counts = np.unique(first, return_counts=True)
    assert groups.size == 8 and counts.min() > 400  # uniform over 8 groups
    h_off, h = wl.block_hashes(16)
    by_key = {}
    for i in range(200):
        by_key.setdefault(int(first[i]), h[h_off[i]:h_off[i] + 600 // 16].tolist())
        assert h[h_off[i]:h_off[i] + 600 // 16].tolist() == by_key[int(first[i])]
    z = gen(chat(num_sys=8, turns=constant(1), system_prompt_popularity="zipf", system_prompt_zipf_exponent=1.5),
            n=4000, seed=3)
    zk, zc = np.unique(z.seg_key[z.seg_offsets[:-1]], return_counts=True)
    assert zc.max() / zc.sum() == pytest.approx(1 / sum(g ** -1.5 for g in range(1, 9)), abs=0.03)
    none = gen(chat(sys_tokens=0, turns=constant(1)), n=10)
    assert all(kind(k) == KIND_USER for k in none.seg_key[none.seg_offsets[:-1]].tolist())


def test_system_prompt_pools():
    def firsts(wl):
        return {(int(wl.client[i]), int(wl.seg_key[wl.seg_offsets[i]])) for i in range(len(wl))}
    a, b = chat("a", num_sys=1, turns=constant(1)), chat("b", num_sys=1, turns=constant(1))
    keys = firsts(gen(a, b, n=200))
    assert len({k for _, k in keys}) == 2  # different clients, different prompts
    pa, pb = (dataclasses.replace(c, system_prompt_pool="shared") for c in (a, b))
    keys = firsts(gen(pa, pb, n=200))
    assert len({k for _, k in keys}) == 1 and len({c for c, _ in keys}) == 2


def test_shared_arrival_split_by_share():
    a = dataclasses.replace(chat("a", turns=constant(1)), arrival=None, share=3.0)
    b = dataclasses.replace(chat("b", turns=constant(1)), arrival=None, share=1.0)
    wl = gen(a, b, n=40_000, arrival=ArrivalSpec("poisson", 100.0))
    frac = (wl.client == 0).mean()
    assert abs(frac - 0.75) < 0.01 and wl.client_names == ["a", "b"]
    assert abs(len(wl) / wl.arrival_s[-1] - 100.0) < 3.0
    # own-arrival clients merge by time
    wl2 = gen(chat("x", rate=1.0, turns=constant(1)), chat("y", rate=9.0, turns=constant(1)), n=20_000)
    assert abs((wl2.client == 1).mean() - 0.9) < 0.01


def test_agent_pattern_appends_tool_outputs():
    wl = gen(chat(pattern="agent", turns=constant(10), sys_tokens=0, output=DistSpec(dist="uniform", min=5, max=20)),
             n=200)
    for r in np.flatnonzero(wl.parent >= 0):
        (tk, tl), (ok, ol) = segs(wl, r)[-2:]
        assert kind(tk) == KIND_TOOL and 50 <= tl <= 60 and kind(ok) == KIND_OUTPUT and 5 <= ol <= 20
        assert segs(wl, r)[:-2] == segs(wl, r - 1)
    assert kind(segs(wl, 0)[0][0]) == KIND_USER


def test_branch_pattern_forks_from_an_earlier_turn():
    wl = gen(chat(pattern="branch", turns=constant(6), branch_prob=1.0), n=600, seed=4)
    forks = 0
    for r in np.flatnonzero(wl.turn >= 2):
        base = segs(wl, r)[:-2]
        first = r - wl.turn[r]
        matches = [j for j in range(first, r) if segs(wl, j) == base]
        assert matches and matches[0] < r - 1  # always forks (branch_prob = 1) from turn < k-1
        assert wl.parent[r] == r - 1  # closed-loop timing still follows the previous turn
        forks += 1
    assert forks > 300
    assert same_arrays(gen(chat(pattern="branch", turns=constant(6), branch_prob=0.0), n=600, seed=4),
                       gen(chat(turns=constant(6)), n=600, seed=4))


def test_lone_requests_without_conversation():
    c = dataclasses.replace(chat(), conversation=None)
    wl = gen(c, n=1000)
    assert (wl.session == -1).all() and (wl.turn == 0).all() and (wl.parent == -1).all()
    assert (np.diff(wl.seg_offsets) == 3).all()


def test_parquet_round_trip(tmp_path):
    wl = gen(chat(), chat("agent", pattern="agent"), n=3000)
    wl.to_parquet(tmp_path / "w.parquet")
    back = Workload.from_parquet(tmp_path / "w.parquet")
    assert same_arrays(wl, back)
    assert back.client_names == wl.client_names and back.source == wl.source
    assert np.isnan(back.arrival_s).sum() == np.isnan(wl.arrival_s).sum()
    assert [f.name for f in tmp_path.iterdir()] == ["w.parquet"]  # no temp file left behind
    empty = wl.slice(0)
    empty.to_parquet(tmp_path / "e.parquet")
    assert len(Workload.from_parquet(tmp_path / "e.parquet")) == 0


def test_validate_catches_inconsistencies():
    wl = gen(chat(), n=50)
    bad = wl.slice(50)
    bad.prompt_tokens = bad.prompt_tokens.copy()
    bad.prompt_tokens[3] += 1
    with pytest.raises(ValueError, match="request 3: segments cover"):
        bad.validate()
    bad = wl.slice(50)
    bad.parent = np.where(np.arange(50) == 1, 5, bad.parent)
    with pytest.raises(ValueError, match="parent must be -1 or a smaller request id"):
        bad.validate()
    bad = wl.slice(50)
    bad.arrival_s = np.where(np.isnan(bad.arrival_s), 1.0, bad.arrival_s)
    with pytest.raises(ValueError, match="NaN exactly for follow-ups"):
        bad.validate()


def test_take_and_slice_keep_parents_consistent():
    wl = gen(chat(), n=500)
    keep = wl.with_descendants(wl.arrival_s >= 10.0)
    sub = wl.take(keep).validate()
    assert len(sub) == keep.sum()
    with pytest.raises(ValueError, match="parent is dropped"):
        wl.take(np.arange(500) % 2 == 0)


small_dist = st.builds(
    lambda lo, span, kind: DistSpec(dist=kind, min=float(lo), max=float(lo + span),
                                    mean=float(lo + span / 2) if kind in ("normal", "lognormal") else None,
                                    std=float(span) if kind == "normal" else None,
                                    sigma=0.8 if kind == "lognormal" else None),
    st.integers(1, 50), st.integers(0, 300), st.sampled_from(["uniform", "normal", "lognormal"]))


@settings(max_examples=25)
@given(prompt=small_dist, output=small_dist, turns=st.integers(1, 12), sys_tokens=st.integers(0, 100),
       pattern=st.sampled_from(["chat", "agent", "branch"]), n=st.integers(1, 400), seed=st.integers(0, 2**32))
def test_random_specs_give_valid_bounded_workloads(prompt, output, turns, sys_tokens, pattern, n, seed):
    c = chat(pattern=pattern, turns=DistSpec(dist="uniform", min=1, max=turns), sys_tokens=sys_tokens, num_sys=3,
             prompt=prompt, output=output, branch_prob=0.5 if pattern == "branch" else 0.0)
    spec = WorkloadSpec(clients=(c,))
    wl = build_workload(spec, duration_s=None, num_requests=n, seed=seed).validate()
    assert len(wl) == n
    assert wl.prompt_tokens.max() <= max_prompt_tokens(spec)
    assert wl.total_tokens().max() <= max_total_tokens(spec)
    assert (wl.output_tokens >= 1).all() and (wl.prompt_tokens >= 1).all()


@pytest.mark.parametrize("pattern", ["chat", "branch", "agent"])
def test_ideal_reuse_matches_reference_on_sessions(pattern):
    from oracle.workload.stats import ideal_prefix_reuse
    from reference.reuse import ideal_reuse_fraction
    wl = gen(chat(pattern=pattern, branch_prob=0.5 if pattern == "branch" else 0.0, num_sys=3,
                  prompt=DistSpec(dist="uniform", min=1, max=90), output=DistSpec(dist="uniform", min=1, max=40)),
             n=300, seed=9)
    for bs in (1, 16, 64):
        hit, prompt = ideal_prefix_reuse(wl, bs)
        assert hit / prompt == ideal_reuse_fraction(wl, bs)


# -- options for the original LLMPerfOracle's semantics (first_arrival, think_from) --------------

def test_first_arrival_after_one_gap():
    c = ClientSpec(name="a", prompt_tokens=constant(10), output_tokens=constant(5),
                   arrival=ArrivalSpec(process="constant", rate=0.5, first_arrival="gap"))
    assert gen(c, duration=9.0).arrival_s.tolist() == [2.0, 4.0, 6.0, 8.0]
    zero = gen(dataclasses.replace(c, arrival=ArrivalSpec(process="constant", rate=0.5)), duration=9.0)
    assert zero.arrival_s.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    # Poisson: the same draws, shifted by the first gap
    p0 = gen(dataclasses.replace(c, arrival=ArrivalSpec(rate=3.0)), n=200, seed=4)
    p1 = gen(dataclasses.replace(c, arrival=ArrivalSpec(rate=3.0, first_arrival="gap")), n=200, seed=4)
    shift = p1.arrival_s[0]
    assert shift > 0 and np.allclose(p1.arrival_s - shift, p0.arrival_s)


def _timed_from_arrival(turns=6, think=None, **kw) -> ClientSpec:
    conv = ConversationSpec(turns=constant(turns), think_from="arrival",
                            think_time_s=think or DistSpec(dist="exponential", mean=3.0, integer=False))
    return ClientSpec(name=kw.pop("name", "timed"), prompt_tokens=DistSpec(dist="uniform", min=20, max=80),
                      output_tokens=DistSpec(dist="uniform", min=5, max=40), conversation=conv,
                      arrival=kw.pop("arrival", ArrivalSpec(rate=1.0)), **kw)


def test_follow_ups_timed_from_arrival_have_fixed_arrivals_and_stop_at_the_end():
    wl = gen(_timed_from_arrival(), duration=30.0, seed=3)
    assert (wl.parent == -1).all() and (wl.think_s == 0).all()        # no follow-up waits for a completion
    assert np.all(np.diff(wl.arrival_s) >= 0) and wl.arrival_s.max() < 30.0
    assert (wl.turn > 0).any()
    # per session: turns in order, arrivals non-decreasing, the history carried (prompt_k = prompt_{k-1} + out + new)
    for s in np.unique(wl.session)[:20]:
        rows = np.flatnonzero(wl.session == s)
        assert wl.turn[rows].tolist() == list(range(rows.size))
        assert np.all(np.diff(wl.arrival_s[rows]) >= 0)
        for a, b in zip(rows[:-1], rows[1:]):
            new = wl.prompt_tokens[b] - wl.prompt_tokens[a] - wl.output_tokens[a]
            assert 20 <= new <= 80 and segs(wl, b)[:len(segs(wl, a))] == segs(wl, a)
    # same draws as completion-timed follow-ups: the same sessions, gaps and lengths, cut at the end
    done = gen(dataclasses.replace(_timed_from_arrival(), conversation=dataclasses.replace(
        _timed_from_arrival().conversation, think_from="completion")), duration=30.0, seed=3)
    first = done.turn == 0
    assert np.array_equal(np.sort(done.arrival_s[first]), np.sort(wl.arrival_s[wl.turn == 0]))
    assert len(wl) < len(done)       # follow-ups that would arrive at or after 30 s are not sent


def test_timed_and_released_sessions_mix():
    wl = gen(_timed_from_arrival(name="timed"), chat(name="released", rate=0.5, sys_tokens=0), duration=40.0, seed=1)
    follow = wl.parent >= 0
    assert follow.any() and (wl.client[follow] == 1).all()
    assert np.array_equal(wl.parent[follow], np.flatnonzero(follow) - 1)   # released turns stay together
    fixed = wl.arrival_s[~follow]
    assert np.all(np.diff(fixed) >= 0)
    assert ((wl.client == 0) & (wl.turn > 0)).any()


def test_timed_follow_ups_with_num_requests():
    wl = gen(_timed_from_arrival(), n=300, seed=2)
    assert len(wl) == 300 and np.all(np.diff(wl.arrival_s) >= 0)
