"""LLMPerfOracle: a fast, faithful simulator of LLM inference serving.

Python API::

    import oracle
    result = oracle.simulate("scenarios/quickstart.toml")
    result.summary            # dict, as summary.json
    result.requests           # polars.DataFrame, one row per request
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "simulate", "load_scenario"]


def __getattr__(name: str):
    # Lazy imports keep `oracle --help` and `import oracle` fast (no numba compile on import).
    if name == "simulate":
        from oracle.api import simulate
        return simulate
    if name == "load_scenario":
        from oracle.scenario import load_scenario
        return load_scenario
    raise AttributeError(name)
