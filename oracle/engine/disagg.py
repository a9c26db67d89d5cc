"""Prefill/decode disaggregation, the plain-Python half: the inputs of a disaggregated run and
how the two pools' outputs become one request table (README "Prefill/decode disaggregation").

Shared by the jitted engine (``oracle.engine.pd``) and the reference
(``tests/reference/engine.py``), so both produce their outputs the same way.

    PDInputs(prefill=EngineInputs, decode=EngineInputs, link=KvLink)
    prefill_view(inputs)       the prefill pool's requests: output 1, no follow-ups
    combine_outputs(...)       one EngineOutputs: client-facing times + the ``pd`` columns
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from oracle.engine.inputs import LEAST_KV_TRANSFER, EngineInputs, EngineOutputs, Status

@dataclass(frozen=True)
class KvLink:
    """The link a decode replica pulls a request's KV over (all of the replica's GPUs together).

    A transfer of b bytes occupies the link ``overhead_s + b / bandwidth_bytes_s`` and is
    complete ``latency_s`` after that."""

    bytes_per_token: float       # KV bytes of one token, all layers, whole model
    bandwidth_bytes_s: float     # bytes per second
    latency_s: float = 0.0
    overhead_s: float = 0.0      # per transfer (descriptor set-up, notification)

    def as_array(self) -> np.ndarray:
        return np.array([self.bytes_per_token, self.bandwidth_bytes_s, self.latency_s, self.overhead_s],
                        np.float64)


@dataclass
class PDInputs:
    """A disaggregated run: the workload twice (one per pool, each with its own config and
    cost parameters; the request arrays are the same) and the link between the pools.
    ``prefill`` and ``decode`` must share ``block_size`` and the block hashes."""

    prefill: EngineInputs
    decode: EngineInputs
    link: KvLink

    def __len__(self) -> int:
        return len(self.decode)


def prefill_view(inputs: EngineInputs) -> EngineInputs:
    """The requests as the prefill pool sees them: the prompt with ``max_tokens = 1`` (vLLM's
    P/D proxy), no follow-ups (a follow-up waits for its parent's *decode*, which the decode
    pool's state releases) and no client deadline."""
    n = len(inputs)
    return dataclasses.replace(inputs, output_tokens=np.ones(n, np.int32), parent=np.full(n, -1, np.int64),
                               timeout_s=None)


def check_pd_inputs(inputs: PDInputs) -> None:
    """Raise ValueError for inputs the disaggregated engine does not take."""
    p, d = inputs.prefill.config, inputs.decode.config
    if p.block_size != d.block_size:
        raise ValueError("prefill and decode pools need the same block_size")
    if inputs.decode.timeout_s is not None and np.isfinite(inputs.decode.timeout_s).any():
        raise ValueError("client timeouts are not modelled with prefill/decode pools")
    if p.router == LEAST_KV_TRANSFER:
        raise ValueError("least_kv_transfer routes decode pools only")
    if inputs.link.bandwidth_bytes_s <= 0:
        raise ValueError("the KV link needs a positive bandwidth")


def combine_outputs(out_p: EngineOutputs, out_d: EngineOutputs, transfers: dict[str, np.ndarray],
                    num_prefill_replicas: int) -> EngineOutputs:
    """One :class:`EngineOutputs` of a disaggregated run.

    ``out_p``/``out_d``: each pool's outputs (request rows = ids; the decode pool's
    ``arrival_s`` is the client's arrival); ``transfers``: ``prefill_end_s``, ``start_s``,
    ``end_s``, ``tokens``, ``bytes`` per request (NaN / 0 where none). The client sees its
    first token from the decode pool (README); replicas ``0..P-1`` of the steps table and of
    the KV series are the prefill pool's, ``P..`` the decode pool's.
    """
    rejected = out_d.status == int(Status.REJECTED)
    steps = None
    if out_p.steps is not None and out_d.steps is not None:
        steps = {}
        for name in out_p.steps:
            d_col = out_d.steps[name] + (num_prefill_replicas if name == "replica" else 0)
            steps[name] = np.concatenate([out_p.steps[name], d_col.astype(out_p.steps[name].dtype)])
        order = np.lexsort((steps["replica"], steps["start_s"]))
        steps = {k: v[order] for k, v in steps.items()}
    pd = {
        "prefill_replica": np.where(rejected, -1, out_p.replica).astype(np.int32),
        "prefill_admitted_s": out_p.admitted_s,
        "prefill_end_s": transfers["prefill_end_s"],
        "transfer_start_s": transfers["start_s"],
        "transfer_end_s": transfers["end_s"],
        "transfer_tokens": transfers["tokens"].astype(np.int64),
        "transfer_bytes": transfers["bytes"].astype(np.float64),
        "decode_admitted_s": out_d.admitted_s,
        "prefill_computed_tokens": out_p.computed_tokens,
        "decode_computed_tokens": out_d.computed_tokens,
        "num_prefill_replicas": int(num_prefill_replicas),
        "pools": {"prefill": _pool_totals(out_p), "decode": _pool_totals(out_d)},
    }

    def both(name: str):
        return getattr(out_p, name) + getattr(out_d, name)

    def concat(name: str):
        a, b = getattr(out_p, name), getattr(out_d, name)
        return None if a is None or b is None else np.concatenate([a, b])

    return EngineOutputs(
        replica=out_d.replica, admitted_s=out_p.admitted_s, first_token_s=out_d.first_token_s,
        completion_s=out_d.completion_s, arrival_s=out_d.arrival_s, cached_tokens=out_p.cached_tokens,
        computed_tokens=both("computed_tokens"), preemptions=both("preemptions"), cache_event=out_p.cache_event,
        max_itl_s=out_d.max_itl_s, status=out_d.status,
        prefix_cache_queries=both("prefix_cache_queries"), prefix_cache_hits=both("prefix_cache_hits"),
        preempted_requests=both("preempted_requests"),
        preempted_prefix_cache_queries=both("preempted_prefix_cache_queries"),
        preempted_prefix_cache_hits=both("preempted_prefix_cache_hits"),
        itl_hist=out_d.itl_hist, num_steps=out_p.num_steps + out_d.num_steps,
        kv_used_integral=concat("kv_used_integral"), kv_used_max=concat("kv_used_max"),
        sim_end_s=max(out_p.sim_end_s, out_d.sim_end_s),
        diagnostics={k: out_p.diagnostics.get(k, 0) + v for k, v in out_d.diagnostics.items()},
        steps=steps, pd=pd)


def _pool_totals(out: EngineOutputs) -> dict:
    """A pool's run totals kept apart in ``pd["pools"]`` (the combined ones are sums)."""
    return {"num_steps": int(out.num_steps), "prefix_cache_queries": int(out.prefix_cache_queries),
            "prefix_cache_hits": int(out.prefix_cache_hits), "preemptions": int(out.preemptions.sum()),
            "kv_used_integral": out.kv_used_integral, "kv_used_max": out.kv_used_max}
