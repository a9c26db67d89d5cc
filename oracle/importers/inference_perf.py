"""inference-perf configs -> a scenario (placeholder, filled below)."""

from __future__ import annotations


def looks_like_inference_perf(doc: dict) -> bool:
    return False


def import_inference_perf(path):
    raise NotImplementedError
