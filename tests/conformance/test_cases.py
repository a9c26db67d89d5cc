"""vLLM's scheduler against the engine on the hand-made cases and the bundled trace formats.

Each case runs through vLLM once and is compared with the jitted engine (``oracle``) and
the plain-Python reference (``reference``); a mismatch fails with the report of
``conformance.trace.compare`` (first differing step of both sides, differing requests,
counters). Known divergences are not marked xfail: the engine is expected to match.
"""

from __future__ import annotations

import functools

import pytest

pytest.importorskip("vllm", minversion="0.33.0",
                    reason="vLLM not installed (pip install -e '.[conformance]')")

from conformance.harness import compare, run_oracle, run_reference, run_vllm  # noqa: E402
from conformance.workloads import TRACE_CASES, as_async, hand_made, trace_case  # noqa: E402

SIDES = {"oracle": run_oracle, "reference": run_reference}
pytestmark = pytest.mark.usefixtures("vllm_session")


@functools.lru_cache(maxsize=None)
def _hand(name):
    case = hand_made()[name]
    return case, run_vllm(case)


_traces: dict = {}


def _trace(name, folder):
    if name not in _traces:
        case = trace_case(name, folder)
        _traces[name] = (case, run_vllm(case))
    return _traces[name]


def _assert_same(case, vllm_trace, side):
    other = SIDES[side](case)
    diff = compare(vllm_trace, other)
    if diff is not None:
        pytest.fail(f"workload {case.name}: {case.describe()}\n\n{diff}", pytrace=False)


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize("name", list(hand_made()))
def test_hand_made(name, side):
    case, v = _hand(name)
    _assert_same(case, v, side)


@functools.lru_cache(maxsize=None)
def _hand_async(name):
    case = as_async(hand_made()[name])
    return case, run_vllm(case)


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize("name", list(hand_made()))
def test_hand_made_async(name, side):
    """vLLM's ``AsyncScheduler`` driven as ``EngineCore.step_with_batch_queue`` does, against
    the engine with ``async_scheduling`` on."""
    case, v = _hand_async(name)
    _assert_same(case, v, side)


@pytest.mark.parametrize("side", sorted(SIDES))
@pytest.mark.parametrize("name", TRACE_CASES)
def test_trace_formats(trace_dir, name, side):
    case, v = _trace(name, trace_dir)
    _assert_same(case, v, side)
