"""Block-hash kernel vs. the per-token plain-Python reference (tests/reference/hashing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracle.kernels.hashing import HASH_SEED, block_hashes, hash_block, ideal_prefix_hits
from reference import hashing as ref


def csr(requests):
    """[[(key, len), ...], ...] -> seg_offsets, seg_key, seg_len."""
    offsets = np.cumsum([0] + [len(r) for r in requests]).astype(np.int64)
    keys = np.array([k for r in requests for k, _ in r], dtype=np.uint64)
    lens = np.array([n for r in requests for _, n in r], dtype=np.int32)
    return offsets, keys, lens


def check_equal(requests, block_size):
    off, keys, lens = csr(requests)
    h_off, h = block_hashes(off, keys, lens, block_size)
    r_off, r_h = ref.block_hashes(off, keys, lens, block_size)
    assert h_off.tolist() == r_off
    assert h.tolist() == r_h
    assert h.dtype == np.uint64 and h_off.dtype == np.int64
    return h_off, h


def test_hand_written_cases():
    # empty workload, one request shorter than a block, exactly one block, one block + 1
    check_equal([], 4)
    h_off, h = check_equal([[(7, 3)]], 4)
    assert h_off.tolist() == [0, 0] and h.size == 0
    check_equal([[(7, 4)]], 4)
    check_equal([[(7, 5)]], 4)
    # runs crossing block boundaries and several segments inside one block
    check_equal([[(1, 3), (2, 1), (3, 6), (1, 2)], [(1, 3), (2, 2)]], 4)
    # repeated key in consecutive segments is not the same as one longer segment
    a = check_equal([[(5, 1), (5, 1)], [(5, 2)]], 2)[1]
    assert a[0] != a[1]


def test_seed_and_primitive_match():
    one = hash_block(np.uint64(HASH_SEED), np.array([9], np.uint64), np.array([0], np.int64),
                     np.array([4], np.int32))
    _, h = block_hashes(np.array([0, 1]), np.array([9], np.uint64), np.array([4], np.int32), 4)
    assert int(one) == int(h[0]) == ref.hash_runs(ref.SEED, [(9, 0, 4)])


segments = st.lists(st.tuples(st.integers(0, 2**64 - 1) | st.integers(0, 3), st.integers(1, 40)),
                    min_size=0, max_size=8)


@given(st.lists(segments, max_size=6), st.integers(1, 33))
def test_differential_random(requests, block_size):
    requests = [r for r in requests if r]  # every request has >= 1 segment
    check_equal(requests, block_size)


@st.composite
def chained_requests(draw):
    """Each request reuses a prefix of the previous one (sometimes with its last shared segment
    cut shorter or longer), then adds segments: exercises the copy-from-previous path."""
    reqs = [draw(segments.filter(bool))]
    for _ in range(draw(st.integers(0, 6))):
        prev = reqs[-1]
        keep = draw(st.integers(0, len(prev)))
        head = list(prev[:keep])
        if head and draw(st.booleans()):
            key, n = head[-1]
            head[-1] = (key, draw(st.integers(1, 2 * n)))
        reqs.append(head + draw(segments) or [(1, 1)])
    return reqs


@given(chained_requests(), st.integers(1, 17))
def test_differential_chained_requests(requests, block_size):
    check_equal(requests, block_size)


@given(segments.filter(bool), segments.filter(bool), segments.filter(bool), st.integers(1, 20))
def test_shared_prefix_shares_hashes_until_first_difference(prefix, tail_a, tail_b, block_size):
    a, b = prefix + tail_a, prefix + tail_b
    off, keys, lens = csr([a, b])
    h_off, h = block_hashes(off, keys, lens, block_size)
    ha, hb = h[h_off[0]:h_off[1]].tolist(), h[h_off[1]:h_off[2]].tolist()
    ta, tb = ref.tokens_of(*zip(*a)), ref.tokens_of(*zip(*b))
    first_diff = next((i for i, (x, y) in enumerate(zip(ta, tb)) if x != y), min(len(ta), len(tb)))
    same = first_diff // block_size  # blocks entirely before the first differing token
    assert ha[:same] == hb[:same]
    for k in range(same, min(len(ha), len(hb))):
        if ta[:(k + 1) * block_size] != tb[:(k + 1) * block_size]:
            assert ha[k] != hb[k]


@given(st.lists(st.integers(0, 200_000), min_size=1, max_size=60))
def test_block_size_one_token_ids_is_direct_chain(token_ids):
    off, keys, lens = csr([[(t, 1) for t in token_ids]])
    _, h = block_hashes(off, keys, lens, 1)
    assert h.tolist() == ref.token_id_chain(token_ids)


def test_segmentation_does_not_matter_for_equal_tokens():
    # The same tokens (k, 0..9) as one segment vs. in a request where the run spans blocks.
    _, h = check_equal([[(3, 10)], [(3, 10), (4, 2)]], 3)
    assert h[0:3].tolist() == h[3:6].tolist()


@pytest.mark.parametrize("block_size", [1, 16, 512, 4096])
def test_large_block_sizes_and_long_segments(block_size):
    requests = [[(1, 10_000), (2, 5000)], [(1, 10_000), (3, 123)], [(2, 4096 * 3)]]
    off, keys, lens = csr(requests)
    h_off, h = block_hashes(off, keys, lens, block_size)
    assert (h != 0).all()
    assert np.diff(h_off).tolist() == [15000 // block_size, 10123 // block_size, 12288 // block_size]
    if block_size >= 16:
        r_off, r_h = ref.block_hashes(off, keys, lens, block_size)
        assert h.tolist() == r_h
    shared = 10_000 // block_size
    assert h[h_off[0]:h_off[0] + shared].tolist() == h[h_off[1]:h_off[1] + shared].tolist()


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="block_size"):
        block_hashes(np.array([0, 1]), np.array([1], np.uint64), np.array([1], np.int32), 0)
    with pytest.raises(ValueError, match="lengths"):
        block_hashes(np.array([0, 1]), np.array([1], np.uint64), np.array([0], np.int32), 4)
    with pytest.raises(ValueError, match="seg_offsets"):
        block_hashes(np.array([0, 2]), np.array([1], np.uint64), np.array([1], np.int32), 4)


def test_ideal_prefix_hits_worked_example():
    # DESIGN §11 worked example, block size 4: A = [1..10] + 2 outputs, B = [1..9], C = [1..12].
    toks = lambda n: [(t, 1) for t in range(1, n + 1)]  # noqa: E731
    reqs = [toks(12), toks(9) + [(100, 1)], toks(12) + [(101, 1)]]
    off, keys, lens = csr(reqs)
    h_off, h = block_hashes(off, keys, lens, 4)
    hits = ideal_prefix_hits(h_off, h, np.array([10, 9, 12]), 4)
    assert hits.tolist() == [0, 2, 2]


def test_ideal_prefix_hits_large_and_driver_stops_when_half_full():
    from oracle.kernels.hashing import _ideal_prefix_hits, _num_new_blocks
    # 3000 requests x 44 blocks (40 distinct each) > the minimum 65536-slot table at half load
    reqs = [[(i, 40), (7, 4)] for i in range(3000)] + [[(5, 40), (8, 4)]]
    off, keys, lens = csr(reqs)
    h_off, h = block_hashes(off, keys, lens, 1)
    prompt = np.full(len(reqs), 44)
    hits = ideal_prefix_hits(h_off, h, prompt, 1)
    assert hits[:3000].sum() == 0 and hits[-1] == 40
    assert _num_new_blocks(h_off, h) == 3001 * 44  # nothing shared with the previous request
    table, count, out = np.zeros(256, np.uint64), np.zeros(1, np.int64), np.zeros(len(reqs), np.int64)
    stop = _ideal_prefix_hits(h_off, h, np.full(len(reqs), 43), 0, table, count, out)
    assert stop == 2 and count[0] == 88  # a third request would pass 128 entries
