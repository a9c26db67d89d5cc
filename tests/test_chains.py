"""Hashes stored once per prefix chain equal the per-request hashes, for every request."""

from __future__ import annotations

import numpy as np
import pytest

from oracle.api import as_scenario, load_workload
from oracle.engine.hashes import shared_block_hashes
from oracle.kernels.chains import prefix_chains


def _workload(pattern: str):
    conv = {"turns": {"dist": "uniform", "min": 1, "max": 6}, "think_time_s": 1.0, "pattern": pattern}
    raw = {"name": "chains", "seed": 5, "simulation": {"num_requests": 400},
           "model": {"name": "llama-3.1-8b"}, "hardware": {"gpu": "h100-sxm"},
           "workload": {"clients": [
               {"name": "c", "arrival": {"rate": 5.0}, "prompt_tokens": {"dist": "uniform", "min": 1, "max": 90},
                "output_tokens": {"dist": "uniform", "min": 1, "max": 40}, "conversation": conv,
                "system_prompt_tokens": 30, "num_system_prompts": 2},
               {"name": "one-shot", "arrival": {"rate": 2.0}, "prompt_tokens": 17, "output_tokens": 3}]}}
    return load_workload(as_scenario(raw))


@pytest.mark.parametrize("pattern", ["chat", "agent", "branch"])
@pytest.mark.parametrize("block_size", [1, 7, 16])
def test_shared_hashes_equal_per_request_hashes(pattern, block_size):
    wl = _workload(pattern)
    off, h = wl.block_hashes(block_size)
    start, shared = shared_block_hashes(wl, block_size)
    assert start.shape == (len(wl),)
    for i in range(len(wl)):
        k = off[i + 1] - off[i]
        np.testing.assert_array_equal(shared[start[i]:start[i] + k], h[off[i]:off[i + 1]])
    if pattern != "branch":
        assert shared.size < h.size  # chains are actually shared


def test_chain_tails():
    wl = _workload("chat")
    tails, chain_tail = prefix_chains(wl.seg_offsets, wl.seg_key, wl.seg_len, wl.parent)
    assert np.all(chain_tail >= np.arange(len(wl)))
    assert set(np.unique(chain_tail)) == set(tails)
    # a tail's request is never continued by the next one
    for t in tails[:-1]:
        assert wl.parent[t + 1] != t or not np.array_equal(
            wl.seg_key[wl.seg_offsets[t]:wl.seg_offsets[t + 1]],
            wl.seg_key[wl.seg_offsets[t + 1]:wl.seg_offsets[t + 1] + wl.seg_offsets[t + 1] - wl.seg_offsets[t]])
