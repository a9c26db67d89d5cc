"""Plain-Python reference of the engine: one object per request, replica and block.

Implements exactly ``oracle/engine/README.md`` (the binding semantics), written for clarity:
a :class:`Request` per row, a :class:`Replica` with a waiting deque, a running list and a
:class:`~reference.blockpool.BlockPool`, and :class:`ReferenceEngine` with the event loop,
the routers and the scheduler step. Slow (Python per token-step); use small inputs.

    out = run_reference(inputs, step_time_fn)            # -> EngineOutputs
    out = run_reference(inputs, step_time_fn, debug=True)  # + invariant checks every step
    out = run_reference(inputs, step_time_fn, draft_step_time_fn=f)  # speculative decoding's drafter priced by f

``step_time_fn(num_tokens, num_emit, num_decode, decode_ctx_sum, prefill_attn_units,
prefill_ctx_sum) -> seconds``.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from oracle.engine.inputs import (
    ITL_NUM_BINS,
    STEP_COLUMNS,
    CacheEvent,
    EngineInputs,
    EngineOutputs,
    Router,
    Status,
    cdiv,
    itl_bin,
)

from .blockpool import BlockPool, KVCacheBlock
from .hosttier import HostTier

StepTimeFn = Callable[[int, int, int, int, float, int], float]

NAN = float("nan")


@dataclass(eq=False)
class Request:
    """One request: static fields from the inputs, scheduler state, and its results."""

    rid: int
    arrival_s: float          # NaN for a follow-up until released
    prompt: int               # p
    output: int               # o
    session: int
    turn: int
    parent: int
    think_s: float
    hashes: list[int]         # chained hashes of the full blocks of the p + o tokens
    timeout_s: float = math.inf  # the client gives up this long after arrival
    adapter: int = -1            # LoRA adapter (-1: none)
    children: list[int] = field(default_factory=list)

    # scheduler state
    generated: int = 0
    num_computed: int = 0
    num_spec: int = 0         # draft tokens held for the next step (speculative decoding)
    block_table: list[KVCacheBlock] = field(default_factory=list)
    num_cached_blocks: int = 0
    ever_admitted: bool = False
    next_store: int = 0       # first prompt block not yet offered to the host tier
    remote_tokens: int = 0    # prompt tokens whose KV a prefill instance sent (P/D decode pool)

    # results
    replica: int = -1
    admitted_s: float = NAN
    first_token_s: float = NAN
    last_token_s: float = NAN
    completion_s: float = NAN
    cached_tokens: int = 0
    host_cached_tokens: int = 0
    computed_tokens: int = 0
    preemptions: int = 0
    cache_event: int = int(CacheEvent.NONE)
    max_itl_s: float = NAN
    status: int = int(Status.PENDING)
    # async scheduling: completed, still in `running` with its blocks until the next schedule
    held: bool = False

    @property
    def num_tokens(self) -> int:
        """Known tokens: prompt + generated so far."""
        return self.prompt + self.generated

    @property
    def session_label(self) -> int:
        """Label stored on the blocks this request hashes (README: Caching)."""
        return self.session if self.session >= 0 else -2 - self.rid


@dataclass(eq=False)
class Replica:
    index: int
    pool: BlockPool
    waiting: deque = field(default_factory=deque)
    running: list = field(default_factory=list)
    busy_until: float = 0.0
    # async scheduling (README "Async scheduling"): the last step's start and end, and the
    # requests that emitted in it (schedule order): their outputs are placeholders when the
    # next step is scheduled back to back
    last_start: float = NAN
    last_end: float = NAN
    emitters: list = field(default_factory=list)
    host: HostTier | None = None   # KV offload tier (README "KV offload")
    pending_load_s: float = 0.0    # load time of the step being scheduled
    lora_gpu: OrderedDict = field(default_factory=OrderedDict)  # adapters in GPU slots, LRU first
    lora_cpu: OrderedDict = field(default_factory=OrderedDict)  # adapters in the CPU cache, LRU first

    def running_adapters(self) -> set[int]:
        return {req.adapter for req in self.running if req.adapter >= 0}

    @property
    def has_work(self) -> bool:
        return bool(self.waiting) or bool(self.running)

    @property
    def load(self) -> int:
        """vLLM DP load score: 4 * waiting + running."""
        return 4 * len(self.waiting) + len(self.running)


@dataclass
class Scheduled:
    req: Request
    num_new: int   # c
    p0: int        # num_computed before the step
    drafts: int = 0        # draft tokens verified (speculative decoding)
    rejected: int = 0      # scheduled tokens rolled back at the end (rejected or padding drafts)
    was_prefill_chunk: bool = False  # a running request without drafts (vLLM is_prefill_chunk)

    @property
    def is_decode(self) -> bool:
        return self.num_new == 1 and self.p0 > 0 and self.p0 + 1 == self.req.num_tokens

    @property
    def emits(self) -> bool:
        return self.p0 + self.num_new >= self.req.num_tokens

    @property
    def lm_head_positions(self) -> int:
        """Positions whose logits are computed: the last known token and every draft."""
        return self.p0 + self.num_new - self.req.num_tokens + 1 if self.emits else 0


class ReferenceEngine:
    def __init__(self, inputs: EngineInputs, step_time_fn: StepTimeFn, debug: bool = False,
                 draft_step_time_fn: StepTimeFn | None = None):
        self.inputs = inputs
        self.cfg = inputs.config
        self.step_time_fn = step_time_fn
        self.draft_step_time_fn = draft_step_time_fn
        self.debug = debug
        self.k = int(self.cfg.num_speculative_tokens)  # speculative decoding: drafts per step (0: off)
        self.spec_off, self.spec_acc = inputs.accepted_table()
        self.spec_drafts = self.spec_accepted = self.spec_verifications = 0
        self.bs = int(self.cfg.block_size)
        self.N = inputs.resolved_num_gpu_blocks()
        self.caching = bool(self.cfg.enable_prefix_caching)
        n = len(inputs)
        if n and (inputs.prompt_tokens.min() < 1 or inputs.output_tokens.min() < 1):
            raise ValueError("the engine needs prompt_tokens >= 1 and output_tokens >= 1")
        off = inputs.hash_offsets
        self.requests = [
            Request(rid=i, arrival_s=float(inputs.arrival_s[i]), prompt=int(inputs.prompt_tokens[i]),
                    output=int(inputs.output_tokens[i]), session=int(inputs.session[i]),
                    turn=int(inputs.turn[i]), parent=int(inputs.parent[i]),
                    think_s=float(inputs.think_s[i]),
                    hashes=[int(h) for h in inputs.hashes[int(off[i]):int(off[i + 1])]],
                    timeout_s=math.inf if inputs.timeout_s is None else float(inputs.timeout_s[i]),
                    adapter=-1 if inputs.lora_adapter is None else int(inputs.lora_adapter[i]))
            for i in range(n)
        ]
        self.max_loras = int(self.cfg.max_loras) if inputs.lora_adapter is not None else 0
        self.max_cpu_loras = max(int(self.cfg.max_cpu_loras), self.max_loras)
        self.lora = {"gpu_loads": 0, "disk_loads": 0, "skipped_admissions": 0, "load_s": 0.0,
                     "adapter": None if inputs.lora_adapter is None else np.asarray(inputs.lora_adapter, np.int32),
                     "loads_by_adapter": np.zeros(max(max((r.adapter for r in self.requests), default=-1) + 1, 1),
                                                  np.int64)}
        for req in self.requests:
            if req.parent >= 0:
                self.requests[req.parent].children.append(req.rid)
        self.replicas = [Replica(r, BlockPool(self.N)) for r in range(int(self.cfg.num_replicas))]
        self.offload = int(self.cfg.host_kv_blocks) > 0
        if self.offload:
            for rep in self.replicas:
                rep.host = HostTier(int(self.cfg.host_kv_blocks))
        self.host = dict(queries=0, hit_blocks=0, loads=0, stored_blocks=0, evicted_blocks=0, failed_stores=0)
        self.host_load_s = 0.0
        self.static_arrivals = sorted((req.arrival_s, req.rid) for req in self.requests
                                      if req.parent < 0)
        self.next_static = 0
        self.followup_heap: list[tuple[float, int]] = []
        self.abort_heap: list[tuple[float, int]] = []  # (client deadline, request)
        self.num_routed = 0
        self.session_to_replica: dict[int, int] = {}
        self.prefix_cache_queries = 0
        self.prefix_cache_hits = 0
        self.preempted_requests = 0
        self.preempted_prefix_cache_queries = 0
        self.preempted_prefix_cache_hits = 0
        self.itl_hist = np.zeros(ITL_NUM_BINS, np.int64)
        self.num_steps = 0
        self.step_rows: list[tuple] = []

    # ---------------------------------------------------------------- event loop
    def run(self) -> EngineOutputs:
        while True:
            arrival = self._peek_arrival()
            with_work = [rep for rep in self.replicas if rep.has_work]
            stepper = min(with_work, key=lambda rep: (rep.busy_until, rep.index)) if with_work else None
            abort = self.abort_heap[0] if self.abort_heap else None
            if abort is not None and (arrival is None or abort[0] <= arrival[0]) and \
                    (stepper is None or abort[0] <= stepper.busy_until):
                heapq.heappop(self.abort_heap)
                self._abort(self.requests[abort[1]], abort[0])
            elif arrival is not None and (stepper is None or arrival[0] <= stepper.busy_until):
                self._pop_arrival()
                self._arrive(self.requests[arrival[1]], arrival[0])
            elif stepper is not None:
                self._step(stepper, stepper.busy_until)
            else:
                break
        return self._outputs()

    def _peek_arrival(self) -> tuple[float, int] | None:
        cands = []
        if self.next_static < len(self.static_arrivals):
            cands.append(self.static_arrivals[self.next_static])
        if self.followup_heap:
            cands.append(self.followup_heap[0])
        return min(cands) if cands else None

    def _pop_arrival(self) -> None:
        head = self._peek_arrival()
        if self.followup_heap and self.followup_heap[0] == head:
            heapq.heappop(self.followup_heap)
        else:
            self.next_static += 1

    def _release_followups(self, req: Request, t_end: float) -> None:
        for j in req.children:
            child = self.requests[j]
            heapq.heappush(self.followup_heap, (t_end + child.think_s, j))

    def _arrive(self, req: Request, a: float) -> None:
        req.arrival_s = a
        if req.prompt + req.output > self.cfg.max_model_len or self._max_blocks(req) > self.N - 1:
            req.status = int(Status.REJECTED)
            self._release_followups(req, a)
            return
        self._enqueue(req, self.replicas[self.route(req)], a)

    def _enqueue(self, req: Request, rep: Replica, a: float) -> None:
        req.replica = rep.index
        had_work = rep.has_work
        rep.waiting.append(req)
        if not had_work:
            rep.busy_until = max(rep.busy_until, a)
        if req.timeout_s < math.inf:
            heapq.heappush(self.abort_heap, (a + req.timeout_s, req.rid))

    def _abort(self, req: Request, a: float) -> None:
        """The client gives up at ``a``: a waiting or running request is aborted (vLLM
        ``finish_requests(FINISHED_ABORTED)``): out of its queue, blocks freed, follow-ups go."""
        if req.status != Status.PENDING:
            return
        rep = self.replicas[req.replica]
        if req in rep.running:
            rep.running.remove(req)
            rep.pool.free_blocks(reversed(req.block_table))
            req.block_table = []
        else:
            rep.waiting.remove(req)
        req.status = int(Status.TIMED_OUT)
        self._release_followups(req, a)

    def _max_blocks(self, req: Request) -> int:
        """The most blocks the request can hold: its whole sequence, plus drafts and the
        drafter's lookahead slots with speculative decoding (capped by max_model_len)."""
        total = req.prompt + req.output
        if self.k:
            total = min(total + self.k + self.cfg.spec_num_lookahead_tokens, self.cfg.max_model_len)
        return cdiv(total, self.bs)

    def _slots_needed(self, req: Request, num_computed: int, num_new: int) -> int:
        """New blocks for ``num_new`` tokens after ``num_computed`` (plus the drafter's
        lookahead slots, capped by max_model_len: vLLM ``allocate_slots``)."""
        end = num_computed + num_new
        if self.k:
            end = min(end + self.cfg.spec_num_lookahead_tokens, self.cfg.max_model_len)
        return max(cdiv(end, self.bs) - len(req.block_table), 0)

    # ---------------------------------------------------------------- routers
    def route(self, req: Request) -> int:
        """Replica index for ``req`` given the current state; updates the router's own state."""
        router = Router(int(self.cfg.router))
        if router == Router.ROUND_ROBIN:
            r = self.num_routed % len(self.replicas)
        elif router == Router.LEAST_LOADED:
            r = self._least_loaded()
        elif router == Router.SESSION_AFFINITY:
            if req.session >= 0 and req.session in self.session_to_replica:
                r = self.session_to_replica[req.session]
            else:
                r = self._least_loaded()
                if req.session >= 0:
                    self.session_to_replica[req.session] = r
        elif router == Router.PREFIX_AWARE:
            def key(rep: Replica):
                hit = len(self._lookup(rep, req)) if self.caching else 0
                cost = (cdiv(req.prompt, self.bs) - hit) + (rep.pool.num_usable - rep.pool.num_free)
                return (cost, rep.load, rep.index)
            r = min(self.replicas, key=key).index
        else:
            raise ValueError(f"unknown router {router}")
        self.num_routed += 1
        return r

    def _least_loaded(self) -> int:
        return min(self.replicas, key=lambda rep: (rep.load, rep.index)).index

    # ---------------------------------------------------------------- prefix cache
    def _lookup(self, rep: Replica, req: Request) -> list[KVCacheBlock]:
        """Cached prefix blocks (capped at floor((num_tokens - 1) / bs)); touches nothing."""
        if not self.caching or req.num_computed != 0:
            return []
        return rep.pool.lookup(req.hashes, (req.num_tokens - 1) // self.bs)

    def _classify(self, req: Request, hit: list[KVCacheBlock]) -> CacheEvent:
        if not self.caching:
            return CacheEvent.MISS_FULL
        if not hit:
            return CacheEvent.CONVERSATIONAL_MISS_EVICTED if req.turn >= 1 else CacheEvent.MISS_FULL
        if req.turn >= 1 and req.session >= 0 and hit[-1].session_label == req.session:
            return CacheEvent.CONVERSATIONAL_HIT
        if len(hit) == (req.prompt - 1) // self.bs:
            return CacheEvent.FULL_HIT_NO_PREFILL_NEEDED
        return CacheEvent.CROSS_REQUEST_HIT

    # ---------------------------------------------------------------- one step
    def _cache_blocks(self, rep: Replica, req: Request, num_tokens: int, known: int | None = None) -> None:
        """Register the request's full blocks up to ``num_tokens`` (computed + scheduled this
        step), at scheduling time as vLLM's ``allocate_slots`` -> ``cache_blocks`` does: a
        request scheduled later in the same step can already hit them. ``known``: the tokens
        vLLM knows (default all; one less while the last sampled token is a placeholder)."""
        if not self.caching:
            return
        stop = min(num_tokens, req.num_tokens if known is None else known) // self.bs
        for b in range(req.num_cached_blocks, stop):
            rep.pool.cache_block(req.block_table[b], req.hashes[b], req.session_label)
        req.num_cached_blocks = max(req.num_cached_blocks, stop)

    def _preempt(self, rep: Replica, victim: Request) -> None:
        rep.pool.free_blocks(reversed(victim.block_table))
        victim.block_table = []
        victim.num_computed = 0
        victim.num_cached_blocks = 0
        victim.remote_tokens = 0  # the received KV is gone: recomputed locally
        victim.num_spec = 0
        victim.preemptions += 1
        if victim.held:  # completed in the step in flight: its output finishes it, it never waits
            victim.held = False
            return
        rep.waiting.appendleft(victim)

    def _schedule_running(self, rep: Replica, sched: list[Scheduled], budget: int,
                          lag: bool = False) -> tuple[int, bool]:
        preempted = False
        i = 0
        while i < len(rep.running) and budget > 0:
            req = rep.running[i]
            if req.held:  # async: its last token is in flight; no step after it (AsyncScheduler)
                i += 1
                continue
            num_new = min(req.num_tokens + req.num_spec - req.num_computed, budget)
            if self.k:  # the input stays below max_model_len (vLLM: - num_sampled_tokens_per_step)
                num_new = min(num_new, self.cfg.max_model_len - req.num_computed - 1)
            need = self._slots_needed(req, req.num_computed, num_new)
            assert num_new > 0 and need >= 0
            self_preempted = False
            while need > rep.pool.num_free:
                victim = rep.running.pop()
                self._preempt(rep, victim)
                preempted = True
                if victim is req:
                    self_preempted = True
                    break
            if self_preempted:
                break
            req.block_table.extend(rep.pool.allocate(need))
            placeholder = lag and req in rep.emitters  # its last token is not known yet
            self._cache_blocks(rep, req, req.num_computed + num_new, req.num_tokens - 1 if placeholder else None)
            sched.append(self._spec_scheduled(req, num_new))
            budget -= num_new + self.cfg.spec_draft_slots
            i += 1
        return budget, preempted

    def _spec_scheduled(self, req: Request, num_new: int) -> Scheduled:
        """A running request's entry; with speculative decoding its drafts this step (the
        scheduled tokens past its known ones) and how many the target rejects: the accepted
        length drawn for its generated count, at most the drafts. Its drafts are consumed."""
        s = Scheduled(req, num_new, req.num_computed, was_prefill_chunk=self.k > 0 and req.num_spec == 0)
        drafts = req.num_computed + num_new - req.num_tokens
        if req.num_spec > 0 and drafts > 0:
            accepted = min(int(self.spec_acc[self.spec_off[req.rid] + req.generated]), drafts)
            s.drafts, s.rejected = drafts, drafts - accepted
        req.num_spec = 0
        return s

    def _pad_admission(self, num_new: int, hit_tokens: int, sched: list[Scheduled], budget: int):
        """vLLM's padding of a single-token admission to 1 + k tokens (their drafts all
        rejected) when no scheduled running request is a prefill chunk and something was
        scheduled or the request has computed tokens. Returns ``(num_new, padded, stop)``."""
        if not self.k or num_new != 1 or (not sched and hit_tokens == 0):
            return num_new, False, False
        if any(s.was_prefill_chunk for s in sched) or hit_tokens + self.k + 2 > self.cfg.max_model_len:
            return num_new, False, False
        if 1 + self.k > budget:
            return num_new, False, True
        return 1 + self.k, True, False

    def _schedule_waiting(self, rep: Replica, sched: list[Scheduled], budget: int, t: float,
                          cutoff: float = math.inf) -> int:
        skipped: list[Request] = []   # vLLM step_skipped_waiting: back at the head afterwards
        budget = self._admit(rep, sched, budget, t, skipped, cutoff)
        rep.waiting.extendleft(reversed(skipped))
        return budget

    def _lora_blocked(self, rep: Replica, req: Request) -> bool:
        """vLLM's max_loras check: the running requests' adapters are all the slots and
        ``req``'s is not among them."""
        if not self.max_loras or req.adapter < 0:
            return False
        adapters = rep.running_adapters()
        return len(adapters) == self.max_loras and req.adapter not in adapters

    def _admit(self, rep: Replica, sched: list[Scheduled], budget: int, t: float, skipped: list,
               cutoff: float = math.inf) -> int:
        running_sched = list(sched)
        while rep.waiting and budget > 0 and len(rep.running) < self.cfg.max_num_seqs:
            req = rep.waiting[0]
            if req.arrival_s > cutoff:  # async: not yet arrived when this step was scheduled
                break
            if self._lora_blocked(rep, req):
                skipped.append(rep.waiting.popleft())
                self.lora["skipped_admissions"] += 1
                continue
            hit = self._lookup(rep, req)
            hit_tokens = len(hit) * self.bs
            num_host = 0  # blocks loaded from the host tier after the GPU hit
            if self.offload:
                num_host = rep.host.match(req.hashes[len(hit):(req.num_tokens - 1) // self.bs])
            # KV received from a prefill instance (P/D decode pool)
            start = max(hit_tokens + num_host * self.bs, req.remote_tokens)
            num_new = req.num_tokens - start
            num_new, padded, stop = self._pad_admission(num_new, start, running_sched, budget)
            if stop:
                break
            if not self.cfg.enable_chunked_prefill:
                if num_new > budget:
                    break
            else:
                num_new = min(num_new, budget)
            evictable = sum(1 for blk in hit if blk.ref_cnt == 0)
            if self.cfg.scheduler_reserve_full_isl:
                # the whole known sequence must fit (vLLM allocate_slots, full_sequence_must_fit)
                if cdiv(req.num_tokens, self.bs) - len(hit) + evictable > rep.pool.num_free:
                    break
            need = self._slots_needed(req, start, num_new) - len(hit)
            if need + evictable > rep.pool.num_free:
                break
            rep.pool.touch(hit)
            req.block_table = list(hit) + rep.pool.allocate(need)
            req.num_cached_blocks = len(hit)
            req.num_computed = start
            if self.offload:
                self._host_admit(rep, req, len(hit), num_host)
            self._cache_blocks(rep, req, start + num_new)
            rep.waiting.popleft()
            rep.running.append(req)
            sched.append(Scheduled(req, num_new, req.num_computed, rejected=self.k if padded else 0))
            budget -= num_new + self.cfg.spec_draft_slots
            if self.caching:  # vLLM record_prefix_cache_stats, at every admission
                if req.preemptions > 0:
                    self.preempted_requests += 1
                    self.preempted_prefix_cache_queries += req.num_tokens
                    self.preempted_prefix_cache_hits += hit_tokens
                else:
                    self.prefix_cache_queries += req.num_tokens
                    self.prefix_cache_hits += hit_tokens
            if not req.ever_admitted:
                req.ever_admitted = True
                req.admitted_s = t
                req.cached_tokens = hit_tokens
                req.cache_event = int(self._classify(req, hit))
        return budget

    # ---------------------------------------------------------------- KV offload
    def _host_admit(self, rep: Replica, req: Request, hit: int, num_host: int) -> None:
        """Load ``num_host`` blocks from the host after the GPU hit (README "KV offload")."""
        self.host["queries"] += req.num_tokens - hit * self.bs
        req.next_store = 0
        if num_host:
            rep.host.touch(req.hashes[hit:hit + num_host])
            rep.pending_load_s += self.cfg.host_load_latency_s + num_host * self.cfg.host_load_s_per_block
            self.host["hit_blocks"] += num_host
            self.host["loads"] += 1
            req.next_store = hit + num_host
        if not req.ever_admitted:
            req.host_cached_tokens = num_host * self.bs

    def _offload_scheduled(self, rep: Replica, sched: list[Scheduled]) -> None:
        """Each scheduled request offers the prompt blocks full after this step, in schedule order."""
        for s in sched:
            req = s.req
            upto = min(s.p0 + s.num_new, req.prompt) // self.bs
            if s.p0 >= req.prompt or upto <= req.next_store:  # only steps computing prompt tokens offer
                continue
            res = rep.host.store(req.hashes[req.next_store:upto])
            if res is None:
                self.host["failed_stores"] += 1
                continue
            self.host["stored_blocks"] += res[0]
            self.host["evicted_blocks"] += res[1]
            req.next_store = upto

    def _schedule(self, rep: Replica, t: float, cutoff: float = math.inf,
                  lag: bool = False) -> tuple[list[Scheduled], bool]:
        """vLLM ``Scheduler.schedule()``: running requests, then (if nobody was preempted)
        admissions of requests that arrived by ``cutoff``."""
        sched: list[Scheduled] = []
        budget = int(self.cfg.max_num_batched_tokens) - self.cfg.spec_draft_slots  # vLLM input_budget - draft_slots
        budget, preempted = self._schedule_running(rep, sched, budget, lag)
        if not preempted:
            budget = self._schedule_waiting(rep, sched, budget, t, cutoff)
        assert budget + self.cfg.spec_draft_slots >= 0 and len(rep.running) <= self.cfg.max_num_seqs
        return sched, preempted

    def _apply_last_outputs(self, rep: Replica) -> None:
        """Async scheduling: the outputs of the replica's last step reach the scheduler (vLLM
        ``update_from_output``, in that step's schedule order): each request that emitted
        registers its blocks up to its computed tokens (``cache_blocks``), and those that
        completed leave ``running`` and free their blocks."""
        for req in rep.emitters:
            if req.block_table:  # not preempted since
                self._cache_blocks(rep, req, req.num_computed)
            if req.held:
                req.held = False
                rep.pool.free_blocks(reversed(req.block_table))
                req.block_table = []
                rep.running.remove(req)
        rep.emitters = []

    def _step(self, rep: Replica, t: float) -> None:
        if not self.cfg.async_scheduling:
            sched, preempted = self._schedule(rep, t)
        elif t == rep.last_end:
            # back to back: vLLM scheduled this step when the last one started, before its
            # outputs (README "Async scheduling")
            sched, preempted = self._schedule(rep, t, cutoff=rep.last_start, lag=True)
            self._apply_last_outputs(rep)
            if not sched:  # an empty batch; the next one is scheduled once the outputs are in
                sched, preempted = self._schedule(rep, t)
        else:
            self._apply_last_outputs(rep)
            sched, preempted = self._schedule(rep, t)
        if not sched:  # only after a preemption, or (async) when the last step's outputs ended the work
            assert (preempted and not rep.running) or not rep.has_work
            rep.last_start = rep.last_end = NAN
            if self.debug:
                self.check_invariants()
            return

        if self.offload:
            self._offload_scheduled(rep, sched)
        # Step aggregates, in schedule order (running first, then newly admitted).
        num_tokens = num_emit = num_decode = decode_ctx_sum = prefill_ctx_sum = 0
        prefill_attn_units = 0.0
        num_prefill_tokens = 0
        num_propose = propose_ctx = 0
        for s in sched:
            num_tokens += s.num_new
            if s.is_decode:
                num_decode += 1
                decode_ctx_sum += s.p0 + 1
            else:
                prefill_attn_units += s.num_new * (s.p0 + (s.num_new + 1) / 2)
                prefill_ctx_sum += s.p0
                num_prefill_tokens += s.num_new
            num_emit += s.lm_head_positions
            if s.emits:
                num_propose += 1
                propose_ctx += s.p0 + s.num_new
        dt = float(self.step_time_fn(num_tokens, num_emit, num_decode, decode_ctx_sum,
                                     prefill_attn_units, prefill_ctx_sum))
        if self.offload:  # host loads complete before the forward pass
            dt += rep.pending_load_s
            self.host_load_s += rep.pending_load_s
            rep.pending_load_s = 0.0
        if self.k and self.draft_step_time_fn is not None:
            dt += self._draft_time(num_tokens, num_decode, decode_ctx_sum, prefill_attn_units,
                                   prefill_ctx_sum, num_propose, propose_ctx)
        if self.max_loras:
            dt += self._lora_load_s(rep) + self._lora_kernels_s(sched)
        t_end = t + dt
        rep.busy_until = t_end
        self.num_steps += 1
        rep.last_start, rep.last_end = t, t_end
        rep.emitters = [s.req for s in sched if s.emits] if self.cfg.async_scheduling else []

        for s in sched:
            self._finish_scheduled(rep, s, t_end)

        if self.cfg.record_steps:
            self.step_rows.append((rep.index, t, dt, num_decode, num_prefill_tokens,
                                   len(rep.running), len(rep.waiting),
                                   rep.pool.num_usable - rep.pool.num_free, rep.pool.num_cached))
        if self.debug:
            self.check_invariants()

    def _draft_time(self, num_tokens, num_decode, decode_ctx_sum, prefill_attn_units, prefill_ctx_sum,
                    num_propose, propose_ctx) -> float:
        """The drafter's time (README "Speculative decoding"): a pass over the step's tokens,
        then k - 1 passes of one token per proposing sequence."""
        total = float(self.draft_step_time_fn(num_tokens, num_propose, num_decode, decode_ctx_sum,
                                              prefill_attn_units, prefill_ctx_sum))
        for j in range(1, self.k):
            total += float(self.draft_step_time_fn(num_propose, num_propose, num_propose,
                                                   propose_ctx + j * num_propose, 0.0, 0.0))
        return total

    # ---------------------------------------------------------------- LoRA
    def _lora_load_s(self, rep: Replica) -> float:
        """Seconds to make the running requests' adapters resident (README "Multi-LoRA"):
        mark the resident ones used (ascending id), then load the missing ones (ascending
        id): from disk into the CPU cache if not there (its LRU entry leaves, and the GPU
        too), then into a GPU slot (evicting the LRU one)."""
        p = self.inputs.lora_params
        active = sorted(rep.running_adapters())
        for a in active:
            if a in rep.lora_gpu:
                rep.lora_gpu.move_to_end(a)
            if a in rep.lora_cpu:
                rep.lora_cpu.move_to_end(a)
        secs = 0.0
        for a in active:
            if a in rep.lora_gpu:
                continue
            if a not in rep.lora_cpu:
                if len(rep.lora_cpu) == self.max_cpu_loras:
                    old, _ = rep.lora_cpu.popitem(last=False)
                    rep.lora_gpu.pop(old, None)
                rep.lora_cpu[a] = True
                self.lora["disk_loads"] += 1
                secs += p[7]
            if len(rep.lora_gpu) == self.max_loras:
                rep.lora_gpu.popitem(last=False)
            rep.lora_gpu[a] = True
            self.lora["gpu_loads"] += 1
            self.lora["loads_by_adapter"][a] += 1
            secs += p[6]
        self.lora["load_s"] += secs
        return secs

    def _lora_kernels_s(self, sched: list[Scheduled]) -> float:
        """The punica kernels: max(FLOPs, bytes) roofline over the scheduled adapter tokens
        and the weights of their distinct adapters (``oracle.kernels.lora``)."""
        p = self.inputs.lora_params
        tokens = sum(s.num_new for s in sched if s.req.adapter >= 0)
        if tokens == 0:
            return 0.0
        adapters = len({s.req.adapter for s in sched if s.req.adapter >= 0})
        compute = p[0] * tokens * p[3]
        memory = (p[1] * adapters + p[2] * tokens) * p[4]
        return max(compute, memory) + p[5]

    def _finish_scheduled(self, rep: Replica, s: Scheduled, t_end: float) -> None:
        req = s.req
        emits = s.emits  # decided on num_tokens before `generated` moves
        # accepted + 1 tokens (clipped by the output length); 1 without speculative decoding
        num_emitted = min(s.lm_head_positions - s.rejected, req.output - req.generated)
        req.num_computed += s.num_new - s.rejected  # vLLM: num_computed_tokens -= num_rejected
        if emits:  # at a stop vLLM also drops the tokens cut off (_update_request_with_output)
            req.num_computed -= s.lm_head_positions - s.rejected - num_emitted
        req.computed_tokens += s.num_new
        if s.drafts:
            self.spec_drafts += s.drafts
            self.spec_accepted += s.drafts - s.rejected
            self.spec_verifications += 1
        if emits:
            req.generated += num_emitted
            if self.k:
                req.num_spec = self.k  # the drafter proposes k drafts for the next step
                self._cache_blocks(rep, req, req.num_computed)  # vLLM update_from_output -> cache_blocks
            if req.generated == num_emitted:
                req.first_token_s = t_end
            else:
                gap = t_end - req.last_token_s
                if req.arrival_s >= self.inputs.config.warm_up_s:  # warm-up requests stay out
                    self.itl_hist[itl_bin(gap)] += 1
                req.max_itl_s = gap if math.isnan(req.max_itl_s) else max(req.max_itl_s, gap)
            req.last_token_s = t_end
        if req.generated == req.output:
            req.completion_s = t_end
            deadline = req.arrival_s + req.timeout_s
            # past the client's deadline: TIMED_OUT, follow-ups from the deadline
            req.status = int(Status.FINISHED if t_end <= deadline else Status.TIMED_OUT)
            if self.cfg.async_scheduling:
                req.held = True  # until the next schedule (README "Async scheduling")
            else:
                rep.pool.free_blocks(reversed(req.block_table))
                req.block_table = []
                rep.running.remove(req)
            self._release_followups(req, min(t_end, deadline))

    # ---------------------------------------------------------------- debug
    def check_invariants(self) -> None:
        """free + used = total, ref_cnt >= 0, no block both free and owned, map consistent."""
        for rep in self.replicas:
            owned: dict[int, int] = {}
            for req in rep.running:
                ids = [blk.block_id for blk in req.block_table]
                assert len(set(ids)) == len(ids), "a block twice in one block table"
                assert req.num_cached_blocks <= len(req.block_table)
                if self.k:  # rejected drafts' and lookahead slots stay allocated
                    assert cdiv(req.num_computed, self.bs) <= len(req.block_table) <= self._max_blocks(req)
                else:
                    assert len(req.block_table) == cdiv(req.num_computed, self.bs)
                for b in ids:
                    owned[b] = owned.get(b, 0) + 1
            for req in rep.waiting:
                assert not req.block_table and req.num_computed == 0
            rep.pool.check_invariants(owned)
            if rep.host is not None:
                rep.host.check_invariants()
        if self.offload:  # no block lost: the tiers hold what was stored and not evicted
            held = sum(len(rep.host.lru) for rep in self.replicas)
            assert held == self.host["stored_blocks"] - self.host["evicted_blocks"], "host tier lost a block"
            assert len(rep.running) <= self.cfg.max_num_seqs
            if self.max_loras:   # never more than max_loras distinct adapters running (so in a batch)
                assert len(rep.running_adapters()) <= self.max_loras
                assert len(rep.lora_gpu) <= self.max_loras and len(rep.lora_cpu) <= self.max_cpu_loras

    # ---------------------------------------------------------------- results
    def _outputs(self) -> EngineOutputs:
        reqs = self.requests
        for req in reqs:
            assert req.status != Status.PENDING, f"request {req.rid} never ended"
        out = EngineOutputs(
            replica=np.array([r.replica for r in reqs], np.int32),
            admitted_s=np.array([r.admitted_s for r in reqs], np.float64),
            first_token_s=np.array([r.first_token_s for r in reqs], np.float64),
            completion_s=np.array([r.completion_s for r in reqs], np.float64),
            arrival_s=np.array([r.arrival_s for r in reqs], np.float64),
            cached_tokens=np.array([r.cached_tokens for r in reqs], np.int32),
            computed_tokens=np.array([r.computed_tokens for r in reqs], np.int64),
            preemptions=np.array([r.preemptions for r in reqs], np.int32),
            cache_event=np.array([r.cache_event for r in reqs], np.int8),
            max_itl_s=np.array([r.max_itl_s for r in reqs], np.float64),
            status=np.array([r.status for r in reqs], np.int8),
            prefix_cache_queries=self.prefix_cache_queries,
            prefix_cache_hits=self.prefix_cache_hits,
            preempted_requests=self.preempted_requests,
            preempted_prefix_cache_queries=self.preempted_prefix_cache_queries,
            preempted_prefix_cache_hits=self.preempted_prefix_cache_hits,
            itl_hist=self.itl_hist,
            num_steps=self.num_steps,
            host_cached_tokens=np.array([r.host_cached_tokens for r in reqs], np.int32),
            host=dict(self.host),
            host_load_s=self.host_load_s,
            spec_drafts=self.spec_drafts,
            spec_accepted=self.spec_accepted,
            spec_verifications=self.spec_verifications,
            lora=self.lora if self.max_loras else None,
        )
        if self.cfg.record_steps:
            dtypes = (np.int32, np.float64, np.float64, np.int32, np.int64, np.int32, np.int32,
                      np.int32, np.int32)
            cols = list(zip(*self.step_rows)) if self.step_rows else [()] * len(STEP_COLUMNS)
            out.steps = {name: np.array(col, dt) for name, col, dt in zip(STEP_COLUMNS, cols, dtypes)}
        return out


def run_reference(inputs: EngineInputs, step_time_fn: StepTimeFn, debug: bool = False,
                  draft_step_time_fn: StepTimeFn | None = None) -> EngineOutputs:
    """Simulate ``inputs`` with the reference engine (``debug``: check invariants every step;
    ``draft_step_time_fn``: the drafter's step cost with speculative decoding, None: free)."""
    return ReferenceEngine(inputs, step_time_fn, debug=debug, draft_step_time_fn=draft_step_time_fn).run()
