"""Atomic output writing: results appear whole or not at all.

Everything for a run is written into a hidden temporary folder next to the destination; only
when all files are complete is each framework folder swapped into place with ``os.replace``
(an earlier run's folder is moved aside first and removed after the swap). An interrupted or
failed run leaves earlier results untouched and no partial files in the destination.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from oracle.errors import OracleError


def json_default(obj: Any):
    import numpy as np
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


def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def make_staging_dir(dest: Path) -> Path:
    """A fresh hidden temporary folder on the same filesystem as ``dest``."""
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=parent))
    except OSError as exc:
        raise OracleError(f"cannot write the output folder: {exc.strerror}", file=dest) from None


def publish(staging: Path, dest: Path, names: Iterable[str]) -> None:
    """Move each ``staging/name`` to ``dest/name`` atomically, replacing an earlier one."""
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
