"""Conformance suite: vLLM's v1 scheduler against the engine (see README.md here)."""
