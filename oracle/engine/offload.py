"""KV offload to host memory: a per-replica host tier behind the GPU prefix cache (vLLM
0.33.0's ``OffloadingConnector`` with the CPU backend; README "KV offload").

    GPU hit -> host hit -> compute: at admission, after the GPU prefix hit, the host tier is
    looked up from the first block the GPU missed; its leading hits are loaded (bytes over
    the host link, before the step's forward pass) and count as computed.
    Stores: every full *prompt* block a step schedules is offered to the tier at the end of
    scheduling (vLLM ``offload_prompt_only``, ``_build_store_jobs``), LRU eviction.

The tier's arrays live in :data:`HostTier` (``oracle.kernels.hosttier`` is the mechanism);
with the tier off (``enabled`` False) no function here is called.
"""

from __future__ import annotations

from collections import namedtuple
from enum import IntEnum

import numpy as np

from oracle.kernels._jit import jit
from oracle.kernels.hosttier import host_match, host_store, host_touch, new_host_arrays

HostTier = namedtuple("HostTier", [
    "slot_hash", "lru_prev", "lru_next", "hm", "num_used", "n", "cmask",  # oracle.kernels.hosttier
    "enabled",          # a host tier is configured
    "s_per_block",      # f8: load time of one block over the replica's host links
    "latency_s",        # f8: fixed time of one load
    "pending_s",        # f8[R] load time of the step being scheduled
    "next_store",       # i4[n] first prompt block of request q not yet offered (vLLM next_stored_chunk_idx)
    "host_tokens",      # i4[n] tokens loaded from the host at the request's first admission
    "counts",           # i8[len(HostCounter)]
    "load_s",           # f8[1] total load time
    "store_slots",      # i4[m] scratch of host_store: the slots of an offer's hashes
])


class HostCounter(IntEnum):
    """Run totals of the host tier (``HostTier.counts``); kernels index ``HostCounter.X.value``."""

    QUERIES = 0          # tokens looked up in the tier: known tokens minus the GPU hit (vLLM connector queries)
    HIT_BLOCKS = 1       # blocks loaded from the tier
    LOADS = 2            # admissions that loaded at least one block
    STORED_BLOCKS = 3    # blocks written to the tier
    EVICTED_BLOCKS = 4   # blocks the tier dropped to make room
    FAILED_STORES = 5    # store offers refused (new blocks larger than the tier)


def new_host_tier(num_replicas: int, num_requests: int, num_blocks: int, s_per_block: float,
                  latency_s: float, max_blocks: int) -> HostTier:
    """A :data:`HostTier` of ``num_blocks`` blocks per replica (0: off); ``max_blocks``: the
    longest block table (an offer is at most that long)."""
    return HostTier(*new_host_arrays(num_replicas, num_blocks), enabled=bool(num_blocks > 0),
                    s_per_block=float(s_per_block), latency_s=float(latency_s),
                    pending_s=np.zeros(num_replicas, np.float64),
                    next_store=np.zeros(num_requests if num_blocks > 0 else 0, np.int32),
                    host_tokens=np.zeros(num_requests, np.int32),
                    counts=np.zeros(len(HostCounter), np.int64), load_s=np.zeros(1, np.float64),
                    store_slots=np.empty(max_blocks if num_blocks > 0 else 0, np.int32))


@jit(inline="always")
def host_lookup(q, r, hit, max_blocks, req, ht):
    """Blocks of request q found on the host after its ``hit`` GPU-hit blocks (at most
    ``max_blocks`` in all: the same cap as the GPU lookup)."""
    return host_match(ht.hm, ht.slot_hash, ht.n, ht.cmask, r, req.hashes, req.hash_off[q] + hit, max_blocks - hit)


@jit(inline="always")
def host_admit(q, r, hit, num_host, num_tokens, first, cfg, req, ht):
    """Request q is admitted with ``num_host`` blocks loaded from the host after ``hit`` GPU
    blocks: the load joins the step's (vLLM ``update_state_after_alloc`` -> ``prepare_load``,
    a load job per request), the loaded blocks become the most recently used, and the
    request's store offers restart after them (or at block 0 without a load, as vLLM's
    ``get_num_new_matched_tokens`` resets ``next_stored_chunk_idx``)."""
    bs = cfg.block_size
    ht.counts[HostCounter.QUERIES.value] += num_tokens - hit * bs
    ht.next_store[q] = 0
    if num_host > 0:
        host_touch(ht.hm, ht.slot_hash, ht.n, ht.cmask, r, req.hashes, req.hash_off[q] + hit, num_host,
                   ht.lru_prev, ht.lru_next)
        ht.pending_s[r] += ht.latency_s + num_host * ht.s_per_block
        ht.counts[HostCounter.HIT_BLOCKS.value] += num_host
        ht.counts[HostCounter.LOADS.value] += 1
        ht.next_store[q] = hit + num_host
    if first:
        ht.host_tokens[q] = num_host * bs


@jit(inline="always")
def offload_scheduled(nsch, r, cfg, req, st):
    """End of scheduling: each scheduled request, in schedule order, offers its prompt blocks
    full after this step that it has not offered yet (vLLM ``_build_store_jobs`` over the
    step's scheduled requests, ``offload_prompt_only``). An offer is refused when it holds
    more blocks than the tier; ``next_stored_chunk_idx`` does not move, so the request's
    later prefill steps offer (and are refused) again; decode steps offer nothing."""
    ht, rs, sc = st.host, st.rs, st.sc
    for k in range(nsch):
        q = sc.sch_req[k]
        upto = min(rs.num_computed[q] + sc.sch_new[k], req.prompt[q]) // cfg.block_size
        start = ht.next_store[q]
        if rs.num_computed[q] >= req.prompt[q] or upto <= start:  # only steps computing prompt tokens offer
            continue
        stored, evicted = host_store(ht.n, ht.cmask, r, req.hashes, req.hash_off[q] + start, upto - start,
                                     ht.slot_hash, ht.lru_prev, ht.lru_next, ht.hm, ht.num_used, ht.store_slots)
        if stored < 0:
            ht.counts[HostCounter.FAILED_STORES.value] += 1
            continue
        ht.counts[HostCounter.STORED_BLOCKS.value] += stored
        ht.counts[HostCounter.EVICTED_BLOCKS.value] += evicted
        ht.next_store[q] = upto


@jit(inline="always")
def take_load_s(ht, r):
    """The load time of replica r's step (loads finish before its forward pass); resets it."""
    dt = ht.pending_s[r]
    ht.pending_s[r] = 0.0
    ht.load_s[0] += dt
    return dt
