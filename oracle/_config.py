"""Validated reading of TOML-like tables with key paths in every error.

Each section parser wraps its raw ``dict`` in a :class:`Table`, pulls typed values out of it
with range checks, and finally calls :meth:`Table.done`, which rejects keys nobody read
(with a "did you mean" hint). Errors are :class:`~oracle.errors.ScenarioError` with the
full dotted key path, so the CLI can print ``file: key.path: reason``. A key whose value is
``None`` (a dict built in Python, an empty YAML value) counts as not given.

    t = Table(raw, "frameworks.0")
    block_size = t.int("block_size", 16, lo=1, hi=4096)
    t.done()

Given a :class:`~oracle.errors.Problems` collector (``Table(raw, problems=p)``; child tables
share it), a Table reports every problem instead of raising the first: a bad optional value is
recorded and its default returned (so later keys are still checked; ``t.ok(name)`` says
whether a key was valid, for cross-field checks), a bad or missing required value or table is
recorded and :class:`~oracle.errors.Skip` is raised (swallowed by the nearest
``problems.guard()``), and :meth:`Table.done` records every unknown key. Without a collector
the first problem is raised, as a :class:`~oracle.errors.ScenarioError`.
"""

from __future__ import annotations

import contextlib
import difflib
import math
from typing import Any, Iterable

from oracle.errors import Problems, ScenarioError, Skip

_MISSING = object()


def did_you_mean(name: str, choices: Iterable[str], *, ignore_case: bool = False) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    if not ignore_case:
        close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
        return f" (did you mean '{close[0]}'?)" if close else ""
    by_lower: dict[str, str] = {}
    for c in sorted(choices):
        by_lower.setdefault(c.lower(), c)
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "table", type(None): "null"}.get(type(value), type(value).__name__)


def _num(v: float) -> str:
    """Integers exactly (``9223372036854775807``, not ``9.22337e+18``), other numbers with ``:g``."""
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else f"{v:g}"


class Table:
    """A raw mapping plus its key path; typed getters record which keys were read."""

    def __init__(self, raw: Any, path: str = "", *, problems: Problems | None = None) -> None:
        self.raw = raw
        self.path = path
        self.problems = problems
        self.failed: set[str] = set()
        self._seen: set[str] = set()
        self._asked: set[str] = set()     # keys looked for with has(): "did you mean" candidates too
        if not isinstance(raw, dict):
            self.raw = {}
            self.report(None, f"must be a table, got {_type_name(raw)}", required=True)

    # -- helpers -------------------------------------------------------------------------
    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def error(self, name: str | None, reason: str) -> ScenarioError:
        return ScenarioError(reason, key=self.key(name) if name else (self.path or None))

    def report(self, name: str | None, reason: str, *, required: bool = False) -> None:
        """A problem with key ``name`` (None: the table itself): raised without a collector;
        with one, recorded (``name`` no longer :meth:`ok`), then :class:`Skip` if ``required``
        (the rest of this part cannot be checked)."""
        err = self.error(name, reason)
        if self.problems is None:
            raise err
        self.problems.add(err)
        self.failed.add(name or "")
        if name:
            self._seen.add(name)
        if required:
            raise Skip()

    def skip(self, *names: str) -> None:
        """Count these keys as read without checking them (their check depends on a key that
        already failed, or on one the caller reported)."""
        self._seen.update(names)

    def guard(self):
        """``problems.guard()`` with a collector (record and carry on), else a no-op context."""
        return self.problems.guard() if self.problems is not None else contextlib.nullcontext()

    def ok(self, *names: str) -> bool:
        """True if none of these keys had a problem (with no names: none of this table's keys)."""
        return not (self.failed.intersection(names) if names else self.failed)

    def _fail(self, name: str, reason: str, default: Any) -> Any:
        """Report a bad value; with a collector go on with the default (Skip if required)."""
        self.report(name, reason, required=default is _MISSING)
        return default

    def has(self, name: str) -> bool:
        self._asked.add(name)
        return self.raw.get(name) is not None

    def _get(self, name: str, default: Any) -> Any:
        self._seen.add(name)
        if self.raw.get(name) is not None:   # None (a dict from Python, a YAML "key:") = not given
            return self.raw[name]
        if default is _MISSING:
            self._fail(name, "is required", default)
        return default

    def _child(self, raw: Any, path: str) -> "Table":
        return Table(raw, path, problems=self.problems)

    # -- typed getters -------------------------------------------------------------------
    def any(self, name: str, default: Any = _MISSING) -> Any:
        return self._get(name, default)

    def bool(self, name: str, default: Any = _MISSING) -> bool:
        v = self._get(name, default)
        if not isinstance(v, bool):
            return self._fail(name, f"must be true or false, got {_type_name(v)} {v!r}", default)
        return v

    def int(self, name: str, default: Any = _MISSING, *, lo: int | None = None,
            hi: int | None = None) -> int:
        v = self._get(name, default)
        if v is None and default is None:
            return None  # type: ignore[return-value]
        if isinstance(v, float) and v.is_integer() and math.isfinite(v):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            return self._fail(name, f"must be an integer, got {_type_name(v)} {v!r}", default)
        return self._check_range(name, v, lo, hi, default)

    def float(self, name: str, default: Any = _MISSING, *, lo: float | None = None,
              hi: float | None = None, lo_open: bool = False) -> float:
        v = self._get(name, default)
        if v is None and default is None:
            return None  # type: ignore[return-value]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return self._fail(name, f"must be a number, got {_type_name(v)} {v!r}", default)
        v = float(v)
        if not math.isfinite(v):
            return self._fail(name, f"must be a finite number, got {v!r}", default)
        if lo_open and lo is not None and v <= lo:
            return self._fail(name, f"must be > {lo:g}, got {v:g}", default)
        return self._check_range(name, v, None if lo_open else lo, hi, default)

    def str(self, name: str, default: Any = _MISSING, *, choices: Iterable[str] | None = None) -> str:
        v = self._get(name, default)
        if v is None and default is None:
            return None  # type: ignore[return-value]
        if not isinstance(v, str):
            return self._fail(name, f"must be a string, got {_type_name(v)} {v!r}", default)
        if choices is not None:
            choices = list(choices)
            if v not in choices:
                return self._fail(name, f"unknown value {v!r}{did_you_mean(v, choices)}; "
                                        f"choose one of: {', '.join(choices)}", default)
        return v

    def table(self, name: str, default: Any = _MISSING) -> "Table":
        """A sub-table. A bad one is always fatal to the caller's part (Skip with a collector)."""
        v = self._get(name, default)
        if v is None:
            return None  # type: ignore[return-value]
        if not isinstance(v, dict):
            self.report(name, f"must be a table, got {_type_name(v)}", required=True)
        return self._child(v, self.key(name))

    def tables(self, name: str, default: Any = _MISSING, *, min_len: int = 0) -> list["Table"]:
        """An array of tables (``[[name]]``). A bad array or entry is fatal to the caller's part
        (with a collector: every bad entry is reported, then Skip)."""
        v = self._get(name, default)
        if v is None:
            return []
        if isinstance(v, dict):
            v = [v]
        if not isinstance(v, list):
            self.report(name, f"must be an array of tables, got {_type_name(v)}", required=True)
        if len(v) < min_len:
            self.report(name, f"needs at least {min_len} entr{'y' if min_len == 1 else 'ies'}", required=True)
        out, bad = [], False
        for i, item in enumerate(v):
            if isinstance(item, dict):
                out.append(self._child(item, f"{self.key(name)}.{i}"))
            else:
                self._child({}, f"{self.key(name)}.{i}").report(None, f"must be a table, got {_type_name(item)}")
                bad = True
        if bad:
            self.failed.add(name)
            raise Skip()
        return out

    def _check_range(self, name: str, v: float, lo: float | None, hi: float | None, default: Any) -> Any:
        if lo is not None and v < lo:
            return self._fail(name, f"must be >= {_num(lo)}, got {_num(v)}", default)
        if hi is not None and v > hi:
            return self._fail(name, f"must be <= {_num(hi)}, got {_num(v)}", default)
        return v

    def done(self) -> None:
        """Reject keys that no getter asked for (every one of them, with a collector)."""
        for k in self.raw:
            if k not in self._seen:
                self.report(k, f"unknown key{did_you_mean(str(k), self._seen | self._asked, ignore_case=True)}")


def key_position(raw: Any, key: str | None) -> tuple[int, ...]:
    """Where a dotted key path lies in ``raw`` (dicts keep the file's order): one index per
    part; a part the file does not have sorts after its present siblings. For sorting problems
    into file order (``sorted`` is stable: problems at the same place keep their order)."""
    out: list[int] = []
    node = raw
    for part in (key or "").split(".") if key else ():
        if isinstance(node, dict) and part in node:
            out.append(list(node).index(part))
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            out.append(int(part))
            node = node[int(part)]
        else:
            out.append(len(node) if isinstance(node, (dict, list)) else 0)
            break
    return tuple(out)
