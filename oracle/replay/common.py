"""Data shared by the replay converters: server settings, stages, measured figures, the plan.

A converter (``inference_perf``, ``vllm_bench``) reads a benchmark result and returns a
:class:`ReplayPlan`: the server the benchmark ran against (:class:`ServerSettings`), the load
stages in order (:class:`StagePlan`: when each request arrives relative to the stage's own
clock, which prompt it sends and how many tokens it gets back) and, per stage, what the
benchmark measured (:class:`MeasuredStage`, in milliseconds, already converted to per-token
figures where the load generator reported per-message ones). ``oracle.replay.run`` turns the
plan into a scenario + workload, simulates it and compares.

Units: times in the plan are seconds (``*_s``); measured latencies are milliseconds (``*_ms``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oracle.errors import OracleError, read_text_file

#: the latency statistics compared (``p50`` is the median)
STATS = ("mean", "p50", "p90", "p99")
#: latency metrics compared, in table order
LATENCY_METRICS = ("ttft", "tpot", "itl", "e2e")
METRIC_LABELS = {"ttft": "TTFT", "tpot": "TPOT", "itl": "ITL", "e2e": "E2E"}


class ReplayError(OracleError):
    """A benchmark result cannot be replayed: missing file or key, bad value, or a load
    generator feature the simulator cannot reproduce (the reason says which)."""


@dataclass(frozen=True)
class ServerSettings:
    """The vLLM server a benchmark ran against, as scenario ``[[frameworks]]`` settings.

    ``model`` is the catalog name; ``model_source`` the name the benchmark recorded.
    ``sources`` says where each setting came from (``exp-config.yaml``, ``--tp``, ``default``).
    """

    model: str
    model_source: str
    tp: int = 1
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    num_gpu_blocks: int | None = None
    block_size: int = 16
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    async_scheduling: bool | None = None  # None: the framework catalog's (vLLM: on, its default since v0.14)
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def framework_table(self) -> dict[str, Any]:
        """The ``[[frameworks]]`` entry of the replay scenario."""
        fw: dict[str, Any] = {"name": "vllm", "tp": self.tp, "max_num_seqs": self.max_num_seqs,
                              "max_num_batched_tokens": self.max_num_batched_tokens,
                              "gpu_memory_utilization": self.gpu_memory_utilization,
                              "block_size": self.block_size,
                              "enable_prefix_caching": self.enable_prefix_caching,
                              "enable_chunked_prefill": self.enable_chunked_prefill}
        if self.max_model_len is not None:
            fw["max_model_len"] = self.max_model_len
        if self.num_gpu_blocks is not None:
            fw["num_gpu_blocks"] = self.num_gpu_blocks
        if self.async_scheduling is not None:
            fw["async_scheduling"] = self.async_scheduling
        return fw


@dataclass
class MeasuredStage:
    """What the benchmark recorded for one stage (successful requests only, as both load
    generators report them).

    ``latency_ms[metric][stat]`` holds the figures compared with the simulation: TTFT, E2E as
    recorded; TPOT and the ITL mean per output token (converted when the load generator
    timed messages, see ``conversion``); ITL percentiles per message where they were
    measured so (``itl_token_quantiles`` then says which per-token quantile each stands for).
    ``recorded_ms`` keeps the figures exactly as the file has them (ms).
    """

    count_ok: int
    count_failed: int
    latency_ms: dict[str, dict[str, float | None]]
    recorded_ms: dict[str, dict[str, float | None]]
    requests_per_s: float | None = None
    output_tokens_per_s: float | None = None
    recorded_output_tokens_per_s: float | None = None
    input_tokens_per_s: float | None = None
    prompt_len_mean: float | None = None
    conversion: dict[str, Any] = field(default_factory=dict)
    itl_token_quantiles: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class StagePlan:
    """One load stage: its requests, in send order.

    ``arrival_s[i]``: when request i is sent, seconds after the stage's clock zero (the
    load generator's own start of the stage); ``prompt_id[i]``: index into the plan's prompt
    table, or -1 for a prompt shared with no other request; ``prompt_tokens[i]`` and
    ``output_tokens[i]``: token counts.
    """

    index: int
    label: str
    rate: float | None
    duration_s: float | None
    arrival_s: np.ndarray
    prompt_id: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    measured: MeasuredStage

    @property
    def num_requests(self) -> int:
        return int(self.arrival_s.shape[0])


@dataclass
class PromptTable:
    """Reusable prompts: prompt j = a shared prefix of group ``group[j]`` (``prefix_tokens``
    tokens, the same for every prompt of the group) + its own ``question_tokens[j]``."""

    group: np.ndarray            # i8[P]
    prefix_tokens: np.ndarray    # i4[num_groups]: tokens of each group's shared prefix
    question_tokens: np.ndarray  # i4[P]

    @property
    def prompt_tokens(self) -> np.ndarray:
        return (self.prefix_tokens[self.group] + self.question_tokens).astype(np.int32)


@dataclass
class ReplayPlan:
    """A benchmark result converted for replay (see the module docstring).

    Stage k > 0 starts ``stage_gap_s`` after the last request of stage k-1 finished (its
    clock zero; first request at ``arrival_s[0]`` after that). ``timeout_s``: the client
    abandons a request after this long. ``throughput_from``: ``"first_request"`` (throughput
    over [first send, last end], inference-perf) or ``"stage_start"`` ([clock zero, last
    end], vllm bench). ``notes``: how the conversion reproduced or approximated the load
    generator, one sentence each (printed and saved with the results).
    """

    kind: str
    source: Path
    name: str
    server: ServerSettings
    stages: list[StagePlan]
    prompts: PromptTable | None
    timeout_s: float
    stage_gap_s: float = 0.0
    throughput_from: str = "first_request"
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


# -- reading files -------------------------------------------------------------------------------

def read_yaml(path: Path) -> Any:
    import yaml
    text = _read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ReplayError(f"YAML syntax error: {problem}", file=path, line=line) from None


def read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplayError(f"JSON syntax error: {exc.msg} (column {exc.colno})", file=path, line=exc.lineno) from None


def _read_text(path: Path) -> str:
    return read_text_file(path, error=ReplayError)


def get(obj: Any, dotted: str, *, file: Path, kind: type | tuple = (int, float), required: bool = True,
        default: Any = None, lo: float | None = None) -> Any:
    """``obj[a][b]...`` for ``dotted = "a.b"``, type- and range-checked; errors name the key."""
    node = obj
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict) or node.get(part) is None:
            if required:
                raise ReplayError("missing key" if isinstance(node, dict) else "not a mapping", file=file,
                                  key=dotted)
            return default
        node = node[part]
    if kind in ((int, float), float) and isinstance(node, str) and node.strip().lower() in ("inf", "infinity"):
        node = math.inf
    if isinstance(node, bool) or not isinstance(node, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ReplayError(f"must be {_article(names)}, got {type(node).__name__} {node!r}", file=file, key=dotted)
    if lo is not None and isinstance(node, (int, float)) and not node >= lo:
        raise ReplayError(f"must be >= {lo:g}, got {node!r}", file=file, key=dotted)
    return node


def _article(names: str) -> str:
    return {"int": "an integer", "float": "a number", "int or float": "a number", "str": "a string",
            "dict": "a mapping", "list": "a list"}.get(names, names)


# -- statistics ----------------------------------------------------------------------------------

def stats_ms(values_ms: np.ndarray) -> dict[str, float | None]:
    """Mean and the STATS percentiles (NumPy's linear interpolation, as both load generators)."""
    v = np.asarray(values_ms, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {s: None for s in STATS}
    q = np.percentile(v, [50, 90, 99])
    return {"mean": float(v.mean()), "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2])}


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float | None:
    """The q-quantile (0..1) of ``values`` repeated ``weights`` times (inverted CDF, no
    interpolation: every sample is a step duration)."""
    w = np.asarray(weights, np.float64)
    keep = w > 0
    if not keep.any():
        return None
    v = np.asarray(values, np.float64)[keep]
    w = w[keep]
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    k = int(np.searchsorted(cum, q * cum[-1], side="left"))
    return float(v[order][min(k, v.size - 1)])


def signed_error_pct(predicted: float | None, measured: float | None) -> float | None:
    """``100 * (predicted - measured) / measured``; None when either is missing or measured is 0."""
    if predicted is None or measured is None or not math.isfinite(predicted) or not math.isfinite(measured) \
            or measured == 0:
        return None
    return 100.0 * (predicted - measured) / measured


def lengths_from_percentiles(summary: dict[str, float], n: int) -> np.ndarray | None:
    """``n`` integer lengths whose distribution matches a recorded summary
    (``mean``, ``min``, ``p0.1`` ... ``median`` ... ``max``).

    The sorted values are read off the piecewise-linear percentile curve at NumPy's positions
    (value k of n sorted values sits at percentile ``100 k / (n - 1)``), rounded, then nudged
    by one token at a time (largest rounding residues first) so that their sum is
    ``round(mean * n)``: the mean matches the recorded one to 1/n token. None if the summary
    has no mean.
    """
    mean = summary.get("mean") if isinstance(summary, dict) else None
    if not isinstance(mean, (int, float)) or not math.isfinite(mean) or mean < 1:
        return None
    points = []
    for key, value in summary.items():
        p = {"min": 0.0, "max": 100.0, "median": 50.0}.get(key)
        if p is None and key.startswith("p"):
            try:
                p = float(key[1:])
            except ValueError:
                p = None
        if p is not None and isinstance(value, (int, float)) and math.isfinite(value):
            points.append((p, float(value)))
    if n == 1 or len(points) < 2:
        x = np.full(n, float(mean))
    else:
        points.sort()
        ps, vs = np.array([p for p, _ in points]), np.array([v for _, v in points])
        vs = np.maximum.accumulate(vs)
        x = np.interp(100.0 * np.arange(n) / (n - 1), ps, vs)
    out = np.maximum(np.rint(x), 1).astype(np.int64)
    target = int(round(mean * n))
    residue = x - out
    diff = target - int(out.sum())
    if diff:
        order = np.argsort(-residue if diff > 0 else residue, kind="stable")
        step = 1 if diff > 0 else -1
        i = 0
        while diff and i < 10 * n:
            k = order[i % n]
            if out[k] + step >= 1:
                out[k] += step
                diff -= step
            i += 1
    return np.sort(out)
