"""``[output] style = "original"``: the values and summary keys the original LLMPerfOracle wrote.

Configs of the original tool (``oracle.legacy``) are converted with this style, so their
``requests.csv`` and ``summary.json`` read as the original's did. Everything is derived from
this project's per-request table; ``requests.parquet`` is left as it is.

requests.csv (same columns as the default style, values as the original wrote them):

* ``request_id`` ``req_<n>`` (n = the row id), ``session_id`` ``sess_<n>`` and ``client_id``
  ``client_<profile>_<n>`` (n = the session's number in order of first arrival; a single
  request is a session of its own);
* ``status`` ``SUCCESS`` (finished), ``OOM_KV_BLOCK`` (rejected: the request can never get
  its KV blocks or is longer than ``max_model_len``) or ``PENDING``;
* ``ttft_ms`` from the start of the request's prefill (its first scheduling) to its first
  token, as the original measured it (the default style and the summary count from arrival);
* ``prefix_cache_event``: a follow-up that finds no cached prefix on a replica other than its
  previous turn's is ``MISS_FULL`` (the original's event), not ``CONVERSATIONAL_MISS_EVICTED``.

summary.json, on top of the default keys:

* ``simulation.total_duration_s`` = ``[output].reported_duration_s`` (the configured
  duration; default ``[simulation].duration_s``); the time the last step ended is
  ``simulation.simulated_until_s`` (requests run to completion here);
* ``count``, ``std`` (population) and ``min`` in the TTFT, TPOT and end-to-end blocks;
* ``gpu_utilization``: the busy fraction of the GPUs from t = 0 to ``simulated_until_s``
  (the sum of the step times of each replica over that span, averaged over replicas);
* ``prefix_caching``: ``average_tokens_prefilled`` (per successful request),
  ``cross_request_hits``, ``conversational_hits``, ``conversational_hit_rate`` divided by
  all requests (as the original divides), and the event ``CONVERSATIONAL_MISS_UNEXPECTED_PROMPT``
  (always 0: a follow-up's prompt always starts with its history here); the event counts use
  the remapped events above.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

STATUS = {"finished": "SUCCESS", "rejected": "OOM_KV_BLOCK", "pending": "PENDING"}
EVICTED = "CONVERSATIONAL_MISS_EVICTED"
UNEXPECTED = "CONVERSATIONAL_MISS_UNEXPECTED_PROMPT"


def cache_events(requests: pl.DataFrame) -> pl.Series:
    """The ``cache_event`` column with follow-ups that missed on another replica than their
    previous turn's as ``MISS_FULL``."""
    ev = requests["cache_event"]
    if ev.is_empty() or not (ev == EVICTED).any():
        return ev
    session = requests["session"].to_numpy()
    turn = requests["turn"].to_numpy().astype(np.int64)
    replica = requests["replica"].to_numpy().astype(np.int64)
    prev = _previous_turn(session, turn)
    moved = (prev >= 0) & (replica != replica[np.maximum(prev, 0)])
    return pl.Series("cache_event", np.where(moved & (ev == EVICTED).to_numpy(), "MISS_FULL", ev.to_numpy()),
                     dtype=pl.Utf8)


def _previous_turn(session: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Row of each request's previous turn (same session, turn - 1), or -1."""
    n = session.shape[0]
    out = np.full(n, -1, np.int64)
    conv = np.flatnonzero((session >= 0) & (turn >= 1))
    if conv.size == 0:
        return out
    rows = np.flatnonzero(session >= 0)
    key = session[rows] * (1 << 13) + turn[rows]            # turns are < 4096
    order = np.argsort(key, kind="stable")
    want = session[conv] * (1 << 13) + (turn[conv] - 1)
    pos = np.searchsorted(key[order], want)
    pos = np.minimum(pos, order.shape[0] - 1)
    found = key[order][pos] == want
    out[conv[found]] = rows[order[pos[found]]]
    return out


def session_numbers(requests: pl.DataFrame) -> np.ndarray:
    """Each request's session number, in order of the sessions' first requests (a request
    without a session is a session of its own)."""
    n = requests.height
    session = requests["session"].to_numpy().astype(np.int64)
    keys = np.where(session >= 0, session, -1 - np.arange(n, dtype=np.int64))
    if n == 0:
        return np.zeros(0, np.int64)
    _, first, inv = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(first.shape[0])
    return rank[inv.ravel()]


def csv_values(legacy: pl.DataFrame, requests: pl.DataFrame) -> pl.DataFrame:
    """The default-style CSV frame ``legacy`` with the original's values (module docstring)."""
    num = pl.Series(session_numbers(requests)).cast(pl.Utf8)
    with np.errstate(invalid="ignore"):
        ttft = (requests["first_token_s"].to_numpy() - requests["admitted_s"].to_numpy()) * 1e3
    return legacy.with_columns(
        (pl.lit("req_") + requests["request_id"].cast(pl.Utf8)).alias("request_id"),
        (pl.lit("client_") + requests["client"] + pl.lit("_") + num).alias("client_id"),
        (pl.lit("sess_") + num).alias("session_id"),
        requests["status"].replace_strict(STATUS, default="PENDING").alias("status"),
        pl.Series("ttft_ms", ttft),
        cache_events(requests).alias("prefix_cache_event"),
    )


def _stats(values: np.ndarray, base: dict) -> dict:
    v = values[np.isfinite(values)]
    out: dict[str, Any] = {"count": int(v.size)}
    out["mean"] = base.get("mean")
    out["std"] = float(v.std()) if v.size else None
    out["min"] = float(v.min()) if v.size else None
    out.update({k: x for k, x in base.items() if k not in out})
    return out


def adjust_summary(summary: dict, scenario, requests: pl.DataFrame, steps: dict | None, num_replicas: int) -> dict:
    """Add and change the keys of a default summary as the original wrote them (in place)."""
    sim = summary["simulation"]
    until = sim["total_duration_s"]
    reported = scenario.output.reported_duration_s
    if reported is None:
        reported = scenario.simulation.duration_s if scenario.simulation.duration_s is not None else until
    sim["total_duration_s"] = float(reported)
    sim["simulated_until_s"] = float(until)

    warm = requests["warm_up"]
    counted = requests.filter(~warm) if warm.any() else requests
    ok = counted.filter(pl.col("status") == "finished")
    lat = summary["latency"]
    for key, col in (("time_to_first_token_ms", "ttft_ms"), ("time_per_output_token_ms", "tpot_ms"),
                     ("end_to_end_latency_ms", "e2e_ms")):
        lat[key] = _stats(ok[col].to_numpy(), lat[key])

    busy = 0.0
    if steps is not None and len(steps["duration_s"]):
        busy = float(np.sum(steps["duration_s"]))
    summary["gpu_utilization"] = busy / (num_replicas * until) if until > 0 else 0.0

    pc = summary["prefix_caching"]
    events = cache_events(requests)   # the previous turn may have arrived during the warm-up
    if warm.any():
        events = events.filter(~warm)
    counts = {name: 0 for name in pc["event_counts"]}
    for name, c in pl.DataFrame({"e": events}).group_by("e").len().iter_rows():
        if name in counts:
            counts[name] = int(c)
    counts[UNEXPECTED] = 0
    pc["event_counts"] = counts
    pc["conversational_hits"] = counts["CONVERSATIONAL_HIT"]
    pc["cross_request_hits"] = counts["CROSS_REQUEST_HIT"]
    total = counted.height
    pc["conversational_hit_rate"] = counts["CONVERSATIONAL_HIT"] / total if total else 0.0
    pc["average_tokens_prefilled"] = float(ok["prefilled_tokens"].mean()) if ok.height else 0.0
    return summary
