"""Multi-LoRA in the engine (README "Multi-LoRA"): the ``max_loras`` admission rule, the
replica's adapters in GPU slots and in the CPU cache (LRU), and a step's LoRA time.

One record, :data:`Lora`, built by :func:`new_lora`; with LoRA off (``on`` False) no kernel
below is reached (the scheduler and the step test ``lora.on`` first). Sizes: ``R``
replicas, ``A`` adapters (ids ``0..A-1``; -1: a request without one), ``M = max_loras``
GPU slots and ``C = max_cpu_loras`` CPU-cache entries per replica.

vLLM (0.33.0) functions mirrored:

* ``Scheduler.schedule``: the adapters of all running requests (and of those admitted in
  this step) form ``scheduled_loras``; a waiting request whose adapter is not among them
  while they number ``max_loras`` is skipped (``skip_request``) and stays waiting, in order
  (the skipped requests are put back at the head of the queue after the pass);
* ``GPUModelRunner`` -> ``LRUCacheWorkerLoRAManager.set_active_adapters``: before a step, the
  running requests' adapters are made resident: ``add_adapter`` (read from disk into the CPU
  cache of ``max_cpu_loras``, LRU; evicting from it also leaves the GPU) then
  ``activate_adapter`` (copied into one of ``max_loras`` GPU slots, LRU).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from oracle.kernels._jit import jit
from oracle.kernels.lora import NUM_LORA_PARAMS, lora_step_time_s

Lora = namedtuple("Lora", [
    "on",          # bool: LoRA enabled (max_loras >= 1)
    "max_loras",   # i8 M: distinct adapters in a batch, GPU slots
    "params",      # f8[NUM_LORA_PARAMS] oracle.kernels.lora layout
    "adapter",     # i4[n] adapter of each request (-1: none)
    "cnt",         # i4[R*A] running requests of replica r with adapter a
    "act",         # i4[R*M] distinct adapters of r's running requests, ascending; nact[r] of them
    "nact",        # i8[R]
    "gpu_slot",    # i4[R*M] adapter in GPU slot k (-1 empty); gpu_t its last use (touch clock)
    "gpu_t",       # i8[R*M]
    "gpu_of",      # i4[R*A] GPU slot of adapter a (-1: not resident)
    "cpu_slot",    # i4[R*C] adapter in CPU-cache entry k (-1 empty); cpu_t its last use
    "cpu_t",       # i8[R*C]
    "cpu_of",      # i4[R*A] CPU-cache entry of adapter a (-1: not cached)
    "clock",       # i8[R] touch clock (strictly increasing: LRU order)
    "seen",        # i8[A] last step (stats[STEP]) that scheduled a token of adapter a
    "skipped",     # i4[n+1] requests skipped in the current admission pass (scratch)
    "stats",       # i8[4] see GPU_LOADS ...
    "load_s",      # f8[1] seconds of steps spent loading adapters
    "loads_by_adapter",  # i8[A] GPU loads per adapter
])

# Lora.stats indices
GPU_LOADS = 0     # adapters copied into a GPU slot
DISK_LOADS = 1    # adapters read from disk into the CPU cache
SKIPS = 2         # waiting requests passed over by the max_loras rule (once per step each)
STEP = 3          # steps priced so far (stamps ``seen``)


def new_lora(adapter: np.ndarray | None, num_replicas: int, max_loras: int, max_cpu_loras: int,
             params: np.ndarray | None, num_requests: int) -> Lora:
    """The :data:`Lora` record of one run; ``max_loras = 0`` (or no adapters) is LoRA off:
    every array is a placeholder of length 1."""
    on = max_loras >= 1 and adapter is not None
    n_ad = int(adapter.max(initial=-1)) + 1 if on else 0
    R = num_replicas
    M = max(max_loras, 1) if on else 1
    C = max(max_cpu_loras, M) if on else 1
    A = max(n_ad, 1)
    RA = R * A if on else 1
    return Lora(
        on=bool(on), max_loras=np.int64(max_loras if on else 0),
        params=np.ascontiguousarray(params if on else np.zeros(NUM_LORA_PARAMS), np.float64),
        adapter=np.ascontiguousarray(adapter if on else np.full(1, -1), np.int32),
        cnt=np.zeros(RA, np.int32), act=np.full(R * M, -1, np.int32), nact=np.zeros(R, np.int64),
        gpu_slot=np.full(R * M, -1, np.int32), gpu_t=np.zeros(R * M, np.int64), gpu_of=np.full(RA, -1, np.int32),
        cpu_slot=np.full(R * C, -1, np.int32), cpu_t=np.zeros(R * C, np.int64), cpu_of=np.full(RA, -1, np.int32),
        clock=np.zeros(R, np.int64), seen=np.full(A, -1, np.int64),
        skipped=np.empty(num_requests + 1 if on else 1, np.int32), stats=np.zeros(4, np.int64),
        load_s=np.zeros(1, np.float64), loads_by_adapter=np.zeros(A, np.int64))


@jit(inline="always")
def _num_adapters(lo):
    return lo.seen.shape[0]


# ------------------------------------------------------------------------- scheduler side
@jit(inline="always")
def lora_blocked(lo, r, q):
    """Would admitting request q on replica r exceed ``max_loras`` distinct adapters among
    the running requests (vLLM's ``scheduled_loras`` check)?"""
    a = lo.adapter[q]
    return a >= 0 and lo.nact[r] == lo.max_loras and lo.cnt[r * _num_adapters(lo) + a] == 0


@jit(inline="always")
def lora_join(lo, r, q):
    """Request q starts running on replica r: count its adapter (kept in ascending order)."""
    a = lo.adapter[q]
    if a < 0:
        return
    k = r * _num_adapters(lo) + a
    lo.cnt[k] += 1
    if lo.cnt[k] == 1:
        base = r * lo.max_loras
        i = lo.nact[r]
        while i > 0 and lo.act[base + i - 1] > a:
            lo.act[base + i] = lo.act[base + i - 1]
            i -= 1
        lo.act[base + i] = a
        lo.nact[r] += 1


@jit(inline="always")
def lora_leave(lo, r, q):
    """Request q stops running on replica r (finished, preempted or aborted)."""
    a = lo.adapter[q]
    if a < 0:
        return
    k = r * _num_adapters(lo) + a
    lo.cnt[k] -= 1
    if lo.cnt[k] == 0:
        base = r * lo.max_loras
        n = lo.nact[r]
        j = 0
        for i in range(n):
            if lo.act[base + i] != a:
                lo.act[base + j] = lo.act[base + i]
                j += 1
        lo.nact[r] = n - 1


# ------------------------------------------------------------------------------- the step
@jit(inline="always")
def _touch(slot_t, of, k_base, a_base, a, clock):
    """Mark adapter a (resident: ``of[a_base + a] >= 0``) as just used."""
    slot_t[k_base + of[a_base + a]] = clock


@jit(inline="always")
def _insert(slots, slot_t, of, k_base, a_base, cap, a, clock):
    """Put adapter a in a free entry, else in place of the least recently used one; returns
    the adapter evicted (-1 if none)."""
    best = -1
    for k in range(cap):
        if slots[k_base + k] < 0:
            best = k
            break
        if best < 0 or slot_t[k_base + k] < slot_t[k_base + best]:
            best = k
    old = slots[k_base + best]
    if old >= 0:
        of[a_base + old] = -1
    slots[k_base + best] = a
    slot_t[k_base + best] = clock
    of[a_base + a] = best
    return old


@jit(inline="always")
def lora_load_s(lo, r):
    """Make the adapters of replica r's running requests resident before its step; returns
    the seconds the loads take. The resident ones are marked used first (ascending id),
    then the missing ones are loaded (ascending id), so a load never evicts an adapter the
    step needs (vLLM iterates a set; README "Multi-LoRA")."""
    A = _num_adapters(lo)
    M = lo.max_loras
    C = lo.cpu_slot.shape[0] // lo.nact.shape[0]
    abase, gbase, cbase = r * A, r * M, r * C
    missing = 0
    for i in range(lo.nact[r]):
        a = lo.act[gbase + i]
        if lo.gpu_of[abase + a] >= 0:
            lo.clock[r] += 1
            _touch(lo.gpu_t, lo.gpu_of, gbase, abase, a, lo.clock[r])
        else:
            missing += 1
        if lo.cpu_of[abase + a] >= 0:
            lo.clock[r] += 1
            _touch(lo.cpu_t, lo.cpu_of, cbase, abase, a, lo.clock[r])
    if missing == 0:
        return 0.0
    secs = 0.0
    for i in range(lo.nact[r]):
        a = lo.act[gbase + i]
        if lo.gpu_of[abase + a] >= 0:
            continue
        if lo.cpu_of[abase + a] < 0:
            lo.clock[r] += 1
            old = _insert(lo.cpu_slot, lo.cpu_t, lo.cpu_of, cbase, abase, C, a, lo.clock[r])
            if old >= 0 and lo.gpu_of[abase + old] >= 0:   # out of the CPU cache: out of the GPU too
                lo.gpu_slot[gbase + lo.gpu_of[abase + old]] = -1
                lo.gpu_of[abase + old] = -1
            lo.stats[DISK_LOADS] += 1
            secs += lo.params[7]
        lo.clock[r] += 1
        _insert(lo.gpu_slot, lo.gpu_t, lo.gpu_of, gbase, abase, M, a, lo.clock[r])
        lo.stats[GPU_LOADS] += 1
        lo.loads_by_adapter[a] += 1
        secs += lo.params[6]
    lo.load_s[0] += secs
    return secs


@jit(inline="always")
def lora_step_s(lo, r, nsch, sch_req, sch_new):
    """LoRA seconds of a step on replica r: adapter loads, then the punica kernels over the
    scheduled tokens that have an adapter (``sch_req[:nsch]``, ``sch_new[:nsch]``)."""
    secs = lora_load_s(lo, r)
    lo.stats[STEP] += 1
    stamp = lo.stats[STEP]
    tokens = 0
    adapters = 0
    for k in range(nsch):
        a = lo.adapter[sch_req[k]]
        if a >= 0:
            tokens += sch_new[k]
            if lo.seen[a] != stamp:
                lo.seen[a] = stamp
                adapters += 1
    return secs + lora_step_time_s(lo.params, tokens, adapters)


def lora_outputs(lo: Lora) -> dict | None:
    """The run's LoRA totals for ``EngineOutputs.lora`` (None with LoRA off)."""
    if not lo.on:
        return None
    return {"gpu_loads": int(lo.stats[GPU_LOADS]), "disk_loads": int(lo.stats[DISK_LOADS]),
            "skipped_admissions": int(lo.stats[SKIPS]), "load_s": float(lo.load_s[0]),
            "loads_by_adapter": lo.loads_by_adapter.copy(), "adapter": lo.adapter.copy()}
