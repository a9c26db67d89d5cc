"""``oracle replay PATH``: simulate a real benchmark as it ran; predicted vs measured per stage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from oracle.commands import user_errors
from oracle.commands._options import JsonOpt, QuietOpt


def register(app: typer.Typer) -> None:
    from oracle.commands.calibrate_e2e import calibrate_e2e
    app.command("replay")(replay)
    app.command("calibrate-e2e")(calibrate_e2e)


def replay(
    path: Annotated[Path, typer.Argument(help="An inference-perf result folder (exp-config.yaml + results/ with "
                                              "config.yaml and stage_K_lifecycle_metrics.json) or a vllm bench "
                                              "serve result JSON.", show_default=False)],
    server: Annotated[Optional[Path], typer.Option(
        "--server", help="The server's settings as an exp-config.yaml (model, tensor_parallelism, max_model_len, "
                         "max_num_batched_tokens, max_num_seqs, ...); default: PATH/exp-config.yaml if "
                         "present.")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", "-m", help="Catalog model or alias (default: the model the result names).")] = None,
    tp: Annotated[Optional[int], typer.Option("--tp", min=1, help="Tensor-parallel size of the server.")] = None,
    max_num_seqs: Annotated[Optional[int], typer.Option("--max-num-seqs", min=1, help="vLLM max_num_seqs.")] = None,
    max_num_batched_tokens: Annotated[Optional[int], typer.Option(
        "--max-num-batched-tokens", min=1, help="vLLM max_num_batched_tokens.")] = None,
    max_model_len: Annotated[Optional[int], typer.Option("--max-model-len", min=1,
                                                         help="vLLM max_model_len.")] = None,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option(
        "--gpu-memory-utilization", min=0.0, max=1.0, help="vLLM gpu_memory_utilization.")] = None,
    num_gpu_blocks: Annotated[Optional[int], typer.Option(
        "--num-gpu-blocks", min=2, help="Pin the KV cache to this many blocks (as vLLM logs it); default: the "
                                        "memory model.")] = None,
    gpu: Annotated[str, typer.Option("--gpu", "-g", help="Catalog GPU the benchmark ran on.")] = "h100-sxm",
    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="Random seed of the rebuilt workload (prompt order and lengths, arrival gaps); default "
                       "0.")] = None,
    seeds: Annotated[int, typer.Option(
        "--seeds", metavar="N", help="Also replay with the N - 1 seeds after --seed (other arrival and "
                                     "prompt-order draws: the real load generator's was one draw too) and show "
                                     "each error's range over the N draws.")] = 1,
    timeout_s: Annotated[Optional[float], typer.Option(
        "--timeout-s", min=0.0, help="Client timeout in seconds (default: the load generator's: inference-perf's "
                                     "request_timeout or aiohttp's 300 s; vllm bench's 6 h).")] = None,
    json_out: JsonOpt = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write a predicted-vs-measured PNG here.")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Save replay.json, the scenario (scenario.toml + workload.parquet: `oracle simulate "
                            "DIR/scenario.toml` reruns it) and the simulation's results here.")] = None,
    quiet: QuietOpt = False,
) -> None:
    """Replay a real benchmark with the same server settings and load generator semantics,
    and print per stage predicted vs measured TTFT / TPOT / ITL / E2E (mean, p50, p90, p99)
    and throughput with signed errors ((predicted - measured) / measured).

    inference-perf reports TPOT and ITL per streamed message (about two per token on vLLM);
    they are converted per token with the factor shown. Stages where requests hit the client
    timeout are marked overloaded (simulated timeouts abort them, as the client did) and left
    out of the medians. Nothing is written unless --out or --plot is given.

    Examples:
      oracle replay ../shared/data/vllm_runs/h100-inference-perf/20260217-155451-llama-2-7b-tp1-codegen
      oracle replay RUN_DIR --json --plot replay.png --out runs/replay-codegen
      oracle replay RUN_DIR --seeds 5        # each error's range over 5 arrival draws
      oracle replay bench.json --tp 2 --max-num-seqs 256 --gpu h100-sxm
    """
    with user_errors():
        from oracle.errors import ScenarioError
        from oracle.replay import replay as run_replay, write_replay
        from oracle.metrics.writers import check_out_dir, dumps
        if timeout_s is not None and timeout_s <= 0:
            raise ScenarioError(f"--timeout-s must be > 0, got {timeout_s:g}")
        if out is not None:
            check_out_dir(out)
        if plot is not None:
            check_out_dir(plot.parent if str(plot.parent) else Path("."))
        flags = {"model": model, "tp": tp, "max_num_seqs": max_num_seqs,
                 "max_num_batched_tokens": max_num_batched_tokens, "max_model_len": max_model_len,
                 "gpu_memory_utilization": gpu_memory_utilization, "num_gpu_blocks": num_gpu_blocks}
        kw = dict(server_file=server, flags=flags, gpu=gpu, seed=seed if seed is not None else 0,
                  timeout_s=timeout_s, seeds=seeds)
        if not (quiet or json_out) and sys.stderr.isatty():
            from rich.console import Console
            with Console(stderr=True).status("reading the benchmark") as status:
                res = run_replay(path, progress=lambda m: status.update(m), **kw)
        else:
            res = run_replay(path, **kw)
        if out is not None:
            write_replay(res, out)
        if plot is not None:
            from oracle.replay.plot import write_plot
            write_plot(res.comparison, plot)
    if json_out:
        typer.echo(dumps(res.comparison), nl=False)
    elif not quiet:
        print_replay(res.comparison, out=out, plot=plot)


def _ms(v) -> str:
    if v is None:
        return "-"
    return f"{v:,.3f}" if abs(v) < 1 else f"{v:,.1f}" if abs(v) < 1000 else f"{v:,.0f}"


def _err(v) -> str:
    return "-" if v is None else f"{v:+.1f} %"


def _abs_pct(v) -> str:
    return "-" if v is None else f"{v:.1f} %"


def _range(row: dict, seeds: list | None) -> tuple[str, ...]:
    """The error-range cell of a row (none without --seeds)."""
    if not seeds:
        return ()
    r = row.get("error_pct_range")
    return ("-" if r is None else f"{r[0]:+.1f} to {r[1]:+.1f} %",)


def print_replay(c: dict, *, out: Path | None = None, plot: Path | None = None) -> None:
    """The terminal report: settings, notes, one table per stage, the medians."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=160)
    seeds = c.get("seeds")   # --seeds N: the range of each error over the N draws
    s = c["server"]
    console.print(f"[bold]oracle replay[/] of {escape(c['source'])} ({c['kind']})")
    blocks = s["num_gpu_blocks"]
    console.print(f"server: {s['model']} ({escape(s['model_source'])}), tp {s['tp']}, max_num_seqs "
                  f"{s['max_num_seqs']}, max_num_batched_tokens {s['max_num_batched_tokens']}, max_model_len "
                  f"{s['max_model_len'] if s['max_model_len'] is not None else 'model default'}, "
                  f"{f'{blocks:,}' if blocks else 'unlimited'} KV blocks; GPU {c['gpu']}; seed {c['seed']}")
    defaults = [k for k, v in s["sources"].items() if v.startswith("default")]
    if defaults:
        console.print(f"  defaults used for: {', '.join(defaults)}", style="dim")
    for note in c["notes"]:
        console.print(f"  - {escape(note)}", style="dim")
    for st in c["stages"]:
        conv = st["tpot_conversion"]
        title = (f"{st['label']}: {st['num_requests']:,} requests, measured {st['measured']['successes']:,} ok / "
                 f"{st['measured']['failures']:,} failed, predicted {st['predicted']['timeouts']:,} over the timeout"
                 + (f" and {st['predicted']['rejected']:,} rejected" if st["predicted"].get("rejected") else ""))
        table = Table(title=escape(title) + (" [bold red]OVERLOADED[/]" if st["overloaded"] else ""))
        table.add_column("metric")
        table.add_column("recorded", justify="right")
        table.add_column("measured", justify="right")
        table.add_column("predicted", justify="right")
        table.add_column("error", justify="right")
        if seeds:
            table.add_column(f"error, {len(seeds)} seeds", justify="right")
        for key, rows in st["metrics"].items():
            name = key.removesuffix("_ms").upper()
            for stat, row in rows.items():
                label = f"{name} {stat} (ms)"
                if row.get("token_quantile") is not None:
                    label += f" ~ token p{100 * row['token_quantile']:.1f}"
                table.add_row(label, _ms(row["recorded"]), _ms(row["measured"]), _ms(row["predicted"]),
                              _err(row["error_pct"]), *_range(row, seeds))
        thr = st["throughput"]
        table.add_row("requests/s", _ms(thr["requests_per_s"]["measured"]), _ms(thr["requests_per_s"]["measured"]),
                      _ms(thr["requests_per_s"]["predicted"]), _err(thr["requests_per_s"]["error_pct"]),
                      *_range(thr["requests_per_s"], seeds))
        table.add_row("output tokens/s", _ms(thr["output_tokens_per_s"].get("recorded")),
                      _ms(thr["output_tokens_per_s"]["measured"]), _ms(thr["output_tokens_per_s"]["predicted"]),
                      _err(thr["output_tokens_per_s"]["error_pct"]), *_range(thr["output_tokens_per_s"], seeds))
        console.print(table)
        if conv.get("factor") and conv.get("unit_recorded") == "message":
            console.print(f"  TPOT and ITL mean recorded per SSE message; measured = recorded x "
                          f"{conv['message_gaps_per_request']} message gaps / ({conv['output_tokens']} - 1) tokens "
                          f"= x {conv['factor']:.4f} (2n+1 = {conv['expected_gaps_2n_plus_1']}); ITL percentiles "
                          "compared at the per-token quantile shown; output tokens/s measured = requests/s x "
                          "output_len (recorded: re-tokenized text)", style="dim")
        hit = st["predicted"]["prefix_cache_token_hit_rate"]
        if hit is not None:
            console.print(f"  predicted prefix-cache token hit rate {100 * hit:.1f} %", style="dim")
        if st["overload_note"]:
            console.print(f"  {escape(st['overload_note'])}", style="red")
        if seeds and 0 < sum(st["overloaded_by_seed"]) < len(seeds):
            console.print(f"  overloaded in {sum(st['overloaded_by_seed'])} of the {len(seeds)} draws", style="red")
    med = c["medians"]
    parts = [f"{k.replace('_', ' ')} {v['median_error_pct']:+.1f} %" for k, v in med.items()
             if v["median_error_pct"] is not None]
    n = max((v["stages"] for v in med.values()), default=0)
    console.print(f"median signed error over {n} non-overloaded stage(s): " + (", ".join(parts) or "-"))
    for d in c.get("medians_by_seed") or []:
        keys = ("ttft_mean", "ttft_p90", "tpot_mean", "e2e_mean")
        console.print(f"  seed {d['seed']}: median |error| " + ", ".join(
            f"{k.replace('_', ' ')} {_abs_pct(d['medians'][k]['median_abs_error_pct'])}" for k in keys), style="dim")
    where = ([f"results in {out}"] if out is not None else []) + ([f"plot in {plot}"] if plot is not None else [])
    console.print(f"{c['simulation']['requests']:,} requests simulated in {c['simulation']['wall_time_s']:.1f} s"
                  + (f"; {'; '.join(where)}" if where else ""))
