"""Host RAM: estimate a run's memory before allocating, and refuse runs that cannot fit.

(The GPU memory model -- weights, activations, KV blocks per GPU -- is ``oracle.memory``.)
"""

from __future__ import annotations

import os

import numpy as np

from oracle.errors import CapacityError

# Bytes per request held by the engine and the metrics (state + outputs + table columns).
PER_REQUEST_BYTES = 400
# Bytes per KV block in the pool (ref_cnt, hash, session, duplicate link, free links, 2-4 map
# slots x 8 bytes).
PER_BLOCK_BYTES = 4 + 8 + 8 + 4 + 8 + 4 * 8
# Bytes per slot of a KV offload tier (hash, LRU links, 2-4 map slots x 8 bytes).
PER_HOST_SLOT_BYTES = 8 + 4 + 4 + 4 * 8


def available_memory_bytes() -> int | None:
    """Memory available to this process (MemAvailable, capped by a cgroup limit), or None."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            v = open(p).read().strip()
            if v.isdigit() and int(v) < (1 << 60):
                avail = min(avail, int(v)) if avail else int(v)
        except OSError:
            continue
    return avail


def estimate_bytes(scenario, frameworks, workload, num_gpu_blocks: dict[str, int]) -> int:
    """Rough peak bytes of simulating the largest framework of ``frameworks`` over ``workload``.

    ``num_gpu_blocks``: framework name -> KV blocks per replica (-1: unlimited), as
    ``oracle.scenario.resolve_num_gpu_blocks`` gives them.
    """
    n = len(workload)
    total_tokens = (np.asarray(workload.prompt_tokens, np.int64) + workload.output_tokens)
    peak = 0
    for fw in frameworks:
        bs = fw.block_size
        # block hashes exist only with prefix caching on (oracle.api.engine_block_hashes)
        hashes = int((total_tokens // bs).sum()) * 8 if fw.enable_prefix_caching else 0
        blocks = num_gpu_blocks[fw.name]
        if blocks < 0:   # unlimited: the engine sizes the pool for every request's blocks
            blocks = int(((total_tokens + bs - 1) // bs).sum()) + 1
        pool = fw.replicas * blocks * PER_BLOCK_BYTES
        if fw.kv_offload is not None:
            from oracle.kv_offload import host_tier_params
            pool += fw.replicas * host_tier_params(scenario, fw)[0] * PER_HOST_SLOT_BYTES
        queues = fw.replicas * n * 4
        tables = fw.replicas * fw.max_num_seqs * (fw.max_model_len // bs + 1) * 4
        # style "original" records the steps for gpu_utilization even when they are not written
        steps = n * 8 * 9 * 4 if scenario.output.steps or scenario.output.style == "original" else 0
        peak = max(peak, hashes + pool + queues + tables + steps + n * PER_REQUEST_BYTES)
    return peak


def memory_limit_bytes(max_memory_bytes: int | None = None) -> int | None:
    """The limit in force: ``max_memory_bytes``, else ``ORACLE_MAX_MEMORY_GB``, else what is available."""
    if max_memory_bytes is not None:
        return max_memory_bytes
    env = os.environ.get("ORACLE_MAX_MEMORY_GB")
    if env:
        try:
            gb = float(env)
        except ValueError:
            gb = float("nan")
        if not (gb > 0 and gb < float("inf")):
            raise CapacityError(f"ORACLE_MAX_MEMORY_GB must be a positive number of GiB, got {env!r}")
        return int(gb * 2**30)
    return available_memory_bytes()


def _size(nbytes: float) -> str:
    gib = nbytes / 2**30
    if gib >= 1e6:
        return f"{gib:.2g} GiB"
    return f"{gib:,.1f} GiB" if gib >= 0.1 else f"{nbytes / 2**20:.1f} MiB"


def _count(n: float) -> str:
    return f"{n:,.0f}" if n < 1e12 else f"{n:.2g}"


def min_requests(scenario) -> float | None:
    """A lower bound on the number of requests a generated workload will have (None for traces).

    ``num_requests`` if given, capped by the expected number of sessions in ``duration_s``
    (every session has at least one request); computed without generating anything.
    """
    wl = scenario.workload
    if getattr(wl, "trace", None) is not None:
        return None
    sim = scenario.simulation
    closed = [c for c in wl.clients if c.closed_loop is not None]
    opened = [c for c in wl.clients if c.closed_loop is None]
    n = 0.0
    if opened:
        n = float(sim.num_requests) if sim.num_requests is not None else float("inf")
        if sim.duration_s is not None:
            rate = sum(c.arrival.rate for c in opened if c.arrival is not None)
            if wl.arrival is not None and any(c.arrival is None for c in opened):
                rate += wl.arrival.rate
            n = min(n, rate * sim.duration_s)
    for c in closed:   # a closed-loop client sends its count, or at least one request per user
        count = c.closed_loop.num_requests if c.closed_loop.num_requests is not None else sim.num_requests
        users = float(c.closed_loop.concurrency)
        n += float(count) if count is not None and sim.duration_s is None else min(users, float(count or users))
    return n if n != float("inf") else None


def check_workload_size(scenario, *, max_memory_bytes: int | None = None) -> None:
    """Refuse, before generating it, a workload whose request table alone exceeds the limit."""
    limit = memory_limit_bytes(max_memory_bytes)
    n = min_requests(scenario)
    if limit is None or n is None:
        return
    need = n * PER_REQUEST_BYTES
    if need > limit:
        raise CapacityError(
            f"this run needs at least {_size(need)} (about {_count(n)} requests) but only {_size(limit)} "
            f"are available; reduce num_requests/duration_s or the arrival rate, or raise --max-memory",
            file=scenario.path)


def check_memory(scenario, frameworks, workload, num_gpu_blocks: dict[str, int], *,
                 max_memory_bytes: int | None = None) -> None:
    """Refuse a run whose :func:`estimate_bytes` exceeds the limit."""
    limit = memory_limit_bytes(max_memory_bytes)
    if limit is None:
        return
    need = estimate_bytes(scenario, frameworks, workload, num_gpu_blocks)
    if need > limit:
        raise CapacityError(
            f"this run needs about {_size(need)} but only {_size(limit)} are available "
            f"({len(workload):,} requests); reduce num_requests/duration, pin num_gpu_blocks instead of "
            f"\"unlimited\", or raise --max-memory", file=scenario.path)
