"""Chained 64-bit prefix hashes of full KV blocks, from a workload's content segments.

A request's full token sequence (prompt, then output) is a list of segments ``(key, len)``
in CSR form; token ``j`` of a segment is identified by ``(key, j)`` (DESIGN.md §3.2). For a
block size ``bs`` the sequence is cut into blocks ``[b*bs, (b+1)*bs)`` and each *full* block
gets a hash that depends on the hash of the block before it (vLLM ``hash_block_tokens``)::

    tokens   |(k1,0)(k1,1)(k1,2)(k1,3)|(k1,4)(k2,0)(k2,1)(k2,2)|(k2,3)(k3,0)  <- partial: no hash
    runs     |  (k1, 0, 4)            |  (k1, 4, 1) (k2, 0, 3)  |
    hashes   |  h0 = H(SEED, runs0)   |  h1 = H(h0, runs1)      |

Inside a block the tokens are folded per *run* (a maximal piece of one segment: key, start
offset, length), so the cost is O(segments + blocks), not O(tokens). Because every segment
starts at offset 0, the runs of a block are a function of its tokens alone: equal token
sequences give equal hashes whatever the segmentation.

The hash of one block, all arithmetic modulo 2**64 (``fmix`` is the splitmix64 finaliser)::

    s = prev                                         # prev = 0x9E3779B97F4A7C15 for block 0
    for each run (key, start, length):
        w = fmix(key ^ 0x243F6A8885A308D3) ^ (((start << 32) | length) * 0x9FB21C651E98DF25)
        s = fmix(s ^ w)
    h = fmix(s ^ 0xC2B2AE3D27D4EB4F);  h = 1 if h == 0   # 0 is the empty slot of hash maps

Only one ``fmix`` per run and one per block lie on the dependency chain (``w`` does not
depend on ``s``). When request i's segment list starts like request i-1's (consecutive
turns of a conversation), the hashes of the blocks inside the common prefix are copied from
request i-1 instead of recomputed; the result is the same, only faster.

Three layers (STYLE §2): :func:`block_hashes` validates and allocates, ``_block_hashes``
loops over requests, and :func:`hash_block` / ``_absorb`` / ``_finish`` do one
block. :func:`ideal_prefix_hits` counts the hits an unlimited prefix cache would give.
"""

from __future__ import annotations

import os

import numpy as np

from oracle.kernels._jit import jit

#: Parent hash of block 0 (also a literal inside the kernels: numba freezes globals).
HASH_SEED = 0x9E3779B97F4A7C15


@jit
def _fmix(z):
    """splitmix64 finaliser: a bijective, well-avalanched mix of a uint64."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@jit
def _absorb(s, key, start, length):
    """Fold one run (``length`` tokens ``(key, start) .. (key, start + length - 1)``) into ``s``."""
    w = _fmix(np.uint64(key) ^ np.uint64(0x243F6A8885A308D3))
    w ^= ((np.uint64(start) << np.uint64(32)) | np.uint64(length)) * np.uint64(0x9FB21C651E98DF25)
    return _fmix(s ^ w)


@jit
def _finish(s):
    """The block hash from the state after its last run; never 0."""
    h = _fmix(s ^ np.uint64(0xC2B2AE3D27D4EB4F))
    if h == np.uint64(0):
        h = np.uint64(1)
    return h


@jit
def hash_block(prev, run_key, run_start, run_len):
    """Hash of one block given its parent hash and its runs (the single-block primitive).

    in: prev (u8; ``HASH_SEED`` for block 0), run_key (u8[r]), run_start (i8/i4[r], offset
    of the run's first token in its segment), run_len (i4[r], tokens). Returns u8 (never 0).
    """
    s = np.uint64(prev)
    for r in range(run_key.shape[0]):
        s = _absorb(s, run_key[r], run_start[r], run_len[r])
    return _finish(s)


@jit
def _common_blocks(seg_offsets, seg_key, seg_len, i, block_size):
    """Full blocks at the start of request i whose tokens equal request i-1's (i >= 1)."""
    a, a_end = seg_offsets[i - 1], seg_offsets[i]
    b, b_end = seg_offsets[i], seg_offsets[i + 1]
    tokens = np.int64(0)
    while a < a_end and b < b_end and seg_key[a] == seg_key[b]:
        if seg_len[a] != seg_len[b]:  # same content, one segment longer: shares the shorter
            tokens += min(seg_len[a], seg_len[b])
            break
        tokens += seg_len[a]
        a += 1
        b += 1
    return tokens // block_size


@jit
def _block_hashes(seg_offsets, seg_key, seg_len, block_size, hash_offsets, out_hashes):
    """Driver: all full-block hashes of every request.

    in: seg_offsets (i8[n+1]), seg_key (u8[m]), seg_len (i4[m]), block_size (i8),
    hash_offsets (i8[n+1], request i owns out_hashes[hash_offsets[i]:hash_offsets[i+1]]);
    out: out_hashes (u8[hash_offsets[n]]).
    """
    n = seg_offsets.shape[0] - 1
    for i in range(n):
        pos = hash_offsets[i]
        end = hash_offsets[i + 1]
        if pos == end:
            continue
        s = np.uint64(0x9E3779B97F4A7C15)
        g = seg_offsets[i]
        j = np.int64(0)
        if i > 0:  # copy the blocks shared with request i-1, then resume after them
            num_copy = min(_common_blocks(seg_offsets, seg_key, seg_len, i, block_size), end - pos)
            src = hash_offsets[i - 1]
            for b in range(num_copy):
                out_hashes[pos + b] = out_hashes[src + b]
            if num_copy > 0:
                pos += num_copy
                if pos == end:
                    continue
                s = out_hashes[pos - 1]
                skip = num_copy * block_size
                while skip >= seg_len[g]:
                    skip -= seg_len[g]
                    g += 1
                j = skip
        fill = 0
        while pos < end:
            length = np.int64(seg_len[g])
            while j < length and pos < end:
                take = min(length - j, block_size - fill)
                s = _absorb(s, seg_key[g], j, take)
                fill += take
                j += take
                if fill == block_size:
                    s = _finish(s)
                    out_hashes[pos] = s
                    pos += 1
                    fill = 0
            g += 1
            j = 0


def num_full_blocks(seg_offsets: np.ndarray, seg_len: np.ndarray, block_size: int) -> np.ndarray:
    """Full blocks of each request's sequence: ``floor(sum(seg_len) / block_size)``, i8[n]."""
    csum = np.concatenate([np.zeros(1, np.int64), np.cumsum(seg_len, dtype=np.int64)])
    tokens = csum[seg_offsets[1:]] - csum[seg_offsets[:-1]]
    return tokens // int(block_size)


def block_hashes(seg_offsets: np.ndarray, seg_key: np.ndarray, seg_len: np.ndarray,
                 block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Chained hashes of all full blocks of every request's prompt + output.

    Parameters
    ----------
    seg_offsets: i8[n+1], CSR offsets: request i owns segments ``[seg_offsets[i], seg_offsets[i+1])``.
    seg_key: u8[m], segment content keys.  seg_len: i4[m], segment lengths (tokens, >= 1).
    block_size: tokens per block, 1..4096 (any positive integer works).

    Returns
    -------
    hash_offsets: i8[n+1]; request i's block b (b < floor(tokens_i / block_size)) has hash
    ``hashes[hash_offsets[i] + b]``.  hashes: u8[hash_offsets[n]], never 0.

    With more than ``2 * MIN_HASHES_PER_THREAD`` hashes and several CPUs, slices of the
    requests are hashed in threads (up to 4; the kernel releases the GIL). The values do not
    depend on the split: the first request of a slice is hashed instead of copied.
    """
    seg_offsets = np.ascontiguousarray(seg_offsets, dtype=np.int64)
    seg_key = np.ascontiguousarray(seg_key, dtype=np.uint64)
    seg_len = np.ascontiguousarray(seg_len, dtype=np.int32)
    block_size = int(block_size)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if seg_offsets.ndim != 1 or seg_offsets.shape[0] < 1 or seg_offsets[0] != 0:
        raise ValueError("seg_offsets must be a 1-D array starting at 0")
    if seg_key.shape != seg_len.shape or seg_offsets[-1] != seg_key.shape[0]:
        raise ValueError("seg_key and seg_len must have seg_offsets[-1] entries each")
    if np.any(np.diff(seg_offsets) < 0):
        raise ValueError("seg_offsets must be non-decreasing")
    if seg_len.size and seg_len.min() < 1:
        raise ValueError("segment lengths must be >= 1")
    nblocks = num_full_blocks(seg_offsets, seg_len, block_size)
    hash_offsets = np.zeros(seg_offsets.shape[0], np.int64)
    np.cumsum(nblocks, out=hash_offsets[1:])
    hashes = np.empty(int(hash_offsets[-1]), np.uint64)
    parts = _split(hash_offsets, _num_threads(hashes.shape[0]))
    with np.errstate(over="ignore"):  # only matters under NUMBA_DISABLE_JIT=1
        if len(parts) == 2:
            _block_hashes(seg_offsets, seg_key, seg_len, np.int64(block_size), hash_offsets, hashes)
        else:  # the kernel releases the GIL: hash slices of requests in threads (same values)
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor(len(parts) - 1) as pool:
                jobs = [pool.submit(_hash_range, seg_offsets, seg_key, seg_len, block_size, hash_offsets, hashes,
                                    int(a), int(b)) for a, b in zip(parts[1:-1], parts[2:])]
                _hash_range(seg_offsets, seg_key, seg_len, block_size, hash_offsets, hashes, int(parts[0]),
                            int(parts[1]))
                for j in jobs:
                    j.result()
    return hash_offsets, hashes


#: Hashes per thread below which :func:`block_hashes` does not start another thread.
MIN_HASHES_PER_THREAD = 4_000_000


def _num_threads(num_hashes: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4, num_hashes // MIN_HASHES_PER_THREAD))


def _split(hash_offsets: np.ndarray, parts: int) -> np.ndarray:
    """Request boundaries ``[0, ..., n]`` cutting the hashes into ``parts`` similar slices."""
    n = hash_offsets.shape[0] - 1
    if parts <= 1 or n < 2:
        return np.array([0, n], np.int64)
    cuts = np.searchsorted(hash_offsets, np.arange(1, parts) * (hash_offsets[-1] / parts))
    return np.unique(np.concatenate([[0], np.clip(cuts, 0, n), [n]])).astype(np.int64)


def _hash_range(seg_offsets, seg_key, seg_len, block_size, hash_offsets, hashes, a: int, b: int) -> None:
    """Hashes of requests ``a..b-1`` (request a is hashed from scratch: the same values)."""
    s0, s1 = seg_offsets[a], seg_offsets[b]
    h0, h1 = hash_offsets[a], hash_offsets[b]
    with np.errstate(over="ignore"):  # per thread; only matters under NUMBA_DISABLE_JIT=1
        _block_hashes(seg_offsets[a:b + 1] - s0, seg_key[s0:s1], seg_len[s0:s1], np.int64(block_size),
                      hash_offsets[a:b + 1] - h0, hashes[h0:h1])


# -- ideal prefix reuse (unlimited cache, vLLM hit rules) -----------------------------------

@jit
def _set_insert(table, h):
    """Insert hash h (!= 0) into the open-addressing set ``table`` (u8, power-of-two size).

    Returns 1 if it was new, 0 if already present. out: table (mutated).
    """
    mask = np.uint64(table.shape[0] - 1)
    i = h & mask
    while True:
        v = table[i]
        if v == h:
            return 0
        if v == np.uint64(0):
            table[i] = h
            return 1
        i = (i + np.uint64(1)) & mask


@jit
def _set_contains(table, h):
    mask = np.uint64(table.shape[0] - 1)
    i = h & mask
    while True:
        v = table[i]
        if v == h:
            return True
        if v == np.uint64(0):
            return False
        i = (i + np.uint64(1)) & mask


@jit
def _ideal_prefix_hits(hash_offsets, hashes, max_hit_blocks, first, table, io_count, out_hit_blocks):
    """Driver: requests ``first..n-1`` in index order against an unlimited cache.

    Each request's hit = the longest prefix of its block hashes already in the set, capped
    at max_hit_blocks[i]; then all its full-block hashes are added. Stops early (returning
    the next request index) when adding a request could push the set past half full.

    in: hash_offsets (i8[n+1]), hashes (u8[]), max_hit_blocks (i8[n]), first (i8);
    in/out: table (u8[C]), io_count (i8[1], entries in table); out: out_hit_blocks (i8[n]).
    """
    n = hash_offsets.shape[0] - 1
    half = table.shape[0] // 2
    for i in range(first, n):
        lo = hash_offsets[i]
        hi = hash_offsets[i + 1]
        if io_count[0] + (hi - lo) > half:
            return i
        # leading blocks equal to request i-1's are in the set already (i-1 inserted them)
        same = 0
        if i > 0:
            plo = hash_offsets[i - 1]
            num_prev = lo - plo
            while same < hi - lo and same < num_prev and hashes[lo + same] == hashes[plo + same]:
                same += 1
        cap = min(max_hit_blocks[i], hi - lo)
        b = min(same, cap)
        while b < cap and _set_contains(table, hashes[lo + b]):
            b += 1
        out_hit_blocks[i] = b
        for k in range(lo + same, hi):
            io_count[0] += _set_insert(table, hashes[k])
    return n


@jit
def _num_new_blocks(hash_offsets, hashes):
    """Upper bound on distinct hashes: blocks not equal to request i-1's at the same position.

    in: hash_offsets (i8[n+1]), hashes (u8[]). Returns i8.
    """
    total = 0
    for i in range(hash_offsets.shape[0] - 1):
        lo = hash_offsets[i]
        hi = hash_offsets[i + 1]
        same = 0
        if i > 0:
            plo = hash_offsets[i - 1]
            while same < hi - lo and same < lo - plo and hashes[lo + same] == hashes[plo + same]:
                same += 1
        total += hi - lo - same
    return total


@jit
def _rehash(old, new):
    """Move every entry of set ``old`` into the (larger, empty) set ``new``. out: new."""
    for i in range(old.shape[0]):
        if old[i] != np.uint64(0):
            _set_insert(new, old[i])


def ideal_prefix_hits(hash_offsets: np.ndarray, hashes: np.ndarray, prompt_tokens: np.ndarray,
                      block_size: int) -> np.ndarray:
    """Prefix-cache hit (in blocks) of every request under an unlimited cache, vLLM rules.

    Requests are processed in index order; request i's hit is the longest prefix of its
    block hashes seen in any earlier request, capped at ``floor((prompt_i - 1) / block_size)``
    blocks (the last prompt token is always recomputed); then all its full blocks (prompt
    and output) enter the cache. Returns i8[n] hit blocks (multiply by block_size for tokens).
    """
    hash_offsets = np.ascontiguousarray(hash_offsets, dtype=np.int64)
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    prompt = np.asarray(prompt_tokens, dtype=np.int64)
    n = hash_offsets.shape[0] - 1
    cap = np.maximum(prompt - 1, 0) // int(block_size)
    out = np.zeros(n, np.int64)
    count = np.zeros(1, np.int64)
    per_req = np.diff(hash_offsets)
    size = 1 << 16  # at most half full: no rehash is needed with this bound
    while size < 2 * int(_num_new_blocks(hash_offsets, hashes)):
        size *= 2
    table = np.zeros(size, np.uint64)
    i = 0
    while i < n:
        i = int(_ideal_prefix_hits(hash_offsets, hashes, cap, np.int64(i), table, count, out))
        if i < n:
            size = table.shape[0] * 2
            while size // 2 < count[0] + per_req[i]:
                size *= 2
            bigger = np.zeros(size, np.uint64)
            _rehash(table, bigger)
            table = bigger
    return out
