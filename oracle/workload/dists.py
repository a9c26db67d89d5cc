"""Vectorised draws from the length/time distributions and arrival processes of ``spec``.

Every function takes the ``numpy.random.Generator`` to draw from and returns a whole array;
the same generator state gives the same array bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from oracle.workload.spec import ArrivalSpec, DistSpec


def sample(d: DistSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` draws from ``d``, clipped to ``[d.lo, d.hi]``.

    Returns i4[n] token counts (rounded half to even, >= 1) when ``d.integer``, else f8[n].
    """
    n = int(n)
    kind = d.dist
    if kind == "constant":
        x = np.full(n, d.value, dtype=np.float64)
    elif kind == "uniform":
        if d.integer:
            x = rng.integers(int(math.ceil(d.lo)), int(math.floor(d.hi)) + 1, size=n).astype(np.float64)
        else:
            x = rng.uniform(d.lo, d.hi, size=n)
    elif kind == "normal":
        x = rng.normal(d.mean, d.std, size=n)
    elif kind == "lognormal":
        mu = math.log(d.median) if d.median is not None else math.log(d.mean) - d.sigma ** 2 / 2
        x = rng.lognormal(mu, d.sigma, size=n)
    elif kind == "exponential":
        x = rng.exponential(d.mean, size=n)
    elif kind == "zipf":
        x = bounded_zipf(rng, int(math.ceil(d.lo)), int(math.floor(d.hi)), d.exponent, n).astype(np.float64)
    elif kind == "empirical":
        if d.weights is not None:
            w = np.asarray(d.weights, dtype=np.float64)
            x = d.data[rng.choice(d.data.shape[0], size=n, p=w / w.sum())]
        else:
            x = d.data[rng.integers(0, d.data.shape[0], size=n)]
        x = np.asarray(x, dtype=np.float64)
    else:  # pragma: no cover - parse_dist rejects other names
        raise ValueError(f"unknown distribution {kind!r}")
    if d.integer:
        top = 2**31 - 1 if math.isinf(d.hi) else min(math.floor(d.hi), 2**31 - 1)
        x = np.clip(np.rint(x), math.ceil(d.lo), top)
        return x.astype(np.int32)
    return np.clip(x, d.lo, d.hi)


def bounded_zipf(rng: np.random.Generator, lo: int, hi: int, s: float, n: int) -> np.ndarray:
    """``n`` integers in ``[lo, hi]`` with P(k) proportional to k**-s (i8[n])."""
    k = np.arange(lo, hi + 1, dtype=np.float64)
    cdf = np.cumsum(k ** -s)
    idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return lo + np.minimum(idx, hi - lo).astype(np.int64)


def zipf_ranks(rng: np.random.Generator, num: int, s: float, n: int) -> np.ndarray:
    """``n`` ranks in ``[0, num)`` with P(g) proportional to (g + 1)**-s (i8[n])."""
    return bounded_zipf(rng, 1, num, s, n) - 1


def interarrival_gaps(a: ArrivalSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` gaps (seconds, f8) between consecutive session arrivals; mean ``1 / rate``.

    poisson: exponential gaps; gamma: shape ``1/cv**2``, scale ``cv**2/rate`` (cv > 1 is
    burstier than Poisson); constant: exactly ``1/rate``.
    """
    if a.process == "poisson":
        return rng.exponential(1.0 / a.rate, size=n)
    if a.process == "gamma":
        shape = 1.0 / a.cv ** 2
        return rng.gamma(shape, 1.0 / (a.rate * shape), size=n)
    return np.full(n, 1.0 / a.rate)
