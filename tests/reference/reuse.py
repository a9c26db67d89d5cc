"""Independent ideal-prefix-reuse counter (no kernel hashing): a trie of exact block contents.

A block's identity is ``(identity of the previous block, its exact contents)``, where the
contents are the runs ``(key, start, stop)`` obtained by intersecting the block's token range
with the segments' cumulative token ranges (bisect), a different route from the kernel's
streaming loop. Identities are interned in a dict, so there are no hash collisions at all.

Requests are processed in id order: the hit is the longest run of leading blocks already
interned by an earlier request, capped at ``(prompt - 1) // block_size`` blocks; then all
full blocks (prompt + output) of the request are interned.
"""

from __future__ import annotations

import bisect
import itertools


def block_contents(keys, lens, block_size: int) -> list[tuple]:
    """Exact contents of every full block of one segment list."""
    starts = [0] + list(itertools.accumulate(int(n) for n in lens))
    total = starts[-1]
    blocks = []
    for b in range(total // block_size):
        lo, hi = b * block_size, (b + 1) * block_size
        g = bisect.bisect_right(starts, lo) - 1
        runs = []
        while lo < hi:
            stop = min(hi, starts[g + 1])
            runs.append((int(keys[g]), lo - starts[g], stop - starts[g]))
            lo = stop
            g += 1
        blocks.append(tuple(runs))
    return blocks


def ideal_hits(seg_offsets, seg_key, seg_len, prompt_tokens, block_size: int) -> list[int]:
    """Hit blocks per request under an unlimited cache (vLLM rules), in request-id order."""
    ids: dict[tuple, int] = {}
    owner: dict[int, int] = {}  # block identity -> first request that produced it
    hits = []
    for i in range(len(seg_offsets) - 1):
        lo, hi = int(seg_offsets[i]), int(seg_offsets[i + 1])
        prev = -1
        chain = []
        for content in block_contents(seg_key[lo:hi], seg_len[lo:hi], block_size):
            prev = ids.setdefault((prev, content), len(ids))
            chain.append(prev)
        cap = max(int(prompt_tokens[i]) - 1, 0) // block_size
        h = 0
        while h < min(cap, len(chain)) and owner.get(chain[h], i) < i:
            h += 1
        hits.append(h)
        for c in chain:
            owner.setdefault(c, i)
    return hits


def ideal_reuse_fraction(wl, block_size: int) -> float:
    """Hit tokens / prompt tokens of a Workload."""
    hits = ideal_hits(wl.seg_offsets, wl.seg_key, wl.seg_len, wl.prompt_tokens, block_size)
    return sum(hits) * block_size / int(wl.prompt_tokens.sum())
