"""Configs of the original (SimPy-based) LLMPerfOracle: read, convert to a scenario, run.

    oracle convert old.yaml -o scenario.toml     # a TOML scenario with comments on what changed
    oracle simulate old.yaml                     # converted in memory, then run

* :func:`convert_file` -> :class:`~oracle.legacy.convert.Conversion` (the TOML dict, the notes,
  ``to_toml()``);
* :func:`load_legacy_scenario` -> a validated :class:`~oracle.scenario.Scenario`.

What maps to what, and why some numbers differ: docs/coming-from-original.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from oracle.errors import OracleError
from oracle.legacy.convert import LEGACY_SUFFIXES, Conversion, convert_file, convert_legacy, read_legacy
from oracle.scenario import scenario_from_dict

__all__ = ["LEGACY_SUFFIXES", "Conversion", "convert_file", "convert_legacy", "read_legacy", "is_legacy_path",
           "load_legacy_scenario", "scenario_from_conversion"]


def is_legacy_path(path: str | Path) -> bool:
    """True for a ``.yaml``/``.yml``/``.json`` file name (the original tool's config formats)."""
    return Path(path).suffix.lower() in LEGACY_SUFFIXES


def scenario_from_conversion(conv: Conversion):
    """Validate a conversion's TOML dict as a Scenario; errors also name the original key."""
    try:
        return scenario_from_dict(conv.raw, base_dir=conv.source.parent, file=conv.source)
    except OracleError as exc:
        def original(p: OracleError) -> OracleError:
            orig = conv.original_key(p.key)
            key = f"{orig} (converted to {p.key})" if p.key and orig and orig != p.key else p.key
            return type(p)(p.reason, file=conv.source, key=key, line=p.line)
        raise exc.each(original) from None


def load_legacy_scenario(path: str | Path, *, notice: bool = True):
    """Convert an original config in memory and validate it as a Scenario.

    With ``notice`` (the default), prints one line to stderr saying so.
    """
    path = Path(path)
    conv = convert_file(path)
    sc = scenario_from_conversion(conv)
    if notice:
        c = conv.counts()
        print(f"note: {path} is an original-LLMPerfOracle config; converted in memory "
              f"({c['approximated']} setting(s) approximated, {c['dropped']} dropped; "
              f"`oracle convert {path}` shows them)", file=sys.stderr)
    return sc


