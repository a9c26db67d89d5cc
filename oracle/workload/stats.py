"""Summary numbers of a workload, including the ideal prefix reuse (``oracle workload stats``).

``ideal_prefix_reuse`` is the share of prompt tokens an *unlimited* prefix cache would serve
under vLLM's rules, with no overlap between requests: requests are processed in request-id
order (= arrival order for traces; for generated sessions, ids are session-contiguous, so a
follow-up comes right after its parent and before later sessions: "generation order"); a
request's hit is the longest prefix of its chained full-block hashes seen before, capped at
``floor((prompt - 1) / block_size)`` blocks; then all its full blocks, prompt and output,
enter the cache.
"""

from __future__ import annotations

import numpy as np

from oracle.kernels.hashing import ideal_prefix_hits
from oracle.workload.table import Workload

PERCENTILES = (50, 90, 95, 99)


def describe(a: np.ndarray) -> dict:
    """``{mean, min, p50, p90, p95, p99, max}`` of an array (empty: all None)."""
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return {k: None for k in ("mean", "min", *(f"p{p}" for p in PERCENTILES), "max")}
    out = {"mean": float(a.mean()), "min": float(a.min())}
    for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES)):
        out[f"p{p}"] = float(v)
    out["max"] = float(a.max())
    return out


def ideal_prefix_reuse(wl: Workload, block_size: int) -> tuple[int, int]:
    """(hit tokens, prompt tokens) under an unlimited cache; see the module docstring."""
    h_off, h = wl.block_hashes(block_size)
    hits = ideal_prefix_hits(h_off, h, wl.prompt_tokens, block_size)
    return int(hits.sum()) * int(block_size), int(wl.prompt_tokens.sum(dtype=np.int64))


def workload_stats(wl: Workload, *, block_size: int = 16) -> dict:
    """A JSON-able summary of ``wl``.

    Keys: ``requests``, ``duration_s`` (first to last arrival of requests without parent),
    ``rate_per_s`` (all requests / duration_s), ``prompt_tokens`` / ``output_tokens`` /
    ``think_s`` (``describe``), totals, ``sessions`` (distinct sessions >= 0), ``turns``
    (per session: ``describe`` of turn counts), ``followups``, ``clients`` (name -> requests),
    ``segments``, ``block_size``, ``ideal_prefix_reuse`` (fraction), ``ideal_hit_tokens``,
    ``source``.
    """
    n = len(wl)
    arr = wl.arrival_s[wl.parent < 0]
    duration = float(arr[-1] - arr[0]) if arr.size else 0.0
    sess = wl.session[wl.session >= 0]
    per_session = np.bincount(sess - sess.min()) if sess.size else np.zeros(0, np.int64)
    per_session = per_session[per_session > 0]
    hit, prompt_total = ideal_prefix_reuse(wl, block_size) if n else (0, 0)
    counts = np.bincount(wl.client, minlength=len(wl.client_names)) if n else np.zeros(len(wl.client_names))
    follow = wl.parent >= 0
    return {
        "requests": n,
        "duration_s": duration,
        "rate_per_s": n / duration if duration > 0 else None,
        "prompt_tokens": describe(wl.prompt_tokens),
        "output_tokens": describe(wl.output_tokens),
        "total_prompt_tokens": prompt_total,
        "total_output_tokens": int(wl.output_tokens.sum(dtype=np.int64)),
        "sessions": int(per_session.size),
        "turns": describe(per_session),
        "followups": int(follow.sum()),
        "think_s": describe(wl.think_s[follow]),
        "clients": {name: int(c) for name, c in zip(wl.client_names, counts)},
        "segments": wl.num_segments,
        "block_size": int(block_size),
        "ideal_prefix_reuse": hit / prompt_total if prompt_total else 0.0,
        "ideal_hit_tokens": hit,
        "source": wl.source,
    }
