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
    dtype: Annotated[str, typer.Option("--dtype", help="Weight dtype: auto (the checkpoint's), bf16, fp16, fp8, fp32, "
                                                       "mxfp4 or nvfp4 (FP4: MLP/expert weights).")] = "bf16",
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
    dp: Annotated[int, typer.Option("--dp", min=1, help="Attention data-parallel ranks sharing the MoE layers "
                                                        "(vLLM --data-parallel-size; needs --expert-parallel).")] = 1,
    expert_parallel: Annotated[bool, typer.Option(
        "--expert-parallel", help="vLLM --enable-expert-parallel: EP size tp x dp, whole experts per GPU, "
                                  "all-to-all dispatch and combine.")] = False,
    expert_imbalance: Annotated[float, typer.Option(
        "--expert-imbalance", min=1.0, help="The busiest expert-parallel rank's routed tokens over the mean.")] = 1.0,
    spec_method: Annotated[Optional[str], typer.Option(
        "--spec-method", help="Speculative decoding: draft_model, eagle, eagle3, mtp or ngram; prices the "
                              "decode batch verifying --num-speculative-tokens drafts each, plus the drafter.")] = None,
    num_speculative_tokens: Annotated[int, typer.Option(
        "--num-speculative-tokens", "-k", min=0, help="Draft tokens per sequence and step (with --spec-method).")] = 0,
    draft_model: Annotated[Optional[str], typer.Option(
        "--draft-model", help="Catalog model of the drafter (--spec-method draft_model).")] = None,
    acceptance_rate: Annotated[Optional[float], typer.Option(
        "--acceptance-rate", min=0.0, max=1.0, help="Geometric per-position acceptance rate (default: the "
                                                    "method's published one, if any).")] = None,
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
      oracle cost -m deepseek-v3 -g h200 --dtype auto --dp 8 --expert-parallel --decode-batch 64
      oracle cost -m gpt-oss-120b -g b200 --dtype auto --decode-batch 64 --decode-context 8192
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
                               max_num_seqs=max_num_seqs, dp=dp, expert_parallel=expert_parallel,
                               expert_imbalance=expert_imbalance)
        except ScenarioError as exc:
            raise ScenarioError(exc.reason, key=f"--{exc.key.replace('_', '-')}" if exc.key else None) from None
        if lora_adapters:
            _add_lora(result, model_spec, gpu_spec, tp=tp, pp=pp, adapters=lora_adapters,
                      max_lora_rank=max_lora_rank, rank=lora_rank or max_lora_rank)
        result["memory"] = memory_summary(model_spec, gpu_spec, tp=tp, pp=pp, dtype=dtype, kv_dtype=kv_dtype,
                                          ep=result["config"]["ep"])
        if spec_method is not None or num_speculative_tokens:
            result["speculative"] = _spec_cost(model_spec, gpu_spec, framework_spec, spec_method, num_speculative_tokens,
                                               draft_model, acceptance_rate, decode_batch, decode_context,
                                               tp=tp, pp=pp, dtype=dtype, kv_dtype=kv_dtype, max_num_seqs=max_num_seqs,
                                               scheduler_overhead_s=scheduler_overhead_s)
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


def _spec_cost(model, gpu, framework, method, k, draft_model, acceptance_rate, decode_batch, decode_context,
               **kw) -> dict:
    """The speculative-decoding terms (``oracle.specdec.spec_step_cost``), with the scenario's checks."""
    from oracle.catalog import get_model
    from oracle.specdec import DEFAULT_ACCEPTANCE, METHODS, spec_step_cost
    if method is None:
        raise ScenarioError("speculative decoding needs a method: --spec-method " + "|".join(METHODS),
                            key="--num-speculative-tokens")
    if method not in METHODS:
        raise ScenarioError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}", key="--spec-method")
    if k < 1:
        raise ScenarioError("must be >= 1 with --spec-method", key="--num-speculative-tokens")
    if not decode_batch:
        raise ScenarioError("speculative decoding prices a decode batch: give --decode-batch", key="--spec-method")
    draft = None
    if method == "draft_model":
        if draft_model is None:
            raise ScenarioError("is required with --spec-method draft_model", key="--draft-model")
        draft = get_model(draft_model, key="--draft-model")
        if draft.vocab_size != model.vocab_size:
            raise ScenarioError(f"{draft.name!r} has vocab_size {draft.vocab_size}, the target {model.vocab_size}: "
                                f"vLLM needs the same vocabulary for a draft model", key="--draft-model")
    elif draft_model is not None:
        raise ScenarioError(f"is only for --spec-method draft_model, not {method!r}", key="--draft-model")
    rate = acceptance_rate if acceptance_rate is not None else DEFAULT_ACCEPTANCE.get(method, (None,))[0]
    acceptance = tuple(rate ** (i + 1) for i in range(k)) if rate else None
    return spec_step_cost(model, gpu, method=method, k=k, decode_batch=decode_batch, decode_context=decode_context,
                          draft_model=draft, acceptance=acceptance, framework=framework, **kw)


def memory_summary(model, gpu, *, tp: int, pp: int, dtype: str, kv_dtype: str | None, ep: int = 1) -> dict:
    """Per-GPU weights and the KV pool at a framework's defaults (vLLM's: block 16, utilization
    0.9, 8192 tokens, 256 sequences; ``oracle.scenario.FRAMEWORK_DEFAULTS``); for hybrid
    (full + windowed) models also vLLM's KV cache groups (``kv_cache_groups``)."""
    # lazy: numpy (see oracle.commands)
    from oracle.memory import (compute_num_gpu_blocks, kv_bytes_per_token_per_gpu, kv_cache_groups,
                               resolve_kv_dtype, weight_bytes_per_gpu)
    from oracle.scenario import FRAMEWORK_DEFAULTS as d
    out = {"weight_bytes_per_gpu": weight_bytes_per_gpu(model, dtype, tp=tp, pp=pp, ep=ep),
           "kv_bytes_per_token_per_gpu": kv_bytes_per_token_per_gpu(model, resolve_kv_dtype(kv_dtype, dtype, model),
                                                                    tp=tp, pp=pp),
           "block_size": d.block_size, "gpu_memory_utilization": d.gpu_memory_utilization}
    if model.sliding_window:
        size, full, window = kv_cache_groups(model, pp)
        out["kv_cache_groups"] = {"group_size": size, "full_attention": full, "windowed": window,
                                  "window": model.sliding_window,
                                  "note": "engine charges the full-attention group's blocks only (approximation)"}
    try:
        out["num_gpu_blocks"] = compute_num_gpu_blocks(
            model, gpu, tp=tp, pp=pp, block_size=d.block_size, gpu_memory_utilization=d.gpu_memory_utilization,
            dtype=dtype, kv_dtype=kv_dtype, max_num_batched_tokens=d.max_num_batched_tokens,
            max_num_seqs=d.max_num_seqs, ep=ep)
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
    ep = f", dp={cfg['dp']}, ep={cfg['ep']}" if cfg.get("ep", 1) > 1 else ""
    title = (f"{cfg['model']} on {cfg['gpu']} (tp={cfg['tp']}, pp={cfg['pp']}{ep}, {cfg['dtype']} weights, "
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
    spec = result.get("speculative")
    if spec:
        line = (f"Speculative decoding ({spec['method']}, k = {spec['num_speculative_tokens']}): each decode sequence "
                f"verifies {spec['num_speculative_tokens'] + 1} tokens: target {spec['verify_ms']:,.4f} ms + drafter "
                f"{spec['draft_ms']:,.4f} ms = {spec['step_ms']:,.4f} ms per step (plain decode step "
                f"{spec['plain_decode_step_ms']:,.4f} ms)")
        if "expected_tokens_per_sequence" in spec:
            line += (f"; {spec['expected_tokens_per_sequence']:.2f} tokens expected per sequence and step: "
                     f"{spec['ms_per_output_token']:,.4f} ms per output token, {spec['speedup']:.2f}x")
        console.print(line, markup=False)
    mem = result.get("memory")
    if mem:
        if mem["num_gpu_blocks"] is None:
            console.print(f"Memory: {mem['error']}", markup=False)
        else:
            console.print(f"Memory: {mem['weight_bytes_per_gpu'] / 2**30:,.1f} GiB of weights per GPU; KV cache of "
                          f"{mem['num_gpu_blocks']:,} blocks x {mem['block_size']} = "
                          f"{mem['block_size'] * mem['num_gpu_blocks']:,} tokens per replica "
                          f"at gpu_memory_utilization {mem['gpu_memory_utilization']:g}", markup=False)
        groups = mem.get("kv_cache_groups")
        if groups:
            console.print(f"KV cache groups (vLLM's hybrid manager): {groups['full_attention']} full-attention + "
                          f"{groups['windowed']} windowed (W = {groups['window']:,}) of {groups['group_size']} layers "
                          f"each; {groups['note']}", markup=False)
