"""Drive vLLM's real v1 ``Scheduler`` (no model, no GPU) through the engine's simulated clock.

The loop mirrors ``oracle/engine/README.md`` ("Time and events") for one replica, and lets
vLLM decide everything the engine claims to mirror: which requests run, how many tokens
each gets, prefix-cache hits, block allocation, eviction and preemption. Only time is
ours: each step is priced with the project's cost function (the same aggregates the engine
computes, see the README's "Step aggregates") and the clock advances by that amount.

vLLM functions used, in order, and why:

* ``ModelConfig(model=<dir with only config.json>, skip_tokenizer_init=True)``: a
  ``VllmConfig`` needs a model config; a local ``config.json`` (a tiny Llama) is all it
  reads. Built once per process (``session()``), copied per workload with our
  ``max_model_len``.
* ``SchedulerConfig`` / ``CacheConfig`` / ``DeviceConfig("cpu")`` / ``VllmConfig``: the
  engine's settings (``max_num_seqs``, ``max_num_batched_tokens``, ``max_model_len``,
  ``enable_chunked_prefill``, ``enable_prefix_caching``, ``block_size``,
  ``num_gpu_blocks``), async scheduling off, FCFS, everything else at vLLM's defaults
  (``scheduler_reserve_full_isl=True``, ``watermark=0``, ``long_prefill_token_threshold=0``,
  ``prefill_schedule_interval=1``; :func:`make_vllm_config` asserts the effective values).
* ``KVCacheConfig(num_blocks=N, one FullAttentionSpec group)``: what the engine core would
  derive from GPU memory; we pin ``N`` (it includes the null block, like the engine's N).
* ``Scheduler(vllm_config, kv_cache_config, StructuredOutputManager, block_size,
  log_stats=True)``: the scheduler under test; ``log_stats`` makes the KV cache manager
  keep ``PrefixCacheStats``.
* ``init_none_hash(sha256)`` and ``get_request_block_hasher(block_size, sha256)``: the
  request block hasher EngineCore installs; ``Request`` computes the hashes of its full
  blocks at creation and again in ``append_output_token_ids`` (so generated blocks hash
  like real ones: the sampled token ids are the workload's output tokens).
* ``Request(id, prompt_token_ids, SamplingParams(max_tokens=o, ignore_eos=True), ...)``
  and ``Scheduler.add_request``: an arrival (appended to the waiting queue). A request that
  names a LoRA adapter ``a`` carries ``LoRARequest("adapter-a", a + 1, path)`` and the
  config ``LoRAConfig(max_loras, max_cpu_loras)`` (the scheduler's ``max_loras`` rule; the
  block hasher puts the adapter into every block hash). Adapter loads and punica kernels
  are the worker's, not the scheduler's: the conformance cases price them at zero.
* ``Scheduler.schedule()`` -> ``SchedulerOutput``: one step. ``num_scheduled_tokens`` is
  in schedule order (running requests first, then admitted ones); ``schedule()`` has
  already advanced ``request.num_computed_tokens``, so the tokens computed before the step
  are ``num_computed_tokens - scheduled``.
* ``Scheduler.update_from_output(SchedulerOutput, ModelRunnerOutput)``: the model's
  answer: one sampled token for every request whose scheduled tokens reach the end of its
  known tokens (prompt + generated so far), nothing for partial prefill chunks. vLLM
  appends it, finishes the request after ``o`` tokens (``check_stop``) and frees its
  blocks (``KVCacheManager.free``). It returns ``SchedulerStats`` whose
  ``prefix_cache_stats`` (made and reset on every call) we sum. A step that scheduled
  nothing still gets ``update_from_output`` with ``EMPTY_MODEL_RUNNER_OUTPUT``, as
  ``EngineCore.step`` does.
* Read-outs after each step: ``scheduler.running``, ``waiting`` + ``kv_holding_waiting``,
  ``block_pool.get_num_free_blocks()`` and ``block_pool.cached_block_hash_to_block``.
"""

from __future__ import annotations

import copy
import heapq
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

import torch  # noqa: E402
import vllm  # noqa: E402
from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig  # noqa: E402
from vllm.config.lora import LoRAConfig  # noqa: E402
from vllm.lora.request import LoRARequest  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.utils.hashing import sha256  # noqa: E402
from vllm.v1.core.kv_cache_utils import KVCacheBlock, get_request_block_hasher, init_none_hash  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec  # noqa: E402
from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, ModelRunnerOutput  # noqa: E402
from vllm.v1.request import Request, RequestStatus  # noqa: E402
from vllm.v1.structured_output import StructuredOutputManager  # noqa: E402

from .trace import FINISHED, REJECTED, TIMED_OUT, ReqRow, StepRow, Trace  # noqa: E402

VLLM_VERSION = vllm.__version__
logging.getLogger("vllm").setLevel(logging.ERROR)  # e.g. "max_num_batched_tokens exceeds ..." per workload

#: A tiny Llama: only read for the config objects, never instantiated.
MODEL_CONFIG_JSON = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 4,
    "num_hidden_layers": 1, "vocab_size": 32000, "max_position_embeddings": 1 << 22,
    "rms_norm_eps": 1e-5, "torch_dtype": "float32", "tie_word_embeddings": False,
}

StepTimeFn = Callable[[int, int, int, int, float, int], float]
_MODEL_CONFIG: ModelConfig | None = None
_HASHER_READY = False


def session(model_dir: str | Path | None = None) -> ModelConfig:
    """The process-wide base ``ModelConfig`` (created on first use, in ``model_dir`` or a
    temporary folder holding only ``config.json``)."""
    global _MODEL_CONFIG, _HASHER_READY
    if _MODEL_CONFIG is None:
        d = Path(model_dir) if model_dir is not None else Path(tempfile.mkdtemp(prefix="conformance-model-"))
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(MODEL_CONFIG_JSON))
        _MODEL_CONFIG = ModelConfig(model=str(d), skip_tokenizer_init=True, max_model_len=4096)
    if not _HASHER_READY:
        init_none_hash(sha256)  # NONE_HASH: parent hash of block 0 (EngineCore does this)
        _HASHER_READY = True
    return _MODEL_CONFIG


def make_vllm_config(cfg, num_gpu_blocks: int) -> VllmConfig:
    """A ``VllmConfig`` for an ``EngineConfig`` (one replica); asserts vLLM kept our values."""
    mc = copy.copy(session())
    mc.max_model_len = int(cfg.max_model_len)
    sc = SchedulerConfig(
        max_num_seqs=int(cfg.max_num_seqs), max_num_batched_tokens=int(cfg.max_num_batched_tokens),
        max_model_len=int(cfg.max_model_len), enable_chunked_prefill=bool(cfg.enable_chunked_prefill),
        is_encoder_decoder=False, async_scheduling=False, policy="fcfs")
    cc = CacheConfig(block_size=int(cfg.block_size), enable_prefix_caching=bool(cfg.enable_prefix_caching))
    cc.num_gpu_blocks = int(num_gpu_blocks)
    lora = None
    if getattr(cfg, "max_loras", 0) > 0:   # multi-LoRA: the scheduler's max_loras rule (engine README)
        lora = LoRAConfig(max_loras=int(cfg.max_loras), max_cpu_loras=int(max(cfg.max_cpu_loras, cfg.max_loras)))
    vc = VllmConfig(model_config=mc, scheduler_config=sc, cache_config=cc,
                    device_config=DeviceConfig(device="cpu"), lora_config=lora)
    s = vc.scheduler_config
    effective = {
        "max_num_seqs": s.max_num_seqs, "max_num_batched_tokens": s.max_num_batched_tokens,
        "enable_chunked_prefill": s.enable_chunked_prefill, "max_model_len": vc.model_config.max_model_len,
        "block_size": vc.cache_config.block_size, "enable_prefix_caching": vc.cache_config.enable_prefix_caching,
        "num_gpu_blocks": vc.cache_config.num_gpu_blocks,
    }
    wanted = {"max_num_seqs": cfg.max_num_seqs, "max_num_batched_tokens": cfg.max_num_batched_tokens,
              "enable_chunked_prefill": cfg.enable_chunked_prefill, "max_model_len": cfg.max_model_len,
              "block_size": cfg.block_size, "enable_prefix_caching": cfg.enable_prefix_caching,
              "num_gpu_blocks": num_gpu_blocks}
    assert effective == wanted, f"vLLM changed the configuration: {effective} != {wanted}"
    # The knobs that change which tokens get scheduled, at the values this suite assumes.
    assert not s.async_scheduling and s.policy == "fcfs" and vc.speculative_config is None
    assert s.long_prefill_token_threshold == 0 and s.max_num_scheduled_tokens is None
    assert s.max_num_active_seqs is None and s.prefill_schedule_interval == 1 and s.watermark == 0.0
    assert vc.kv_transfer_config is None and vc.num_lookahead_tokens == 0
    return vc


def vllm_settings_note(vc: VllmConfig) -> str:
    s = vc.scheduler_config
    return (f"vLLM {VLLM_VERSION} scheduler_reserve_full_isl={s.scheduler_reserve_full_isl} "
            f"watermark={s.watermark} long_prefill_token_threshold={s.long_prefill_token_threshold} "
            f"prefill_schedule_interval={s.prefill_schedule_interval} async_scheduling={s.async_scheduling}")


def make_scheduler(cfg, num_gpu_blocks: int, **scheduler_overrides) -> Scheduler:
    """vLLM's v1 scheduler for ``cfg`` with a KV cache of ``num_gpu_blocks`` blocks.

    ``scheduler_overrides`` set ``SchedulerConfig`` fields after validation (e.g.
    ``scheduler_reserve_full_isl=False`` to see what that option changes).
    """
    vc = make_vllm_config(cfg, num_gpu_blocks)
    for k, v in scheduler_overrides.items():
        setattr(vc.scheduler_config, k, v)
    bs = int(cfg.block_size)
    spec = FullAttentionSpec(block_size=bs, num_kv_heads=4, head_size=16, dtype=torch.float32)
    kv = KVCacheConfig(num_blocks=int(num_gpu_blocks), kv_cache_tensors=[],
                       kv_cache_groups=[KVCacheGroupSpec(["model.layers.0.self_attn.attn"], spec)])
    sched = Scheduler(vllm_config=vc, kv_cache_config=kv, structured_output_manager=StructuredOutputManager(vc),
                      block_size=bs, log_stats=True)
    assert sched.kv_cache_manager.block_pool.num_gpu_blocks == num_gpu_blocks
    return sched


def _hashed_blocks(pool) -> int:
    """Blocks carrying a hash (duplicates counted): the engine's ``kv_blocks_cached``."""
    cache = pool.cached_block_hash_to_block._cache
    return sum(1 if isinstance(v, KVCacheBlock) else len(v) for v in cache.values())


def run_vllm(specs: Sequence, cfg, step_time_fn: StepTimeFn, num_gpu_blocks: int,
             **scheduler_overrides) -> Trace:
    """Run the workload ``specs`` (``engine_cases.ReqSpec`` rows; row = request id) through
    vLLM's scheduler with the engine's clock; ``cfg`` is the ``EngineConfig`` (one replica)."""
    assert int(cfg.num_replicas) == 1, "the conformance harness drives one replica"
    sched = make_scheduler(cfg, num_gpu_blocks, **scheduler_overrides)
    bs = int(cfg.block_size)
    hasher = get_request_block_hasher(bs, sha256)
    pool = sched.kv_cache_manager.block_pool
    n = len(specs)
    rows = [ReqRow() for _ in specs]
    children: list[list[int]] = [[] for _ in specs]
    for i, s in enumerate(specs):
        if s.parent >= 0:
            children[s.parent].append(i)
    static = sorted((float(s.arrival_s), i) for i, s in enumerate(specs) if s.parent < 0)
    heap: list[tuple[float, int]] = []          # follow-ups: (arrival, id)
    aborts: list[tuple[float, int]] = []        # clients giving up: (deadline, id)
    reqs: dict[str, Request] = {}
    ever_admitted = [False] * n
    last_token_s = [math.nan] * n
    counters = {"requests": 0, "queries": 0, "hits": 0, "preempted_requests": 0,
                "preempted_queries": 0, "preempted_hits": 0}
    steps: list[StepRow] = []
    busy_until = 0.0
    nxt = 0
    empty_in_a_row = 0

    def release(i: int, t_end: float) -> None:
        for j in children[i]:
            heapq.heappush(heap, (t_end + float(specs[j].think_s), j))

    def peek() -> tuple[float, int] | None:
        cands = []
        if nxt < len(static):
            cands.append(static[nxt])
        if heap:
            cands.append(heap[0])
        return min(cands) if cands else None

    def has_work() -> bool:
        return sched.get_num_unfinished_requests() > 0

    def add_stats(outs) -> None:
        for eco in outs.values():
            st = eco.scheduler_stats
            if st is None or st.prefix_cache_stats is None:
                continue
            pc = st.prefix_cache_stats
            for k in counters:
                counters[k] += int(getattr(pc, k))

    while True:
        arr = peek()
        work = has_work()
        if aborts and (arr is None or aborts[0][0] <= arr[0]) and (not work or aborts[0][0] <= busy_until):
            # ---- a client gives up (engine README: "Client timeouts"): the API server
            # aborts the request, which the engine core applies between steps
            d, i = heapq.heappop(aborts)
            req = reqs.get(str(i))
            if req is not None and not req.is_finished():
                sched.finish_requests(str(i), RequestStatus.FINISHED_ABORTED)
                rows[i].status = TIMED_OUT
                rows[i].preemptions = req.num_preemptions
                release(i, d)
            continue
        if arr is not None and (not work or arr[0] <= busy_until):
            # ---- an arrival (engine README: "Arrival at time a of request i")
            if heap and heap[0] == arr:
                heapq.heappop(heap)
            else:
                nxt += 1
            a, i = arr
            s = specs[i]
            p, o = len(s.prompt), len(s.output)
            if p + o > cfg.max_model_len or -(-(p + o) // bs) > num_gpu_blocks - 1:
                rows[i].status = REJECTED    # mirrored: the engine rejects before routing
                release(i, a)
                continue
            adapter = getattr(s, "lora", -1)
            lora = (LoRARequest(f"adapter-{adapter}", adapter + 1, f"/adapters/{adapter}")
                    if adapter >= 0 and sched.lora_config else None)
            req = Request(request_id=str(i), prompt_token_ids=[int(x) for x in s.prompt],
                          sampling_params=SamplingParams(max_tokens=o, ignore_eos=True),
                          pooling_params=None, arrival_time=a, block_hasher=hasher, lora_request=lora)
            reqs[req.request_id] = req
            sched.add_request(req)
            if math.isfinite(getattr(s, "timeout_s", math.inf)):
                heapq.heappush(aborts, (a + float(s.timeout_s), i))
            if not work:
                busy_until = max(busy_until, a)
            continue
        if not work:
            break

        # ---- one step at t = busy_until
        t = busy_until
        so = sched.schedule()
        if so.total_num_scheduled_tokens == 0:
            # Nothing scheduled (only after a preemption): no time passes, no row.
            add_stats(sched.update_from_output(so, EMPTY_MODEL_RUNNER_OUTPUT))
            empty_in_a_row += 1
            if empty_in_a_row > 2:
                raise RuntimeError(f"vLLM scheduled nothing {empty_in_a_row} times in a row at t={t} "
                                   f"(running {len(sched.running)}, waiting {len(sched.waiting)})")
            continue
        empty_in_a_row = 0

        # Step aggregates (README "Step aggregates"), in schedule order.
        num_tokens = num_emit = num_decode = decode_ctx_sum = prefill_ctx_sum = 0
        prefill_attn_units = 0.0
        num_prefill_tokens = 0
        sched_rows = []
        req_ids = []
        sampled = []
        for rid, c in so.num_scheduled_tokens.items():
            req = sched.requests[rid]
            i = int(rid)
            p0 = req.num_computed_tokens - c     # schedule() already advanced it
            known = req.num_tokens               # prompt + generated so far
            sched_rows.append((i, c, p0))
            num_tokens += c
            if c == 1 and p0 > 0 and p0 + 1 == known:
                num_decode += 1
                decode_ctx_sum += p0 + 1
            else:
                prefill_attn_units += c * (p0 + (c + 1) / 2)
                prefill_ctx_sum += p0
                num_prefill_tokens += c
            emits = p0 + c == known
            if emits:
                num_emit += 1
            if not ever_admitted[i]:
                ever_admitted[i] = True
                rows[i].admitted_s = t
                rows[i].cached_tokens = p0   # the prefix hit of the first admission
            rows[i].computed_tokens += c
            req_ids.append(rid)
            sampled.append([int(specs[i].output[req.num_output_tokens])] if emits else [])
        dt = float(step_time_fn(num_tokens, num_emit, num_decode, decode_ctx_sum,
                                prefill_attn_units, prefill_ctx_sum))
        t_end = t + dt
        preempted = tuple(sorted(int(r) for r in so.preempted_req_ids))

        mro = ModelRunnerOutput(req_ids=req_ids, req_id_to_index={r: k for k, r in enumerate(req_ids)},
                                sampled_token_ids=sampled)
        add_stats(sched.update_from_output(so, mro))
        busy_until = t_end

        for rid, tok in zip(req_ids, sampled):
            if not tok:
                continue
            i = int(rid)
            req = reqs[rid]
            r = rows[i]
            if math.isnan(r.first_token_s):
                r.first_token_s = t_end
            last_token_s[i] = t_end
            if req.is_finished():
                assert req.num_output_tokens == len(specs[i].output), (rid, req.num_output_tokens)
                r.completion_s = t_end
                r.preemptions = req.num_preemptions
                deadline = float(req.arrival_time) + float(getattr(specs[i], "timeout_s", math.inf))
                # past its client's deadline: the client already gave up (follow-ups go then)
                r.status = FINISHED if t_end <= deadline else TIMED_OUT
                release(i, min(t_end, deadline))

        free = pool.get_num_free_blocks()
        steps.append(StepRow(
            start_s=t, duration_s=dt, num_scheduled=num_tokens, num_decode=num_decode,
            num_prefill_tokens=num_prefill_tokens, num_running=len(sched.running),
            num_waiting=len(sched.waiting) + len(sched.kv_holding_waiting),
            kv_blocks_used=num_gpu_blocks - 1 - free, kv_blocks_cached=_hashed_blocks(pool),
            sched=tuple(sched_rows), preempted=preempted, distinct_hashes=len(pool.cached_block_hash_to_block)))

    for i, r in enumerate(rows):
        assert r.status in (FINISHED, REJECTED, TIMED_OUT), f"request {i} never ended"
    return Trace(source=f"vllm {VLLM_VERSION}", num_gpu_blocks=num_gpu_blocks, requests=rows,
                 steps=steps, counters=counters, notes=[vllm_settings_note(sched.vllm_config)])
