"""A ``vllm bench serve`` result JSON -> a :class:`~oracle.replay.common.ReplayPlan`.

Fields read (vLLM's ``--save-result`` layout): ``model_id`` (the server's model),
``num_prompts``, ``request_rate`` (a number or ``"inf"``), ``burstiness`` (default 1),
``max_concurrency`` (null: no cap), ``duration``, ``completed``, ``failed``,
``request_throughput``, ``output_throughput``, ``total_input_tokens``,
``total_output_tokens``, ``{mean,median,std,pNN}_{ttft,tpot,itl,e2el}_ms``, and with
``--save-detailed`` the per-request ``input_lens``, ``output_lens``, ``ttfts`` (s) and ``itls``
(lists of s). ``date``, ``backend``, ``tokenizer_id`` and ``ramp_up_*`` are reported or checked.

How the benchmark is reproduced:

* **Requests**: request i has ``input_lens[i]`` prompt and ``output_lens[i]`` output tokens,
  in send order. The random dataset draws random token ids per prompt, so no two prompts
  share a prefix (a dataset with shared prefixes, e.g. ``--random-prefix-len``, is not
  recorded in the file and is not reproduced). Without ``--save-detailed`` every request
  gets the mean lengths (``total_*_tokens / completed``): an approximation, said so in the
  notes. A failed request (output length 0) gets the mean output length of the successes.
* **Arrivals** (vLLM's ``get_request``): gaps drawn from a gamma distribution of shape
  ``burstiness`` and mean ``1 / request_rate`` (Poisson at burstiness 1), accumulated and
  scaled so that the last request is sent exactly ``num_prompts / request_rate`` after the
  start; ``request_rate = inf`` sends everything at once.
* **max_concurrency** caps the requests in flight on the client (a closed loop: request i
  waits until one of the earlier ones finishes). The simulator has no client-side
  concurrency cap yet, so a result with ``max_concurrency < num_prompts`` is refused rather
  than replayed as something else.
* **Metrics**: vLLM's TPOT is per output token already (``(e2e - ttft) / (n - 1)``); its ITL
  is per streamed chunk, compared as is. Percentiles the file lacks (p90 unless
  ``--metric-percentiles`` asked for it) are computed from the per-request details when
  saved. Throughput is over the benchmark's duration (from its start to the last response).
* **Timeout**: vLLM's client waits 6 hours; nothing times out in practice.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from oracle.replay.common import (MeasuredStage, ReplayError, ReplayPlan, StagePlan, get, read_json, stats_ms)
from oracle.replay.server import resolve_server

VLLM_CLIENT_TIMEOUT_S = 6 * 3600.0
_METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2e": "e2el"}
_STATS = {"mean": "mean", "p50": "median", "p90": "p90", "p99": "p99"}


def is_vllm_bench(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".json"


def load_vllm_bench(path: Path, *, server_file: Path | None = None, flags: dict[str, Any] | None = None,
                    seed: int = 0, timeout_s: float | None = None) -> ReplayPlan:
    """Read a ``vllm bench serve`` result (module docstring) into a one-stage replay plan."""
    path = Path(path)
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise ReplayError("must be a JSON object (a vllm bench serve result)", file=path)
    if "request_rate" not in doc or "num_prompts" not in doc:
        raise ReplayError("not a vllm bench serve result: missing key 'request_rate' or 'num_prompts'", file=path)
    notes: list[str] = []
    num_prompts = int(get(doc, "num_prompts", file=path, kind=int, lo=1))
    rate = float(get(doc, "request_rate", file=path, lo=0.0))
    if rate <= 0 or math.isnan(rate):
        raise ReplayError(f"must be > 0 or \"inf\", got {doc['request_rate']!r}", file=path, key="request_rate")
    burstiness = float(get(doc, "burstiness", file=path, required=False, default=1.0, lo=0.0))
    if burstiness <= 0:
        raise ReplayError(f"must be > 0, got {burstiness:g}", file=path, key="burstiness")
    max_conc = get(doc, "max_concurrency", file=path, kind=int, required=False, lo=1)
    if max_conc is not None and max_conc < num_prompts:
        raise ReplayError(f"max_concurrency = {max_conc} caps the client's requests in flight (a closed loop); "
                          "the simulator cannot model a client-side concurrency cap yet, so this result is not "
                          "replayed", file=path, key="max_concurrency")
    if doc.get("ramp_up_strategy"):
        raise ReplayError(f"a request rate ramp ({doc['ramp_up_strategy']!r}) is not supported by oracle replay "
                          "yet", file=path, key="ramp_up_strategy")
    completed = int(get(doc, "completed", file=path, kind=int, lo=0))
    failed = int(doc.get("failed") or max(num_prompts - completed, 0))

    inp, out, detailed = _lengths(doc, path, num_prompts, completed, notes)
    n = inp.shape[0]
    rng = np.random.default_rng(seed)
    arrival = _arrivals(n, rate, burstiness, rng)

    model_id = get(doc, "model_id", file=path, kind=str, required=False)
    server, server_notes = resolve_server(recorded_model=model_id, recorded_model_where=f"{path.name} model_id",
                                          server_file=server_file, flags=flags or {})
    notes += server_notes
    if server_file is None:
        unset = [k for k in ("tp", "max_num_seqs", "max_num_batched_tokens") if server.sources.get(k) == "default"]
        if unset:
            notes.append("the result does not record the server's settings: "
                         + ", ".join(f"{k} = {getattr(server, k)}" for k in unset)
                         + " are the project's vLLM defaults; give --server or the flags for the real ones")

    measured = _measured(doc, path, completed, failed, detailed)
    rate_txt = "inf" if math.isinf(rate) else f"{rate:g}"
    stage = StagePlan(index=0, label=f"{n} prompts at {rate_txt} req/s", rate=None if math.isinf(rate) else rate,
                      duration_s=_num(doc.get("duration")), arrival_s=arrival, prompt_id=np.full(n, -1, np.int64),
                      prompt_tokens=inp, output_tokens=out, measured=measured)
    notes += [
        "prompts: random-dataset prompts, no prefix shared between requests" + ("" if detailed else
                                                                                "; per-request lengths "
                                                                                "not saved (no --save-detailed)"),
        ("arrivals: all requests at once (request_rate = inf)" if math.isinf(rate) else
         f"arrivals: gamma gaps (burstiness {burstiness:g}, mean {1 / rate:.4g} s) scaled so the last request is "
         f"sent {n / rate:.4g} s after the start, as vllm bench serve does"),
        "TPOT: vllm bench reports it per output token already (conversion factor 1); ITL is per streamed chunk",
    ]
    if timeout_s is None:
        timeout_s = VLLM_CLIENT_TIMEOUT_S
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-") or "replay"
    details = {k: doc.get(k) for k in ("date", "backend", "model_id", "tokenizer_id", "num_prompts", "request_rate",
                                       "burstiness", "max_concurrency", "duration")}
    return ReplayPlan(kind="vllm-bench", source=path, name=name, server=server, stages=[stage], prompts=None,
                      timeout_s=float(timeout_s), stage_gap_s=0.0, throughput_from="stage_start", notes=notes,
                      details=details)


def _lengths(doc: dict, path: Path, num_prompts: int, completed: int, notes: list[str]):
    """``(input, output, detailed)`` token counts per request, in send order."""
    if doc.get("input_lens") is not None or doc.get("output_lens") is not None:
        inp = _int_list(doc, "input_lens", path, lo=1)
        out = _int_list(doc, "output_lens", path, lo=0)
        if inp.shape != out.shape:
            raise ReplayError(f"has {out.shape[0]} entries but input_lens has {inp.shape[0]}", file=path,
                              key="output_lens")
        bad = out == 0
        if bad.all():
            raise ReplayError("every request failed (output length 0): nothing to replay", file=path,
                              key="output_lens")
        if bad.any():
            fill = int(round(out[~bad].mean()))
            out = np.where(bad, fill, out)
            notes.append(f"{int(bad.sum())} failed requests (output length 0) replayed with the successes' mean "
                         f"output length, {fill} tokens")
        return inp.astype(np.int32), out.astype(np.int32), True
    if completed < 1:
        raise ReplayError("no request completed: nothing to replay", file=path, key="completed")
    tin = get(doc, "total_input_tokens", file=path, kind=int, lo=1)
    tout = get(doc, "total_output_tokens", file=path, kind=int, lo=1)
    mi, mo = max(1, round(tin / completed)), max(1, round(tout / completed))
    notes.append(f"approximated: no per-request lengths (input_lens/output_lens; run vllm bench serve with "
                 f"--save-detailed): every request gets the mean lengths, {mi} prompt and {mo} output tokens")
    return np.full(num_prompts, mi, np.int32), np.full(num_prompts, mo, np.int32), False


def _int_list(doc: dict, key: str, path: Path, *, lo: int) -> np.ndarray:
    v = doc.get(key)
    if not isinstance(v, list) or not v:
        raise ReplayError("must be a non-empty list of integers", file=path, key=key)
    for i, x in enumerate(v):
        if isinstance(x, bool) or not isinstance(x, int) or x < lo:
            raise ReplayError(f"must be integers >= {lo}; entry {i} is {x!r}", file=path, key=key)
    return np.asarray(v, np.int64)


def _arrivals(n: int, rate: float, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """Send times (s from the benchmark's start), vLLM ``get_request`` with no ramp-up."""
    if math.isinf(rate):
        return np.zeros(n)
    if math.isinf(burstiness):
        delays = np.full(n, 1.0 / rate)
    else:
        delays = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    t = np.cumsum(delays)
    return t * ((n / rate) / t[-1])


def _measured(doc: dict, path: Path, completed: int, failed: int, detailed: bool) -> MeasuredStage:
    recorded: dict[str, dict[str, float | None]] = {}
    for metric, key in _METRICS.items():
        recorded[metric] = {}
        for stat, skey in _STATS.items():
            v = doc.get(f"{skey}_{key}_ms")
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ReplayError(f"must be a number, got {v!r}", file=path, key=f"{skey}_{key}_ms")
            recorded[metric][stat] = float(v) if v is not None else None
    notes = []
    if detailed and isinstance(doc.get("ttfts"), list) and isinstance(doc.get("itls"), list):
        filled = _fill_from_details(doc, recorded)
        if filled:
            notes.append("computed from the per-request details (not in the file's summary): " + ", ".join(filled))
    if failed:
        notes.append(f"{failed} requests failed: the measured figures cover the {completed} completed ones")
    latency = {m: dict(v) for m, v in recorded.items()}
    return MeasuredStage(count_ok=completed, count_failed=failed, latency_ms=latency, recorded_ms=recorded,
                         requests_per_s=_num(doc.get("request_throughput")),
                         output_tokens_per_s=_num(doc.get("output_throughput")),
                         recorded_output_tokens_per_s=_num(doc.get("output_throughput")),
                         input_tokens_per_s=(_num(doc.get("total_input_tokens")) / doc["duration"]
                                             if _num(doc.get("total_input_tokens")) and _num(doc.get("duration"))
                                             else None),
                         conversion={"unit_recorded": "token", "factor": 1.0}, notes=notes)


def _fill_from_details(doc: dict, recorded: dict) -> list[str]:
    """Fill missing statistics from ``ttfts`` / ``itls`` / ``output_lens`` (successes only)."""
    ttfts, itls, outs = doc["ttfts"], doc["itls"], doc.get("output_lens") or []
    if len(ttfts) != len(itls) or len(outs) != len(ttfts):
        return []
    ok = [i for i, o in enumerate(outs) if isinstance(o, int) and o > 0 and isinstance(ttfts[i], (int, float))
          and isinstance(itls[i], list)]
    if not ok:
        return []
    ttft = np.array([ttfts[i] for i in ok], np.float64) * 1e3
    span = np.array([sum(itls[i]) for i in ok], np.float64) * 1e3
    n = np.array([outs[i] for i in ok], np.float64)
    per = {"ttft": ttft, "e2e": ttft + span,
           "tpot": np.where(n > 1, span / np.maximum(n - 1, 1), np.nan),
           "itl": np.array([x for i in ok for x in itls[i]], np.float64) * 1e3}
    filled = []
    for metric, values in per.items():
        st = stats_ms(values)
        for stat in ("mean", "p50", "p90", "p99"):
            if recorded[metric][stat] is None and st[stat] is not None:
                recorded[metric][stat] = st[stat]
                filled.append(f"{metric} {stat}")
    return filled


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
