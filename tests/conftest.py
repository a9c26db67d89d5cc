"""Shared test configuration: hypothesis profiles, the --run-nightly flag, the shared-data layer.

Numba kernels compile once per session (and are cached on disk between sessions), so tests
call the public wrappers freely; expensive engine compiles are shared via session fixtures.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import reference`, `import data_sources`

from data_sources import ROOT, SAMPLES, SHARED_DATA, TESTS_DATA, have_shared  # noqa: E402,F401

settings.register_profile("ci", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("nightly", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser):
    parser.addoption("--run-nightly", action="store_true", default=False,
                     help="Run the long 'nightly' hypothesis tests.")


_DESELECTED = pytest.StashKey[int]()


def _needs_shared(item) -> bool:
    return item.get_closest_marker("shared_data") is not None or "shared_data" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--run-nightly"):
        skip = pytest.mark.skip(reason="nightly test: pass --run-nightly")
        for item in items:
            if "nightly" in item.keywords:
                item.add_marker(skip)
    # The shared-data layer (tests/data_sources.py) repeats data tests on the full files in
    # ../shared/data. Without them it is deselected, not skipped: every one of these tests has
    # a bundled-sample counterpart (the sample-provenance check aside), and the summary says how
    # many were left out.
    if not have_shared():
        drop = [item for item in items if _needs_shared(item)]
        if drop:
            dropped = {id(item) for item in drop}
            items[:] = [item for item in items if id(item) not in dropped]
            config.hook.pytest_deselected(items=drop)
        config.stash[_DESELECTED] = len(drop)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    n = config.stash.get(_DESELECTED, 0)
    if n:
        terminalreporter.write_line(f"shared-data layer: {n} tests deselected, {SHARED_DATA} is not present "
                                    "(the data tests ran on the bundled samples: tests/data/README.md)")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the checkout (the full traces and calibration data).

    Tests using it form the shared-data layer: deselected when the folder is absent."""
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present next to the checkout")
    return SHARED_DATA
