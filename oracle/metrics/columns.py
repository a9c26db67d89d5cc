"""Column names and labels, defined once (requests.parquet, steps.parquet, CSV, comparison)."""

from __future__ import annotations

from oracle.engine.inputs import STEP_COLUMNS, CacheEvent, Status  # noqa: F401 (re-exported)

REQUEST_COLUMNS = (
    "request_id", "client", "session", "turn", "replica", "arrival_s", "admitted_s", "first_token_s",
    "completion_s", "prompt_tokens", "cached_tokens", "output_tokens", "preemptions", "cache_event",
    "ttft_ms", "tpot_ms", "e2e_ms", "max_itl_ms", "status", "computed_tokens", "prefilled_tokens", "warm_up",
)
# appended with LoRA (a framework with enable_lora serving a workload that names adapters)
LORA_REQUEST_COLUMNS = ("lora_adapter",)   # adapter id (-1: the base model)

# Extra columns of a disaggregated framework (prefill pool, KV transfer, decode pool), after
# REQUEST_COLUMNS; the TTFT split: queue (arrival -> prefill admission), prefill (-> the prefill
# pool's token), transfer (-> KV in the decode replica, link queueing included), decode (-> the
# decode pool's first token: its queue and first step).
PD_REQUEST_COLUMNS = (
    "prefill_replica", "prefill_admitted_s", "prefill_end_s", "transfer_start_s", "transfer_end_s",
    "transfer_tokens", "transfer_bytes", "decode_admitted_s", "ttft_queue_ms", "ttft_prefill_ms",
    "ttft_transfer_ms", "ttft_decode_ms",
)

# The original LLMPerfOracle's requests CSV, in its column order; extra columns follow.
LEGACY_CSV_COLUMNS = (
    "request_id", "client_id", "session_id", "prompt_tokens", "max_output_tokens", "output_tokens",
    "arrival_time", "first_token_time", "completion_time", "status", "ttft_ms", "tpot_ms", "e2e_latency_ms",
    "prefix_cache_event", "cached_prefix_length", "tokens_actually_prefilled",
)

# The labels of the engine's codes in the tables: the IntEnum member names (statuses in lower case).
CACHE_EVENT_NAMES = {int(e): e.name for e in CacheEvent}
STATUS_NAMES = {int(s): s.name.lower() for s in Status}  # pending, finished, rejected, timed_out

PERCENTILES = (50, 90, 95, 99)
