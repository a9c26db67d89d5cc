"""Shared pieces of the legacy converter: the notes it collects and typed reads of raw mappings.

Key paths of the original file are dotted with list indices as numbers
(``frameworks_to_test.0.config.block_size``); key paths of the produced TOML are dotted the
same way (``frameworks.0.block_size``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from oracle.errors import ScenarioError

APPROXIMATED = "approximated"
DROPPED = "dropped"
NOTE = "note"


@dataclass(frozen=True)
class Note:
    """One remark about the conversion, shown as a comment in the TOML.

    kind: ``approximated`` (mapped to the closest supported form), ``dropped`` (no
    equivalent; ignored) or ``note`` (mapped, but read this).
    toml_key: the TOML key path the comment goes above (None: the file header).
    origin: the original key path it is about.
    """

    kind: str
    text: str
    toml_key: str | None = None
    origin: str | None = None

    def line(self) -> str:
        where = f" [{self.origin}]" if self.origin else ""
        return f"{self.kind}{where}: {self.text}"


@dataclass
class Context:
    """What a conversion accumulates besides the TOML dict."""

    notes: list[Note] = field(default_factory=list)
    origins: dict[str, str] = field(default_factory=dict)   # TOML key path -> original key path

    def note(self, kind: str, text: str, *, toml_key: str | None = None, origin: str | None = None) -> None:
        """Add a note, once: merged data-parallel targets would repeat their notes otherwise."""
        if not any(n.kind == kind and n.text == text and n.toml_key == toml_key for n in self.notes):
            self.notes.append(Note(kind, text, toml_key, origin))

    def origin(self, toml_key: str, orig_key: str) -> None:
        self.origins.setdefault(toml_key, orig_key)

    def unknown_keys(self, raw: dict, known, path: str, toml_key: str | None) -> None:
        """A ``dropped`` note for each key of ``raw`` that the converter does not read."""
        for k in raw:
            if k not in known:
                why = IGNORED.get(k, "unknown key, ignored (no equivalent here)")
                self.note(DROPPED, f"{k}: {why}", toml_key=toml_key, origin=join(path, k))


# keys of the original format that have no equivalent here, with the reason given in the note
IGNORED = {
    "bytes_per_token_estimate_for_network": "network transfer time is not modelled",
    "adapter_config": "there is no adapter layer here: the engine is simulated directly",
    "random_seed": "one seed (simulation.random_seed) drives the whole run here",
}


def join(path: str, k) -> str:
    return f"{path}.{k}" if path else str(k)


def type_name(v) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(v), type(v).__name__)


def mapping(raw, path: str, *, required: bool = True) -> dict:
    if raw is None and not required:
        return {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"must be a mapping, got {type_name(raw)}", key=path or None)
    return raw


def first_key(raw: dict, names) -> str | None:
    """The first of ``names`` present in ``raw`` (key aliases), or None."""
    for n in names:
        if n in raw:
            return n
    return None


def number(raw: dict, k: str, path: str, *, default=None, lo: float | None = None, lo_open: bool = False,
           hi: float | None = None) -> float | None:
    if k not in raw or raw[k] is None:
        if default is ...:
            raise ScenarioError("is required", key=join(path, k))
        return default
    v = raw[k]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise ScenarioError(f"must be a finite number, got {type_name(v)} {v!r}", key=join(path, k))
    v = float(v)
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ScenarioError(f"must be {'>' if lo_open else '>='} {lo:g}, got {v:g}", key=join(path, k))
    if hi is not None and v > hi:
        raise ScenarioError(f"must be <= {hi:g}, got {v:g}", key=join(path, k))
    return v


def integer(raw: dict, k: str, path: str, *, default=None, lo: int | None = None) -> int | None:
    v = number(raw, k, path, default=default, lo=lo)
    if v is None:
        return None
    if not float(v).is_integer():
        raise ScenarioError(f"must be an integer, got {raw[k]!r}", key=join(path, k))
    return int(v)


def boolean(raw: dict, k: str, path: str, *, default=None) -> bool | None:
    if k not in raw or raw[k] is None:
        return default
    v = raw[k]
    if not isinstance(v, bool):
        raise ScenarioError(f"must be true or false, got {type_name(v)} {v!r}", key=join(path, k))
    return v


def string(raw: dict, k: str, path: str, *, default=None) -> str | None:
    if k not in raw or raw[k] is None:
        if default is ...:
            raise ScenarioError("is required", key=join(path, k))
        return default
    v = raw[k]
    if not isinstance(v, str):
        raise ScenarioError(f"must be a string, got {type_name(v)} {v!r}", key=join(path, k))
    return v


def fmt(v: float) -> str:
    """A short human form of a number for comments."""
    return f"{v:.6g}"
