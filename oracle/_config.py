"""Validated reading of TOML-like tables with key paths in every error.

Each section parser wraps its raw ``dict`` in a :class:`Table`, pulls typed values out of it
with range checks, and finally calls :meth:`Table.done`, which rejects keys nobody read
(with a "did you mean" hint). Errors are :class:`~oracle.errors.ScenarioError` with the
full dotted key path, so the CLI can print ``file: key.path: reason``. A key whose value is
``None`` (a dict built in Python, an empty YAML value) counts as not given.

    t = Table(raw, "frameworks.0")
    block_size = t.int("block_size", 16, lo=1, hi=4096)
    t.done()
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable

from oracle.errors import ScenarioError

_MISSING = object()


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table", type(None): "null"}.get(type(value), type(value).__name__)


def _num(v: float) -> str:
    """Integers exactly (``9223372036854775807``, not ``9.22337e+18``), other numbers with ``:g``."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else f"{v:g}"


class Table:
    """A raw mapping plus its key path; typed getters record which keys were read."""

    def __init__(self, raw: Any, path: str = "") -> None:
        if not isinstance(raw, dict):
            raise ScenarioError(f"must be a table, got {_type_name(raw)}", key=path or None)
        self.raw = raw
        self.path = path
        self._seen: set[str] = set()

    # -- helpers -------------------------------------------------------------------------
    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str | None, reason: str) -> ScenarioError:
        return ScenarioError(reason, key=self.key(name) if name else (self.path or None))

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        if self.raw.get(name) is not None:   # None (a dict from Python, a YAML "key:") = not given
            return self.raw[name]
        if default is _MISSING:
            raise self.error(name, "is required")
        return default

    # -- typed getters -------------------------------------------------------------------
    def any(self, name: str, default: Any = _MISSING) -> Any:
        return self._get(name, default)

    def bool(self, name: str, default: Any = _MISSING) -> bool:
        v = self._get(name, default)
        if not isinstance(v, bool):
            raise self.error(name, f"must be true or false, got {_type_name(v)} {v!r}")
        return v

    def int(self, name: str, default: Any = _MISSING, *, lo: int | None = None,
            hi: int | None = None) -> int:
        v = self._get(name, default)
        if v is None and default is None:
            return None  # type: ignore[return-value]
        if isinstance(v, float) and v.is_integer() and math.isfinite(v):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(name, f"must be an integer, got {_type_name(v)} {v!r}")
        self._check_range(name, v, lo, hi)
        return v

    def float(self, name: str, default: Any = _MISSING, *, lo: float | None = None,
              hi: float | None = None, lo_open: bool = False) -> float:
        v = self._get(name, default)
        if v is None and default is None:
            return None  # type: ignore[return-value]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.error(name, f"must be a number, got {_type_name(v)} {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise self.error(name, f"must be a finite number, got {v!r}")
        if lo_open and lo is not None and v <= lo:
            raise self.error(name, f"must be > {lo:g}, got {v:g}")
        self._check_range(name, v, None if lo_open else lo, hi)
        return v

    def str(self, name: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None) -> str:
        v = self._get(name, default)
        if v is None and default is None:
            return None  # type: ignore[return-value]
        if not isinstance(v, str):
            raise self.error(name, f"must be a string, got {_type_name(v)} {v!r}")
        if choices is not None:
            choices = list(choices)
            if v not in choices:
                raise self.error(name, f"unknown value {v!r}{did_you_mean(v, choices)}; "
                                       f"choose one of: {', '.join(choices)}")
        return v

    def table(self, name: str, default: Any = _MISSING) -> "Table":
        v = self._get(name, default)
        if v is None:
            return None  # type: ignore[return-value]
        if not isinstance(v, dict):
            raise self.error(name, f"must be a table, got {_type_name(v)}")
        return Table(v, self.key(name))

    def tables(self, name: str, default: Any = _MISSING, *, min_len: int = 0) -> list["Table"]:
        """An array of tables (``[[name]]``)."""
        v = self._get(name, default)
        if v is None:
            return []
        if isinstance(v, dict):
            v = [v]
        if not isinstance(v, list):
            raise self.error(name, f"must be an array of tables, got {_type_name(v)}")
        if len(v) < min_len:
            raise self.error(name, f"needs at least {min_len} entr{'y' if min_len == 1 else 'ies'}")
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, dict):
                raise ScenarioError(f"must be a table, got {_type_name(item)}", key=f"{self.key(name)}.{i}")
            out.append(Table(item, f"{self.key(name)}.{i}"))
        return out

    def _check_range(self, name: str, v: float, lo: float | None, hi: float | None) -> None:
        if lo is not None and v < lo:
            raise self.error(name, f"must be >= {_num(lo)}, got {_num(v)}")
        if hi is not None and v > hi:
            raise self.error(name, f"must be <= {_num(hi)}, got {_num(v)}")

    def done(self) -> None:
        """Reject keys that no getter asked for."""
        for k in self.raw:
            if k not in self._seen:
                raise self.error(k, f"unknown key{did_you_mean(k, self._seen)}")
