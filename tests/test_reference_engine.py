"""The plain-Python reference engine and block pool against answers worked out by hand.

Block-pool tests draw the free queue in a comment and then assert every pointer (vLLM
``tests/v1/core/test_kv_cache_utils.py`` style). Engine cases come from
``engine_cases.hand_cases()`` and run with a constant step time, so every timestamp is a
small multiple of it; the calls to the cost function are recorded and checked too:
``(num_tokens, num_emit, num_decode, decode_ctx_sum, prefill_attn_units, prefill_ctx_sum)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from engine_cases import ReqSpec, build_inputs, hand_cases
from reference.blockpool import BlockPool, FreeKVCacheBlockQueue, KVCacheBlock
from reference.engine import ReferenceEngine, Request

from oracle.engine.inputs import (
    ITL_NUM_BINS,
    CacheEvent,
    EngineConfig,
    Router,
    Status,
    itl_bin,
)

NAN = math.nan
MISS, CROSS, CONV, FULL, EVICTED, NONE = (
    CacheEvent.MISS_FULL, CacheEvent.CROSS_REQUEST_HIT, CacheEvent.CONVERSATIONAL_HIT,
    CacheEvent.FULL_HIT_NO_PREFILL_NEEDED, CacheEvent.CONVERSATIONAL_MISS_EVICTED, CacheEvent.NONE)


# =============================================================================== block pool
def assert_free_list(pool: BlockPool, ids: list[int]) -> None:
    """Walk every pointer of the free queue: head <-> ids[0] <-> ... <-> ids[-1] <-> tail."""
    q = pool.free_block_queue
    chain = [q.fake_free_list_head] + [pool.blocks[i] for i in ids] + [q.fake_free_list_tail]
    for a, b in zip(chain, chain[1:]):
        assert a.next_free_block is b, (a, b)
        assert b.prev_free_block is a, (a, b)
    assert q.fake_free_list_head.prev_free_block is None
    assert q.fake_free_list_tail.next_free_block is None
    assert q.num_free_blocks == len(ids) == pool.num_free
    for blk in pool.blocks:
        if blk.block_id not in ids:  # blocks out of the queue carry no links
            assert blk.prev_free_block is None and blk.next_free_block is None, blk


def test_free_queue_remove_append_popleft():
    blocks = [KVCacheBlock(i) for i in range(4)]
    q = FreeKVCacheBlockQueue(blocks)
    # H <-> 0 <-> 1 <-> 2 <-> 3 <-> T
    assert q.fake_free_list_head.next_free_block is blocks[0]
    assert blocks[0].prev_free_block is q.fake_free_list_head
    assert blocks[0].next_free_block is blocks[1] and blocks[1].prev_free_block is blocks[0]
    assert blocks[3].next_free_block is q.fake_free_list_tail
    assert q.fake_free_list_tail.prev_free_block is blocks[3]
    q.remove(blocks[2])
    # H <-> 0 <-> 1 <-> 3 <-> T
    assert blocks[1].next_free_block is blocks[3] and blocks[3].prev_free_block is blocks[1]
    assert blocks[2].prev_free_block is None and blocks[2].next_free_block is None
    assert q.num_free_blocks == 3
    q.append(blocks[2])
    # H <-> 0 <-> 1 <-> 3 <-> 2 <-> T
    assert blocks[3].next_free_block is blocks[2] and blocks[2].prev_free_block is blocks[3]
    assert blocks[2].next_free_block is q.fake_free_list_tail
    assert q.popleft() is blocks[0]
    # H <-> 1 <-> 3 <-> 2 <-> T
    assert q.fake_free_list_head.next_free_block is blocks[1]
    assert blocks[1].prev_free_block is q.fake_free_list_head
    assert [b.block_id for b in q.get_all_free_blocks()] == [1, 3, 2]
    with pytest.raises(ValueError):
        q.remove(blocks[0])  # not in the queue any more
    with pytest.raises(ValueError):
        q.append(blocks[1])  # already in it


def test_pool_initial_state_and_null_block():
    pool = BlockPool(5)
    # H <-> 1 <-> 2 <-> 3 <-> 4 <-> T      (block 0 = null block, never in the queue)
    assert_free_list(pool, [1, 2, 3, 4])
    got = pool.allocate(4)
    assert [b.block_id for b in got] == [1, 2, 3, 4]
    assert all(b.ref_cnt == 1 for b in got)
    # H <-> T
    assert_free_list(pool, [])
    with pytest.raises(ValueError):
        pool.allocate(1)
    pool.check_invariants({1: 1, 2: 1, 3: 1, 4: 1})


def test_allocation_evicts_hashed_block():
    pool = BlockPool(5)
    b1, b2 = pool.allocate(2)
    # H <-> 3 <-> 4 <-> T
    assert_free_list(pool, [3, 4])
    pool.cache_block(b1, 11, session_label=0)
    pool.cache_block(b2, 22, session_label=0)
    pool.free_blocks(reversed([b1, b2]))  # a request's last block is freed (evicted) first
    # H <-> 3 <-> 4 <-> 2 <-> 1 <-> T     (2 and 1 keep hashes 22 and 11)
    assert_free_list(pool, [3, 4, 2, 1])
    assert mapped(pool) == {11: [1], 22: [2]}
    got = pool.allocate(3)
    # popped 3, 4 (fresh) and 2 (hash 22 evicted from the map)
    # H <-> 1 <-> T
    assert [b.block_id for b in got] == [3, 4, 2]
    assert_free_list(pool, [1])
    assert b2.block_hash is None and b2.session_label is None
    assert mapped(pool) == {11: [1]}
    assert b1.block_hash == 11 and b1.ref_cnt == 0
    pool.check_invariants({2: 1, 3: 1, 4: 1})


def test_touch_free_cached_block_from_the_middle():
    pool = BlockPool(6)
    blocks = pool.allocate(5)
    for blk, h in zip(blocks, [101, 102, 103, 104, 105]):
        pool.cache_block(blk, h, session_label=-2)
    pool.free_blocks(blocks)  # in table order this time: 1 is evicted first
    # H <-> 1 <-> 2 <-> 3 <-> 4 <-> 5 <-> T
    assert_free_list(pool, [1, 2, 3, 4, 5])
    hit = pool.lookup([101, 102, 103, 999, 105], max_blocks=10)
    assert [b.block_id for b in hit] == [1, 2, 3]  # stops at the first miss
    assert [b.block_id for b in pool.lookup([101, 102, 103], max_blocks=2)] == [1, 2]  # cap
    assert pool.lookup([102], max_blocks=0) == []
    assert_free_list(pool, [1, 2, 3, 4, 5])  # lookup touches nothing
    pool.touch([pool.blocks[3]])
    # H <-> 1 <-> 2 <-> 4 <-> 5 <-> T     (3: ref 1, out of the queue, hash kept)
    assert_free_list(pool, [1, 2, 4, 5])
    assert pool.blocks[3].ref_cnt == 1 and pool.blocks[3].block_hash == 103
    pool.touch([pool.blocks[1], pool.blocks[5]])  # the head and the tail
    # H <-> 2 <-> 4 <-> T
    assert_free_list(pool, [2, 4])
    pool.touch([pool.blocks[3]])  # already owned: ref 2, queue unchanged
    assert pool.blocks[3].ref_cnt == 2
    assert_free_list(pool, [2, 4])
    pool.check_invariants({1: 1, 3: 2, 5: 1})


def test_free_in_reverse_order_with_shared_block():
    pool = BlockPool(6)
    a = pool.allocate(2)                 # request A: [1, 2]
    b = [a[0]] + pool.allocate(2)        # request B: [1, 3, 4] (hit on 1)
    pool.touch([a[0]])
    # H <-> 5 <-> T ; ref: 1 -> 2, 2 -> 1, 3 -> 1, 4 -> 1
    assert_free_list(pool, [5])
    assert [blk.ref_cnt for blk in pool.blocks] == [0, 2, 1, 1, 1, 0]
    pool.free_blocks(reversed(a))
    # 2 reaches 0; it carries no hash, so it goes to the head (reused first); 1 is still
    # held by B
    # H <-> 2 <-> 5 <-> T
    assert_free_list(pool, [2, 5])
    assert pool.blocks[1].ref_cnt == 1
    pool.free_blocks(reversed(b))
    # B's table walked from the last block: 4, 3, 1, all unhashed: prepended in that order
    # H <-> 4 <-> 3 <-> 1 <-> 2 <-> 5 <-> T
    assert_free_list(pool, [4, 3, 1, 2, 5])
    pool.check_invariants({})
    with pytest.raises(ValueError):
        pool.free_blocks([pool.blocks[2]])  # ref_cnt would go below 0


def test_free_puts_unhashed_blocks_first_and_hashed_blocks_last():
    # vLLM BlockPool.free_blocks: of the blocks reaching ref 0 (given in eviction order,
    # i.e. a block table reversed), unhashed ones are prepended, hashed ones appended.
    pool = BlockPool(7)
    t = pool.allocate(4)                 # a request: [1, 2, 3, 4], blocks 1 and 2 full
    pool.cache_block(t[0], 101, session_label=-2)
    pool.cache_block(t[1], 102, session_label=-2)
    # H <-> 5 <-> 6 <-> T
    pool.free_blocks(reversed(t))        # 4, 3 (unhashed) to the head; 2, 1 to the tail
    # H <-> 4 <-> 3 <-> 5 <-> 6 <-> 2 <-> 1 <-> T
    assert_free_list(pool, [4, 3, 5, 6, 2, 1])
    assert [b.block_id for b in pool.allocate(2)] == [4, 3]  # the partial blocks are reused first
    assert mapped(pool) == {101: [1], 102: [2]}
    pool.check_invariants({3: 1, 4: 1})


def test_duplicate_hashes_all_mapped():
    # vLLM BlockHashToBlockMap keeps every block registered under a hash; a lookup returns
    # the earliest registered one still mapped; evicting one leaves the others hittable.
    pool = BlockPool(5)
    b1, b2 = pool.allocate(2)
    pool.cache_block(b1, 7, session_label=3)
    pool.cache_block(b2, 7, session_label=4)  # same content computed twice
    assert b2.block_hash == 7 and b2.session_label == 4
    assert mapped(pool) == {7: [1, 2]} and pool.num_cached == 2
    assert [b.block_id for b in pool.lookup([7], max_blocks=1)] == [1]
    pool.free_blocks([b2, b1])
    # H <-> 3 <-> 4 <-> 2 <-> 1 <-> T
    assert_free_list(pool, [3, 4, 2, 1])
    pool.allocate(3)  # 3, 4 and 2: 2's entry goes, 7 -> 1 stays
    assert mapped(pool) == {7: [1]}
    pool.allocate(1)  # 1: hash 7 evicted
    assert mapped(pool) == {}
    assert pool.num_cached == 0
    # The earliest registered block evicted first: the later one answers lookups.
    pool = BlockPool(4)
    b1, b2 = pool.allocate(2)
    pool.cache_block(b1, 7, session_label=3)
    pool.cache_block(b2, 7, session_label=4)
    pool.free_blocks([b1])               # H <-> 3 <-> 1 <-> T
    pool.allocate(2)                      # 3, then 1: 1's entry evicted
    assert mapped(pool) == {7: [2]}
    assert [b.block_id for b in pool.lookup([7], max_blocks=1)] == [2]
    pool.check_invariants({1: 1, 2: 1, 3: 1})


# =============================================================================== engine
class RecordingCost:
    """Constant step time; remembers every call's arguments."""

    def __init__(self, dt: float = 1.0):
        self.dt = dt
        self.calls: list[tuple] = []

    def __call__(self, *args):
        self.calls.append(tuple(args))
        return self.dt


def run_case(name: str, dt: float = 1.0, **config_overrides):
    sc = hand_cases()[name]
    if config_overrides:
        sc = sc.with_config(**config_overrides)
    cost = RecordingCost(dt)
    eng = ReferenceEngine(sc.inputs(), cost, debug=True)
    out = eng.run()
    return out, cost.calls, eng


def mapped(pool: BlockPool) -> dict[int, list[int]]:
    """The hash map as hash -> block ids in registration order."""
    return {h: list(blocks) for h, blocks in pool.cached_block_hash_to_block.items()}


def assert_times(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, float), np.asarray(expected, float), rtol=0,
                               atol=1e-12, equal_nan=True)


def hist_of(gaps: dict[float, int]) -> np.ndarray:
    h = np.zeros(ITL_NUM_BINS, np.int64)
    for gap, count in gaps.items():
        h[itl_bin(gap)] += count
    return h


def test_worked_example_design_11():
    # bs 4, unlimited (N = 3 + 3 + 4 + 1 = 11), step time 1 s.
    # A [1..10]+[11,12] at 0: step 0->1 prefills 10 (attn units 10*(0+5.5) = 55), emits 11;
    #   blocks h1 [1-4], h2 [5-8] are cached when the step is scheduled (10 tokens -> 2 full);
    #   step 1->2 decodes token 11 (ctx 11), emits 12 and finishes: token 12 is never
    #   computed, so its block [9-12] is never hashed. Table [1,2,3] freed last first: 3
    #   (unhashed) to the head, 2 and 1 to the tail: queue 3, 4..10, 2, 1.
    # B [1..9]+[100] at 5: hit capped at floor(8/4) = 2 blocks = 8 tokens (FULL_HIT: that is
    #   every block but the last); takes block 3; computes 1 token, which counts as a decode
    #   (c = 1, p0 = 8, p0 + 1 == num_tokens): ctx 9; done at 6; 3 back to the head.
    # C [1..12]+[101] at 10: cap floor(11/4) = 2 blocks; computes 4 tokens (units 4*(8+2.5)
    #   = 42, prefill ctx 8) in block 3, which it fills: 3 gets h3 at scheduling.
    out, calls, eng = run_case("worked_example")
    assert calls == [(10, 1, 0, 0, 55.0, 0), (1, 1, 1, 11, 0.0, 0), (1, 1, 1, 9, 0.0, 0),
                     (4, 1, 0, 0, 42.0, 8)]
    assert_times(out.arrival_s, [0, 5, 10])
    assert_times(out.admitted_s, [0, 5, 10])
    assert_times(out.first_token_s, [1, 6, 11])
    assert_times(out.completion_s, [2, 6, 11])
    assert_times(out.max_itl_s, [1, NAN, NAN])
    assert out.cached_tokens.tolist() == [0, 8, 8]
    assert out.computed_tokens.tolist() == [11, 1, 4]
    assert out.cache_event.tolist() == [MISS, FULL, FULL]
    assert out.prefix_cache_queries == 10 + 9 + 12
    assert out.prefix_cache_hits == 0 + 8 + 8
    assert out.status.tolist() == [Status.FINISHED] * 3
    assert out.replica.tolist() == [0, 0, 0]
    assert out.preemptions.tolist() == [0, 0, 0]
    np.testing.assert_array_equal(out.itl_hist, hist_of({1.0: 1}))
    assert out.num_steps == 4
    pool = eng.replicas[0].pool
    assert pool.num_gpu_blocks == 11
    # A's blocks 1, 2 hold h1, h2; block 3 (A's, then B's partial block) got h3 from C
    h = eng.requests[0].hashes
    assert mapped(pool) == {h[0]: [1], h[1]: [2], h[2]: [3]}
    # H <-> 4..10 <-> 3 <-> 2 <-> 1 <-> T
    #   after B: 3, 4..10, 2, 1; C touched 1, 2, took 3, freed 3, 2, 1 (all hashed: tail).
    assert_free_list(pool, [4, 5, 6, 7, 8, 9, 10, 3, 2, 1])
    # Steps table (state after each step).
    s = out.steps
    assert s["replica"].tolist() == [0, 0, 0, 0]
    assert_times(s["start_s"], [0, 1, 5, 10])
    assert_times(s["duration_s"], [1, 1, 1, 1])
    assert s["num_decode"].tolist() == [0, 1, 1, 0]
    assert s["num_prefill_tokens"].tolist() == [10, 0, 0, 4]
    assert s["num_running"].tolist() == [1, 0, 0, 0]
    assert s["num_waiting"].tolist() == [0, 0, 0, 0]
    assert s["kv_blocks_used"].tolist() == [3, 0, 0, 0]
    assert s["kv_blocks_cached"].tolist() == [2, 2, 2, 3]


def test_single_request_ttft_tpot():
    # p = 5, o = 4, arrives 0.5, every step 0.25 s: prefill 5 (units 5*3 = 15) ends 0.75 with
    # the first token; three decodes (ctx 6, 7, 8) end 1.0, 1.25, 1.5.
    # TTFT = 0.25, TPOT = (1.5 - 0.75) / 3 = 0.25; computed = 5 + 3 = 8.
    out, calls, _ = run_case("single_request", dt=0.25)
    assert calls == [(5, 1, 0, 0, 15.0, 0), (1, 1, 1, 6, 0.0, 0), (1, 1, 1, 7, 0.0, 0),
                     (1, 1, 1, 8, 0.0, 0)]
    assert_times(out.admitted_s, [0.5])
    assert_times(out.first_token_s - out.arrival_s, [0.25])
    assert_times((out.completion_s - out.first_token_s) / 3, [0.25])
    assert_times(out.completion_s, [1.5])
    assert_times(out.max_itl_s, [0.25])
    np.testing.assert_array_equal(out.itl_hist, hist_of({0.25: 3}))
    assert out.computed_tokens.tolist() == [8]
    assert out.cache_event.tolist() == [MISS]


def test_chunked_prefill_splits_long_prompt():
    # bs 4, budget 4 tokens. A: p 10, o 2; B: p 3, o 1; both at 0.
    # t0: A 4 tokens (units 4*2.5 = 10); budget 0 -> B waits.
    # t1: A 4 more (p0 4: units 4*(4+2.5) = 26, ctx 4); budget 0 again.
    # t2: A's last 2 (units 2*(8+1.5) = 19, ctx 8) emit the first token; B admitted with the
    #     2 tokens left (units 2*1.5 = 3).
    # t3: A decodes (ctx 11); B's last prompt token is 1 token at p0 = 2 = num_tokens - 1:
    #     counted as a decode (ctx 3) and emits. Both finish at 4.
    out, calls, _ = run_case("chunked_prefill")
    assert calls == [(4, 0, 0, 0, 10.0, 0), (4, 0, 0, 0, 26.0, 4), (4, 1, 0, 0, 22.0, 8),
                     (2, 2, 2, 14, 0.0, 0)]
    assert_times(out.admitted_s, [0, 2])
    assert_times(out.first_token_s, [3, 4])
    assert_times(out.completion_s, [4, 4])
    assert out.computed_tokens.tolist() == [11, 3]


def test_preemption_victim_is_last_running_and_admission_skipped():
    # bs 2, N 5 (4 usable), budget 3, caching off. A: p 2, o 5; B: p 3, o 3.
    # t0: A 2 tokens (1 block), B 1 token (1 block; its whole prompt needs 2 <= 3 free);
    #     free 2. units 3 + 1 = 4.
    # t1: A decode (ctx 3) takes a block (free 1); B 2 tokens (p0 1: units 5, ctx 1) takes the
    #     last block and emits. free 0.
    # t2: both decode (ctx 4 + 4), no new blocks.
    # t3: A (5 tokens, 2 blocks) needs a 3rd block, none free -> the *last* running request B
    #     is preempted (its 2 blocks freed, computed 4 -> 0, front of waiting); A takes one,
    #     free 1. This step admits nobody.
    # t4: A decodes (ctx 6) and finishes at 5. B (5 known tokens) is not re-admitted: its whole
    #     sequence needs 3 blocks and 1 is free (scheduler_reserve_full_isl; its first chunk
    #     would fit in 1).
    # t5: B re-admitted: 3 of its 5 tokens (units 3*2 = 6). t6: B 2 tokens (p0 3: units
    #     2*(3+1.5) = 9, ctx 3), emits its 3rd token at 7.
    # B computed 1 + 2 + 1 + 3 + 2 = 9 = (p + o - 1) + 4 recomputed; tokens at 2, 3, 7.
    out, calls, _ = run_case("preempt_last_running")
    assert calls == [(3, 1, 0, 0, 4.0, 0), (3, 2, 1, 3, 5.0, 1), (2, 2, 2, 8, 0.0, 0),
                     (1, 1, 1, 5, 0.0, 0), (1, 1, 1, 6, 0.0, 0), (3, 0, 0, 0, 6.0, 0),
                     (2, 1, 0, 0, 9.0, 3)]
    assert out.preemptions.tolist() == [0, 1]
    assert out.computed_tokens.tolist() == [6, 9]
    assert_times(out.admitted_s, [0, 0])  # re-admission does not move admitted_s
    assert_times(out.first_token_s, [1, 2])
    assert_times(out.completion_s, [5, 7])
    assert_times(out.max_itl_s, [1, 4])
    np.testing.assert_array_equal(out.itl_hist, hist_of({1.0: 5, 4.0: 1}))
    assert out.cache_event.tolist() == [MISS, MISS]
    # Without the whole-sequence check B is re-admitted at t4 with its first 2 tokens (1
    # block, units 3) and does its last 3 at t5 (p0 2: units 3*(2+2) = 12, ctx 2): done at 6.
    out, calls, _ = run_case("preempt_last_running", scheduler_reserve_full_isl=False)
    assert calls[4:] == [(3, 1, 1, 6, 3.0, 0), (3, 1, 0, 0, 12.0, 2)]
    assert_times(out.completion_s, [5, 6])
    assert out.computed_tokens.tolist() == [6, 9]


def test_preemption_of_the_request_itself():
    # bs 2, N 6 (5 usable), caching off. A, B: p 4, o 4, both at 0.
    # t0: both prefill (units 10 + 10), 2 blocks each, free 1.
    # t1: A takes the last block; B needs one, none free, B is the last running: B preempts
    #     itself and scheduling stops (A alone: decode ctx 5).
    # t2: B (nt 5) needs 3 blocks, 2 free: stays waiting. t3: A takes a block (free 1).
    # A finishes at 4; t4: B recomputes 5 tokens (units 15) and emits (gap 5 - 1 = 4);
    # decodes at 5, 6 (ctx 6, 7) -> done at 7. B computed 4 + 5 + 1 + 1 = 11.
    out, calls, _ = run_case("preempt_self")
    assert calls == [(8, 2, 0, 0, 20.0, 0), (1, 1, 1, 5, 0.0, 0), (1, 1, 1, 6, 0.0, 0),
                     (1, 1, 1, 7, 0.0, 0), (5, 1, 0, 0, 15.0, 0), (1, 1, 1, 6, 0.0, 0),
                     (1, 1, 1, 7, 0.0, 0)]
    assert out.preemptions.tolist() == [0, 1]
    assert out.computed_tokens.tolist() == [7, 11]
    assert_times(out.completion_s, [4, 7])
    assert_times(out.max_itl_s, [1, 4])


def test_fcfs_admission_stops_at_first_misfit():
    # bs 1, N 6 (5 usable), caching off. X: p 3, o 2 at 0 (3 blocks, then 4).
    # A (p 3) and B (p 1) arrive at 0.5. t1: X takes a 4th block, 1 free; A needs 3 -> stop;
    # B would fit in 1 block but is behind A. X finishes at 2; both admitted at 2.
    out, calls, _ = run_case("fcfs_stops_at_first_misfit")
    assert_times(out.admitted_s, [0, 2, 2])
    assert_times(out.completion_s, [2, 3, 3])
    assert calls[1] == (1, 1, 1, 4, 0.0, 0)  # t1: X alone


def test_max_num_seqs():
    # max_num_seqs 2: A, B admitted at 0 (done at 2), C waits for a running slot until 2.
    out, _, _ = run_case("max_num_seqs")
    assert_times(out.admitted_s, [0, 0, 2])
    assert_times(out.first_token_s, [1, 1, 3])
    assert_times(out.completion_s, [2, 2, 4])


def test_chunked_prefill_off_admits_whole_prompts_only():
    # budget 16, A and B p 10. t0: A's 10 tokens leave 6 < 10: B waits (no partial chunk).
    # t1: A decodes (ctx 11), B's 10 tokens fit in 15: admitted; both emit.
    out, calls, _ = run_case("chunked_off")
    assert calls[:2] == [(10, 1, 0, 0, 55.0, 0), (11, 2, 1, 11, 55.0, 0)]
    assert_times(out.admitted_s, [0, 1])
    assert_times(out.completion_s, [2, 3])
    # With chunked prefill B takes the 6 tokens left at t0 instead.
    out_on, calls_on, _ = run_case("chunked_off", enable_chunked_prefill=True)
    assert calls_on[0] == (16, 1, 0, 0, 55.0 + 6 * 3.5, 0)
    assert_times(out_on.admitted_s, [0, 0])


def test_rejection_and_round_robin():
    # max_model_len 10, N 3 (2 usable blocks of 4), round robin over 2 replicas.
    # 0: 6 tokens -> replica 0. 1: 8 + 3 = 11 > 10 -> rejected at 1; its follow-up 2 is
    # released at 1 + 2 = 3 and rejected too (13 + 1 tokens). 3 -> replica 1 (rejections do
    # not advance the counter). 4: 9 tokens fit max_model_len but need 3 blocks > 2: rejected.
    out, _, _ = run_case("rejection")
    R, F = Status.REJECTED, Status.FINISHED
    assert out.status.tolist() == [F, R, R, F, R]
    assert out.replica.tolist() == [0, -1, -1, 1, -1]
    assert_times(out.arrival_s, [0, 1, 3, 4, 5])
    assert_times(out.admitted_s, [0, NAN, NAN, 4, NAN])
    assert_times(out.first_token_s, [1, NAN, NAN, 5, NAN])
    assert_times(out.completion_s, [2, NAN, NAN, 5, NAN])
    assert out.cache_event.tolist() == [MISS, NONE, NONE, MISS, NONE]
    assert out.computed_tokens.tolist() == [5, 0, 0, 3, 0]
    assert out.prefix_cache_queries == 4 + 3


def test_followup_released_after_think_time_hits_its_history():
    # bs 4. P (session 7): [1..6] + [7, 8] at 0: the prefill (h1 cached when scheduled) ends
    # at 1, the decode of token 7 at 2; token 8 is sampled but never computed, so [5-8] (h2)
    # is not cached. F (turn 1, think 3) arrives 2 + 3 = 5 with prompt [1..8, 9, 10, 11]:
    # cap floor(10/4) = 2, hits h1 only (label session 7): CONVERSATIONAL_HIT; it computes
    # 7 tokens and caches h2 (session 7). Q (no session) [1..8, 50..54] at 10: hits 2 of a cap
    # of 3 (its block 2 differs): CROSS_REQUEST_HIT.
    out, _, _ = run_case("conversation")
    assert_times(out.arrival_s, [0, 5, 10])
    assert_times(out.admitted_s, [0, 5, 10])
    assert_times(out.completion_s, [2, 6, 11])
    assert out.cached_tokens.tolist() == [0, 4, 8]
    assert out.computed_tokens.tolist() == [7, 7, 5]
    assert out.cache_event.tolist() == [MISS, CONV, CROSS]
    assert out.prefix_cache_queries == 6 + 11 + 13
    assert out.prefix_cache_hits == 12
    # On another replica (round robin over 2) the history is not there.
    out2, _, _ = run_case("conversation_other_replica")
    assert out2.replica.tolist() == [0, 1]
    assert out2.cache_event.tolist() == [MISS, EVICTED]
    assert out2.cached_tokens.tolist() == [0, 0]
    # Caching off: plain misses, no hits.
    out3, _, _ = run_case("conversation", enable_prefix_caching=False)
    assert out3.cache_event.tolist() == [MISS, MISS, MISS]
    assert out3.prefix_cache_hits == 0 and out3.cached_tokens.tolist() == [0, 0, 0]
    assert out3.prefix_cache_queries == 0  # vLLM records no lookup with caching off


# ------------------------------------------------------------------------------- routers
def _engine(router: Router, num_replicas: int, specs=None, **kw) -> ReferenceEngine:
    specs = specs or [ReqSpec([1, 2], [3])]
    cfg = EngineConfig(num_replicas=num_replicas, router=router, **kw)
    return ReferenceEngine(build_inputs(specs, cfg), lambda *a: 1.0)


def _dummy(rid: int = 99, session: int = -1) -> Request:
    return Request(rid=rid, arrival_s=0.0, prompt=1, output=1, session=session, turn=0,
                   parent=-1, think_s=0.0, hashes=[])


def test_router_round_robin():
    eng = _engine(Router.ROUND_ROBIN, 3)
    req = eng.requests[0]
    assert [eng.route(req) for _ in range(5)] == [0, 1, 2, 0, 1]


def test_router_least_loaded():
    eng = _engine(Router.LEAST_LOADED, 3)
    r0, r1, r2 = eng.replicas
    r0.running = [_dummy(), _dummy()]            # load 2
    r1.waiting.append(_dummy())                  # load 4 (one request, but waiting weighs 4)
    r2.running = [_dummy(), _dummy(), _dummy()]  # load 3
    assert eng.route(eng.requests[0]) == 0
    r0.running.append(_dummy())                  # 3 vs 4 vs 3: tie -> lowest index
    assert eng.route(eng.requests[0]) == 0
    r0.waiting.append(_dummy())                  # 7 vs 4 vs 3
    assert eng.route(eng.requests[0]) == 2


def test_router_session_affinity():
    eng = _engine(Router.SESSION_AFFINITY, 2)
    r0, r1 = eng.replicas
    r0.running = [_dummy()]
    assert eng.route(_dummy(1, session=4)) == 1       # least loaded, session 4 pinned to 1
    r1.waiting.extend([_dummy(), _dummy()])
    assert eng.route(_dummy(2, session=4)) == 1       # pinned despite the load
    assert eng.route(_dummy(3, session=-1)) == 0      # no session: least loaded, no pin
    assert eng.route(_dummy(4, session=5)) == 0
    assert eng.session_to_replica == {4: 1, 5: 0}


def test_router_prefix_aware():
    # bs 4, N 9 (8 usable). Request: prompt [1..12] + 1 output -> hashes h1 h2 h3, lookup cap
    # floor(11/4) = 2 blocks; cdiv(12, 4) = 3 prompt blocks.
    specs = [ReqSpec(list(range(1, 13)), [13])]
    eng = _engine(Router.PREFIX_AWARE, 2, specs, block_size=4, num_gpu_blocks=9)
    req = eng.requests[0]
    r0, r1 = eng.replicas
    blocks = r1.pool.allocate(3)
    for blk, h in zip(blocks, req.hashes):
        r1.pool.cache_block(blk, h, -2)
    r1.pool.free_blocks(reversed(blocks))
    # cost r0 = 3 - 0 + 0 = 3; r1 = (3 - 2) + 0 = 1 (h3 is cached but over the cap)
    assert eng.route(req) == 1
    held = r1.pool.allocate(3)                   # r1: 3 blocks in use -> cost 1 + 3 = 4
    assert eng.route(req) == 0
    r1.pool.free_blocks([held[2]])               # r1: 2 in use -> cost 3 = r0's: tie on cost
    r0.waiting.append(_dummy())                  # ... broken by load: r0 4, r1 0
    assert eng.route(req) == 1
    r1.running = [_dummy()] * 4                  # r1 load 4 = r0's: lowest index
    assert eng.route(req) == 0
    # Caching off: r1's cached h1 does not count. With caching r1 would cost (3 - 1) + 1 = 3,
    # tie with r0 and win on load; without it r1 costs 3 + 1 = 4 > r0's 3.
    eng_off = _engine(Router.PREFIX_AWARE, 2, specs, block_size=4, num_gpu_blocks=9,
                      enable_prefix_caching=False)
    eng_off.replicas[0].waiting.append(_dummy())
    b = eng_off.replicas[1].pool.allocate(1)
    eng_off.replicas[1].pool.cache_block(b[0], req.hashes[0], -2)
    assert eng_off.route(eng_off.requests[0]) == 0


def test_debug_mode_catches_a_lost_block():
    eng = ReferenceEngine(hand_cases()["single_request"].inputs(), lambda *a: 1.0, debug=True)
    eng.replicas[0].pool.blocks[1].ref_cnt = 1  # owned by nobody, not free: lost
    with pytest.raises(AssertionError):
        eng.check_invariants()


def test_empty_input():
    out = ReferenceEngine(build_inputs([], EngineConfig()), lambda *a: 1.0, debug=True).run()
    assert len(out.status) == 0 and out.num_steps == 0
    assert out.prefix_cache_queries == 0 and int(out.itl_hist.sum()) == 0


def test_zero_output_tokens_refused():
    with pytest.raises(ValueError):
        ReferenceEngine(build_inputs([ReqSpec([1], [])], EngineConfig()), lambda *a: 1.0)


def test_client_timeouts():
    # bs 4, unlimited, every step 1 s. A (p 4, o 6, timeout 3.5) and B (p 4, o 2) at 0; C (p 3,
    # o 1, timeout 0.2) at 0.5; D follows A (think 1); E (p 2, o 2, timeout 1.5) at 10.
    # t0: A and B prefill; t1..: A decodes, B decodes and finishes at 2. C waits behind the
    #   step 0->1 and its client gives up at 0.7: out of the waiting queue, never admitted.
    # The step 3->4 starts before A's deadline 3.5, so A gets its 4th token at 4; the abort is
    #   taken before the next step (vLLM handles aborts between steps): A's blocks are freed, and
    #   D is released at 3.5 + 1 = 4.5, admitted at once, done at 5.5.
    # E finishes at 12, after its deadline 11.5: TIMED_OUT, with its timestamps kept.
    out, _, eng = run_case("client_timeouts")
    T, F = Status.TIMED_OUT, Status.FINISHED
    assert out.status.tolist() == [T, F, T, F, T]
    assert_times(out.arrival_s, [0, 0, 0.5, 4.5, 10])
    assert_times(out.admitted_s, [0, 0, NAN, 4.5, 10])
    assert_times(out.first_token_s, [1, 1, NAN, 5.5, 11])
    assert_times(out.completion_s, [NAN, 2, NAN, 5.5, 12])
    assert out.computed_tokens.tolist() == [7, 5, 0, 2, 3]
    assert_times(out.max_itl_s, [1, 1, NAN, NAN, 1])
    # blocks in use after each step: A 1 + B 1; A 2 (B done); A 2; A 2 (its 4th token's slot)
    assert out.steps["kv_blocks_used"].tolist()[:4] == [2, 2, 2, 2]
    assert eng.replicas[0].pool.num_free == eng.replicas[0].pool.num_usable  # every block back
