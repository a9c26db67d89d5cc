"""Slow, obviously correct plain-Python references for the kernels and the engine."""
