"""``model_profile_id`` + ``model_characteristics_db_path`` -> ``[model]`` (or a framework's ``model``).

The original simulated a model from its own profile (the JSON file at
``model_characteristics_db_path``): its parameter count, layers, KV-cache bytes per token per
layer and FLOPs per token. Those numbers are what it meant, so a profile becomes an inline
``[model.architecture]`` whose shape reproduces them, with the catalog model it resembles
named in ``source`` and in a comment:

* ``num_layers``, ``hidden_size``, ``num_heads``, ``intermediate_size``, ``vocab_size``,
  ``max_context`` from the profile (``num_layers`` / ``num_hidden_layers``, ``hidden_size``,
  ``num_attention_heads``, ``intermediate_size``, ``vocab_size``, ``max_sequence_length`` /
  ``max_position_embeddings`` ...), else from the catalog model it resembles;
* the KV cache: ``kv_cache_bytes_per_token_per_layer`` = 2 (K and V) x ``num_kv_heads`` x
  ``head_dim`` x 2 bytes (FP16), so ``num_kv_heads`` = bytes / (4 x head_dim) (exact when that
  is a whole divisor of ``num_heads``; the nearest divisor otherwise, noted);
* parameters and FLOPs per token are derived from the shape here (weights = the shape's
  parameters; FLOPs = 2 x parameters + attention); where they differ from the profile's
  ``parameters`` / ``flops_per_token`` by more than :data:`TOLERANCE`, a note gives both.

The profile file is looked for relative to the config's folder and each folder above it,
then the working directory (the original resolved it against its working directory, usually
the repository root). Without the file, or without the id in it, the catalog model of that
name is used (noted); an id in neither is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

from oracle.errors import ScenarioError
from oracle.legacy.common import APPROXIMATED, NOTE, Context, fmt

TOLERANCE = 0.02

_KEYS = {
    "parameters": ("parameters", "num_parameters", "params", "parameter_count", "total_parameters"),
    "num_layers": ("num_layers", "num_hidden_layers", "n_layers", "layers"),
    "hidden_size": ("hidden_size", "hidden_dim", "d_model"),
    "num_heads": ("num_attention_heads", "num_heads", "n_heads"),
    "num_kv_heads": ("num_kv_heads", "num_key_value_heads", "n_kv_heads"),
    "head_dim": ("head_dim",),
    "intermediate_size": ("intermediate_size", "ffn_dim", "ffn_hidden_size", "mlp_hidden_size"),
    "vocab_size": ("vocab_size",),
    "max_context": ("max_sequence_length", "max_position_embeddings", "max_context", "max_seq_len",
                    "context_length", "max_model_len"),
    "kv_bytes": ("kv_cache_bytes_per_token_per_layer",),
}
_SHAPE = ("num_layers", "hidden_size", "num_heads", "intermediate_size", "vocab_size", "max_context")


def find_db(raw_path: str, source: Path) -> Path | None:
    """The profile file: relative to the config's folder or a folder above it, then the cwd."""
    p = Path(raw_path)
    if p.is_absolute():
        return p if p.is_file() else None
    for base in (source.resolve().parent, *source.resolve().parent.parents, Path.cwd()):
        if (base / p).is_file():
            return base / p
    return None


def read_db(path: Path, key: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ScenarioError(f"cannot read the model profiles at {path}: {exc}", key=key) from None
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        data = data["models"]
    if not isinstance(data, dict):
        raise ScenarioError(f"{path} must map model ids to profiles", key=key)
    return data


def lookup(db: dict, model_id: str) -> tuple[str, dict] | None:
    if isinstance(db.get(model_id), dict):
        return model_id, db[model_id]
    low = model_id.strip().lower()
    for k, v in db.items():
        if isinstance(v, dict) and str(k).strip().lower() == low:
            return str(k), v
    return None


def _value(prof: dict, name: str) -> float | None:
    for k in _KEYS[name]:
        v = prof.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


def _flops(prof: dict, phase: str) -> float | None:
    stats = prof.get(f"{phase}_op_stats")
    for v in ((stats or {}).get("flops_per_token") if isinstance(stats, dict) else None,
              prof.get(f"flops_per_token_{phase}"), prof.get(f"{phase}_flops_per_token")):
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
            return float(v)
    return None


def resembles(model_id: str, shape: dict):
    """The catalog model of this name (alias), else the one closest in layers and width, or None."""
    from oracle.catalog import get_model, load_models
    try:
        return get_model(model_id)
    except ScenarioError:
        pass
    if "num_layers" not in shape or "hidden_size" not in shape:
        return None
    def distance(m) -> tuple[float, str]:
        return (abs(m.num_layers - shape["num_layers"]) / shape["num_layers"]
                + abs(m.hidden_size - shape["hidden_size"]) / shape["hidden_size"], m.name)
    return min(load_models().values(), key=distance)


def _fit_intermediate(arch: dict, params: float) -> tuple[int, int] | None:
    """Change ``intermediate_size`` (in place) so that the shape has ``params`` parameters, when it
    is off by more than 0.1 % and the MLP can absorb it; returns (old, new) or None."""
    from oracle._config import Table
    from oracle.catalog import model_from_table
    m = model_from_table(Table(dict(arch, dtype="fp16"), "model.architecture"))
    diff = params - m.num_params
    if abs(diff) <= 1e-3 * params or m.num_experts:
        return None
    per_unit = m.num_layers * m.mlp_matrices * m.hidden_size   # parameters per unit of intermediate_size
    new = int(round(m.intermediate_size + diff / per_unit))
    if new < 1:
        return None
    old = arch["intermediate_size"]
    arch["intermediate_size"] = new
    return old, new


def _kv_heads(kv_bytes: float, head_dim: int, num_heads: int) -> tuple[int, bool]:
    """num_kv_heads giving ``kv_bytes`` per token per layer (FP16 K and V); exact or nearest divisor."""
    target = kv_bytes / (4 * head_dim)
    divisors = [d for d in range(1, num_heads + 1) if num_heads % d == 0]
    best = min(divisors, key=lambda d: (abs(d - target), d))
    return best, abs(best - target) < 1e-9


def profile_model(model_id: str, prof_key: str, prof: dict, db_path: Path, ctx: Context, toml_key: str,
                  origin: str) -> dict:
    """The TOML model table (``{"dtype": "fp16", "architecture": {...}}``) for one profile."""
    from oracle.catalog import model_from_table
    from oracle._config import Table
    shape = {k: _value(prof, k) for k in _KEYS}
    shape = {k: v for k, v in shape.items() if v is not None}
    base = resembles(model_id, shape)
    arch: dict = {"name": prof_key}
    taken = []
    for k in _SHAPE:
        if k in shape:
            arch[k] = int(shape[k])
        elif base is not None:
            arch[k] = int(getattr(base, k))
            taken.append(k)
        else:
            raise ScenarioError(f"model profile {prof_key!r} in {db_path} gives no {_KEYS[k][0]}, and no catalog "
                                "model resembles it to take it from", key=origin)
    if "head_dim" in shape:
        head_dim = int(shape["head_dim"])
    elif base is not None and "hidden_size" not in shape and "num_heads" not in shape:
        head_dim = base.head_dim          # the whole attention shape is the catalog model's
    else:
        head_dim = arch["hidden_size"] // arch["num_heads"]
    if head_dim * arch["num_heads"] != arch["hidden_size"]:
        arch["head_dim"] = head_dim
    kv_note = None
    if "kv_bytes" in shape:
        n_kv, exact = _kv_heads(shape["kv_bytes"], head_dim, arch["num_heads"])
        kv_note = (f"kv_cache_bytes_per_token_per_layer = {fmt(shape['kv_bytes'])} -> num_kv_heads = {n_kv} "
                   f"(2 x {n_kv} x {head_dim} x 2 bytes = {4 * n_kv * head_dim}"
                   + (", exact)" if exact else f", the nearest whole divisor of num_heads = {arch['num_heads']})"))
        if not exact:
            ctx.note(APPROXIMATED, kv_note, toml_key=f"{toml_key}.architecture", origin=origin)
            kv_note = None
    elif "num_kv_heads" in shape:
        n_kv = int(shape["num_kv_heads"])
    elif base is not None:
        n_kv = base.num_kv_heads
        taken.append("num_kv_heads")
    else:
        n_kv = arch["num_heads"]
    if n_kv != arch["num_heads"]:
        arch["num_kv_heads"] = n_kv
    if base is not None:
        if base.tied_embeddings:
            arch["tied_embeddings"] = True
        if not base.gated_mlp:
            arch["gated_mlp"] = False
        if base.num_experts:
            arch["num_experts"] = base.num_experts
            arch["num_active_experts"] = base.num_active_experts
            arch["expert_intermediate_size"] = base.expert_intermediate_size
    params = shape.get("parameters")
    fitted = None
    if params is not None:
        fitted = _fit_intermediate(arch, params)
    arch["dtype"] = "fp16"
    like = f"; resembles catalog model {base.name!r}" if base is not None else ""
    arch["source"] = f"model profile {prof_key!r} of {db_path.name} (original LLMPerfOracle){like}"
    model = model_from_table(Table(dict(arch), "model.architecture"))
    lines = [f"model_profile_id {model_id!r}: the profile's own numbers from {db_path.name}, as the original "
             f"simulated them{like}" + (f" (taken from it: {', '.join(taken)})" if taken else "")]
    if kv_note:
        lines.append(kv_note)
    if base is not None:
        from oracle.memory import kv_bytes_per_token
        ours, cat = kv_bytes_per_token(model, "fp16"), kv_bytes_per_token(base, "fp16")
        if ours != cat:
            lines.append(f"KV cache {fmt(ours / model.num_layers)} bytes per token per layer here vs "
                         f"{fmt(cat / base.num_layers)} in the catalog's {base.name}")
    for text in lines:
        ctx.note(NOTE, text, toml_key=f"{toml_key}.architecture", origin=origin)
    if fitted is not None:
        ctx.note(APPROXIMATED, f"intermediate_size {fitted[0]} -> {fitted[1]}: the shape's parameters then match the "
                               f"profile's {fmt(params)} (the K/V projections follow the profile's KV size)",
                 toml_key=f"{toml_key}.architecture", origin=origin)
    if params is not None and abs(model.num_params - params) > TOLERANCE * params:
        ctx.note(APPROXIMATED, f"parameters: {fmt(params)} in the profile, {fmt(model.num_params)} from this shape "
                               "(the weights read and stored here)", toml_key=f"{toml_key}.architecture",
                 origin=origin)
    flops = _flops(prof, "decode") or _flops(prof, "prefill")
    if flops is not None:
        derived = 2.0 * model.num_active_params
        if abs(derived - flops) > TOLERANCE * flops:
            ctx.note(APPROXIMATED, f"FLOPs per token: {fmt(flops)} in the profile; here they follow from the shape "
                                   f"(2 x parameters = {fmt(derived)}, plus attention over the context)",
                     toml_key=f"{toml_key}.architecture", origin=origin)
    return {"dtype": "fp16", "architecture": arch}
