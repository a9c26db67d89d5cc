"""Fixtures of the conformance suite (vLLM itself is imported by the test modules, which
skip when it is missing)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def vllm_session(tmp_path_factory):
    """One model folder (only ``config.json``) and one base ``ModelConfig`` per test session."""
    from conformance import vllm_driver
    return vllm_driver.session(tmp_path_factory.mktemp("vllm-model"))


@pytest.fixture(scope="session")
def trace_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("conformance-traces")


@pytest.fixture(scope="session")
def failures_dir() -> Path:
    """Where failing generated workloads are written (``CONFORMANCE_FAILURES_DIR``, default
    ``$TMPDIR/conformance-failures``); re-run one with ``python -m tests.conformance run FILE``."""
    return Path(os.environ.get("CONFORMANCE_FAILURES_DIR",
                               Path(tempfile.gettempdir()) / "conformance-failures"))
