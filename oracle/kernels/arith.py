"""Small integer and binning helpers, written once as plain Python (no numba import here:
``oracle.engine.inputs`` and so ``oracle validate`` use them without loading numba).

The kernels use compiled twins made from these very functions
(``oracle.kernels.blockpool.cdiv``, ``oracle.engine.scheduler.itl_bin``), so both sides
compute with the same source.
"""

from __future__ import annotations

import math


def cdiv(a, b):
    """Ceiling division of non-negative integers."""
    return -(-a // b)


def log_bin(x, x_min, bins_per_decade, num_bins):
    """Bin of ``x`` in a log-spaced histogram: bin 0 holds everything below ``x_min``, bin
    ``k >= 1`` the values in ``[x_min * 10**((k-1)/bins_per_decade), x_min * 10**(k/bins_per_decade))``,
    the last bin everything above."""
    if x < x_min:
        return 0
    return min(int(math.floor(math.log10(x / x_min) * bins_per_decade)) + 1, num_bins - 1)
