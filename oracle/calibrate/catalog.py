"""Writing fitted factors into the GPU catalog (``oracle/catalog/gpus.toml``) in place."""

from __future__ import annotations

import re
from typing import Any

from oracle.calibrate.fit import GEMM_KEYS

#: catalog GPUs that receive each device's fitted factors
TARGETS = {"a100": ("a100-40g", "a100-80g"), "a40": ("a40",)}
FACTOR_KEYS = ("eff_compute", "eff_memory", "roofline_overlap", "kernel_overhead_s", "eff_elementwise",
               "layer_overhead_s",
               "eff_attn_compute", "eff_attn_memory", "attn_overhead_s", "eff_link", "link_latency_s")


def _toml_value(v: Any) -> str:
    """A TOML literal: floats always with a point or exponent, strings quoted, others as is."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        s = repr(v)
        return s if any(ch in s for ch in ".en") else s + ".0"
    return str(v)


def update_catalog_text(text: str, section_values: dict[str, dict[str, Any]]) -> str:
    """Set ``key = value`` lines in the given ``[section]``s of a TOML text, keeping everything else.

    Keys missing from a section are appended after its last key line.
    """
    lines = text.splitlines(keepends=True)
    header = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
    starts = [(i, header.match(ln).group(1).strip()) for i, ln in enumerate(lines) if header.match(ln)]
    out_lines = list(lines)
    inserts: dict[int, list[str]] = {}
    for j, (start, name) in enumerate(starts):
        values = section_values.get(name)
        if not values:
            continue
        end = starts[j + 1][0] if j + 1 < len(starts) else len(lines)
        seen, last_key = set(), start
        for i in range(start + 1, end):
            m = re.match(r"^(\s*)([A-Za-z0-9_]+)\s*=", lines[i])
            if not m:
                continue
            last_key = i
            if m.group(2) in values:
                out_lines[i] = f"{m.group(1)}{m.group(2)} = {_toml_value(values[m.group(2)])}\n"
                seen.add(m.group(2))
        missing = [k for k in values if k not in seen]
        if missing:
            inserts[last_key] = [f"{k} = {_toml_value(values[k])}\n" for k in missing]
    result = []
    for i, ln in enumerate(out_lines):
        result.append(ln if ln.endswith("\n") else ln + "\n")
        result.extend(inserts.get(i, []))
    return "".join(result)


def catalog_sections(result: dict) -> dict[str, dict[str, float]]:
    """``{toml section: factors}`` for the fitted GPUs and ``[defaults]``."""
    out = {"defaults": result["fits"]["defaults"]}
    for dev, names in TARGETS.items():
        for name in names:
            out[f"gpus.{name}"] = {k: v for k, v in result["fits"][dev].items() if k in FACTOR_KEYS}
    for label, names in result.get("extra", {}).items():
        for name in names:
            out[f"gpus.{name}"] = {k: result["fits"][label][k] for k in GEMM_KEYS}
    return out
