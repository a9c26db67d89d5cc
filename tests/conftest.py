"""Shared test configuration: hypothesis profiles and the --run-nightly flag.

Numba kernels compile once per session (and are cached on disk between sessions), so tests
call the public wrappers freely; expensive engine compiles are shared via session fixtures.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
TESTS_DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import reference`

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


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-nightly"):
        return
    skip = pytest.mark.skip(reason="nightly test: pass --run-nightly")
    for item in items:
        if "nightly" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the checkout (real traces and calibration data)."""
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present next to the checkout")
    return SHARED_DATA
