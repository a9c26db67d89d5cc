"""Parameter sweeps and SLO searches over a base scenario (DESIGN.md §10).

* :func:`run_sweep` (``oracle sweep``): expand a grid / list of overrides, validate every
  point, run them on a local process pool or Ray, write ``sweep.parquet``
  (:mod:`oracle.sweep.spec` documents the sweep file, :mod:`oracle.sweep.run` the outputs).
* :func:`search` (``oracle search``): the largest arrival rate or the fewest replicas that
  meets TTFT/TPOT objectives at a goodput target (:mod:`oracle.sweep.search`).

This package imports nothing heavy at import time: sweep workers import it before their
initializer sets the environment (numba cache folder, thread limits).
"""

from __future__ import annotations

__all__ = ["load_sweep", "run_sweep", "search"]


def __getattr__(name: str):
    # lazy: see the module docstring (the submodules import numpy and polars)
    if name == "run_sweep":
        from oracle.sweep.run import run_sweep
        return run_sweep
    if name == "load_sweep":
        from oracle.sweep.spec import load_sweep
        return load_sweep
    if name == "search":
        from oracle.sweep.search import search
        return search
    raise AttributeError(name)
