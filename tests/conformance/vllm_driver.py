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

Speculative decoding (``cfg.num_speculative_tokens`` k > 0): ``SpeculativeConfig`` with method
``ngram`` (no lookahead slots, no draft slots) or ``draft_model`` pointing at the same tiny
model (k lookahead slots, one draft slot per request), whichever matches the engine config.
The model's answer to a request that verified drafts is ``accepted + 1`` tokens (the next
output tokens of the workload, zeros past its end), ``accepted`` read from the engine's own
table (``oracle.engine.specdec.accepted_table``) and 0 for vLLM's padding drafts (-1); after
``update_from_output`` the proposer's drafts go in with ``Scheduler.update_draft_token_ids``
(the next k output tokens, for every request of the batch), as ``EngineCore.step`` does.

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
from vllm.config import (CacheConfig, DeviceConfig, ModelConfig, ParallelConfig, SchedulerConfig,  # noqa: E402
                         SpeculativeConfig, VllmConfig)
from vllm.config.lora import LoRAConfig  # noqa: E402
from vllm.lora.request import LoRARequest  # noqa: E402
from vllm.sampling_params import SamplingParams  # noqa: E402
from vllm.utils.hashing import sha256  # noqa: E402
from vllm.v1.core.kv_cache_utils import KVCacheBlock, get_request_block_hasher, init_none_hash  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec  # noqa: E402
from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, DraftTokenIds, ModelRunnerOutput  # noqa: E402
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
        is_encoder_decoder=False, async_scheduling=bool(getattr(cfg, "async_scheduling", False)), policy="fcfs")
    cc = CacheConfig(block_size=int(cfg.block_size), enable_prefix_caching=bool(cfg.enable_prefix_caching))
    cc.num_gpu_blocks = int(num_gpu_blocks)
    k = int(getattr(cfg, "num_speculative_tokens", 0))
    spec = None
    if k:  # ngram: no lookahead / draft slots; draft_model (the same tiny model): k and 1
        method = "draft_model" if cfg.spec_draft_slots else "ngram"
        extra = {"model": mc.model} if method == "draft_model" else {"prompt_lookup_max": 3, "prompt_lookup_min": 1}
        spec = SpeculativeConfig(method=method, num_speculative_tokens=k, target_model_config=mc,
                                 target_parallel_config=ParallelConfig(), **extra)
    lora = None
    if getattr(cfg, "max_loras", 0) > 0:   # multi-LoRA: the scheduler's max_loras rule (engine README)
        lora = LoRAConfig(max_loras=int(cfg.max_loras), max_cpu_loras=int(max(cfg.max_cpu_loras, cfg.max_loras)))
    vc = VllmConfig(model_config=mc, scheduler_config=sc, cache_config=cc,
                    device_config=DeviceConfig(device="cpu"), speculative_config=spec, lora_config=lora)
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
    assert s.async_scheduling == bool(getattr(cfg, "async_scheduling", False))
    assert s.policy == "fcfs"
    assert s.long_prefill_token_threshold == 0 and s.max_num_scheduled_tokens in (None, s.max_num_batched_tokens)
    assert s.max_num_active_seqs is None and s.prefill_schedule_interval == 1 and s.watermark == 0.0
    assert vc.kv_transfer_config is None
    if k:
        assert vc.num_lookahead_tokens == cfg.spec_num_lookahead_tokens, vc.num_lookahead_tokens
        assert vc.speculative_config.max_num_new_slots_for_drafting == cfg.spec_draft_slots
        assert vc.num_prefill_lookahead_tokens == 0 and vc.num_hash_lookahead_tokens == 0
    else:
        assert vc.speculative_config is None and vc.num_lookahead_tokens == 0
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
    sched = vc.scheduler_config.get_scheduler_cls()(vllm_config=vc, kv_cache_config=kv, structured_output_manager=StructuredOutputManager(vc),
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
    vLLM's scheduler with the engine's clock; ``cfg`` is the ``EngineConfig`` (one replica).
    With ``cfg.async_scheduling`` the scheduler is vLLM's ``AsyncScheduler``, driven as
    ``EngineCore.step_with_batch_queue`` drives it (:meth:`_Driver.run_async`)."""
    assert int(cfg.num_replicas) == 1, "the conformance harness drives one replica"
    d = _Driver(specs, cfg, step_time_fn, num_gpu_blocks, make_scheduler(cfg, num_gpu_blocks, **scheduler_overrides))
    if getattr(cfg, "async_scheduling", False):
        d.run_async()
    else:
        d.run_sync()
    for i, r in enumerate(d.rows):
        assert r.status in (FINISHED, REJECTED, TIMED_OUT), f"request {i} never ended"
    return Trace(source=f"vllm {VLLM_VERSION}", num_gpu_blocks=num_gpu_blocks, requests=d.rows,
                 steps=d.steps, counters=d.counters, notes=[vllm_settings_note(d.sched.vllm_config)])


class _Batch:
    """One scheduled step: its ``SchedulerOutput``, timing and aggregates."""

    def __init__(self, so, t: float, dt: float, num_tokens: int, num_decode: int, num_prefill_tokens: int,
                 sched_rows: list, emitting: list[str]):
        self.so, self.t, self.dt, self.t_end = so, t, dt, t + dt
        self.num_tokens, self.num_decode, self.num_prefill_tokens = num_tokens, num_decode, num_prefill_tokens
        self.sched_rows, self.emitting = sched_rows, emitting
        self.preempted = tuple(sorted(int(r) for r in so.preempted_req_ids))


class _Driver:
    """The engine README's loop ("Time and events") around one vLLM scheduler."""

    def __init__(self, specs, cfg, step_time_fn, num_gpu_blocks, sched):
        self.specs, self.cfg, self.step_time_fn, self.num_gpu_blocks = specs, cfg, step_time_fn, num_gpu_blocks
        self.sched = sched
        self.bs = int(cfg.block_size)
        self.hasher = get_request_block_hasher(self.bs, sha256)
        self.pool = sched.kv_cache_manager.block_pool
        self.rows = [ReqRow() for _ in specs]
        self.children: list[list[int]] = [[] for _ in specs]
        for i, s in enumerate(specs):
            if s.parent >= 0:
                self.children[s.parent].append(i)
        self.static = sorted((float(s.arrival_s), i) for i, s in enumerate(specs) if s.parent < 0)
        self.heap: list[tuple[float, int]] = []          # follow-ups: (arrival, id)
        self.aborts: list[tuple[float, int]] = []        # clients giving up: (deadline, id)
        self.reqs: dict[str, Request] = {}
        self.ever_admitted = [False] * len(specs)
        self.counters = {"requests": 0, "queries": 0, "hits": 0, "preempted_requests": 0,
                         "preempted_queries": 0, "preempted_hits": 0}
        self.steps: list[StepRow] = []
        self.nxt = 0
        self.k = int(getattr(cfg, "num_speculative_tokens", 0))
        if self.k:  # the engine's accepted lengths, and its bound on the blocks a request can hold
            from oracle.engine.specdec import accepted_table
            self.acc_off, self.acc = accepted_table([len(s.output) for s in specs], cfg.spec_acceptance,
                                                    cfg.spec_seed)

    # ------------------------------------------------------------------ events
    def release(self, i: int, t_end: float) -> None:
        for j in self.children[i]:
            heapq.heappush(self.heap, (t_end + float(self.specs[j].think_s), j))

    def peek(self) -> tuple[float, int] | None:
        cands = []
        if self.nxt < len(self.static):
            cands.append(self.static[self.nxt])
        if self.heap:
            cands.append(self.heap[0])
        return min(cands) if cands else None

    def has_work(self) -> bool:
        return self.sched.get_num_unfinished_requests() > 0

    def add_stats(self, outs) -> None:
        for eco in outs.values():
            st = eco.scheduler_stats
            if st is None or st.prefix_cache_stats is None:
                continue
            pc = st.prefix_cache_stats
            for k in self.counters:
                self.counters[k] += int(getattr(pc, k))

    def abort(self) -> None:
        """A client gives up (engine README: "Client timeouts"): the API server aborts the
        request, which the engine core applies between steps."""
        d, i = heapq.heappop(self.aborts)
        req = self.reqs.get(str(i))
        if req is not None and not req.is_finished():
            self.sched.finish_requests(str(i), RequestStatus.FINISHED_ABORTED)
            self.rows[i].status = TIMED_OUT
            self.rows[i].preemptions = req.num_preemptions
            self.release(i, d)

    def arrive(self, arr: tuple[float, int]) -> None:
        """An arrival (engine README: "Arrival at time a of request i")."""
        if self.heap and self.heap[0] == arr:
            heapq.heappop(self.heap)
        else:
            self.nxt += 1
        a, i = arr
        s = self.specs[i]
        p, o = len(s.prompt), len(s.output)
        most = min(p + o + self.k + self.cfg.spec_num_lookahead_tokens, self.cfg.max_model_len) if self.k else p + o
        if p + o > self.cfg.max_model_len or -(-most // self.bs) > self.num_gpu_blocks - 1:
            self.rows[i].status = REJECTED    # mirrored: the engine rejects before routing
            self.release(i, a)
            return
        adapter = getattr(s, "lora", -1)
        lora = (LoRARequest(f"adapter-{adapter}", adapter + 1, f"/adapters/{adapter}")
                if adapter >= 0 and self.sched.lora_config else None)
        req = Request(request_id=str(i), prompt_token_ids=[int(x) for x in s.prompt],
                      sampling_params=SamplingParams(max_tokens=o, ignore_eos=True),
                      pooling_params=None, arrival_time=a, block_hasher=self.hasher, lora_request=lora)
        self.reqs[req.request_id] = req
        self.sched.add_request(req)
        if math.isfinite(getattr(s, "timeout_s", math.inf)):
            heapq.heappush(self.aborts, (a + float(s.timeout_s), i))

    def ingest(self, t: float) -> None:
        """Aborts and arrivals up to ``t``, in time order (ties: aborts first)."""
        while True:
            arr = self.peek()
            if self.aborts and self.aborts[0][0] <= t and (arr is None or self.aborts[0][0] <= arr[0]):
                self.abort()
            elif arr is not None and arr[0] <= t:
                self.arrive(arr)
            else:
                return

    # ------------------------------------------------------------------ steps
    def price(self, so, t: float) -> _Batch:
        """Step aggregates (README "Step aggregates"), in schedule order, and the step's
        duration. ``schedule()`` has already advanced ``num_computed_tokens`` and (async) added
        an output placeholder for each request that samples in this step, so the tokens
        computed before are ``num_computed_tokens - scheduled`` and the tokens known to the
        engine ``num_tokens`` plus the placeholders of earlier steps."""
        num_tokens = num_emit = num_decode = decode_ctx_sum = prefill_ctx_sum = 0
        prefill_attn_units = 0.0
        num_prefill_tokens = 0
        sched_rows, emitting = [], []
        for rid, c in so.num_scheduled_tokens.items():
            req = self.sched.requests[rid]
            i = int(rid)
            p0 = req.num_computed_tokens - c
            if self.k:  # drafts are scheduled past the known tokens (synchronous scheduling only)
                known = req.num_tokens
                emits = p0 + c >= known
            else:
                emits = not req.is_prefill_chunk
                known = req.num_tokens + req.num_output_placeholders - (1 if emits and self.cfg.async_scheduling else 0)
            sched_rows.append((i, c, p0))
            num_tokens += c
            if c == 1 and p0 > 0 and p0 + 1 == known:
                num_decode += 1
                decode_ctx_sum += p0 + 1
            else:
                prefill_attn_units += c * (p0 + (c + 1) / 2)
                prefill_ctx_sum += p0
                num_prefill_tokens += c
            if emits:
                assert p0 + c == known or (self.k and p0 + c > known), (rid, p0, c, known)
                num_emit += p0 + c - known + 1   # the LM head runs on the last token and each draft
                emitting.append(rid)
            if not self.ever_admitted[i]:
                self.ever_admitted[i] = True
                self.rows[i].admitted_s = t
                self.rows[i].cached_tokens = p0   # the prefix hit of the first admission
            self.rows[i].computed_tokens += c
        dt = float(self.step_time_fn(num_tokens, num_emit, num_decode, decode_ctx_sum,
                                     prefill_attn_units, prefill_ctx_sum))
        return _Batch(so, t, dt, num_tokens, num_decode, num_prefill_tokens, sched_rows, emitting)

    def outputs(self, b: _Batch) -> None:
        """``update_from_output`` with the step's model output: one sampled token (the
        workload's next output token) for each request whose scheduled tokens reach its known
        tokens; then the requests that finished."""
        req_ids = list(b.so.num_scheduled_tokens)
        sampled = []
        for rid in req_ids:
            req = self.reqs[rid]
            if not self.k:
                k = min(req.num_output_tokens, len(self.specs[int(rid)].output) - 1)
                sampled.append([int(self.specs[int(rid)].output[k])] if rid in b.emitting else [])
                continue
            tokens = []
            if rid in b.emitting:  # accepted + 1 tokens: the engine's accepted length (0 for padding drafts)
                g, i = req.num_output_tokens, int(rid)
                drafts = b.so.scheduled_spec_decode_tokens.get(rid) or []
                accepted = min(int(self.acc[self.acc_off[i] + g]), len(drafts)) if drafts and drafts[0] != -1 else 0
                out_i = self.specs[i].output
                tokens = [int(out_i[g + j]) if g + j < len(out_i) else 0 for j in range(accepted + 1)]
            sampled.append(tokens)
        mro = ModelRunnerOutput(req_ids=req_ids, req_id_to_index={r: k for k, r in enumerate(req_ids)},
                                sampled_token_ids=sampled)
        alive = {rid for rid in b.emitting if not self.reqs[rid].is_finished()}  # not aborted meanwhile
        self.add_stats(self.sched.update_from_output(b.so, mro))
        if self.k:  # the proposer's drafts for the batch (EngineCore.step -> update_draft_token_ids)
            live = [rid for rid in req_ids if not self.reqs[rid].is_finished()]
            drafts = []
            for rid in live:
                g, out_i = self.reqs[rid].num_output_tokens, self.specs[int(rid)].output
                drafts.append([int(out_i[g + j]) if g + j < len(out_i) else 0 for j in range(self.k)])
            self.sched.update_draft_token_ids(DraftTokenIds(live, drafts))
        for rid in b.emitting:
            if rid not in alive:
                continue
            i = int(rid)
            req = self.reqs[rid]
            r = self.rows[i]
            if math.isnan(r.first_token_s):
                r.first_token_s = b.t_end
            if req.is_finished():
                assert req.num_output_tokens == len(self.specs[i].output), (rid, req.num_output_tokens)
                r.completion_s = b.t_end
                r.preemptions = req.num_preemptions
                deadline = float(req.arrival_time) + float(getattr(self.specs[i], "timeout_s", math.inf))
                # past its client's deadline: the client already gave up (follow-ups go then)
                r.status = FINISHED if b.t_end <= deadline else TIMED_OUT
                self.release(i, min(b.t_end, deadline))

    def record(self, b: _Batch) -> None:
        free = self.pool.get_num_free_blocks()
        self.steps.append(StepRow(
            start_s=b.t, duration_s=b.dt, num_scheduled=b.num_tokens, num_decode=b.num_decode,
            num_prefill_tokens=b.num_prefill_tokens, num_running=len(self.sched.running),
            num_waiting=len(self.sched.waiting) + len(self.sched.kv_holding_waiting),
            kv_blocks_used=self.num_gpu_blocks - 1 - free, kv_blocks_cached=_hashed_blocks(self.pool),
            sched=tuple(b.sched_rows), preempted=b.preempted,
            distinct_hashes=len(self.pool.cached_block_hash_to_block)))

    def schedule(self):
        """``Scheduler.schedule()``; a step that scheduled nothing (only after a preemption,
        or under async scheduling when every running request's last token is in flight) gets
        ``update_from_output`` with ``EMPTY_MODEL_RUNNER_OUTPUT`` and None is returned."""
        so = self.sched.schedule()
        if so.total_num_scheduled_tokens > 0:
            return so
        self.add_stats(self.sched.update_from_output(so, EMPTY_MODEL_RUNNER_OUTPUT))
        return None

    def run_sync(self) -> None:
        """``EngineCore.step``: schedule, execute, apply the outputs; inputs between steps."""
        busy_until = 0.0
        empty_in_a_row = 0
        while True:
            arr = self.peek()
            work = self.has_work()
            if self.aborts and (arr is None or self.aborts[0][0] <= arr[0]) and \
                    (not work or self.aborts[0][0] <= busy_until):
                self.abort()
                continue
            if arr is not None and (not work or arr[0] <= busy_until):
                self.arrive(arr)
                if not work:
                    busy_until = max(busy_until, arr[0])
                continue
            if not work:
                break
            so = self.schedule()
            if so is None:  # no time passes, no row
                empty_in_a_row += 1
                if empty_in_a_row > 2:
                    raise RuntimeError(f"vLLM scheduled nothing {empty_in_a_row} times in a row at "
                                       f"t={busy_until} (running {len(self.sched.running)}, "
                                       f"waiting {len(self.sched.waiting)})")
                continue
            empty_in_a_row = 0
            b = self.price(so, busy_until)
            self.outputs(b)
            busy_until = b.t_end
            self.record(b)

    def run_async(self) -> None:
        """``EngineCore.step_with_batch_queue`` with a batch queue of 2 and no CPU time: with
        a step in flight the next one is scheduled at once (it sees that step's outputs as
        placeholders and the inputs received so far), then the engine core waits for the step
        in flight, applies aborts that came meanwhile and its outputs, and receives the next
        inputs. A step starts when it is scheduled or when the step before it ends. Its row
        is taken just before the next ``schedule()``, so that its queue sizes and blocks are
        those the engine reports (the outputs of the step before applied, its own not)."""
        now = 0.0
        flight: _Batch | None = None     # the step on the GPU
        pending: _Batch | None = None    # the last scheduled step, row not yet taken
        empty_in_a_row = 0
        while True:
            self.ingest(now)
            if flight is None and not self.has_work():
                nxt = [t for t in ((self.aborts[0][0] if self.aborts else None),
                                   (self.peek() or (None,))[0]) if t is not None]
                if not nxt:
                    break
                now = max(now, min(nxt))
                continue
            so = None
            if self.has_work():
                if pending is not None:
                    self.record(pending)
                    pending = None
                so = self.schedule()
            if so is not None:
                empty_in_a_row = 0
                b = self.price(so, now if flight is None else flight.t_end)
                pending = b
                if flight is None:
                    flight = b
                    continue                  # queue not full: schedule the next step at once
            elif flight is None:              # nothing scheduled, nothing in flight: a preemption
                empty_in_a_row += 1
                if empty_in_a_row > 2:
                    raise RuntimeError(f"vLLM scheduled nothing {empty_in_a_row} times in a row at t={now}")
                continue
            # wait for the step in flight; aborts received meanwhile first, then its outputs
            now = flight.t_end
            while self.aborts and self.aborts[0][0] <= now:
                self.abort()
            self.outputs(flight)
            flight = b if so is not None else None
        if pending is not None:
            self.record(pending)

