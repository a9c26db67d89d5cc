"""vLLM's scheduler against the engine on hypothesis-generated workloads.

``test_generated[theme]`` splits the profile's ``max_examples`` over the themes of
``conformance.workloads.workloads`` (``ci``: 50 -> 8 per theme); ``test_generated_nightly``
(``--run-nightly``) draws 2,000 workloads of any theme (``CONFORMANCE_NIGHTLY_EXAMPLES``
overrides the number). Every workload is compared with
both the jitted engine and the reference; a failing workload is also written as JSON to
``failures_dir`` (re-run it with ``python -m tests.conformance run FILE``).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("vllm", minversion="0.33.0",
                    reason="vLLM not installed (pip install -e '.[conformance]')")

from conformance.harness import check  # noqa: E402
from conformance.workloads import ASYNC_THEMES, THEMES, as_async, workloads  # noqa: E402

pytestmark = pytest.mark.usefixtures("vllm_session")
PER_THEME = max(4, settings.default.max_examples // len(THEMES))
NIGHTLY = int(os.environ.get("CONFORMANCE_NIGHTLY_EXAMPLES", "2000"))
SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


class ScheduleDiffers(AssertionError):
    """vLLM and the engine schedule differently (tokens, queues, blocks used, times)."""


class RequestsDiffer(AssertionError):
    """Same steps, different per-request results."""


class CachedBlocksDiffer(AssertionError):
    """Only the number of mapped hashes per step differs."""


class CountersDiffer(AssertionError):
    """Only the prefix-cache counters differ."""


# One exception type per kind: hypothesis keeps a minimal example for each distinct failure.
FAILURES = {"schedule": ScheduleDiffers, "requests": RequestsDiffer,
            "cached_blocks": CachedBlocksDiffer, "counters": CountersDiffer}


def _run(case, failures_dir):
    report, kind = check(case)
    if report is not None:
        path = case.dump(failures_dir)
        raise FAILURES[kind](f"[{kind}] {report}\n\n(workload saved to {path}; "
                             f"re-run: python -m tests.conformance run {path})")


@pytest.mark.parametrize("theme", THEMES)
@settings(max_examples=PER_THEME, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_generated(failures_dir, theme, data):
    _run(data.draw(workloads(theme), label="case"), failures_dir)


@pytest.mark.parametrize("theme", ASYNC_THEMES)
@settings(max_examples=PER_THEME, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_generated_async(failures_dir, theme, data):
    """The same themes with vLLM's ``AsyncScheduler`` and the engine's ``async_scheduling``
    (client timeouts left out: README "Async scheduling", what differs)."""
    _run(as_async(data.draw(workloads(theme), label="case")), failures_dir)


@pytest.mark.nightly
@settings(max_examples=NIGHTLY // 4, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_generated_async_nightly(failures_dir, data):
    _run(as_async(data.draw(workloads("mixed"), label="case")), failures_dir)


@pytest.mark.nightly
@settings(max_examples=NIGHTLY, deadline=None, suppress_health_check=SLOW)
@given(data=st.data())
def test_generated_nightly(failures_dir, data):
    _run(data.draw(workloads("mixed"), label="case"), failures_dir)
