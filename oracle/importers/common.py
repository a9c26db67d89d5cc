"""Shared pieces of the importers: reading YAML/JSON, scenario skeletons, arrival processes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from oracle.errors import OracleError


def read_mapping(path: Path) -> Any:
    """A YAML or JSON file's content; errors name the file (and the line for YAML)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OracleError("file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OracleError(f"cannot read: {exc}", file=path) from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise OracleError(f"JSON syntax error: {exc.msg}", file=path, line=exc.lineno) from None
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise OracleError(f"YAML syntax error: {getattr(exc, 'problem', exc)}", file=path,
                          line=mark.line + 1 if mark is not None else None) from None


def skeleton(name: str, model: str, *, seed: int = 0, gpu: str = "h100-sxm") -> dict:
    """A scenario dict without clients or frameworks."""
    return {"name": name, "seed": int(seed), "simulation": {}, "model": {"name": model},
            "hardware": {"gpu": gpu}, "workload": {"clients": []}, "frameworks": [{"name": "vllm"}]}


def catalog_model(name: str, *, where: str, file: Path | None) -> str:
    """The catalog name of a Hugging Face model id (or alias); an error names where it came from."""
    from oracle.catalog import get_model
    try:
        return get_model(name, key="model").name
    except OracleError as exc:
        raise OracleError(f"model {name!r} is not in the catalog ({exc.reason}); use a catalog model of the "
                          "same architecture, or add it to oracle/catalog/models.toml", file=file, key=where) from None


def open_loop_arrival(rate: float, *, burstiness: float = 1.0) -> dict:
    """vLLM's request-interval law: gamma of shape ``burstiness`` and mean ``1/rate``
    (Poisson at 1, constant gaps at inf) as a scenario ``arrival`` table."""
    if math.isinf(burstiness):
        return {"process": "constant", "rate": float(rate)}
    if burstiness == 1.0:
        return {"process": "poisson", "rate": float(rate)}
    return {"process": "gamma", "rate": float(rate), "cv": 1.0 / math.sqrt(burstiness)}


def iter_flags(words: list[str], bare_value: str = ""):
    """``(flag, value)`` for each ``--flag=value``, ``--flag value`` or bare ``--flag`` (value
    ``bare_value``) of a command line, in order; words that are not flags are skipped."""
    i = 0
    while i < len(words):
        tok = words[i]
        i += 1
        if not tok.startswith("--"):
            continue
        flag, eq, val = tok.partition("=")
        if not eq:
            if i < len(words) and not words[i].startswith("--"):
                val = words[i]
                i += 1
            else:
                val = bare_value
        yield flag, val
