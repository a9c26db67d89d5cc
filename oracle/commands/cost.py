"""``oracle cost``: the predicted time of one step and its per-op breakdown."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from oracle.commands import user_errors
from oracle.errors import CapacityError, ScenarioError

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Catalog model name or alias (see `oracle catalog "
                                                             "models`), e.g. llama-3.1-8b or Llama2-7B.")]
GpuOpt = Annotated[str, typer.Option("--gpu", "-g", help="Catalog GPU name (see `oracle catalog gpus`), e.g. "
                                                         "h100-sxm.")]


def register(app: typer.Typer) -> None:
    app.command("cost")(cost)


def cost(
    model: ModelOpt,
    gpu: GpuOpt,
    tp: Annotated[int, typer.Option("--tp", min=1, help="Tensor-parallel size (GPUs sharing each layer).")] = 1,
    pp: Annotated[int, typer.Option("--pp", min=1, help="Pipeline-parallel size (stages run in sequence).")] = 1,
    dtype: Annotated[str, typer.Option("--dtype", help="Weight dtype: auto, bf16, fp16, fp8 or fp32.")] = "bf16",
    kv_dtype: Annotated[Optional[str], typer.Option(
        "--kv-dtype", help="KV-cache dtype: auto, bf16, fp16, fp8 or fp32 (default: the activation dtype).")] = None,
    prefill_tokens: Annotated[int, typer.Option(
        "--prefill-tokens", min=0, help="Tokens of one prefill chunk in the step (0: no prefill).")] = 0,
    prefill_context: Annotated[int, typer.Option(
        "--prefill-context", min=0, help="Tokens of that prompt already computed or cached before the chunk.")] = 0,
    decode_batch: Annotated[int, typer.Option(
        "--decode-batch", min=0, help="Decode sequences in the step (one new token each).")] = 0,
    decode_context: Annotated[int, typer.Option(
        "--decode-context", min=0, help="Tokens already in each decode sequence's KV cache (attention reads "
                                        "this many plus the new one).")] = 1024,
    scheduler_overhead_s: Annotated[Optional[float], typer.Option(
        "--scheduler-overhead-s", min=0.0, help="Per-step CPU time in seconds (default: the framework's "
                                                "cpu_step_s, else the GPU's step_overhead_s).")] = None,
    framework: Annotated[str, typer.Option(
        "--framework", "-f", help="Serving framework whose terms join the roofline (CUDA-graph padding, custom "
                                  "all-reduce, CPU time overlapped by async scheduling, API-server time per "
                                  "request): vllm, or none for the bare roofline.")] = "vllm",
    max_num_seqs: Annotated[Optional[int], typer.Option(
        "--max-num-seqs", min=1, help="The engine's max_num_seqs: caps CUDA-graph capture at twice it, as vLLM "
                                      "does (default: no cap, 512 tokens).")] = None,
    lora_adapters: Annotated[int, typer.Option(
        "--lora-adapters", min=0, help="Distinct LoRA adapters among the step's tokens (every token names one; "
                                       "0: no LoRA): adds vLLM's punica kernels.")] = 0,
    max_lora_rank: Annotated[int, typer.Option(
        "--max-lora-rank", min=1, help="vLLM's max_lora_rank: the rank the punica kernels run at.")] = 16,
    lora_rank: Annotated[Optional[int], typer.Option(
        "--lora-rank", min=1, help="The adapters' own rank, which sizes a load (default: --max-lora-rank).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")] = False,
) -> None:
    """Predict the duration of one forward pass (one engine step) and break it down per op.

    Times are per GPU of the tensor-parallel group, summed over layers and pipeline stages;
    FLOPs and DRAM bytes are per GPU too. Each op's row names its factors and where they come
    from (datasheet, op-level fit, end-to-end fit); the framework's per-request API-server time
    (added to TTFT and E2E, not to the step) is printed below.
    With --json: {"total_ms", "flops", "bytes", "link_bytes", "ops": {"qkv_proj_ms", ...},
    "sources": {"qkv_proj": ...}, "request": {"api_server_ms", "source"}, ...}.

    Examples:
      oracle cost --model llama-2-7b --gpu a100-80g --decode-batch 1 --json
      oracle cost -m llama-3.1-70b -g h100-sxm --tp 4 --prefill-tokens 4096
      oracle cost -m mixtral-8x7b -g h100-sxm --tp 2 --prefill-tokens 512 --decode-batch 64
      oracle cost -m llama-2-70b -g h100-sxm --tp 4 --decode-batch 37 --decode-context 700 --framework none
      oracle cost -m llama-3.1-8b -g h100-sxm --decode-batch 64 --lora-adapters 4 --max-lora-rank 16
    """
    with user_errors():
        from oracle.catalog import get_framework, get_gpu, get_model   # lazy: numba (~0.4 s; see oracle.commands)
        from oracle.cost import step_cost

        model_spec = get_model(model, key="--model")
        gpu_spec = get_gpu(gpu, key="--gpu")
        framework_spec = get_framework(framework, key="--framework")
        if prefill_tokens == 0 and decode_batch == 0:
            raise ScenarioError("nothing to price: give --prefill-tokens and/or --decode-batch")
        if decode_batch and decode_context < 1:
            raise ScenarioError("must be >= 1 when --decode-batch > 0", key="--decode-context")
        try:
            result = step_cost(model_spec, gpu_spec, tp=tp, pp=pp, dtype=dtype, kv_dtype=kv_dtype,
                               prefill_tokens=prefill_tokens, prefill_context=prefill_context,
                               decode_batch=decode_batch, decode_context=decode_context,
                               scheduler_overhead_s=scheduler_overhead_s, framework=framework_spec,
                               max_num_seqs=max_num_seqs)
        except ScenarioError as exc:
            raise ScenarioError(exc.reason, key=f"--{exc.key.replace('_', '-')}" if exc.key else None) from None
        if lora_adapters:
            _add_lora(result, model_spec, gpu_spec, tp=tp, pp=pp, adapters=lora_adapters,
                      max_lora_rank=max_lora_rank, rank=lora_rank or max_lora_rank)
        result["memory"] = memory_summary(model_spec, gpu_spec, tp=tp, pp=pp, dtype=dtype, kv_dtype=kv_dtype)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print_table(result)


def _add_lora(result: dict, model, gpu, *, tp: int, pp: int, adapters: int, max_lora_rank: int, rank: int) -> None:
    """The LoRA terms of ``--lora-adapters`` (``oracle.lora``), checked as a scenario's are."""
    from oracle.lora import MAX_LORA_RANKS, add_lora_to_step_cost, build_lora_params
    if max_lora_rank not in MAX_LORA_RANKS:
        raise ScenarioError(f"must be one of {', '.join(map(str, MAX_LORA_RANKS))} (vLLM's LoRAConfig), "
                            f"got {max_lora_rank}", key="--max-lora-rank")
    if rank > max_lora_rank:
        raise ScenarioError(f"rank {rank} is above --max-lora-rank {max_lora_rank} (vLLM refuses to load it)",
                            key="--lora-rank")
    if adapters > result["aggregates"]["num_tokens"]:
        raise ScenarioError(f"{adapters} adapters need at least as many tokens in the step, got "
                            f"{result['aggregates']['num_tokens']}", key="--lora-adapters")
    params = build_lora_params(model, gpu, tp=tp, pp=pp, max_lora_rank=max_lora_rank, rank=rank)
    add_lora_to_step_cost(result, params, adapters, max_lora_rank=max_lora_rank, rank=rank)


def memory_summary(model, gpu, *, tp: int, pp: int, dtype: str, kv_dtype: str | None) -> dict:
    """Per-GPU weights and the KV pool at a framework's defaults (vLLM's: block 16, utilization
    0.9, 8192 tokens, 256 sequences; ``oracle.scenario.FRAMEWORK_DEFAULTS``)."""
    # lazy: numpy (see oracle.commands)
    from oracle.memory import (compute_num_gpu_blocks, kv_bytes_per_token_per_gpu, resolve_kv_dtype,
                               weight_bytes_per_gpu)
    from oracle.scenario import FRAMEWORK_DEFAULTS as d
    out = {"weight_bytes_per_gpu": weight_bytes_per_gpu(model, dtype, tp=tp, pp=pp),
           "kv_bytes_per_token_per_gpu": kv_bytes_per_token_per_gpu(model, resolve_kv_dtype(kv_dtype, dtype, model),
                                                                    tp=tp, pp=pp),
           "block_size": d.block_size, "gpu_memory_utilization": d.gpu_memory_utilization}
    try:
        out["num_gpu_blocks"] = compute_num_gpu_blocks(
            model, gpu, tp=tp, pp=pp, block_size=d.block_size, gpu_memory_utilization=d.gpu_memory_utilization,
            dtype=dtype, kv_dtype=kv_dtype, max_num_batched_tokens=d.max_num_batched_tokens,
            max_num_seqs=d.max_num_seqs)
    except CapacityError as exc:
        out["num_gpu_blocks"] = None
        out["error"] = exc.reason
    return out


def _print_table(result: dict) -> None:
    from rich.console import Console   # lazy: rich (~0.05 s)
    from rich.markup import escape
    from rich.table import Table

    cfg, agg = result["config"], result["aggregates"]
    total = result["total_ms"]
    padded = (f" (GEMMs on {cfg['padded_tokens']}: CUDA-graph size)" if cfg["padded_tokens"] != agg["num_tokens"]
              else "")
    title = (f"{cfg['model']} on {cfg['gpu']} (tp={cfg['tp']}, pp={cfg['pp']}, {cfg['dtype']} weights, "
             f"{cfg['kv_dtype']} KV, framework {cfg['framework']}): {agg['num_tokens']} tokens{padded}, "
             f"{agg['num_decode']} decodes")
    table = Table(title=title)
    table.add_column("op", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("share", justify="right", no_wrap=True)
    table.add_column("formula factors and source", overflow="fold")
    for key, ms in result["ops"].items():
        op = key.removesuffix("_ms")
        table.add_row(op, f"{ms:,.4f}", f"{100 * ms / total:.1f} %" if total else "-", escape(result["sources"].get(op, "")))
    table.add_row("total", f"{total:,.4f}", "100.0 %", "", style="bold")
    console = Console()
    console.print(table)
    req = result.get("request", {})
    if req.get("api_server_ms"):
        console.print(f"Per request, outside the steps: {req['api_server_ms']:.2f} ms, {req['source']}", markup=False)
    lora = result.get("lora")
    if lora:
        console.print(f"LoRA: {lora['num_lora_tokens']} tokens of {lora['num_adapters']} adapter(s) at rank "
                      f"{lora['max_lora_rank']}: {lora['punica_s'] * 1e3:.4f} ms (in the total). Loading one adapter "
                      f"of rank {lora['rank']} before the step that needs it: {lora['adapter_load_host_s'] * 1e3:.3f} "
                      f"ms from host memory, + {lora['adapter_load_disk_s'] * 1e3:.3f} ms from disk if not cached",
                      markup=False)
    for tag, text in result.get("notes", {}).items():
        console.print(f"[{tag}] {text}", markup=False, style="dim")
    intensity = result["flops"] / result["bytes"] if result["bytes"] else 0.0
    console.print(f"{result['flops'] / 1e9:,.2f} GFLOP, {result['bytes'] / 1e9:,.3f} GB of DRAM traffic "
                  f"({intensity:,.1f} FLOP/byte), {result['link_bytes'] / 1e6:,.2f} MB over the GPU link, "
                  "per GPU")
    mem = result.get("memory")
    if mem:
        if mem["num_gpu_blocks"] is None:
            console.print(f"Memory: {mem['error']}", markup=False)
        else:
            console.print(f"Memory: {mem['weight_bytes_per_gpu'] / 2**30:,.1f} GiB of weights per GPU; KV cache of "
                          f"{mem['num_gpu_blocks']:,} blocks x {mem['block_size']} = "
                          f"{mem['block_size'] * mem['num_gpu_blocks']:,} tokens per replica "
                          f"at gpu_memory_utilization {mem['gpu_memory_utilization']:g}", markup=False)
