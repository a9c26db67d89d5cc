"""Plain-Python reference for ``oracle.kernels.hashing.block_hashes`` (per-token, slow, obvious).

Expand every request's segments into tokens ``(key, j)``, cut the token list into blocks of
``block_size``, split each full block into runs (a run continues while the next token is
``(same key, j + 1)``), and fold the runs with the hash documented in the kernel module.
Arithmetic uses Python ints masked to 64 bits.
"""

from __future__ import annotations

MASK = (1 << 64) - 1
SEED = 0x9E3779B97F4A7C15


def fmix(z: int) -> int:
    z &= MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def hash_runs(prev: int, runs: list[tuple[int, int, int]]) -> int:
    """Hash of one block from its parent hash and its runs ``(key, start, length)``."""
    s = prev
    for key, start, length in runs:
        w = fmix(key ^ 0x243F6A8885A308D3) ^ ((((start << 32) | length) * 0x9FB21C651E98DF25) & MASK)
        s = fmix(s ^ w)
    h = fmix(s ^ 0xC2B2AE3D27D4EB4F)
    return h or 1


def tokens_of(keys, lens) -> list[tuple[int, int]]:
    """The token identities ``(key, j)`` of a segment list."""
    return [(int(k), j) for k, n in zip(keys, lens) for j in range(int(n))]


def runs_of(block: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Split a block's tokens into maximal runs of consecutive offsets of one key."""
    runs: list[list[int]] = []
    for key, j in block:
        if runs and runs[-1][0] == key and runs[-1][1] + runs[-1][2] == j:
            runs[-1][2] += 1
        else:
            runs.append([key, j, 1])
    return [tuple(r) for r in runs]


def chain_hashes(tokens: list[tuple[int, int]], block_size: int) -> list[int]:
    """Chained hashes of all full blocks of one token list."""
    out = []
    prev = SEED
    for b in range(len(tokens) // block_size):
        prev = hash_runs(prev, runs_of(tokens[b * block_size:(b + 1) * block_size]))
        out.append(prev)
    return out


def block_hashes(seg_offsets, seg_key, seg_len, block_size: int) -> tuple[list[int], list[int]]:
    """Same contract as the kernel, as Python lists."""
    offsets = [0]
    hashes: list[int] = []
    for i in range(len(seg_offsets) - 1):
        lo, hi = int(seg_offsets[i]), int(seg_offsets[i + 1])
        hashes += chain_hashes(tokens_of(seg_key[lo:hi], seg_len[lo:hi]), block_size)
        offsets.append(len(hashes))
    return offsets, hashes


def token_id_chain(token_ids: list[int]) -> list[int]:
    """Block size 1 over a list of token ids (each a length-1 segment with key = id)."""
    out = []
    prev = SEED
    for t in token_ids:
        prev = hash_runs(prev, [(t, 0, 1)])
        out.append(prev)
    return out
