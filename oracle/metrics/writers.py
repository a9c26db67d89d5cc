"""Atomic output writing: results appear whole or not at all.

Everything for a run is written into a hidden temporary folder next to the destination; only
when all files are complete is each framework folder swapped into place with ``os.replace``
(an earlier run's folder is moved aside first and removed after the swap). An interrupted or
failed run leaves earlier results untouched and no partial files in the destination.

Single files (sweep tables, reports, converted scenarios, workloads, extra copies) go through
:func:`atomic_write`, the one place that writes a temporary file and renames it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Iterable

from oracle.errors import OracleError


def json_default(obj: Any):
    import numpy as np   # lazy: numpy (~0.15 s); the CLI's commands import this module at start-up
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """JSON with NaN/inf written as null (strict JSON) and stable key order."""
    return json.dumps(_clean(obj), indent=2, default=json_default) + "\n"


def dumps_compact(obj: Any) -> str:
    """One line of JSON, as ``json.dump`` writes it (NaN/inf as null): for big per-request lists."""
    return json.dumps(_clean(obj), default=json_default) + "\n"


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def check_out_dir(dest: Path) -> None:
    """Raise if ``dest`` cannot become a folder: it is a file, or a path above it is a file."""
    dest = Path(dest)
    for p in (dest, *dest.parents):
        if p.exists():
            if not p.is_dir():
                where = "it is a file" if p == dest else f"{p} is a file, not a folder"
                raise OracleError(f"cannot write the output folder: {where}", file=dest)
            return


def make_staging_dir(dest: Path) -> Path:
    """A fresh hidden temporary folder on the same filesystem as ``dest``."""
    check_out_dir(dest)
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=parent))
    except OSError as exc:
        raise OracleError(f"cannot write the output folder: {exc.strerror}", file=dest) from None


def publish(staging: Path, dest: Path, names: Iterable[str]) -> None:
    """Move each ``staging/name`` to ``dest/name`` atomically, replacing an earlier one.

    Ctrl-C / SIGTERM are held back until every name is swapped in (renames only, so briefly):
    an interrupt never leaves a folder moved aside but not replaced, or frameworks of two runs.
    """
    with _signals_deferred():
        _publish(staging, dest, names)


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT and SIGTERM for the duration, then deliver the first one that came.

    Python-level handlers (a blocked signal mask would not do: polars/pyarrow threads could
    still take the signal and the interpreter would run the handler here).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    sigs = [s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None]
    old = {s: signal.signal(s, lambda signum, _frame: pending.append(signum)) for s in sigs}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if pending:
            signal.raise_signal(pending[0])


def _publish(staging: Path, dest: Path, names: Iterable[str]) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for name in names:
            src, dst = staging / name, dest / name
            old = None
            if dst.exists():
                old = dest / f".{name}.old-{os.getpid()}"
                if old.exists():
                    _remove(old)
                os.replace(dst, old)
            os.replace(src, dst)
            if old is not None:
                _remove(old)
    except OSError as exc:
        raise OracleError(f"cannot write results: {exc.strerror}", file=dest) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def atomic_write(target: Path, content: str | bytes | Callable[[Path], object]) -> Path:
    """Create ``target`` whole or not at all; returns ``target``.

    ``content`` is text (written as UTF-8), bytes, or a function that writes the file at the
    path it is given (``frame.write_parquet``). It goes to a temporary file beside ``target``
    (mode 0644), which is then renamed over ``target``; the parent folder is created. A path
    component that is a file, or any other OSError, becomes one OracleError naming the path.
    """
    target = Path(target)
    render = _renderer(content)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    except OSError as exc:
        check_out_dir(target.parent)   # names the path component that is a file, if one is
        raise OracleError(f"cannot write: {exc.strerror}", file=target) from None
    os.close(fd)
    try:
        render(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        raise OracleError(f"cannot write: {exc.strerror}", file=target) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _renderer(content: str | bytes | Callable[[Path], object]) -> Callable[[Path], object]:
    """A function writing ``content`` (text as UTF-8, bytes, or already a function) to a path."""
    if isinstance(content, str):
        return lambda path: path.write_text(content, encoding="utf-8")
    if isinstance(content, bytes):
        return lambda path: path.write_bytes(content)
    return content
