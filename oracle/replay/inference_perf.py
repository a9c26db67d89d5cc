"""An inference-perf result folder -> a :class:`~oracle.replay.common.ReplayPlan`.

Layout read: ``RUN/exp-config.yaml`` (the server, optional: flags or ``--server`` instead) and
``RUN/results/config.yaml`` (the load generator exactly as it ran) with one
``stage_K_lifecycle_metrics.json`` per load stage. ``RUN`` may also be the ``results`` folder.

How inference-perf 0.4 (the version of Feb 2026; read in its source) is reproduced:

* **Data** (``data.type = shared_prefix``, single turn): ``num_groups`` system prompts, each
  followed by ``num_prompts_per_group`` questions, make P prompts, shuffled once. Request i
  of *every* stage sends prompt ``i mod P`` (the data generator restarts at 0 per stage), so
  prompts repeat exactly and, after the first P requests, the prefix cache holds whole
  prompts, not just system prompts. In the workload, prompt j is two segments: its group's
  shared prefix (same key for the whole group) and its question (same key every time prompt
  j is sent); each request's output is its own segment.
* **Prompt lengths**: the prompts are random token ids decoded to text and re-tokenized by
  the server, with a BOS token: they come out longer than ``system_prompt_len +
  question_len``. The P lengths are read off the measured ``successes.prompt_len``
  distribution (every stage sends the same P prompts; the stage with the most successes and
  no failures is used), with their mean matched to 1/P token
  (:func:`~oracle.replay.common.lengths_from_percentiles`), and dealt to the prompts at random
  (seeded). The shared prefix is BOS + the system prompt scaled by the same re-tokenization
  ratio as the whole prompt (``(mean - 1) / (system_prompt_len + question_len)``); the
  question is the rest.
* **Outputs**: ``max_tokens = output_len`` with ``ignore_eos``: exactly ``output_len`` tokens.
  (``successes.output_len`` counts re-tokenized text and is not used.)
* **Arrivals** (``load.type = constant``): ``int(rate * duration)`` requests per stage with
  exponential gaps scaled to sum exactly to ``duration``; the first request one gap after
  the stage's clock zero, the last exactly ``duration`` after it. ``poisson``: per second a
  Poisson(rate) count of requests, spread the same way over that second.
* **Stages** run one after another: a stage's clock zero comes ``STAGE_GAP_S`` after every
  request of the previous one finished (see :func:`stage_gap_s`).
* **Timeout**: ``load.request_timeout``, else aiohttp's default of 300 s total; the client
  then abandons the request and counts a failure.
* **TPOT / ITL**: inference-perf timestamps each SSE *message*; this vLLM sent about two per
  output token, so its TPOT and ITL are per message. The messages per request follow from
  the stage's own figures: ``M = floor((E2E_mean - TTFT_mean) / TPOT_mean)`` gaps (about
  ``2n + 1`` for n tokens; rounded down because E2E also holds the moment after the last
  message) span the ``n - 1`` token intervals, so the per-token TPOT is
  ``TPOT x M / (n - 1)`` (the same factor for every statistic: every request has the same
  n). The pooled ITL mean converts the same way. ITL percentiles cannot be converted value
  by value: about ``z = (M - n + 1) / M`` of the message gaps are the near-zero second
  message of a token, the rest are token intervals; a message percentile q > z stands for
  the per-token quantile ``(q - z) / (1 - z)``, and is compared with that quantile of the
  simulation's per-token ITL (percentiles at or below z: not compared).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from oracle.replay.common import (MeasuredStage, PromptTable, ReplayError, ReplayPlan, StagePlan, get,
                                  lengths_from_percentiles, read_json, read_yaml)
from oracle.replay.server import resolve_server

AIOHTTP_DEFAULT_TIMEOUT_S = 300.0
#: inference-perf waits for a stage's requests by polling once a second (0.5 s late on
#: average), then sleeps ``load.interval``, then starts the next stage's timer 1 s ahead
#: ("allow generation a second to begin populating the queue").
POLL_WAIT_S = 0.5
TIMER_LEAD_S = 1.0
LOAD_TYPES = ("constant", "poisson")
STAGE_FILE = "stage_{k}_lifecycle_metrics.json"
#: stage JSON latency keys -> our metric names
_LATENCY_KEYS = {"ttft": "time_to_first_token", "tpot": "time_per_output_token", "itl": "inter_token_latency",
                 "e2e": "request_latency"}
_STAT_KEYS = {"mean": "mean", "p50": "median", "p90": "p90", "p99": "p99"}


def is_inference_perf(path: Path) -> bool:
    return path.is_dir() and ((path / "results" / "config.yaml").is_file() or (path / "config.yaml").is_file())


def stage_gap_s(interval_s: float) -> float:
    """Seconds from the last finished request of a stage to the next stage's clock zero."""
    return POLL_WAIT_S + interval_s + TIMER_LEAD_S


def load_inference_perf(path: Path, *, server_file: Path | None = None, flags: dict[str, Any] | None = None,
                        seed: int = 0, timeout_s: float | None = None) -> ReplayPlan:
    """Read an inference-perf result folder (module docstring) into a replay plan."""
    path = Path(path)
    results = path / "results" if (path / "results" / "config.yaml").is_file() else path
    cfg_path = results / "config.yaml"
    if not cfg_path.is_file():
        raise ReplayError("not an inference-perf result: no results/config.yaml or config.yaml here", file=path)
    cfg = read_yaml(cfg_path)
    if not isinstance(cfg, dict):
        raise ReplayError("must be a mapping (inference-perf's config)", file=cfg_path)
    run_dir = results.parent if results.name == "results" else results
    if server_file is None and (run_dir / "exp-config.yaml").is_file():
        server_file = run_dir / "exp-config.yaml"

    notes: list[str] = []
    data_type = get(cfg, "data.type", file=cfg_path, kind=str)
    if data_type != "shared_prefix":
        raise ReplayError(f"data type {data_type!r} is not supported by oracle replay yet (only shared_prefix)",
                          file=cfg_path, key="data.type")
    sp = get(cfg, "data.shared_prefix", file=cfg_path, kind=dict)
    if sp.get("enable_multi_turn_chat"):
        raise ReplayError("multi-turn chat sessions are not supported by oracle replay yet", file=cfg_path,
                          key="data.shared_prefix.enable_multi_turn_chat")
    num_groups = get(cfg, "data.shared_prefix.num_groups", file=cfg_path, kind=int, lo=1)
    per_group = get(cfg, "data.shared_prefix.num_prompts_per_group", file=cfg_path, kind=int, lo=1)
    sys_len = get(cfg, "data.shared_prefix.system_prompt_len", file=cfg_path, kind=int, lo=0)
    q_len = get(cfg, "data.shared_prefix.question_len", file=cfg_path, kind=int, lo=1)
    out_len = get(cfg, "data.shared_prefix.output_len", file=cfg_path, kind=int, lo=1)
    load_type = get(cfg, "load.type", file=cfg_path, kind=str)
    if load_type not in LOAD_TYPES:
        raise ReplayError(f"load type {load_type!r} is not supported by oracle replay yet "
                          f"(supported: {', '.join(LOAD_TYPES)})", file=cfg_path, key="load.type")
    stages_raw = get(cfg, "load.stages", file=cfg_path, kind=list)
    if not stages_raw:
        raise ReplayError("has no stages", file=cfg_path, key="load.stages")
    if get(cfg, "load.sweep", file=cfg_path, kind=dict, required=False) is not None:
        raise ReplayError("a sweep chose the stages at run time; oracle replay needs explicit stages",
                          file=cfg_path, key="load.sweep")
    interval = float(get(cfg, "load.interval", file=cfg_path, required=False, default=1.0, lo=0.0))
    recorded_timeout = get(cfg, "load.request_timeout", file=cfg_path, required=False, lo=0.0)
    if timeout_s is None:
        timeout_s = float(recorded_timeout) if recorded_timeout else AIOHTTP_DEFAULT_TIMEOUT_S
    if cfg.get("server", {}).get("ignore_eos") is False:
        notes.append("server.ignore_eos is false: real outputs may have stopped before output_len; the replay "
                      f"generates exactly {out_len} tokens per request")
    model_name = (get(cfg, "server.model_name", file=cfg_path, kind=str, required=False)
                  or get(cfg, "tokenizer.pretrained_model_name_or_path", file=cfg_path, kind=str, required=False))
    server, server_notes = resolve_server(recorded_model=model_name, recorded_model_where="config.yaml server.model_name",
                                          server_file=server_file, flags=flags or {})
    notes += server_notes

    stage_docs = []
    for k, st in enumerate(stages_raw):
        key = f"load.stages.{k}"
        if not isinstance(st, dict):
            raise ReplayError("must be a mapping with rate and duration", file=cfg_path, key=key)
        rate = float(get(cfg, f"{key}.rate", file=cfg_path, lo=0.0))
        duration = float(get(cfg, f"{key}.duration", file=cfg_path, lo=0.0))
        if not (math.isfinite(rate) and rate > 0 and math.isfinite(duration) and duration > 0):
            raise ReplayError(f"rate and duration must be finite and > 0, got {rate:g} and {duration:g}",
                              file=cfg_path, key=key)
        stage_path = results / STAGE_FILE.format(k=k)
        doc = read_json(stage_path)
        if not isinstance(doc, dict):
            raise ReplayError("must be a JSON object", file=stage_path)
        stage_docs.append((rate, duration, stage_path, doc))

    rng = np.random.default_rng(seed)
    prompts, prompt_note = _prompt_table(stage_docs, num_groups=num_groups, per_group=per_group,
                                         sys_len=sys_len, q_len=q_len, rng=rng)
    num_prompts = num_groups * per_group
    stages = []
    for k, (rate, duration, stage_path, doc) in enumerate(stage_docs):
        arrival = _arrivals(load_type, rate, duration, rng)
        n = arrival.shape[0]
        if n == 0:
            raise ReplayError("int(rate x duration) = 0 requests", file=cfg_path, key=f"load.stages.{k}")
        pid = np.arange(n, dtype=np.int64) % num_prompts
        measured = measured_stage(doc, stage_path, output_len=out_len)
        stages.append(StagePlan(index=k, label=f"stage {k}: {rate:g} req/s x {duration:g} s", rate=rate,
                                duration_s=duration, arrival_s=arrival, prompt_id=pid,
                                prompt_tokens=prompts.prompt_tokens[pid],
                                output_tokens=np.full(n, out_len, np.int32), measured=measured))

    gap = stage_gap_s(interval)
    notes += [
        f"prompts: {num_prompts} = {num_groups} system prompts x {per_group} questions, shuffled once (seed "
        f"{seed}); request i of every stage sends prompt i mod {num_prompts}, so whole prompts repeat "
        "(inference-perf shared_prefix)",
        prompt_note,
        f"outputs: exactly output_len = {out_len} tokens per request (ignore_eos); the recorded "
        "successes.output_len (re-tokenized text) is not used",
        ("arrivals: int(rate x duration) requests per stage, exponential gaps scaled to sum exactly to the "
         "duration (load.type constant)" if load_type == "constant" else
         "arrivals: per second a Poisson(rate) number of requests, exponential gaps scaled to that second, "
         "int(rate x duration) requests (load.type poisson)"),
        f"stages: each stage's clock starts {gap:g} s after the previous stage's last request finished "
        f"(inference-perf polls every 1 s: {POLL_WAIT_S:g} s late on average, then load.interval = "
        f"{interval:g} s, then a {TIMER_LEAD_S:g} s lead); the KV cache carries over",
        f"timeout: the client abandons a request after {timeout_s:g} s "
        + ("(load.request_timeout)" if recorded_timeout else "(aiohttp's default; load.request_timeout not set)"),
    ]
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", run_dir.name).strip("-") or "replay"
    return ReplayPlan(kind="inference-perf", source=path, name=name, server=server, stages=stages, prompts=prompts,
                      timeout_s=float(timeout_s), stage_gap_s=gap, throughput_from="first_request", notes=notes,
                      details={"num_groups": num_groups, "num_prompts_per_group": per_group,
                               "system_prompt_len": sys_len, "question_len": q_len, "output_len": out_len,
                               "load_type": load_type, "interval_s": interval})


def _arrivals(load_type: str, rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Send times (s after the stage's clock zero) as inference-perf's timers draw them."""
    n = int(rate * duration)
    if n == 0:
        return np.zeros(0)
    if load_type == "constant":
        gaps = rng.exponential(1.0 / rate, n)
        return np.cumsum(gaps * (duration / gaps.sum()))
    times = []   # poisson: Poisson(rate) requests per second, each second's gaps summing to 1 s
    second = 0.0
    count = 0
    while count < n:
        c = int(rng.poisson(rate))
        if c >= 1:
            gaps = rng.exponential(1.0 / c, c)
            times.append(second + np.cumsum(gaps / gaps.sum()))
            count += c
        second += 1.0
    return np.concatenate(times)[:n]


def _prompt_table(stage_docs, *, num_groups: int, per_group: int, sys_len: int, q_len: int,
                  rng: np.random.Generator) -> tuple[PromptTable, str]:
    """The P prompts: lengths from the measured prompt_len (module docstring), in shuffled order."""
    num_prompts = num_groups * per_group
    best = None   # (no failures, successes, k, summary)
    for k, (_, _, _, doc) in enumerate(stage_docs):
        summary = (doc.get("successes") or {}).get("prompt_len")
        ok = (doc.get("successes") or {}).get("count") or 0
        failed = (doc.get("failures") or {}).get("count") or 0
        if isinstance(summary, dict) and isinstance(summary.get("mean"), (int, float)) and summary["mean"] >= 1:
            cand = (failed == 0, ok, -k, summary)
            if best is None or cand[:3] > best[:3]:
                best = cand
    lengths = lengths_from_percentiles(best[3], num_prompts) if best is not None else None
    config_total = sys_len + q_len
    if lengths is None:
        lengths = np.full(num_prompts, config_total + 1, np.int64)
        where = "no stage recorded successes.prompt_len: system_prompt_len + question_len + 1 (BOS) each"
        ratio = 1.0
    else:
        k = -best[2]
        ratio = (float(lengths.mean()) - 1.0) / config_total
        where = (f"read off stage {k}'s measured successes.prompt_len (mean {best[3]['mean']:.2f}, "
                 f"{int(lengths.min())}..{int(lengths.max())} tokens)")
    prefix = 1 + int(round(sys_len * ratio))
    lengths = np.maximum(lengths, prefix + 1)
    # generation order: prompt (g, q) = g * per_group + q; random.shuffle once -> a permutation
    order = rng.permutation(num_prompts)
    group = (order // per_group).astype(np.int64)
    question = (rng.permutation(lengths) - prefix).astype(np.int32)
    table = PromptTable(group=group, prefix_tokens=np.full(num_groups, prefix, np.int32), question_tokens=question)
    note = (f"prompt lengths: {where}; each prompt = a {prefix}-token prefix shared by its group (BOS + "
            f"system_prompt_len {sys_len} x {ratio:.3f}, the re-tokenization ratio of the whole prompt) + its own "
            f"question ({question.mean():.1f} tokens on average; config: {sys_len} + {q_len})")
    return table, note


def measured_stage(doc: dict, path: Path, *, output_len: int) -> MeasuredStage:
    """The stage's recorded figures in ms, TPOT/ITL converted per token (module docstring)."""
    succ = doc.get("successes")
    if not isinstance(succ, dict):
        raise ReplayError("missing key", file=path, key="successes")
    ok = int(get(succ, "count", file=path, kind=int, lo=0))
    failures = doc.get("failures") if isinstance(doc.get("failures"), dict) else {}
    failed = int(failures.get("count") or 0)
    latency = succ.get("latency") if isinstance(succ.get("latency"), dict) else {}
    recorded: dict[str, dict[str, float | None]] = {}
    for metric, key in _LATENCY_KEYS.items():
        block = latency.get(key) if isinstance(latency.get(key), dict) else {}
        recorded[metric] = {}
        for stat, skey in _STAT_KEYS.items():
            v = block.get(skey)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ReplayError(f"must be a number, got {v!r}", file=path, key=f"successes.latency.{key}.{skey}")
            recorded[metric][stat] = float(v) * 1e3 if v is not None else None
    if ok > 0 and recorded["e2e"]["mean"] is None:
        raise ReplayError("missing key", file=path, key="successes.latency.request_latency.mean")

    conversion, factor, z = _conversion(recorded, output_len)
    latency_ms = {m: dict(v) for m, v in recorded.items()}
    token_q: dict[str, float | None] = {}
    if factor is not None:
        latency_ms["tpot"] = {s: (v * factor if v is not None else None) for s, v in recorded["tpot"].items()}
        itl_mean = recorded["itl"]["mean"]
        latency_ms["itl"] = {"mean": itl_mean * factor if itl_mean is not None else None}
        for stat, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99)):
            qt = (q - z) / (1.0 - z) if q > z else None
            token_q[stat] = qt
            latency_ms["itl"][stat] = recorded["itl"][stat] if qt is not None else None
    thr = succ.get("throughput") if isinstance(succ.get("throughput"), dict) else {}
    rps = thr.get("requests_per_sec")
    prompt = succ.get("prompt_len") if isinstance(succ.get("prompt_len"), dict) else {}
    notes = []
    if failed:
        notes.append(f"{failed} of {ok + failed} requests failed (timed out): the measured figures cover the "
                     f"{ok} successes only")
    return MeasuredStage(
        count_ok=ok, count_failed=failed, latency_ms=latency_ms, recorded_ms=recorded,
        requests_per_s=float(rps) if isinstance(rps, (int, float)) else None,
        output_tokens_per_s=float(rps) * output_len if isinstance(rps, (int, float)) else None,
        recorded_output_tokens_per_s=_num(thr.get("output_tokens_per_sec")),
        input_tokens_per_s=_num(thr.get("input_tokens_per_sec")),
        prompt_len_mean=_num(prompt.get("mean")), conversion=conversion, itl_token_quantiles=token_q, notes=notes)


def _conversion(recorded: dict, n: int) -> tuple[dict[str, Any], float | None, float]:
    """Messages per request from the stage's own means; the per-token factor ``M / (n - 1)``."""
    ttft, tpot, e2e = recorded["ttft"]["mean"], recorded["tpot"]["mean"], recorded["e2e"]["mean"]
    info: dict[str, Any] = {"unit_recorded": "message", "output_tokens": n, "expected_gaps_2n_plus_1": 2 * n + 1}
    if n < 2 or not tpot or ttft is None or e2e is None:
        info.update(factor=None, reason="TPOT, TTFT or E2E not recorded, or fewer than 2 output tokens")
        return info, None, 0.0
    m_est = (e2e - ttft) / tpot
    # E2E also holds the moment between the last message and the end of the response, so the
    # estimate exceeds the true gap count by a fraction: round down
    m = max(int(math.floor(m_est + 1e-6)), n - 1)
    factor = m / (n - 1)
    info.update(message_gaps_per_request=m, message_gaps_estimate=m_est, factor=factor,
                zero_gap_fraction=(m - n + 1) / m,
                formula="per-token = per-message x M / (n - 1), M = floor((E2E_mean - TTFT_mean) / TPOT_mean)")
    return info, factor, (m - n + 1) / m


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


__all__ = ["load_inference_perf", "is_inference_perf", "measured_stage", "stage_gap_s"]
