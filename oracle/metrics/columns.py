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
