"""What the engine consumes and produces, as plain arrays (see ``oracle/engine/README.md``).

Both the jitted engine (``oracle.engine.loop``) and the plain-Python reference
(``tests/reference/engine.py``) take an :class:`EngineInputs` and return an
:class:`EngineOutputs`, so differential tests compare them field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from oracle.kernels.arith import cdiv, log_bin  # noqa: F401 (cdiv re-exported: plain Python, no numba)


class Router(IntEnum):
    ROUND_ROBIN = 0
    LEAST_LOADED = 1
    SESSION_AFFINITY = 2
    PREFIX_AWARE = 3


ROUTER_NAMES = {"round_robin": Router.ROUND_ROBIN, "least_loaded": Router.LEAST_LOADED,
                "session_affinity": Router.SESSION_AFFINITY, "prefix_aware": Router.PREFIX_AWARE}
# A decode pool's router may also pick the replica that needs the least KV transferred
# (oracle.engine.pd); not a Router member: an aggregated engine has no such router.
LEAST_KV_TRANSFER = 4
DECODE_ROUTER_NAMES = {**ROUTER_NAMES, "least_kv_transfer": LEAST_KV_TRANSFER}


class CacheEvent(IntEnum):
    NONE = -1
    MISS_FULL = 0
    CROSS_REQUEST_HIT = 1
    CONVERSATIONAL_HIT = 2
    FULL_HIT_NO_PREFILL_NEEDED = 3
    CONVERSATIONAL_MISS_EVICTED = 4


class Status(IntEnum):
    PENDING = 0
    FINISHED = 1
    REJECTED = 2
    TIMED_OUT = 3  # the client gave up (README "Client timeouts"): aborted, or finished too late


# The steps table's columns, in order (one row per engine step; README "Outputs per request").
STEP_COLUMNS = ("replica", "start_s", "duration_s", "num_decode", "num_prefill_tokens", "num_running",
                "num_waiting", "kv_blocks_used", "kv_blocks_cached")

# ITL histogram: log-spaced bins, ITL_BINS_PER_DECADE per decade from ITL_MIN_S; bin 0 holds
# everything below ITL_MIN_S and the last bin everything above the top edge.
ITL_MIN_S = 1e-6
ITL_BINS_PER_DECADE = 100
ITL_DECADES = 10
ITL_NUM_BINS = ITL_BINS_PER_DECADE * ITL_DECADES + 2


def itl_bin(gap_s: float) -> int:
    """Histogram bin of one inter-token gap in seconds (the jitted engine's formula)."""
    return log_bin(gap_s, ITL_MIN_S, ITL_BINS_PER_DECADE, ITL_NUM_BINS)


def itl_bin_edges_s() -> np.ndarray:
    """Lower edge (seconds) of each histogram bin; bin 0's lower edge is 0."""
    k = np.arange(ITL_NUM_BINS - 1, dtype=np.float64)
    return np.concatenate([[0.0], ITL_MIN_S * 10.0 ** (k / ITL_BINS_PER_DECADE)])


@dataclass(frozen=True)
class EngineConfig:
    """One framework configuration as the engine sees it (all per replica)."""

    num_replicas: int = 1
    router: Router = Router.ROUND_ROBIN
    block_size: int = 16
    num_gpu_blocks: int = -1  # including the null block; -1 = unlimited
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 131072
    enable_chunked_prefill: bool = True
    enable_prefix_caching: bool = True
    scheduler_reserve_full_isl: bool = True  # vLLM: admit only if the whole known sequence fits
    async_scheduling: bool = False  # vLLM AsyncScheduler: step k+1 scheduled while step k runs (README)
    record_steps: bool = False
    warm_up_s: float = 0.0  # ITL gaps of requests arriving before this are not histogrammed
    # KV offload tier (README "KV offload"): host blocks per replica (0 = off; needs prefix
    # caching), seconds to load one block over the replica's host links, fixed time per load
    host_kv_blocks: int = 0
    host_load_s_per_block: float = 0.0
    host_load_latency_s: float = 0.0
    # speculative decoding (README "Speculative decoding"); k = 0: off
    num_speculative_tokens: int = 0        # k drafts per decoding request and step
    spec_num_lookahead_tokens: int = 0     # KV slots past the scheduled tokens (vLLM num_lookahead_tokens)
    spec_draft_slots: int = 0              # budget slots per scheduled request (vLLM max_num_new_slots_for_drafting)
    spec_acceptance: tuple = ()            # k per-position acceptance rates, non-increasing in (0, 1]
    spec_seed: int = 0                     # seed of the accepted lengths (oracle.engine.specdec)
    max_loras: int = 0      # LoRA: distinct adapters in a batch (GPU slots); 0 = LoRA off
    max_cpu_loras: int = 0  # LoRA: adapters cached in host memory (>= max_loras; 0: max_loras)


@dataclass
class EngineInputs:
    """Request arrays (row = request id) + block hashes for ``config.block_size`` + cost params.

    arrival_s: f8[n] seconds (NaN for follow-ups); prompt_tokens, output_tokens: i4[n];
    session: i8[n] (-1 none); turn: i4[n]; parent: i8[n] (-1 none); think_s: f8[n];
    hash_offsets: i8[n+1] (CSR) or i8[n] (start offsets: requests of one prefix chain may
    share their hashes, see ``oracle.engine.hashes``); request i's block b has hash
    ``hashes[hash_offsets[i] + b]`` for every full block of its prompt + output (chained).
    The engine reads the hashes only with prefix caching on; with it off they may be empty
    (``oracle.simulate`` does not compute them; tests/test_no_hashes.py holds this);
    cost_params: f8[:] for ``oracle.kernels.cost.step_time_s``;
    timeout_s: f8[n] seconds after its arrival at which a request's client gives up (None or
    inf: never; README "Client timeouts").
    """

    config: EngineConfig
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    session: np.ndarray
    turn: np.ndarray
    parent: np.ndarray
    think_s: np.ndarray
    hash_offsets: np.ndarray
    hashes: np.ndarray
    cost_params: np.ndarray
    timeout_s: np.ndarray | None = None  # f8[n]: the client gives up this long after arrival (inf: never)
    draft_cost_params: np.ndarray | None = None  # f8[:]: the drafter's cost parameters (None: no GPU drafter)

    def accepted_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets, accepted)`` of ``oracle.engine.specdec.accepted_table`` (empty when
        speculative decoding is off)."""
        from oracle.engine.specdec import accepted_table
        if self.config.num_speculative_tokens <= 0:
            return np.zeros(len(self), np.int64), np.zeros(0, np.int8)
        return accepted_table(self.output_tokens, self.config.spec_acceptance, self.config.spec_seed)
    lora_adapter: np.ndarray | None = None  # i4[n]: adapter of each request (-1 none; README "Multi-LoRA")
    lora_params: np.ndarray | None = None   # f8[:] for oracle.kernels.lora (with config.max_loras >= 1)

    def __len__(self) -> int:
        return int(self.prompt_tokens.shape[0])

    def max_blocks(self) -> np.ndarray:
        """i8[n]: the most blocks each request can hold, cdiv(p + o, bs), or with speculative
        decoding cdiv(min(p + o + k + lookahead, max_model_len), bs) (drafts and the drafter's
        slots; README "Speculative decoding")."""
        c = self.config
        total = self.prompt_tokens.astype(np.int64) + self.output_tokens
        if c.num_speculative_tokens > 0:
            total = np.minimum(total + c.num_speculative_tokens + c.spec_num_lookahead_tokens,
                               max(c.max_model_len, 1))
        return (total + c.block_size - 1) // c.block_size

    def resolved_num_gpu_blocks(self) -> int:
        """N per replica, including the null block (unlimited -> every request's blocks + 1)."""
        if self.config.num_gpu_blocks >= 0:
            return int(self.config.num_gpu_blocks)
        return int(self.max_blocks().sum()) + 1


@dataclass
class EngineOutputs:
    """Per-request results (row = request id) and run totals; see the README for meanings."""

    replica: np.ndarray          # i4, -1 if rejected
    admitted_s: np.ndarray       # f8, NaN if never admitted
    first_token_s: np.ndarray    # f8
    completion_s: np.ndarray     # f8
    arrival_s: np.ndarray        # f8, actual arrival (follow-ups resolved)
    cached_tokens: np.ndarray    # i4, prefix hit at first admission
    computed_tokens: np.ndarray  # i8, all tokens computed for the request (incl. recompute)
    preemptions: np.ndarray      # i4
    cache_event: np.ndarray      # i1, CacheEvent
    max_itl_s: np.ndarray        # f8, NaN with < 2 tokens
    status: np.ndarray           # i1, Status
    # vLLM PrefixCacheStats, summed over the run: admissions of never-preempted requests
    # (queries = their known tokens, hits = prefix-hit tokens) and, apart, re-admissions after
    # a preemption; all zero with prefix caching off (vLLM records no lookup then).
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    preempted_requests: int = 0
    preempted_prefix_cache_queries: int = 0
    preempted_prefix_cache_hits: int = 0
    itl_hist: np.ndarray = field(default_factory=lambda: np.zeros(ITL_NUM_BINS, np.int64))
    num_steps: int = 0
    kv_used_integral: np.ndarray | None = None  # f8[R]: ∫ blocks in use dt, per replica (block·s)
    kv_used_max: np.ndarray | None = None       # i8[R]: peak blocks in use, per replica
    sim_end_s: float = 0.0                      # time of the last step end
    diagnostics: dict[str, int] = field(default_factory=dict)  # engine work counters (benchmarks)
    # KV offload tier (README "KV offload"), zero when off: per request the tokens loaded from
    # the host at its first admission; run totals named as oracle.engine.offload.HostCounter
    # (lower case) plus the total load time
    host_cached_tokens: np.ndarray | None = None  # i4
    host: dict[str, int] = field(default_factory=dict)
    host_load_s: float = 0.0
    # speculative decoding, summed over the run (vLLM SpecDecodingStats): draft tokens
    # verified, accepted, and request-steps that verified drafts; 0 when off
    spec_drafts: int = 0
    spec_accepted: int = 0
    spec_verifications: int = 0
    steps: dict[str, np.ndarray] | None = None  # column -> array, when record_steps
    # prefill/decode disaggregation (oracle.engine.pd): per-request prefill and transfer
    # columns and per-pool totals; None for an aggregated run
    pd: dict | None = None
    # LoRA totals (None with LoRA off): gpu_loads, disk_loads, skipped_admissions (ints),
    # load_s (float), loads_by_adapter (i8[A]), adapter (i4[n], each request's; -1 none)
    lora: dict | None = None
