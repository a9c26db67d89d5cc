"""The project's one jit decorator.

* ``fastmath`` is always off, so results are bit-reproducible across runs and machines.
* Serial kernels are cached on disk (``cache=True``) unless ``ORACLE_NUMBA_CACHE=0``;
  numba honours ``NUMBA_CACHE_DIR`` for the location. Parallel kernels are never cached.
* ``NUMBA_DISABLE_JIT=1`` runs everything as plain Python (coverage, debugging).
"""

from __future__ import annotations

import os

import numba

_CACHE = os.environ.get("ORACLE_NUMBA_CACHE", "1") not in ("0", "false", "no", "off")


def jit(*args, parallel: bool = False, **kwargs):
    """``numba.njit`` with the project's settings; use as ``@jit`` or ``@jit(signature)``."""
    kwargs.setdefault("cache", _CACHE and not parallel)
    kwargs["fastmath"] = False
    kwargs["parallel"] = parallel
    kwargs.setdefault("nogil", True)
    if len(args) == 1 and callable(args[0]) and not kwargs.get("_sig"):
        return numba.njit(**kwargs)(args[0])
    return numba.njit(*args, **kwargs)


def kernel(fn):
    """A small engine kernel that never allocates: a regular compiled function without
    reference counting (``_nrt=False``).

    Arrays reach it as borrowed references, so a call costs no atomic reference-count
    updates; an ``inline="always"`` function instead takes a new reference to each array
    argument on every call (measured: two atomic operations per array per call, which
    serialised the engine's per-block loops). LLVM still inlines it where that pays.
    """
    return jit(_nrt=False)(fn)
