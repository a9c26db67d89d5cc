"""The Prometheus export's histogram buckets are vLLM's own (``vllm.v1.metrics.buckets``).

Runs with the conformance suite (vLLM installed); ``tests/test_vllm_formats.py`` checks the
same constants as literals everywhere else.
"""

from __future__ import annotations

import pytest

buckets = pytest.importorskip("vllm.v1.metrics.buckets", reason="vLLM not installed (pip install -e '.[conformance]')")

from oracle.metrics import prometheus as prom  # noqa: E402


def test_bucket_constants_are_vllms():
    assert prom.TIME_TO_FIRST_TOKEN_BUCKETS == buckets.TIME_TO_FIRST_TOKEN_BUCKETS
    assert prom.INTER_TOKEN_LATENCY_BUCKETS == buckets.INTER_TOKEN_LATENCY_BUCKETS
    assert prom.REQUEST_LATENCY_BUCKETS == buckets.REQUEST_LATENCY_BUCKETS
    assert prom.ITERATION_TOKENS_BUCKETS == buckets.ITERATION_TOKENS_BUCKETS
    assert prom.request_tokens_buckets(4096) == tuple(buckets.build_1_2_5_buckets(4096))
