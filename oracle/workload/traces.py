"""Trace importers: Mooncake / Azure / token-id JSONL / the project's Parquet (DESIGN §3.4).

Every importer returns a :class:`~oracle.workload.table.Workload` whose arrival times are
seconds from the first record. Records are **sorted by time** (stable: equal times keep
file order), so request ids follow arrival order whatever the file order.

Formats:

``mooncake``  JSONL, one object a line: ``timestamp`` (ms), ``input_length``,
              ``output_length``, ``hash_ids``. Hash id ``h`` at any position stands for one
              512-token block with segment key ``(5 << 60) | h``; the last id may cover a
              partial block of ``input_length - 512 * (len(hash_ids) - 1)`` tokens (1..512;
              anything else is an error). The output is a fresh segment of the request.
``azure``     CSV with ``TIMESTAMP`` (wall clock ``YYYY-MM-DD HH:MM:SS[.fraction]``),
              ``ContextTokens``, ``GeneratedTokens``. No content sharing: every prompt is a
              unique segment.
``token_ids`` JSONL with ``input_tok_ids`` and ``output_tok_ids`` (lists of token ids) and an
              arrival time: ``arrival_time_ns`` (ns), ``arrival_time_s`` (s) or ``timestamp``
              (ms, as in Mooncake); the first record decides which. Optional
              ``input_toks``/``output_toks`` must match the list lengths. Each token is a
              length-1 segment whose key is the token id itself (kind 0), so equal ids are
              equal tokens.
``parquet``   a file written by ``Workload.to_parquet`` (``oracle workload generate``).

Errors (:class:`~oracle.errors.TraceError`) name the file and, for a bad record, its 1-based
line number: missing file, empty trace, malformed JSON/CSV, missing field, wrong type,
length < 1, hash ids inconsistent with ``input_length``. Files are parsed in bulk
(pyarrow JSON, polars CSV); only when that fails or a check fails is the file re-read line by
line to find and describe the first bad record.

Trace options (``[workload.trace]``): records earlier than ``start_s`` after the first record
are skipped (a skipped request's follow-ups too), arrival times become
``(t - t_first - start_s) * time_scale``, and at most ``limit`` requests are kept. Think times
of Parquet workloads are not scaled.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np

from oracle._config import did_you_mean
from oracle.errors import TraceError
from oracle.workload.table import (KIND_HASH_ID, KIND_OUTPUT, KIND_USER, Workload, content_keys)

TRACE_FORMATS = ("mooncake", "azure", "token_ids", "parquet")

MOONCAKE_BLOCK = 512
JSON_BLOCK_BYTES = 1 << 25  # pyarrow JSON block: must hold the longest line
_MAX_KEY = (1 << 60) - 1
_MAX_LEN = 2**31 - 1
_TIME_FIELDS = {"arrival_time_ns": 1e-9, "arrival_time_s": 1.0, "timestamp": 1e-3}


@dataclasses.dataclass(frozen=True)
class TraceSpec:
    """A trace file replayed as the workload (``[workload.trace]``, parsed by ``oracle.workload.spec``)."""

    path: Path
    format: str                 # mooncake | azure | token_ids | parquet
    time_scale: float = 1.0     # multiplies inter-arrival times (2.0 = half the rate)
    limit: int | None = None    # keep at most this many requests
    start_s: float = 0.0        # skip records earlier than this offset from the first record


# -- entry points ----------------------------------------------------------------------------

def infer_format(path: str | Path) -> str:
    """``mooncake`` / ``token_ids`` (JSONL, by the first record's fields), ``azure`` (.csv), ``parquet``."""
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".csv":
        return "azure"
    if suffix in (".jsonl", ".json", ".ndjson"):
        lineno, obj = _first_record(path)
        if isinstance(obj, dict) and "hash_ids" in obj:
            return "mooncake"
        if isinstance(obj, dict) and "input_tok_ids" in obj:
            return "token_ids"
        raise TraceError("cannot tell the trace format: the first record has neither 'hash_ids' (mooncake) "
                         "nor 'input_tok_ids' (token_ids)", file=path, line=lineno)
    raise TraceError(f"cannot tell the trace format from the extension {suffix!r} "
                     "(.jsonl: mooncake/token_ids, .csv: azure, .parquet: workload)", file=path)


def read_trace(path: str | Path, fmt: str | None = None) -> Workload:
    """Import a whole trace file (no options applied); ``fmt`` None = :func:`infer_format`."""
    path = Path(path)
    fmt = fmt or infer_format(path)
    readers: dict[str, Callable[[Path], Workload]] = {
        "mooncake": read_mooncake, "azure": read_azure, "token_ids": read_token_ids,
        "parquet": Workload.from_parquet}
    if fmt not in readers:
        raise TraceError(f"unknown trace format {fmt!r}{did_you_mean(fmt, readers)}", file=path)
    wl = readers[fmt](path)
    if len(wl) == 0:
        raise TraceError("empty trace (no records)", file=path)
    return wl


def load_trace(spec: TraceSpec) -> Workload:
    """Import ``spec.path`` and apply ``start_s``, ``time_scale`` and ``limit``."""
    wl = read_trace(spec.path, spec.format)
    return apply_trace_options(wl, time_scale=spec.time_scale, start_s=spec.start_s, limit=spec.limit)


def apply_trace_options(wl: Workload, *, time_scale: float = 1.0, start_s: float = 0.0,
                        limit: int | None = None) -> Workload:
    """Skip records before ``start_s`` (from the first record), rescale gaps, keep ``limit``."""
    root = wl.parent < 0
    t0 = float(wl.arrival_s[root][0]) if root.any() else 0.0
    rel = wl.arrival_s - t0
    if start_s > 0:
        keep = wl.with_descendants(rel >= start_s)
        wl = wl.take(keep)
        rel = rel[keep]
    wl = dataclasses.replace(wl, arrival_s=(rel - start_s) * time_scale)  # NaN stays NaN; input untouched
    if limit is not None:
        wl = wl.slice(limit)
    return wl


# -- mooncake -------------------------------------------------------------------------------

def _check_mooncake(obj: Any) -> str | None:
    if not isinstance(obj, dict):
        return f"a record must be a JSON object, got {_json_type(obj)}"
    for name in ("timestamp", "input_length", "output_length", "hash_ids"):
        if name not in obj:
            return f"missing field {name!r}"
    reason = (_check_number("timestamp", obj["timestamp"]) or _check_length("input_length", obj["input_length"])
              or _check_length("output_length", obj["output_length"])
              or _check_id_list("hash_ids", obj["hash_ids"]))
    if reason:
        return reason
    n, length = len(obj["hash_ids"]), obj["input_length"]
    if not MOONCAKE_BLOCK * (n - 1) < length <= MOONCAKE_BLOCK * n:
        return (f"input_length {length} does not match {n} hash_ids: at {MOONCAKE_BLOCK} tokens per hash id it "
                f"must be in {MOONCAKE_BLOCK * (n - 1) + 1}..{MOONCAKE_BLOCK * n}")
    return None


def read_mooncake(path: str | Path) -> Workload:
    """Mooncake JSONL -> Workload (see the module docstring)."""
    import pyarrow as pa   # lazy: pyarrow, polars (~0.2 s each) only to read a trace
    path = Path(path)
    schema = pa.schema([("timestamp", pa.float64()), ("input_length", pa.int64()),
                        ("output_length", pa.int64()), ("hash_ids", pa.list_(pa.int64()))])
    table = _read_jsonl(path, schema, _check_mooncake)
    t = _column(table, "timestamp", np.float64)
    order = _sort_order(t)
    if order is not None:
        table, t = table.take(order), t[order]
    inp = _column(table, "input_length", np.int64)
    out = _column(table, "output_length", np.int64)
    ids_arr = table.column("hash_ids").combine_chunks()
    bad = ids_arr.is_null().to_numpy(zero_copy_only=False)
    offs = ids_arr.offsets.to_numpy().astype(np.int64)
    ids = ids_arr.values.to_numpy()[offs[0]:offs[-1]] if len(ids_arr) else np.zeros(0, np.int64)
    offs = offs - offs[0]
    nid = np.diff(offs)
    last_len = inp - MOONCAKE_BLOCK * (nid - 1)
    bad |= ~np.isfinite(t) | (inp < 1) | (out < 1) | (nid < 1) | (last_len < 1) | (last_len > MOONCAKE_BLOCK)
    bad |= (inp > _MAX_LEN) | (out > _MAX_LEN) | (inp + out > _MAX_LEN)
    if ids.size and (ids.min() < 0 or ids.max() > _MAX_KEY):
        bad[:] = True
    if bad.any():
        _fail(path, _check_mooncake, "a record is invalid")
    n = t.shape[0]
    # segments: the hash-id blocks, then one output segment per request
    seg_offsets = offs + np.arange(n + 1, dtype=np.int64)
    m = int(seg_offsets[-1])
    seg_key = np.empty(m, np.uint64)
    seg_len = np.full(m, MOONCAKE_BLOCK, np.int32)
    row = np.repeat(np.arange(n), nid)
    id_pos = np.arange(ids.shape[0], dtype=np.int64) + row
    seg_key[id_pos] = content_keys(KIND_HASH_ID, ids)
    out_pos = seg_offsets[1:] - 1
    seg_len[out_pos - 1] = last_len
    seg_key[out_pos] = content_keys(KIND_OUTPUT, np.arange(n))
    seg_len[out_pos] = out
    return _roots(path, "mooncake", t * 1e-3, inp, out, seg_offsets, seg_key, seg_len)


# -- token ids ------------------------------------------------------------------------------

def _token_ids_checker(time_field: str) -> Callable[[Any], str | None]:
    def check(obj: Any) -> str | None:
        if not isinstance(obj, dict):
            return f"a record must be a JSON object, got {_json_type(obj)}"
        for name in ("input_tok_ids", "output_tok_ids", time_field):
            if name not in obj:
                return f"missing field {name!r}"
        reason = (_check_number(time_field, obj[time_field]) or _check_id_list("input_tok_ids", obj["input_tok_ids"])
                  or _check_id_list("output_tok_ids", obj["output_tok_ids"]))
        if reason:
            return reason
        for count, lst in (("input_toks", "input_tok_ids"), ("output_toks", "output_tok_ids")):
            if count in obj and obj[count] != len(obj[lst]):
                return f"{count} = {obj[count]!r} but {lst} has {len(obj[lst])} tokens"
        return None
    return check


def read_token_ids(path: str | Path) -> Workload:
    """Token-id JSONL -> Workload: one length-1 segment per token, key = token id."""
    import pyarrow as pa   # lazy: see read_mooncake
    path = Path(path)
    lineno, first = _first_record(path)
    time_field = next((f for f in _TIME_FIELDS if isinstance(first, dict) and f in first), None)
    if time_field is None:
        raise TraceError("the first record has no arrival time (arrival_time_ns, arrival_time_s or timestamp)",
                         file=path, line=lineno)
    check = _token_ids_checker(time_field)
    time_type = pa.int64() if time_field == "arrival_time_ns" else pa.float64()
    schema = pa.schema([(time_field, time_type), ("input_tok_ids", pa.list_(pa.int64())),
                        ("output_tok_ids", pa.list_(pa.int64())), ("input_toks", pa.int64()),
                        ("output_toks", pa.int64())])
    table = _read_jsonl(path, schema, check)
    t_raw = table.column(time_field).to_numpy(zero_copy_only=False)
    bad = table.column(time_field).is_null().to_numpy(zero_copy_only=False)
    t = t_raw.astype(np.float64)
    order = _sort_order(np.where(bad, 0, t))
    if order is not None:
        table, t, t_raw, bad = table.take(order), t[order], t_raw[order], bad[order]
    lists = {}
    for name in ("input_tok_ids", "output_tok_ids"):
        arr = table.column(name).combine_chunks()
        bad |= arr.is_null().to_numpy(zero_copy_only=False)
        offs = arr.offsets.to_numpy().astype(np.int64)
        vals = arr.values.to_numpy()[offs[0]:offs[-1]] if len(arr) else np.zeros(0, np.int64)
        lists[name] = (offs - offs[0], vals)
        if vals.size and (vals.min() < 0 or vals.max() > _MAX_KEY):
            bad[:] = True
    (in_off, in_ids), (out_off, out_ids) = lists["input_tok_ids"], lists["output_tok_ids"]
    inp, out = np.diff(in_off), np.diff(out_off)
    bad |= (inp < 1) | (out < 1) | ~np.isfinite(t) | (inp + out > _MAX_LEN)
    for count, lengths in (("input_toks", inp), ("output_toks", out)):
        c = table.column(count)
        given = ~c.is_null().to_numpy(zero_copy_only=False)
        bad |= given & (c.fill_null(0).to_numpy() != lengths)
    if bad.any():
        _fail(path, check, "a record is invalid")
    n = t.shape[0]
    seg_offsets = in_off + out_off
    m = int(seg_offsets[-1])
    seg_key = np.empty(m, np.uint64)
    seg_key[np.arange(in_ids.shape[0]) + np.repeat(out_off[:-1], inp)] = in_ids.astype(np.uint64)
    seg_key[np.arange(out_ids.shape[0]) + np.repeat(in_off[1:], out)] = out_ids.astype(np.uint64)
    seg_len = np.ones(m, np.int32)
    if time_field == "arrival_time_ns":  # exact integer nanoseconds before converting
        t = (t_raw - t_raw[0]).astype(np.float64) * 1e-9 if n else t
        scale = 1.0
    else:
        scale = _TIME_FIELDS[time_field]
    return _roots(path, "token_ids", t * scale, inp, out, seg_offsets, seg_key, seg_len)


# -- azure ----------------------------------------------------------------------------------

_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?$")


def _parse_wallclock(s: str) -> datetime | None:
    if not _TS_RE.match(s):
        return None
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        return None


def _check_azure(row: dict) -> str | None:
    ts = row.get("TIMESTAMP")
    if ts is None or _parse_wallclock(ts.strip()) is None:
        return f"TIMESTAMP {ts!r} is not a date-time like '2023-11-16 18:15:46.6805900'"
    for name in ("ContextTokens", "GeneratedTokens"):
        v = (row.get(name) or "").strip()
        try:
            iv = int(v)
        except ValueError:
            return f"{name} must be an integer, got {v!r}"
        if iv < 1:
            return f"{name} must be >= 1, got {iv}"
    return None


def read_azure(path: str | Path) -> Workload:
    """Azure LLM inference trace CSV -> Workload (unique prompts, no sharing)."""
    import polars as pl   # lazy: see read_mooncake
    path = Path(path)
    _check_text(path, "CSV")
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise TraceError("empty trace (no header line)", file=path)
    header = [h.strip() for h in header]
    for name in _AZURE_COLUMNS:
        if name not in header:
            raise TraceError(f"missing column {name!r}{did_you_mean(name, header)}; have: {', '.join(header)}",
                             file=path, line=1)
    try:
        df = pl.read_csv(path, columns=list(_AZURE_COLUMNS), schema_overrides={
            "TIMESTAMP": pl.Utf8, "ContextTokens": pl.Int64, "GeneratedTokens": pl.Int64})
    except (pl.exceptions.PolarsError, OSError) as exc:
        _fail_csv(path, f"unreadable CSV ({str(exc).splitlines()[0]})")
    if df.height == 0:
        raise TraceError("empty trace (no records)", file=path)
    ts_col = pl.col("TIMESTAMP").str.strip_chars()
    df = df.with_columns(pl.coalesce(
        ts_col.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="ns"),
        ts_col.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", strict=False, time_unit="ns"),
    ).alias("_t"))
    t_ns = df["_t"].cast(pl.Int64)
    inp = df["ContextTokens"]
    out = df["GeneratedTokens"]
    if (t_ns.null_count() or inp.null_count() or out.null_count() or (inp < 1).any() or (out < 1).any()
            or (inp + out > _MAX_LEN).any()):
        _fail_csv(path, "a row is invalid")
    t_ns = t_ns.to_numpy()
    inp, out = inp.to_numpy(), out.to_numpy()
    order = _sort_order(t_ns)
    if order is not None:
        t_ns, inp, out = t_ns[order], inp[order], out[order]
    n = t_ns.shape[0]
    t = (t_ns - t_ns[0]).astype(np.float64) * 1e-9
    seg_offsets = np.arange(0, 2 * n + 1, 2, dtype=np.int64)
    seg_key = np.empty(2 * n, np.uint64)
    seg_key[0::2] = content_keys(KIND_USER, np.arange(n))
    seg_key[1::2] = content_keys(KIND_OUTPUT, np.arange(n))
    seg_len = np.empty(2 * n, np.int32)
    seg_len[0::2], seg_len[1::2] = inp, out
    return _roots(path, "azure", t, inp, out, seg_offsets, seg_key, seg_len)


def _fail_csv(path: Path, fallback: str) -> None:
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames:
            reader.fieldnames = [h.strip() for h in reader.fieldnames]
        for row in reader:
            if not any((v or "").strip() for v in row.values()):
                continue
            if None in row:
                raise TraceError(f"too many fields ({len(reader.fieldnames) + len(row[None])}, header has "
                                 f"{len(reader.fieldnames)})", file=path, line=reader.line_num)
            reason = _check_azure(row)
            if reason:
                raise TraceError(reason, file=path, line=reader.line_num)
    raise TraceError(fallback, file=path)


# -- empirical distributions from a file column ---------------------------------------------

def read_column(path: str | Path, column: str) -> np.ndarray:
    """All values of one numeric column of a CSV / JSONL / Parquet file, as f8 (finite, non-empty)."""
    import polars as pl   # lazy: see read_mooncake
    path = Path(path)
    _check_file(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            names = pl.read_csv(path, n_rows=0).columns
            _check_column(path, column, names)
            s = pl.read_csv(path, columns=[column])[column]
        elif suffix == ".parquet":
            names = pl.read_parquet_schema(path).keys()
            _check_column(path, column, list(names))
            s = pl.read_parquet(path, columns=[column])[column]
        elif suffix in (".jsonl", ".json", ".ndjson"):
            import pyarrow.json as pj   # lazy: see read_mooncake
            table = pj.read_json(path, read_options=pj.ReadOptions(block_size=JSON_BLOCK_BYTES))
            _check_column(path, column, table.column_names)
            s = pl.from_arrow(table.column(column))
        else:
            raise TraceError(f"cannot read a column from a {suffix!r} file (use .csv, .jsonl or .parquet)", file=path)
    except TraceError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser error is the file's fault
        raise TraceError(f"cannot read column {column!r} ({str(exc).splitlines()[0]})", file=path) from None
    if not s.dtype.is_numeric():
        raise TraceError(f"column {column!r} is not numeric ({s.dtype})", file=path)
    vals = s.drop_nulls().cast(pl.Float64).to_numpy()
    if vals.size == 0 or not np.isfinite(vals).all():
        raise TraceError(f"column {column!r} must hold at least one value, all finite", file=path)
    return vals


def _check_column(path: Path, column: str, names: list[str]) -> None:
    if column not in names:
        raise TraceError(f"no column {column!r}{did_you_mean(column, names)}; have: {', '.join(names)}", file=path)


# -- shared helpers -------------------------------------------------------------------------

def _check_file(path: Path) -> None:
    if not path.exists():
        raise TraceError("file not found", file=path)
    if not path.is_file():
        raise TraceError("not a file", file=path)


def _check_text(path: Path, what: str) -> None:
    """Refuse a binary file (NUL bytes or invalid UTF-8 in its first 64 KiB) in one clear line."""
    _check_file(path)
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        bad = head.find(b"\0")
    except UnicodeDecodeError as exc:
        bad = exc.start
    if bad >= 0:
        raise TraceError(f"not a text (UTF-8) {what} file: binary data at byte {bad} (compressed?)",
                         file=path, line=head.count(b"\n", 0, bad) + 1)


def _first_record(path: Path) -> tuple[int, Any]:
    _check_text(path, "JSON lines")
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    return lineno, json.loads(line)
                except ValueError as exc:
                    raise TraceError(f"malformed JSON ({_json_msg(exc)})", file=path, line=lineno) from None
    raise TraceError("empty trace (no records)", file=path)


def _read_jsonl(path: Path, schema, check: Callable[[Any], str | None]):
    """Bulk-parse a JSONL file with pyarrow; on any failure, report the first bad line."""
    import pyarrow as pa   # lazy: see read_mooncake
    import pyarrow.json as pj
    _check_text(path, "JSON lines")
    try:
        table = pj.read_json(path, read_options=pj.ReadOptions(block_size=JSON_BLOCK_BYTES),
                             parse_options=pj.ParseOptions(explicit_schema=schema,
                                                           unexpected_field_behavior="ignore"))
    except (pa.ArrowException, OSError) as exc:
        _fail(path, check, f"unreadable JSON lines ({str(exc).splitlines()[0]})")
    if table.num_rows == 0:
        raise TraceError("empty trace (no records)", file=path)
    return table


def _fail(path: Path, check: Callable[[Any], str | None], fallback: str) -> None:
    """Re-read ``path`` line by line and raise a TraceError for the first bad record."""
    records = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            records += 1
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise TraceError(f"malformed JSON ({_json_msg(exc)})", file=path, line=lineno) from None
            reason = check(obj)
            if reason:
                raise TraceError(reason, file=path, line=lineno)
    if records == 0:
        raise TraceError("empty trace (no records)", file=path)
    raise TraceError(fallback, file=path)


def _json_msg(exc: ValueError) -> str:
    return getattr(exc, "msg", None) or str(exc)


def _json_type(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(v), type(v).__name__)


def _check_number(name: str, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return f"{name} must be a finite number, got {_json_type(v)} {v!r}"
    return None


def _check_length(name: str, v: Any) -> str | None:
    if isinstance(v, bool) or not isinstance(v, int):
        return f"{name} must be an integer, got {_json_type(v)} {v!r}"
    if v < 1:
        return f"{name} must be >= 1, got {v}"
    if v > _MAX_LEN:
        return f"{name} must be < 2**31, got {v}"
    return None


def _check_id_list(name: str, v: Any) -> str | None:
    if not isinstance(v, list):
        return f"{name} must be an array of integers, got {_json_type(v)}"
    if not v:
        return f"{name} must not be empty"
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= _MAX_KEY:
            return f"{name} must hold integers in 0..2**60-1, got {_json_type(x)} {x!r}"
    return None


def _column(table, name: str, dtype) -> np.ndarray:
    """A column as ``dtype``; nulls become NaN (floats) or -1 (ints) so the checks catch them."""
    col = table.column(name)
    arr = col.to_numpy(zero_copy_only=False)
    if col.null_count:
        null = col.is_null().to_numpy(zero_copy_only=False)
        arr = np.where(null, np.nan if np.dtype(dtype).kind == "f" else -1, arr)
    return arr.astype(dtype, copy=False)


def _sort_order(t: np.ndarray) -> np.ndarray | None:
    """Stable argsort of the times, or None when they are already non-decreasing."""
    if t.shape[0] < 2 or not np.any(np.diff(t) < 0):
        return None
    return np.argsort(t, kind="stable")


def _roots(path: Path, fmt: str, t: np.ndarray, inp, out, seg_offsets, seg_key, seg_len) -> Workload:
    """A Workload of independent requests (no sessions) from sorted arrays."""
    n = t.shape[0]
    t = t - t[0] if n else t
    return Workload(arrival_s=t, prompt_tokens=inp, output_tokens=out, session=np.full(n, -1),
                    turn=np.zeros(n), parent=np.full(n, -1), think_s=np.zeros(n),
                    client=np.zeros(n), seg_offsets=seg_offsets, seg_key=seg_key, seg_len=seg_len,
                    client_names=[fmt], source=f"{fmt} trace {path}")
