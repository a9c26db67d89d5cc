"""Block hashes for the engine, stored once per prefix chain (see ``oracle.kernels.chains``)."""

from __future__ import annotations

import numpy as np

from oracle.kernels.chains import prefix_chains
from oracle.kernels.hashing import block_hashes


def shared_block_hashes(workload, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(hash_start, hashes)``: request i's block b has hash ``hashes[hash_start[i] + b]``
    for every full block of its prompt + output — the same values as
    ``workload.block_hashes(block_size)``, but each chain's hashes are stored only once."""
    offs = np.asarray(workload.seg_offsets, np.int64)
    tails, chain_tail = prefix_chains(offs, workload.seg_key, workload.seg_len, workload.parent)
    if tails.shape[0] == len(workload):
        hash_offsets, hashes = block_hashes(offs, workload.seg_key, workload.seg_len, block_size)
        return hash_offsets[:-1].copy(), hashes
    counts = offs[tails + 1] - offs[tails]
    sub_offsets = np.zeros(tails.shape[0] + 1, np.int64)
    np.cumsum(counts, out=sub_offsets[1:])
    # gather the tails' segments (CSR -> CSR)
    idx = np.repeat(offs[tails] - sub_offsets[:-1], counts) + np.arange(sub_offsets[-1], dtype=np.int64)
    tail_offsets, hashes = block_hashes(sub_offsets, workload.seg_key[idx], workload.seg_len[idx], block_size)
    pos = np.empty(len(workload), np.int64)
    pos[tails] = np.arange(tails.shape[0])
    return tail_offsets[pos[chain_tail]], hashes
