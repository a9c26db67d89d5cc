"""The engine's state as named records, built once per run (``new_state``).

Numba compiles a ``namedtuple`` of arrays and scalars into a plain struct: fields are read by
name at no cost, nothing is allocated per step, and a kernel takes a handful of records
instead of dozens of loose arrays (as pynndescent's heap tuple or vLLM's
``SchedulerOutput``). Every record is created here; the kernels only read fields and write
into the arrays.

    Requests      per request, read only: the workload as the engine sees it
    Config        scalars of one framework configuration (+ the cost parameters)
    Outputs       per-request results, the ITL histogram, counters, KV use per replica
    Pool          the KV block pool of all replicas (``oracle.kernels.kvcache.Pool``)
    RequestState  per-request scheduler state and the block tables
    Queues        waiting rings, active lists, replica clocks, the follow-up heap, routers
    Cohort        the decode cohort (``cohort.py``; speculative: ``spec_cohort.py``)
    Scratch       per-step buffers (scheduled requests, hit blocks, sort space)
    HostTier      the KV offload tier of every replica (``offload.py``; empty when off)
    Lora          multi-LoRA state (``oracle.engine.lora``; placeholders when LoRA is off)
    State         the seven mutable records above, passed to the kernels as one argument

Sizes: ``R`` replicas, ``N`` blocks per replica (with the null block), ``s_max`` slots per
replica (max_num_seqs), ``m`` blocks in the longest block table, ``W`` a power of two above
the longest output (the cohort's rings).
"""

from __future__ import annotations

from collections import namedtuple
from enum import IntEnum

import numpy as np

from oracle.engine.cohort import new_cohort
from oracle.engine.inputs import ITL_NUM_BINS
from oracle.engine.offload import new_host_tier
from oracle.engine.lora import Lora, new_lora
from oracle.kernels.kvcache import Pool, new_pool

Requests = namedtuple("Requests", [
    "arrival_s",     # f8[n] seconds (NaN for a follow-up)
    "prompt",        # i4[n] prompt tokens p
    "output",        # i4[n] output tokens o
    "session",       # i8[n] session id (-1 none)
    "turn",          # i4[n] turn within the session (0 first)
    "parent",        # i8[n] previous turn (-1 none)
    "think_s",       # f8[n] think time after the parent ends
    "static_order",  # i8[k] requests without a parent, by (arrival, id)
    "child_off",     # i8[n+1] CSR of follow-ups: child_ids[child_off[q]:child_off[q+1]]
    "child_ids",     # i8[...]
    "sess_idx",      # i4[n] dense session index (-1 none), for session affinity
    "hash_off",      # i8[n] first block hash of request q in ``hashes``
    "hashes",        # u8[...] chained block hashes (full blocks of p + o tokens)
    "timeout_s",     # f8[n] the client gives up this long after arrival (inf: never)
    "spec_thr",      # u8[k] the acceptance rates as 53-bit thresholds (``specdec.spec_thresholds``; empty: off)
    "spec_keys",     # u8[4] keys of the accepted lengths (``specdec.spec_keys``, ``specdec.accepted_drafts``)
])

Config = namedtuple("Config", [
    "num_replicas", "router", "block_size", "max_num_seqs", "max_blocks_per_request",
    "max_num_batched_tokens", "max_model_len", "enable_chunked_prefill",
    "scheduler_reserve_full_isl", "enable_prefix_caching", "record_steps",
    "async_scheduling",  # vLLM AsyncScheduler (README "Async scheduling"; async_sched.py)
    "ring",            # W: a power of two above the longest output (cohort rings)
    "itl_min_s", "itl_bins_per_decade",
    "itl_from_s",      # gaps of requests arriving before this stay out of the histogram
    "cost_params",     # f8[:] for oracle.kernels.cost.step_time_s
    "host_kv_blocks", "host_load_s_per_block", "host_load_latency_s",  # KV offload tier (offload.py; 0: off)
    "spec_k",          # num_speculative_tokens (0: speculative decoding off)
    "spec_lookahead",  # KV slots reserved past the scheduled tokens for the drafter (vLLM num_lookahead_tokens)
    "spec_draft_slots",  # budget slots each scheduled request also takes (vLLM max_num_new_slots_for_drafting)
    "draft_params",    # f8[:] cost parameters of the drafter (empty: no GPU drafter)
])

Outputs = namedtuple("Outputs", [
    "replica", "arrival_s", "admitted_s", "first_token_s", "completion_s", "cached_tokens",
    "computed_tokens", "preemptions", "cache_event", "max_itl_s", "status",
    "itl_hist",      # i8[ITL_NUM_BINS]
    "counters",      # i8[len(Counter)], indexed by Counter
    "kv_integral",   # f8[R] time integral of blocks in use
    "kv_max",        # i8[R] peak blocks in use
])

RequestState = namedtuple("RequestState", [
    "num_computed",  # i4[n] tokens whose KV is computed
    "generated",     # i4[n] output tokens produced
    "num_blocks",    # i4[n] blocks in the request's table
    "num_cached",    # i4[n] leading blocks registered in the hash map
    "slot",          # i4[n] slot of a running request (-1 none); its table row is r*s_max+slot
    "last_token_s",  # f8[n]
    "table",         # i4[R*s_max*m] block tables, one row of m per slot
    "slot_free",     # i4[R*s_max] stack of free slots per replica
    "slot_top",      # i4[R] free slots per replica (running = s_max - slot_top)
    "ph",            # i1[n] async: emitted in its replica's last step (an output placeholder)
    "num_spec",      # i4[n] draft tokens the request holds for its next step (speculative decoding)
])

Queues = namedtuple("Queues", [
    "wq", "wq_head", "wq_len",   # waiting rings: i4[R*wcap], i8[R], i8[R]
    "act", "act_len",            # active running lists (running order): i4[R*s_max], i8[R]
    "busy_until",                # f8[R] replica clocks
    "hp_t", "hp_id", "hp_n",     # follow-up heap on (arrival, id); hp_n i8[1] its size
    "ab_t", "ab_id", "ab_n",     # abort heap on (client deadline, id); ab_n i8[1] its size
    "rr_counter",                # i8[1] requests routed round robin so far
    "sess_rep",                  # i4[sessions] replica a session is pinned to (-1 none)
    # async scheduling (async_sched.py): each replica's last step, and the requests that
    # completed in it, still holding their slot and blocks (running order)
    "last_start", "last_end",    # f8[R] (NaN: none, or the replica has been idle since)
    "held", "held_len",          # i4[R*s_max], i8[R]
])

Cohort = namedtuple("Cohort", ["sl", "bk", "cl", "dtlog", "rp", "sp"])

Scratch = namedtuple("Scratch", [
    "sch_req", "sch_new",   # i4[s_max] the step's scheduled active requests and their tokens
    "hit_blocks",           # i4[m] block ids of a prefix hit
    "members", "merged",    # i8[s_max], i4[s_max] cohort materialization
    "comp",                 # i8[s_max] completing cohort members
    "sch_draft", "sch_rej",  # i4[s_max] per scheduled request: drafts verified, tokens rejected
    "sch_pf",               # i1[s_max] 1: a running request that was a prefill chunk (speculative decoding)
    "spec_bits",            # u8[W] a joining member's uniforms (``spec_cohort.spec_join``; speculative decoding)
    "order",                # i8[R] the prefix-aware router's visiting order
    "cohort_blocks",        # i4[s_max] the blocks the cohort's members take in a step
])


State = namedtuple("State", ["out", "pool", "rs", "qs", "coh", "sc", "host", "lora"])


class Counter(IntEnum):
    """Run counters (``Outputs.counters``): vLLM's prefix-cache stats, then engine work.
    Kernels index with ``Counter.X.value`` (numba 0.65, which vLLM pins, takes no IntEnum as
    an array index)."""

    PREFIX_CACHE_QUERIES = 0
    PREFIX_CACHE_HITS = 1
    PREEMPTED_REQUESTS = 2
    PREEMPTED_PREFIX_CACHE_QUERIES = 3
    PREEMPTED_PREFIX_CACHE_HITS = 4
    STEPS = 5
    COHORT_MATERIALIZATIONS = 6
    COHORT_REQUEST_STEPS = 7
    ADMISSION_ATTEMPTS = 8
    ADMISSION_HIT_BLOCKS = 9
    ACTIVE_REQUEST_STEPS = 10
    ROUTER_PROBES = 11
    FAILED_ADMISSIONS = 12
    SPEC_DRAFTS = 13          # draft tokens verified (speculative decoding; vLLM SpecDecodingStats)
    SPEC_ACCEPTED = 14        # draft tokens accepted
    SPEC_VERIFICATIONS = 15   # request-steps that verified at least one draft


# Counters reported as EngineOutputs.diagnostics (engine work, for benchmarks).
DIAGNOSTICS = tuple(c for c in Counter if Counter.STEPS <= c <= Counter.FAILED_ADMISSIONS)


def new_state(req: Requests, cfg: Config, num_blocks: int, num_sessions: int, lora: Lora | None = None) -> State:
    """A fresh :data:`State` (Outputs, Pool, RequestState, Queues, Cohort, Scratch, Lora) for
    one run (``lora``: :func:`oracle.engine.lora.new_lora`'s record; None: LoRA off).

    Large arrays come from ``np.zeros`` / ``np.empty``, which map pages lazily: a run pays
    only for the memory it touches (the pool is sized for the whole GPU). Arrays read before
    being written are zeroed (reference counts, block hashes, hash-map keys).
    """
    n_req = req.prompt.shape[0]
    R, s_max, m = cfg.num_replicas, cfg.max_num_seqs, cfg.max_blocks_per_request
    out = Outputs(
        replica=np.full(n_req, -1, np.int32), arrival_s=np.full(n_req, np.nan),
        admitted_s=np.full(n_req, np.nan), first_token_s=np.full(n_req, np.nan),
        completion_s=np.full(n_req, np.nan), cached_tokens=np.zeros(n_req, np.int32),
        computed_tokens=np.zeros(n_req, np.int64), preemptions=np.zeros(n_req, np.int32),
        cache_event=np.full(n_req, -1, np.int8), max_itl_s=np.full(n_req, np.nan),
        status=np.zeros(n_req, np.int8), itl_hist=np.zeros(ITL_NUM_BINS, np.int64),
        counters=np.zeros(len(Counter), np.int64), kv_integral=np.zeros(R, np.float64),
        kv_max=np.zeros(R, np.int64))
    pool: Pool = new_pool(R, num_blocks, bool(cfg.enable_prefix_caching))
    slot_free = np.empty(R * s_max, np.int32)
    slot_free.reshape(R, s_max)[:] = np.arange(s_max - 1, -1, -1, dtype=np.int32)
    rs = RequestState(
        num_computed=np.zeros(n_req, np.int32), generated=np.zeros(n_req, np.int32),
        num_blocks=np.zeros(n_req, np.int32), num_cached=np.zeros(n_req, np.int32),
        slot=np.full(n_req, -1, np.int32), last_token_s=np.zeros(n_req, np.float64),
        table=np.empty(R * s_max * m, np.int32), slot_free=slot_free,
        slot_top=np.full(R, s_max, np.int32), ph=np.zeros(n_req, np.int8), num_spec=np.zeros(n_req, np.int32))
    wcap = n_req + 1
    qs = Queues(
        wq=np.empty(R * wcap, np.int32), wq_head=np.zeros(R, np.int64), wq_len=np.zeros(R, np.int64),
        act=np.empty(R * s_max, np.int32), act_len=np.zeros(R, np.int64),
        busy_until=np.zeros(R, np.float64), hp_t=np.empty(n_req + 1, np.float64),
        hp_id=np.empty(n_req + 1, np.int64), hp_n=np.zeros(1, np.int64),
        ab_t=np.empty(n_req + 1, np.float64), ab_id=np.empty(n_req + 1, np.int64), ab_n=np.zeros(1, np.int64),
        rr_counter=np.zeros(1, np.int64), sess_rep=np.full(max(num_sessions, 1), -1, np.int32),
        last_start=np.full(R, np.nan), last_end=np.full(R, np.nan),
        held=np.empty(R * s_max, np.int32), held_len=np.zeros(R, np.int64))
    coh = Cohort(*new_cohort(R, s_max, int(cfg.block_size), int(cfg.ring)))
    sc = Scratch(sch_req=np.empty(s_max, np.int32), sch_new=np.empty(s_max, np.int32),
                 hit_blocks=np.empty(m, np.int32), members=np.empty(s_max, np.int64),
                 merged=np.empty(s_max, np.int32), comp=np.empty(s_max, np.int64),
                 sch_draft=np.zeros(s_max, np.int32), sch_rej=np.zeros(s_max, np.int32),
                 sch_pf=np.zeros(s_max, np.int8), spec_bits=np.empty(int(cfg.ring) if cfg.spec_k > 0 else 1, np.uint64),
                 order=np.empty(R, np.int64), cohort_blocks=np.empty(s_max, np.int32))
    host = new_host_tier(R, n_req, int(cfg.host_kv_blocks), cfg.host_load_s_per_block, cfg.host_load_latency_s, m)
    if lora is None:
        lora = new_lora(None, int(R), 0, 0, None, n_req)
    return State(out=out, pool=pool, rs=rs, qs=qs, coh=coh, sc=sc, host=host, lora=lora)
