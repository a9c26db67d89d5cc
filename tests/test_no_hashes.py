"""With prefix caching off, simulate skips block hashing (oracle.api.engine_block_hashes): the
engine must give the same outputs as with the hashes, i.e. never read them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from oracle.api import as_scenario, engine_block_hashes, engine_inputs, load_workload
from oracle.engine.hashes import shared_block_hashes
from oracle.engine.loop import run_engine


def _scenario(router: str, blocks):
    conv = {"turns": {"dist": "uniform", "min": 1, "max": 5}, "think_time_s": 0.5}
    return as_scenario({
        "name": "no-hashes", "seed": 11, "simulation": {"num_requests": 1500},
        "model": {"name": "llama-3.1-8b"}, "hardware": {"gpu": "h100-sxm"},
        "workload": {"clients": [
            {"name": "chat", "arrival": {"rate": 30.0}, "prompt_tokens": {"dist": "uniform", "min": 1, "max": 900},
             "output_tokens": {"dist": "uniform", "min": 1, "max": 200}, "conversation": conv,
             "system_prompt_tokens": 64, "num_system_prompts": 3},
            {"name": "one-shot", "arrival": {"rate": 10.0}, "prompt_tokens": 300, "output_tokens": 20}]},
        "frameworks": [{"name": "fw", "replicas": 3, "router": router, "enable_prefix_caching": False,
                        "num_gpu_blocks": blocks}]})


@pytest.mark.parametrize("router", ["prefix_aware", "round_robin", "session_affinity"])
@pytest.mark.parametrize("blocks", [400, "unlimited"])
def test_engine_ignores_hashes_without_prefix_caching(router, blocks):
    sc = _scenario(router, blocks)
    fw = sc.frameworks[0]
    wl = load_workload(sc)
    off, h = engine_block_hashes(wl, fw)
    assert h.shape == (0,) and off.shape == (len(wl),) and not off.any()
    with_hashes = run_engine(engine_inputs(sc, fw, wl, hashes=shared_block_hashes(wl, fw.block_size)))
    without = run_engine(engine_inputs(sc, fw, wl))
    for f in dataclasses.fields(with_hashes):
        a, b = getattr(with_hashes, f.name), getattr(without, f.name)
        if isinstance(a, np.ndarray):
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f.name
        else:
            assert a == b, f.name
