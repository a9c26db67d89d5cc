"""Small integer and binning helpers shared by the kernels and plain Python.

Each is written once, as plain Python, and compiled for the kernels; ``plain(f)`` gives back
the Python function (the reference engine and the metrics call that one), so both sides
compute with the same source.
"""

from __future__ import annotations

import math

from oracle.kernels._jit import jit


def plain(f):
    """The Python function behind a compiled helper (itself under ``NUMBA_DISABLE_JIT=1``)."""
    return getattr(f, "py_func", f)


@jit(inline="always")
def cdiv(a, b):
    """Ceiling division of non-negative integers."""
    return -(-a // b)


@jit(inline="always")
def log_bin(x, x_min, bins_per_decade, num_bins):
    """Bin of ``x`` in a log-spaced histogram: bin 0 holds everything below ``x_min``, bin
    ``k >= 1`` the values in ``[x_min * 10**((k-1)/bins_per_decade), x_min * 10**(k/bins_per_decade))``,
    the last bin everything above."""
    if x < x_min:
        return 0
    return min(int(math.floor(math.log10(x / x_min) * bins_per_decade)) + 1, num_bins - 1)
