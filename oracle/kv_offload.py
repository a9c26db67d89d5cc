"""KV offload to host memory (``[[frameworks]] kv_offload = {...}``): the scenario keys and
what the engine gets from them (host blocks per replica, load time per block).

The semantics (vLLM 0.33.0's ``OffloadingConnector`` with the CPU backend) are in
``oracle/engine/README.md``, "KV offload"; the engine side is ``oracle/engine/offload.py``.

    kv_offload = { gib = 64 }          # host memory for KV per replica (vLLM cpu_bytes_to_use)
    kv_offload = { blocks = 20000 }    # or the tier's size in KV blocks
    kv_offload = { gib = 64, link_gbps = 25, latency_s = 1e-5 }   # link overrides

Load time of ``k`` blocks = ``latency_s + k · block_size · kv_bytes_per_token_per_gpu /
(link_gbps · 1e9)``: every GPU of the replica moves its own share of each block over its own
host link at once (tensor / pipeline shards), so the per-GPU bytes and the per-GPU link set
the time. ``link_gbps`` defaults to the GPU catalog's ``host_link_gbps`` (effective GB/s per
direction: PCIe Gen4 ~25, Gen5 ~50, NVLink-C2C ~450), ``latency_s`` to its
``host_link_latency_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30


@dataclass(frozen=True)
class KvOffloadConfig:
    """A framework's host KV tier: its size (``blocks`` or ``gib``, exactly one) and the host
    link (None: the GPU catalog's)."""

    blocks: int | None = None       # host KV blocks per replica
    gib: float | None = None        # or host memory for KV per replica, GiB (all its GPUs together)
    link_gbps: float | None = None  # host link per GPU, effective GB/s per direction
    latency_s: float | None = None  # fixed time of one load


def parse_kv_offload(t) -> KvOffloadConfig:
    """``kv_offload`` table (an ``oracle._config.Table``) -> config; problems are reported on ``t``."""
    blocks = t.int("blocks", None, lo=1, hi=2**40)
    gib = t.float("gib", None, lo=0.0, lo_open=True, hi=1e6)
    if t.ok("blocks", "gib") and (blocks is None) == (gib is None):
        t.report(None, "needs exactly one of `blocks` (host KV blocks per replica) or `gib` "
                       "(host memory for KV per replica)")
    link = t.float("link_gbps", None, lo=0.0, lo_open=True, hi=1e5)
    latency = t.float("latency_s", None, lo=0.0, hi=10.0)
    t.done()
    return KvOffloadConfig(blocks=blocks, gib=gib, link_gbps=link, latency_s=latency)


def host_block_bytes_per_gpu(scenario, fw) -> int:
    """KV bytes of one block on one GPU of the replica."""
    from oracle.memory import kv_bytes_per_token_per_gpu
    from oracle.scenario import framework_dtypes
    kv_dtype = framework_dtypes(scenario, fw)[1]
    return fw.block_size * kv_bytes_per_token_per_gpu(scenario.model_of(fw), kv_dtype, tp=fw.tp, pp=fw.pp)


def host_block_bytes(scenario, fw) -> int:
    """KV bytes of one block of the replica (all its GPUs): what one block load moves."""
    return host_block_bytes_per_gpu(scenario, fw) * fw.tp * fw.pp


def host_tier_params(scenario, fw) -> tuple[int, float, float]:
    """``(host blocks per replica, load seconds per block, seconds per load)`` for the engine;
    ``(0, 0, 0)`` without a tier."""
    off: KvOffloadConfig | None = fw.kv_offload
    if off is None:
        return 0, 0.0, 0.0
    blocks = off.blocks if off.blocks is not None else int(off.gib * GIB) // host_block_bytes(scenario, fw)
    link = off.link_gbps if off.link_gbps is not None else scenario.gpu.host_link_gbps
    latency = off.latency_s if off.latency_s is not None else scenario.gpu.host_link_latency_s
    return int(blocks), host_block_bytes_per_gpu(scenario, fw) / (link * 1e9), float(latency)
