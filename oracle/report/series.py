"""Time series for the plots: per-request intervals and per-step states binned over time.

All functions are vectorised (sorting + cumulative sums), so a million requests or steps bin
in well under a second. Times are seconds; a bin's value is its exact time average.
"""

from __future__ import annotations

import math

import numpy as np

NICE_STEPS = (1, 2, 5)


def bin_edges(t_end: float, *, target_bins: int = 120) -> np.ndarray:
    """Edges ``0, w, 2w, ... >= t_end`` with a round bin width ``w`` (1/2/5 x 10^k seconds)."""
    t_end = float(t_end) if t_end and math.isfinite(t_end) and t_end > 0 else 1.0
    raw = t_end / target_bins
    mag = 10.0 ** math.floor(math.log10(raw))
    width = next((m * mag for m in NICE_STEPS if m * mag >= raw), 10 * mag)
    n = max(1, math.ceil(t_end / width - 1e-9))
    return np.arange(n + 1, dtype=np.float64) * width


def _overlap_integral(starts: np.ndarray, ends: np.ndarray, weights: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``I(t) = Σ_i w_i · |[s_i, e_i) ∩ [0, t)|`` for every t (t ascending)."""
    def ramp(points: np.ndarray, w: np.ndarray) -> np.ndarray:
        # Σ_{p_i ≤ t} w_i (t − p_i)
        order = np.argsort(points, kind="stable")
        p, ww = points[order], w[order]
        cw = np.concatenate(([0.0], np.cumsum(ww)))
        cwp = np.concatenate(([0.0], np.cumsum(ww * p)))
        k = np.searchsorted(p, t, side="right")
        return cw[k] * t - cwp[k]
    return ramp(starts, weights) - ramp(ends, weights)


def interval_mean(starts, ends, edges: np.ndarray, weights=None) -> np.ndarray:
    """Time-averaged ``Σ w_i · [s_i ≤ t < e_i]`` per bin (e.g. requests in a state).

    ``starts``/``ends``: float64 seconds, NaN start = never entered (skipped), NaN end = still
    in the state at the end of the plot.
    """
    s = np.asarray(starts, np.float64)
    e = np.asarray(ends, np.float64)
    w = np.ones_like(s) if weights is None else np.asarray(weights, np.float64)
    keep = np.isfinite(s)
    s, e, w = s[keep], e[keep], w[keep]
    e = np.where(np.isfinite(e), e, edges[-1])
    e = np.maximum(e, s)
    integral = _overlap_integral(s, e, w, edges)
    return np.diff(integral) / np.diff(edges)


def event_rate(times, edges: np.ndarray, weights=None) -> np.ndarray:
    """Events (or weighted events) per second in each bin; NaN times are skipped."""
    t = np.asarray(times, np.float64)
    w = None if weights is None else np.asarray(weights, np.float64)
    keep = np.isfinite(t)
    counts, _ = np.histogram(t[keep], bins=edges, weights=None if w is None else w[keep])
    return counts / np.diff(edges)


def spread_rate(starts, ends, amounts, edges: np.ndarray) -> np.ndarray:
    """Per-second rate of ``amounts`` spread uniformly over ``[start, end)`` (point mass at
    ``start`` when the interval is empty), e.g. output tokens generated over a request's decode."""
    s = np.asarray(starts, np.float64)
    e = np.asarray(ends, np.float64)
    a = np.asarray(amounts, np.float64)
    keep = np.isfinite(s) & np.isfinite(e)
    s, e, a = s[keep], e[keep], a[keep]
    dur = e - s
    span = dur > 1e-12
    rate = np.zeros_like(a)
    rate[span] = a[span] / dur[span]
    spread = np.diff(_overlap_integral(s[span], e[span], rate[span], edges))
    point, _ = np.histogram(s[~span], bins=edges, weights=a[~span])
    return (spread + point) / np.diff(edges)


def step_state_mean(replica, at_s, values, edges: np.ndarray) -> np.ndarray:
    """Time-averaged state summed over replicas, per bin.

    ``at_s[i]``: when step i's recorded state takes hold (its end: steps.parquet records the
    state after the step). Each replica's value holds from then until its next record (after
    the last one: until the end, as an idle replica keeps its state); 0 before the first.
    """
    rep = np.asarray(replica, np.float64).astype(np.int64)
    t = np.asarray(at_s, np.float64)
    v = np.asarray(values, np.float64)
    total = np.zeros(len(edges) - 1)
    for r in np.unique(rep):
        m = rep == r
        tr, vr = t[m], v[m]
        order = np.argsort(tr, kind="stable")
        tr, vr = tr[order], vr[order]
        ends = np.append(tr[1:], max(edges[-1], tr[-1]))
        total += interval_mean(tr, ends, edges, weights=vr)
    return total
