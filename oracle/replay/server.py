"""The server a benchmark ran against: from an ``exp-config.yaml``, command-line flags, defaults.

Precedence, per setting: a flag (``--tp 4``) > the ``--server`` file > the ``exp-config.yaml``
next to an inference-perf result > the model the load generator recorded (model only) >
vLLM's default as the project has it (``oracle/scenario.py``). ``ServerSettings.sources``
records which one each setting came from, and the replay prints it.

``exp-config.yaml`` keys (vLLM's own flag names, with ``-`` or ``_``): ``model``,
``tensor_parallelism`` / ``tensor_parallel_size``, ``max_model_len``, ``max_num_batched_tokens``,
``max_num_seqs``, ``gpu_memory_utilization``, ``block_size``, ``enable_prefix_caching``,
``enable_chunked_prefill``, ``num_gpu_blocks_override`` / ``num_gpu_blocks``,
``async_scheduling`` (absent: the framework catalog's, on for vLLM as in its defaults). ``app`` (the
load generator's name) is read and not used; any other key is listed in the notes as ignored
(an external file: noted, not rejected, as for original-LLMPerfOracle configs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oracle.errors import OracleError
from oracle.replay.common import ReplayError, ServerSettings, read_yaml

#: exp-config key -> (ServerSettings field, type)
SERVER_KEYS: dict[str, tuple[str, type]] = {
    "model": ("model", str),
    "tensor_parallelism": ("tp", int),
    "tensor_parallel_size": ("tp", int),
    "max_model_len": ("max_model_len", int),
    "max_num_batched_tokens": ("max_num_batched_tokens", int),
    "max_num_seqs": ("max_num_seqs", int),
    "gpu_memory_utilization": ("gpu_memory_utilization", float),
    "block_size": ("block_size", int),
    "enable_prefix_caching": ("enable_prefix_caching", bool),
    "enable_chunked_prefill": ("enable_chunked_prefill", bool),
    "num_gpu_blocks_override": ("num_gpu_blocks", int),
    "num_gpu_blocks": ("num_gpu_blocks", int),
    "async_scheduling": ("async_scheduling", bool),
}
NOT_SERVER_KEYS = ("app",)
_DEFAULTS = {f: getattr(ServerSettings, f) for f in ("tp", "max_num_seqs", "max_num_batched_tokens",
                                                     "gpu_memory_utilization", "block_size",
                                                     "enable_prefix_caching", "enable_chunked_prefill")}


def read_server_file(path: Path) -> tuple[dict[str, Any], list[str]]:
    """``({field: value}, notes)`` from an exp-config.yaml (see the module docstring)."""
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ReplayError(f"must be a mapping of vLLM settings, got {type(raw).__name__}", file=path)
    values: dict[str, Any] = {}
    ignored = []
    for key, value in raw.items():
        norm = str(key).replace("-", "_")
        if norm in NOT_SERVER_KEYS:
            continue
        if norm not in SERVER_KEYS:
            ignored.append(str(key))
            continue
        name, kind = SERVER_KEYS[norm]
        if value is None:
            continue
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise ReplayError(f"must be {'true or false' if kind is bool else kind.__name__}, got {value!r}",
                              file=path, key=str(key))
        if kind in (int, float) and value <= 0:
            raise ReplayError(f"must be > 0, got {value!r}", file=path, key=str(key))
        values[name] = value
    notes = []
    if ignored:
        notes.append(f"{path.name}: ignored (not modelled or not a vLLM server setting): {', '.join(ignored)}")
    return values, notes


def resolve_server(*, recorded_model: str | None, recorded_model_where: str, server_file: Path | None,
                   flags: dict[str, Any]) -> tuple[ServerSettings, list[str]]:
    """Merge the sources of server settings (module docstring); map the model to the catalog.

    ``flags``: ServerSettings field -> value or None (not given). Raises ReplayError when
    the model is unknown to the catalog, naming where the name came from.
    """
    notes: list[str] = []
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if recorded_model:
        values["model"] = recorded_model
        sources["model"] = recorded_model_where
    if server_file is not None:
        file_values, file_notes = read_server_file(server_file)
        notes += file_notes
        for k, v in file_values.items():
            values[k] = v
            sources[k] = server_file.name
    for k, v in flags.items():
        if v is not None:
            values[k] = v
            sources[k] = "--" + {"tp": "tp"}.get(k, k.replace("_", "-"))
    for k, v in _DEFAULTS.items():
        if k not in values:
            values[k] = v
            sources[k] = "default"
    if "max_model_len" not in values:
        sources["max_model_len"] = "default (the model's context length)"
    if "num_gpu_blocks" not in values:
        sources["num_gpu_blocks"] = "default (from the memory model)"
    if "model" not in values:
        raise ReplayError("no model: the benchmark result does not name one; give --model or --server",
                          key="--model")
    where = sources["model"]
    source_name = values["model"]
    try:
        from oracle.catalog import get_model
        spec = get_model(source_name, key="model")
    except OracleError as exc:
        raise ReplayError(f"model {source_name!r} (from {where}) is not in the catalog: {exc.reason}; pass "
                          "--model with a catalog model of the same architecture, or add it to "
                          "oracle/catalog/models.toml") from None
    values["model"] = spec.name
    settings = ServerSettings(model_source=source_name, sources=sources, **values)
    return settings, notes
