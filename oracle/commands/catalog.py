"""``oracle catalog gpus|models|links``: list the built-in GPUs, models and KV-transfer links with their sources."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer

from oracle.commands import typer_factory, user_errors

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    sub = typer_factory("List the built-in GPUs and models (datasheet / config.json facts and their sources).")
    sub.command("gpus")(gpus)
    sub.command("models")(models)
    sub.command("links")(links)
    app.add_typer(sub, name="catalog")


def gpu_records() -> dict[str, dict]:
    """``{name: GpuSpec fields}`` for every catalog GPU (JSON-ready)."""
    from oracle.catalog import load_gpus   # lazy: see oracle.commands
    return {name: {k: v for k, v in dataclasses.asdict(g).items() if k != "name"} for name, g in load_gpus().items()}


def model_records() -> dict[str, dict]:
    """``{name: ModelSpec fields + aliases, num_params, num_active_params, kv_bytes_per_token,
    lora_r16_adapter_bytes}`` (a rank-16 bf16 LoRA adapter over the layers ``oracle.lora`` adapts)."""
    from oracle.catalog import aliases_of, load_models   # lazy: see oracle.commands
    from oracle.lora import adapter_bytes
    from oracle.memory import kv_bytes_per_token, resolve_kv_dtype
    out = {}
    for name, m in load_models().items():
        rec = {k: v for k, v in dataclasses.asdict(m).items() if k != "name"}
        rec.update(num_params=m.num_params, num_active_params=m.num_active_params,
                   kv_bytes_per_token=kv_bytes_per_token(m, resolve_kv_dtype("auto", "auto", m)),
                   lora_r16_adapter_bytes=adapter_bytes(m, 16),
                   architecture=m.describe(), aliases=list(aliases_of(name)))
        out[name] = rec
    return out


def gpus(as_json: JsonOpt = False) -> None:
    """List the catalog GPUs: memory, bandwidth, dense peaks, link and fitted efficiencies.

    Examples:
      oracle catalog gpus
      oracle catalog gpus --json
    """
    with user_errors():
        records = gpu_records()
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    from rich.table import Table   # lazy: rich (~0.05 s)
    table = Table(title="GPUs (dense peaks; link bandwidth per direction)")
    for col, justify in (("name", "left"), ("memory GiB", "right"), ("mem GB/s", "right"),
                         ("BF16 TF/s", "right"), ("FP8 TF/s", "right"), ("FP4 TF/s", "right"), ("link GB/s", "right"),
                         ("eff compute", "right"), ("eff memory", "right"), ("note", "right")):
        table.add_column(col, justify=justify, no_wrap=col == "name")
    notes: list[str] = []
    for name, g in records.items():
        if g["calibration_note"] not in notes:
            notes.append(g["calibration_note"])
        table.add_row(name, f"{g['memory_gib']:g}", f"{g['mem_bw_gbps']:,.0f}", f"{g['peak_tflops_bf16']:,.1f}",
                      f"{g['peak_tflops_fp8']:,.1f}" if g["peak_tflops_fp8"] else "-",
                      f"{g['peak_tflops_fp4']:,.1f}" if g["peak_tflops_fp4"] else "-",
                      f"{g['link_bw_gbps']:g}", f"{g['eff_compute']:.3f}", f"{g['eff_memory']:.3f}",
                      f"[{notes.index(g['calibration_note']) + 1}]")
    console = _console()
    console.print(table)
    for i, note in enumerate(notes, 1):
        console.print(f"[{i}] {note}", markup=False)


def models(as_json: JsonOpt = False) -> None:
    """List the catalog models: shape, parameter counts, KV bytes per token and aliases.

    Examples:
      oracle catalog models
      oracle catalog models --json
    """
    with user_errors():
        records = model_records()
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    from rich.table import Table   # lazy: rich (~0.05 s)
    table = Table(title="Models (from Hugging Face config.json)")
    for col, justify in (("name", "left"), ("params", "right"), ("active", "right"), ("layers", "right"),
                         ("hidden", "right"), ("heads/kv", "right"), ("MLP", "right"), ("experts", "right"),
                         ("vocab", "right"), ("context", "right"), ("KV KiB/token", "right"),
                         ("LoRA r16 MB", "right"), ("architecture", "left"), ("dtype", "left")):
        table.add_column(col, justify=justify, no_wrap=col == "name")
    for name, m in records.items():
        mlp = m["expert_intermediate_size"] if m["num_experts"] else m["intermediate_size"]
        table.add_row(name, f"{m['num_params'] / 1e9:.2f} B", f"{m['num_active_params'] / 1e9:.2f} B",
                      str(m["num_layers"]), str(m["hidden_size"]), f"{m['num_heads']}/{m['num_kv_heads']}",
                      str(mlp), f"{m['num_active_experts']}/{m['num_experts']}" if m["num_experts"] else "-",
                      f"{m['vocab_size']:,}", f"{m['max_context']:,}", f"{m['kv_bytes_per_token'] / 1024:g}",
                      f"{m['lora_r16_adapter_bytes'] / 1e6:,.0f}", m["architecture"], m["dtype"])
    console = _console(min_width=200)
    console.print(table)
    console.print("Aliases (case-insensitive):")
    for name, m in records.items():
        if m["aliases"]:
            console.print(f"  {name}: {', '.join(m['aliases'])}", markup=False, overflow="ignore", crop=False)


def links(as_json: JsonOpt = False) -> None:
    """List the KV-transfer links of prefill/decode disaggregation (``kv_transfer = { link }``).

    Examples:
      oracle catalog links
      oracle catalog links --json
    """
    from oracle.catalog import load_links   # lazy: see oracle.commands
    with user_errors():
        records = {name: {k: v for k, v in dataclasses.asdict(x).items() if k != "name"}
                   for name, x in load_links().items()}
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    from rich.table import Table   # lazy: rich (~0.05 s)
    table = Table(title="KV-transfer links (bandwidth per GPU and direction)")
    for col in ("name", "GB/s", "latency us", "overhead us"):
        table.add_column(col, justify="left" if col == "name" else "right", no_wrap=col == "name")
    for name, x in records.items():
        table.add_row(name, f"{x['bandwidth_gbps']:g}", f"{x['latency_s'] * 1e6:g}", f"{x['overhead_s'] * 1e6:g}")
    console = _console()
    console.print(table)
    for name, x in records.items():
        console.print(f"{name}: {x['source']}", markup=False)


def _console(min_width: int = 140):
    """A rich console; when not writing to a terminal, wide enough not to wrap the tables."""
    from rich.console import Console   # lazy: rich (~0.05 s)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, min_width)
    return console
