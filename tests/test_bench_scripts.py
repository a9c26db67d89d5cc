"""The benchmark scripts' own command-line parsing (``benchmarks/engine_only.py``, shared by
``benchmarks/profile_engine.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "engine_only", Path(__file__).resolve().parent.parent / "benchmarks" / "engine_only.py")
engine_only = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(engine_only)


@pytest.mark.parametrize("item, expected", [
    ("frameworks.0.replicas=1", ("frameworks.0.replicas", 1)),
    ("workload.clients.0.arrival.rate=1.5", ("workload.clients.0.arrival.rate", 1.5)),
    ("frameworks.0.enable_prefix_caching=false", ("frameworks.0.enable_prefix_caching", False)),
    ("frameworks.0.router=session_affinity", ("frameworks.0.router", "session_affinity")),
    ('name="a b"', ("name", "a b")),
    ("sizes=[1, 2]", ("sizes", [1, 2])),
])
def test_override_values_are_read_as_toml(item, expected):
    assert engine_only.parse_override(item) == expected


@pytest.mark.parametrize("item", ["frameworks.0.replicas", "=3"])
def test_override_without_key_or_value_is_refused(item):
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        engine_only.parse_override(item)
