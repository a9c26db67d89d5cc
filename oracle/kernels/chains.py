"""Prefix chains of a workload: requests whose whole token sequence starts the next request's.

A chat session's turn k+1 prompt is turn k's full sequence plus a new message, so the block
hashes of turn k are the first blocks of turn k+1's. Hashing only the last request of each
such chain, and pointing every member at the chain's hashes, stores each block hash once per
chain instead of once per turn (3-4x less memory on multi-turn chat).
"""

from __future__ import annotations

import numpy as np

from oracle.kernels._jit import jit


@jit
def _continues_next(seg_offsets, seg_key, seg_len, parent, out):
    """out[i] = True when request i+1's parent is i and i's segment list starts i+1's.

    in: seg_offsets i8[n+1], seg_key u8[m], seg_len i4[m], parent i8[n]; out: bool[n].
    """
    n = parent.shape[0]
    for i in range(n):
        out[i] = False
        if i + 1 >= n or parent[i + 1] != i:
            continue
        a0 = seg_offsets[i]
        na = seg_offsets[i + 1] - a0
        b0 = seg_offsets[i + 1]
        if seg_offsets[i + 2] - b0 < na:
            continue
        same = True
        for k in range(na):
            if seg_key[a0 + k] != seg_key[b0 + k] or seg_len[a0 + k] != seg_len[b0 + k]:
                same = False
                break
        out[i] = same


def prefix_chains(seg_offsets: np.ndarray, seg_key: np.ndarray, seg_len: np.ndarray,
                  parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(tails, chain_tail)``: the ids of the requests that end a chain (ascending), and for
    every request the id of the tail of its chain (i8[n])."""
    n = parent.shape[0]
    cont = np.zeros(n, np.bool_)
    if n:
        _continues_next(np.ascontiguousarray(seg_offsets, np.int64), np.ascontiguousarray(seg_key, np.uint64),
                        np.ascontiguousarray(seg_len, np.int32), np.ascontiguousarray(parent, np.int64), cont)
    tails = np.flatnonzero(~cont)
    # every request belongs to the chain of the first tail at or after it
    chain_tail = tails[np.searchsorted(tails, np.arange(n))] if n else np.zeros(0, np.int64)
    return tails.astype(np.int64), chain_tail.astype(np.int64)
