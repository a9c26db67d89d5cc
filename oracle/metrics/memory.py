"""Estimate a run's memory before allocating, and refuse runs that cannot fit."""

from __future__ import annotations

import os

from oracle.errors import CapacityError

# Bytes per request held by the engine and the metrics (state + outputs + table columns).
PER_REQUEST_BYTES = 400
# Bytes per KV block in the pool (ref_cnt, hash, session, free links, 2 map slots x 12 bytes).
PER_BLOCK_BYTES = 4 + 8 + 8 + 8 + 2 * 2 * 12


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


def estimate_bytes(scenario, frameworks, workload) -> int:
    """Rough peak bytes of simulating the largest framework of ``frameworks`` over ``workload``."""
    import numpy as np
    n = len(workload)
    total_tokens = (np.asarray(workload.prompt_tokens, np.int64) + workload.output_tokens)
    peak = 0
    for fw in frameworks:
        bs = fw.block_size
        hashes = int((total_tokens // bs).sum()) * 8
        if fw.num_gpu_blocks == "unlimited":
            blocks = int(((total_tokens + bs - 1) // bs).sum()) + 1
        elif isinstance(fw.num_gpu_blocks, int):
            blocks = fw.num_gpu_blocks
        else:
            blocks = 200_000  # upper end of memory-derived pools
        pool = fw.replicas * blocks * PER_BLOCK_BYTES
        queues = fw.replicas * n * 4
        tables = fw.replicas * fw.max_num_seqs * (fw.max_model_len // bs + 1) * 4
        steps = n * 8 * 9 * 4 if scenario.output.steps else 0
        peak = max(peak, hashes + pool + queues + tables + steps + n * PER_REQUEST_BYTES)
    return peak


def check_memory(scenario, frameworks, workload, *, max_memory_bytes: int | None = None) -> None:
    limit = max_memory_bytes
    if limit is None:
        env = os.environ.get("ORACLE_MAX_MEMORY_GB")
        limit = int(float(env) * 2**30) if env else available_memory_bytes()
    if not limit:
        return
    need = estimate_bytes(scenario, frameworks, workload)
    if need > limit:
        raise CapacityError(
            f"this run needs about {need / 2**30:.1f} GiB but only {limit / 2**30:.1f} GiB are available "
            f"({len(workload):,} requests); reduce num_requests/duration, pin num_gpu_blocks instead of "
            f"\"unlimited\", or raise --max-memory", file=scenario.path)
