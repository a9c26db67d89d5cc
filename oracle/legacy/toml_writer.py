"""A small TOML writer for the subset ``oracle convert`` produces, with comments.

Supported values: ``str``, ``int``, ``float`` (finite), ``bool``, lists of those, tables
(``dict`` with ``str`` keys) and arrays of tables (lists of ``dict``). Layout:

* the root's direct sub-tables are always ``[headers]``; deeper tables are written inline
  (``key = { ... }``) when they are short and hold no array of tables, else as headers;
* lists of tables are ``[[arrays of tables]]``;
* long arrays outside inline tables are wrapped over several lines.

``comments`` maps a dotted key path (list indices as numbers: ``workload.clients.0.arrival``)
to comment lines written just above that key or header; ``header`` lines open the file.
``tomllib.loads(dumps(d))`` gives back ``d`` (tuples become lists).
"""

from __future__ import annotations

import math
import re

INLINE_WIDTH = 100           # deeper tables longer than this are written as [headers]
ARRAY_WIDTH = 100            # arrays longer than this are wrapped (outside inline tables)
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def dumps(data: dict, *, comments: dict[str, list[str]] | None = None, header: list[str] | tuple = ()) -> str:
    """Render ``data`` as TOML text (see the module docstring)."""
    if not isinstance(data, dict):
        raise TypeError(f"the TOML root must be a dict, got {type(data).__name__}")
    comments = comments or {}
    lines: list[str] = [_comment(c) for c in header]
    _table(lines, data, [], [], comments, depth=0)
    while lines and lines[0] == "":
        lines.pop(0)
    return "\n".join(lines).rstrip("\n") + "\n"


def quote(s: str) -> str:
    """A TOML basic string: ``"..."`` with quotes, backslashes and control characters escaped."""
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def key(k: str) -> str:
    """A bare key when possible, else a quoted one."""
    if not isinstance(k, str):
        raise TypeError(f"TOML keys must be strings, got {type(k).__name__} {k!r}")
    return k if _BARE_KEY.fullmatch(k) else quote(k)


def scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write a non-finite float {v!r}")
        r = repr(v)
        return r if any(c in r for c in ".en") else r + ".0"
    if isinstance(v, str):
        return quote(v)
    raise TypeError(f"cannot write a {type(v).__name__} value {v!r} as TOML")


# -- internals -----------------------------------------------------------------------------------

def _comment(text: str) -> str:
    return "#" if not text else "# " + text.replace("\n", " ")


def _is_table_array(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, dict) for x in v)


def _inline(v) -> str:
    """Any value on one line (tables as inline tables)."""
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{key(k)} = {_inline(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_inline(x) for x in v) + "]"
    return scalar(v)


def _array(v, indent: str) -> str:
    """An array, wrapped over several lines when long (only outside inline tables)."""
    one = _inline(v)
    if len(one) <= ARRAY_WIDTH or any(isinstance(x, (dict, list, tuple)) for x in v):
        return one
    rows, row = [], ""
    for item in (scalar(x) + "," for x in v):
        if row and len(row) + 1 + len(item) > ARRAY_WIDTH:
            rows.append(row)
            row = ""
        row = f"{row} {item}" if row else item
    rows.append(row)
    return "[\n" + "".join(f"{indent}    {r}\n" for r in rows) + f"{indent}]"


def _inline_ok(v: dict, depth: int) -> bool:
    if depth == 0:
        return False

    def simple(x) -> bool:
        if isinstance(x, dict):
            return all(simple(y) for y in x.values())
        if isinstance(x, (list, tuple)):
            return not _is_table_array(x) and all(simple(y) for y in x)
        return True
    return simple(v) and len(_inline(v)) <= INLINE_WIDTH


def _emit_comments(lines: list[str], comments: dict, path: list[str]) -> None:
    for c in comments.get(".".join(path), ()):
        lines.append(_comment(c))


def _table(lines: list[str], d: dict, header: list[str], path: list[str], comments: dict, depth: int) -> None:
    """Key/values of ``d`` first, then its sub-tables and arrays of tables (TOML requires it)."""
    subs = []
    for k, v in d.items():
        key(k)
        if isinstance(v, dict) and not _inline_ok(v, depth):
            subs.append((k, v))
        elif _is_table_array(v):
            subs.append((k, v))
        else:
            _emit_comments(lines, comments, path + [k])
            text = _array(v, "") if isinstance(v, (list, tuple)) else _inline(v)
            lines.append(f"{key(k)} = {text}")
    for k, v in subs:
        h = header + [key(k)]
        if isinstance(v, dict):
            lines.append("")
            _emit_comments(lines, comments, path + [k])
            lines.append(f"[{'.'.join(h)}]")
            _table(lines, v, h, path + [k], comments, depth + 1)
        else:
            for i, item in enumerate(v):
                lines.append("")
                _emit_comments(lines, comments, path + [k, str(i)])
                lines.append(f"[[{'.'.join(h)}]]")
                _table(lines, item, h, path + [k, str(i)], comments, depth + 1)
