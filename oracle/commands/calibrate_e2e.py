"""``oracle calibrate-e2e RUN...``: fit a GPU's and a framework's free factors on real serving runs.

Registered by :mod:`oracle.commands.replay` (it replays the runs); the library is
:mod:`oracle.replay.calibrate`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from oracle.commands import user_errors
from oracle.commands._options import JsonOpt, QuietOpt


def calibrate_e2e(
    runs: Annotated[list[Path], typer.Argument(help="Benchmark results to fit on (inference-perf result folders "
                                                    "or vllm bench serve JSONs); runs with failed requests are "
                                                    "replayed for the report but not fitted on.",
                                               show_default=False)],
    gpu: Annotated[str, typer.Option("--gpu", "-g", help="Catalog GPU the runs were measured on.")] = "h100-sxm",
    framework: Annotated[str, typer.Option("--framework", help="Catalog framework of the server.")] = "vllm",
    lomo: Annotated[bool, typer.Option("--lomo/--no-lomo", help="Also fit once per model on the other models' "
                                                                "runs and report the held-out errors.")] = True,
    max_evals: Annotated[int, typer.Option("--max-evals", min=4, help="Replays of all runs per Nelder-Mead fit, "
                                                                      "at most.")] = 60,
    fit_attention: Annotated[bool, typer.Option(
        "--fit-attention", help="Fit the GPU's eff_attn_memory too (by default it keeps the catalog's measured "
                                "value: runs with little KV traffic cannot pin it).")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the rebuilt workloads.")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the fitted factors with their "
                                                                    "provenance and errors as TOML here.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json-out", help="Write the whole result (per-stage "
                                                                        "errors too) as JSON here.")] = None,
    update_catalog: Annotated[bool, typer.Option("--update-catalog", help="Write the fitted factors into "
                                                                          "oracle/catalog/gpus.toml and "
                                                                          "frameworks.toml.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Fit the cost model's end-to-end factors (per-layer fixed time and custom all-reduce
    latency of the GPU, API-server time of the framework; with --fit-attention the
    decode-attention bandwidth too) on real runs by replaying them, and report per-stage
    errors in sample and leave-one-model-out.

    Stage 1 fits the GPU factors on per-stage mean TPOT and E2E, stage 2 the API-server time
    on mean and p90 TTFT; see oracle/replay/calibrate.py. Takes minutes: every evaluation
    replays every run.

    Examples:
      oracle calibrate-e2e ../shared/data/vllm_runs/h100-inference-perf/* --out h100.toml
      oracle calibrate-e2e RUN1 RUN2 RUN3 --no-lomo --update-catalog
    """
    with user_errors():
        from oracle.metrics.writers import atomic_write, check_out_dir, dumps
        from oracle.replay.calibrate import calibrate, to_toml
        from oracle.replay.calibrate import update_catalog as write_catalog
        for p in (out, json_out):
            if p is not None:
                check_out_dir(p.parent if str(p.parent) else Path("."))
        say = (lambda m: None) if (quiet or as_json) else (lambda m: typer.echo(m, err=True))
        command = "oracle calibrate-e2e " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
        result = calibrate(list(runs), gpu=gpu, framework=framework, seed=seed, lomo=lomo, max_evals=max_evals,
                           fit_attention=fit_attention, command=command, progress=say)
        if out is not None:
            atomic_write(out, to_toml(result))
        if json_out is not None:
            atomic_write(json_out, dumps(result.to_dict()))
        written = write_catalog(result) if update_catalog else []
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=1, default=str))
    elif not quiet:
        _print(result, written)


def _print(result, written: list[Path]) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console()
    console.print(f"fitted on {len(result.provenance['fitted_on'])} runs ({result.gpu}, {result.framework}): "
                  + ", ".join(f"{k} = {v:.4g}" for k, v in result.factors.items()))
    table = Table(title="median |error| per stage, % (signed median in brackets)")
    table.add_column("fit -> predicted")
    keys = ("ttft_mean", "ttft_p90", "tpot_mean", "e2e_mean", "requests_per_s")
    for k in keys:
        table.add_column(k, justify="right")
    groups = [("in sample", result.in_sample["medians"])]
    groups += [(f"others -> {m}", v["medians"]) for m, v in result.lomo.items()]
    for label, med in groups:
        table.add_row(label, *[_cell(med[k]) for k in keys])
    console.print(table)
    for p in written:
        console.print(f"updated {p}")


def _cell(m: dict) -> str:
    if m["median_abs_error_pct"] is None:
        return "-"
    return f"{m['median_abs_error_pct']:.1f} ({m['median_error_pct']:+.1f})"
