"""GuideLLM benchmark specs -> a scenario (placeholder, filled below)."""

from __future__ import annotations


def looks_like_guidellm(doc: dict) -> bool:
    return False


def import_guidellm(path):
    raise NotImplementedError
