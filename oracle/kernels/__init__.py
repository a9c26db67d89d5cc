"""Numba-jitted kernels. This subpackage imports only numpy and numba, never the rest of ``oracle``."""
