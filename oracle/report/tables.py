"""Report tables: built once from the summaries, rendered to the terminal (rich) or to HTML.

Every number shown comes straight from ``summary.json`` (looked up by the path in the row's
spec) and is only rounded for display; :data:`OVERVIEW_ROWS`, :data:`PREFIX_ROWS` and
:data:`COMPARISON_ROWS` list the labels and paths, so a test can parse the tables back.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from rich.table import Table as RichTable
from rich.text import Text

from oracle.metrics.columns import CACHE_EVENT_NAMES, CacheEvent
from oracle.metrics.compare import lookup

MINUS = "\u2212"  # typographic minus, as in "TTFT p50 −38 %"
DASH = "\u2013"   # shown for a missing value

LATENCY_METRICS = (
    ("TTFT", "time_to_first_token_ms", "time to first token"),
    ("TPOT", "time_per_output_token_ms", "time per output token"),
    ("ITL", "inter_token_latency_ms", "inter-token latency"),
    ("E2E", "end_to_end_latency_ms", "end-to-end latency"),
)

EVENT_LABELS = {CACHE_EVENT_NAMES[e]: label for e, label in (
    (CacheEvent.MISS_FULL, "miss (nothing cached)"),
    (CacheEvent.CROSS_REQUEST_HIT, "cross-request hit"),
    (CacheEvent.CONVERSATIONAL_HIT, "conversational hit"),
    (CacheEvent.FULL_HIT_NO_PREFILL_NEEDED, "full hit (no prefill needed)"),
    (CacheEvent.CONVERSATIONAL_MISS_EVICTED, "conversational miss (evicted)"),
)}


@dataclass(frozen=True)
class RowSpec:
    """One table row: a label, the path of its value in summary.json and how to show it."""

    label: str
    path: tuple[str, ...]
    kind: str  # "float" | "pct" | "count" | "s" | "onoff" | "text"
    higher_is_better: bool | None = None


# Section title, rows (metric x framework table).
OVERVIEW_ROWS: tuple[tuple[str, tuple[RowSpec, ...]], ...] = (
    ("Requests", (
        RowSpec("requests (after warm-up)", ("requests", "total"), "count"),
        RowSpec("successful", ("requests", "successful"), "count", True),
        RowSpec("failed", ("requests", "failed"), "count", False),
        RowSpec("success rate", ("requests", "success_rate"), "pct", True),
        RowSpec("simulated time (s)", ("simulation", "total_duration_s"), "s"),
    )),
    ("Throughput", (
        RowSpec("requests/s", ("throughput", "requests_per_second"), "float", True),
        RowSpec("output tokens/s", ("throughput", "output_tokens_per_second"), "float", True),
        RowSpec("input tokens/s", ("throughput", "input_tokens_per_second"), "float", True),
    )),
    ("Goodput", (
        RowSpec("goodput requests/s", ("goodput", "requests_per_second"), "float", True),
        RowSpec("goodput (share meeting SLO)", ("goodput", "fraction"), "pct", True),
    )),
    ("KV cache", (
        RowSpec("KV blocks per replica", ("kv_cache", "num_gpu_blocks"), "count"),
        RowSpec("KV mean blocks used", ("kv_cache", "mean_blocks_used"), "float"),
        RowSpec("KV peak blocks used", ("kv_cache", "peak_blocks_used"), "count"),
        RowSpec("KV mean utilization", ("kv_cache", "mean_utilization"), "pct"),
        RowSpec("KV peak utilization", ("kv_cache", "peak_utilization"), "pct"),
        RowSpec("preemptions", ("preemptions",), "count", False),
    )),
)

PREFIX_ROWS: tuple[RowSpec, ...] = (
    RowSpec("prefix caching", ("prefix_caching", "enabled"), "onoff"),
    RowSpec("request hit rate (any block)", ("prefix_caching", "overall_hit_rate"), "pct", True),
    RowSpec("conversational hit rate", ("prefix_caching", "conversational_hit_rate"), "pct", True),
    RowSpec("cross-request hit rate", ("prefix_caching", "cross_request_hit_rate"), "pct", True),
    RowSpec("token hit rate", ("prefix_caching", "token_hit_rate"), "pct", True),
    RowSpec("prefill reduction", ("prefix_caching", "prefill_reduction_ratio"), "pct", True),
    RowSpec("tokens saved", ("prefix_caching", "total_tokens_saved"), "count", True),
    RowSpec("avg cached prefix (tokens)", ("prefix_caching", "average_cached_prefix_length"), "float"),
    RowSpec("prefix-cache queries (tokens)", ("prefix_caching", "prefix_cache_queries"), "count"),
    RowSpec("prefix-cache hits (tokens)", ("prefix_caching", "prefix_cache_hits"), "count", True),
) + tuple(RowSpec(f"event: {label}", ("prefix_caching", "event_counts", name), "count")
          for name, label in EVENT_LABELS.items())

OFFLOAD_ROWS: tuple[RowSpec, ...] = (   # frameworks with a KV offload tier (summary "kv_offload")
    RowSpec("host tier blocks per replica", ("kv_offload", "host_blocks_per_replica"), "count"),
    RowSpec("GPU prefix hits (tokens)", ("kv_offload", "gpu_hit_tokens"), "count", True),
    RowSpec("host hits (tokens)", ("kv_offload", "host_hit_tokens"), "count", True),
    RowSpec("host token hit rate", ("kv_offload", "host_token_hit_rate"), "pct", True),
    RowSpec("requests with a host hit", ("kv_offload", "requests_with_host_hit"), "count"),
    RowSpec("bytes loaded from host", ("kv_offload", "bytes_loaded"), "count"),
    RowSpec("load time (s)", ("kv_offload", "load_time_s"), "s"),
    RowSpec("bytes written to host", ("kv_offload", "bytes_written"), "count"),
    RowSpec("host blocks evicted", ("kv_offload", "blocks_evicted"), "count"),
)

SPEC_ROWS: tuple[RowSpec, ...] = (
    RowSpec("method", ("speculative_decoding", "method"), "text"),
    RowSpec("draft tokens per step (k)", ("speculative_decoding", "num_speculative_tokens"), "count"),
    RowSpec("draft tokens verified", ("speculative_decoding", "num_draft_tokens"), "count"),
    RowSpec("draft tokens accepted", ("speculative_decoding", "num_accepted_tokens"), "count", True),
    RowSpec("acceptance rate", ("speculative_decoding", "acceptance_rate"), "pct", True),
    RowSpec("mean acceptance length", ("speculative_decoding", "mean_acceptance_length"), "float", True),
    RowSpec("output tokens per step", ("speculative_decoding", "output_tokens_per_step"), "float", True),
)

# summary["lora"] (oracle.metrics.lora), frameworks with enable_lora
LORA_ROWS: tuple[RowSpec, ...] = (
    RowSpec("max_loras (adapters per batch)", ("lora", "max_loras"), "count"),
    RowSpec("max_cpu_loras", ("lora", "max_cpu_loras"), "count"),
    RowSpec("max_lora_rank", ("lora", "max_lora_rank"), "count"),
    RowSpec("requests with an adapter", ("lora", "requests_with_adapter"), "count"),
    RowSpec("distinct adapters requested", ("lora", "distinct_adapters_requested"), "count"),
    RowSpec("adapter loads (host -> GPU)", ("lora", "adapter_loads"), "count", False),
    RowSpec("disk loads (-> CPU cache)", ("lora", "disk_loads"), "count", False),
    RowSpec("time loading adapters (s)", ("lora", "load_time_s"), "s", False),
    RowSpec("admissions skipped (max_loras)", ("lora", "skipped_admissions"), "count", False),
)

COMPARISON_ROWS: tuple[RowSpec, ...] = (
    RowSpec("TTFT p50 (ms)", ("latency", "time_to_first_token_ms", "p50"), "float", False),
    RowSpec("TTFT p99 (ms)", ("latency", "time_to_first_token_ms", "p99"), "float", False),
    RowSpec("TPOT p50 (ms)", ("latency", "time_per_output_token_ms", "p50"), "float", False),
    RowSpec("TPOT p99 (ms)", ("latency", "time_per_output_token_ms", "p99"), "float", False),
    RowSpec("ITL p99 (ms)", ("latency", "inter_token_latency_ms", "p99"), "float", False),
    RowSpec("E2E p50 (ms)", ("latency", "end_to_end_latency_ms", "p50"), "float", False),
    RowSpec("E2E p99 (ms)", ("latency", "end_to_end_latency_ms", "p99"), "float", False),
    RowSpec("requests/s", ("throughput", "requests_per_second"), "float", True),
    RowSpec("output tokens/s", ("throughput", "output_tokens_per_second"), "float", True),
    RowSpec("goodput requests/s", ("goodput", "requests_per_second"), "float", True),
    RowSpec("goodput (share meeting SLO)", ("goodput", "fraction"), "pct", True),
    RowSpec("token hit rate", ("prefix_caching", "token_hit_rate"), "pct", True),
    RowSpec("prefill reduction", ("prefix_caching", "prefill_reduction_ratio"), "pct", True),
    RowSpec("KV peak utilization", ("kv_cache", "peak_utilization"), "pct", None),
    RowSpec("preemptions", ("preemptions",), "count", False),
)


# ---------------------------------------------------------------------------------------------
# Formatting
def fmt_float(v: float) -> str:
    """Magnitude-dependent decimals: 12,345 / 123.4 / 12.34 / 0.123."""
    a = abs(v)
    if a >= 1000:
        s = f"{v:,.0f}"
    elif a >= 100:
        s = f"{v:.1f}"
    elif a >= 1 or a == 0:
        s = f"{v:.2f}"
    else:
        s = f"{v:.3f}"
    return s.replace("-", MINUS)


def fmt_value(v: Any, kind: str) -> str:
    """Display text for a summary value (``–`` when missing)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return DASH
    if kind == "onoff":
        return "on" if v else "off"
    if kind == "text":
        return str(v)
    if kind == "pct":
        return f"{100 * float(v):.1f} %".replace("-", MINUS)
    if kind == "count":
        return f"{int(v):,}"
    if kind == "s":
        return f"{float(v):,.1f}"
    return fmt_float(float(v))


def relative_change(value: Any, base: Any) -> float | None:
    """(value − base) / |base|; None when either is missing or base is 0 (and value is not)."""
    if value is None or base is None:
        return None
    value, base = float(value), float(base)
    if not (math.isfinite(value) and math.isfinite(base)):
        return None
    if base == 0:
        return 0.0 if value == 0 else None
    return (value - base) / abs(base)


def fmt_change(r: float | None) -> str:
    """``−38 %``, ``+4.2 %``, ``±0 %``; ``n/a`` when undefined."""
    if r is None:
        return "n/a"
    pct = 100 * r
    if round(pct, 1) == 0:
        return "\u00b10 %"
    sign = "+" if pct > 0 else MINUS
    body = f"{abs(pct):.1f}" if abs(pct) < 10 else f"{abs(pct):,.0f}"
    return f"{sign}{body} %"


def change_style(r: float | None, higher_is_better: bool | None) -> str | None:
    if r is None or higher_is_better is None or abs(r) < 0.01:
        return None
    return "green" if (r > 0) == higher_is_better else "red"


# ---------------------------------------------------------------------------------------------
# Table model
@dataclass
class Cell:
    text: str
    value: Any = None
    style: str | None = None  # a rich style name ("green", "red", "bold")


@dataclass
class Table:
    """A titled grid of cells; ``sections`` are row indices after which a rule is drawn."""

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    caption: str | None = None
    sections: list[int] = field(default_factory=list)

    def add_row(self, cells: Sequence[Cell | str], *, end_section: bool = False) -> None:
        self.rows.append([c if isinstance(c, Cell) else Cell(str(c)) for c in cells])
        if end_section:
            self.sections.append(len(self.rows) - 1)


def slo_text(summary: dict[str, Any]) -> str:
    slo = lookup(summary, ("goodput", "slo")) or {}
    parts = [f"{label} \u2264 {float(slo[k]):,g} ms" for k, label in
             (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT"), ("e2e_ms", "E2E")) if slo.get(k) is not None]
    return ", ".join(parts) if parts else "no SLO set (every finished request counts)"


def stat_keys(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """mean, the percentiles present (numeric order), max."""
    keys: set[str] = set()
    for s in summaries.values():
        for _, key, _ in LATENCY_METRICS:
            keys.update((lookup(s, ("latency", key)) or {}).keys())
    pcts = sorted((k for k in keys if k.startswith("p")), key=lambda k: float(k[1:].replace("_", ".")))
    return [k for k in ("mean",) if k in keys] + pcts + [k for k in ("max",) if k in keys]


def latency_table(summaries: dict[str, dict[str, Any]]) -> Table:
    keys = stat_keys(summaries)
    several = len(summaries) > 1
    cols = (["framework"] if several else []) + ["metric"] + keys
    t = Table(title="Latency (ms)", columns=cols,
              caption="Finished requests after warm-up; ITL percentiles come from a log-spaced histogram.")
    for i, (name, s) in enumerate(summaries.items()):
        for j, (label, key, _) in enumerate(LATENCY_METRICS):
            stats = lookup(s, ("latency", key)) or {}
            cells = [Cell(name if j == 0 else "", style="bold")] if several else []
            cells.append(Cell(label))
            cells += [Cell(fmt_value(stats.get(k), "float"), stats.get(k)) for k in keys]
            t.add_row(cells, end_section=several and j == len(LATENCY_METRICS) - 1 and i < len(summaries) - 1)
    return t


def _metric_table(title: str, sections: Sequence[tuple[str | None, Sequence[RowSpec]]],
                  summaries: dict[str, dict[str, Any]], caption: str | None = None) -> Table:
    t = Table(title=title, columns=["metric", *summaries], caption=caption)
    for k, (_, specs) in enumerate(sections):
        for j, spec in enumerate(specs):
            cells = [Cell(spec.label)]
            for s in summaries.values():
                v = lookup(s, spec.path)
                cells.append(Cell(fmt_value(v, spec.kind), v))
            t.add_row(cells, end_section=j == len(specs) - 1 and k < len(sections) - 1)
    return t


def overview_table(summaries: dict[str, dict[str, Any]]) -> Table:
    first = next(iter(summaries.values()))
    return _metric_table("Throughput, goodput and KV cache", OVERVIEW_ROWS, summaries,
                         caption=f"Goodput SLO: {slo_text(first)}. Request counts exclude the warm-up.")


def prefix_table(summaries: dict[str, dict[str, Any]]) -> Table:
    return _metric_table("Prefix cache", ((None, PREFIX_ROWS),), summaries,
                         caption="Hit rates per request (any cached block) and per token (vLLM's "
                                 "prefix_cache_hits / prefix_cache_queries); events: one per admitted request.")


def offload_table(summaries: dict[str, dict[str, Any]]) -> Table:
    return _metric_table("KV offload to host memory", ((None, OFFLOAD_ROWS),), summaries,
                         caption="GPU hits are found first, then the host tier from the first block the GPU "
                                 "missed (oracle/engine/README.md, \"KV offload\"); \u2013: no host tier.")


def lora_table(summaries: dict[str, dict[str, Any]]) -> Table:
    return _metric_table("Multi-LoRA", ((None, LORA_ROWS),), summaries,
                         caption="Loads are paid in the step that first needs an adapter; a skipped admission is "
                                 "one waiting request passed over in one step (its adapter would exceed max_loras).")


def comparison_table(summaries: dict[str, dict[str, Any]]) -> Table:
    names = list(summaries)
    base = names[0]
    t = Table(title=f"Comparison vs {base}", columns=["metric", base, *names[1:]],
              caption="Cells: value (relative difference vs the first framework); green = better, red = worse.")
    for spec in COMPARISON_ROWS:
        b = lookup(summaries[base], spec.path)
        cells = [Cell(spec.label), Cell(fmt_value(b, spec.kind), b)]
        for n in names[1:]:
            v = lookup(summaries[n], spec.path)
            r = relative_change(v, b)
            text = f"{fmt_value(v, spec.kind)} ({fmt_change(r)})"
            cells.append(Cell(text, v, change_style(r, spec.higher_is_better)))
        t.add_row(cells)
    return t


def comparison_json(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The comparison as data: per metric the raw values and the relative change vs the baseline."""
    names = list(summaries)
    base = names[0]
    rows = []
    for spec in COMPARISON_ROWS:
        b = lookup(summaries[base], spec.path)
        vals = {n: lookup(summaries[n], spec.path) for n in names}
        rows.append({"metric": spec.label, "path": ".".join(spec.path), "higher_is_better": spec.higher_is_better,
                     "values": vals, "relative_change": {n: relative_change(vals[n], b) for n in names[1:]}})
    return {"baseline": base, "rows": rows}


CONFIG_ROWS = (("model", ("config", "model")), ("GPU", ("config", "gpu")), ("GPUs", ("config", "num_gpus")),
               ("tp x pp", None), ("replicas", ("config", "replicas")), ("P:D pools", ("config", "disaggregated")),
               ("router", ("config", "router")),
               ("block size", ("kv_cache", "block_size")), ("max_num_seqs", ("config", "max_num_seqs")),
               ("max_num_batched_tokens", ("config", "max_num_batched_tokens")),
               ("chunked prefill", ("config", "enable_chunked_prefill")),
               ("prefix caching", ("config", "enable_prefix_caching")), ("seed", ("seed",)),
               ("architecture", ("config", "architecture")), ("precision", ("config", "precision")),
               ("EP size / DP ranks", None), ("KV cache groups", ("config", "kv_cache_groups")))
#: rows shown only when some run has them (architecture features of issue 17)
_OPTIONAL_CONFIG_ROWS = ("architecture", "precision", "EP size / DP ranks", "KV cache groups")


def config_table(summaries: dict[str, dict[str, Any]]) -> Table:
    t = Table(title="Configuration", columns=["setting", *summaries])
    for label, path in CONFIG_ROWS:
        key = path or ("config", "expert_parallel_size")
        if label in _OPTIONAL_CONFIG_ROWS and all(lookup(s, key) is None for s in summaries.values()):
            continue
        if path == ("config", "disaggregated") and not any(lookup(s, path) for s in summaries.values()):
            continue   # only with a prefill/decode framework in the run
        cells = [Cell(label)]
        for s in summaries.values():
            if label == "EP size / DP ranks":
                ep, dp = lookup(s, ("config", "expert_parallel_size")), lookup(s, ("config", "data_parallel_size"))
                cells.append(Cell(DASH if ep is None else f"{ep} / {dp}"))
                continue
            if path is None:
                tp, pp = lookup(s, ("config", "tp")), lookup(s, ("config", "pp"))
                cells.append(Cell(DASH if tp is None else f"{tp} x {pp}"))
                continue
            v = lookup(s, path)
            text = DASH if v is None else ("on" if v else "off") if isinstance(v, bool) else \
                f"{v:,}" if isinstance(v, int) else str(v)
            cells.append(Cell(text, v))
        t.add_row(cells)
    return t


def run_tables(summaries: dict[str, dict[str, Any]]) -> list[Table]:
    tables = [config_table(summaries)]
    if len(summaries) > 1:
        tables.append(comparison_table(summaries))
    tables += [latency_table(summaries), overview_table(summaries), prefix_table(summaries)]
    if any("kv_offload" in s for s in summaries.values()):
        tables.append(offload_table(summaries))
    from oracle.report.disagg import disaggregation_table   # prefill/decode pools, when a framework has them
    pd = disaggregation_table(summaries)
    if any("speculative_decoding" in s for s in summaries.values()):
        tables.append(spec_table(summaries))
    if any("lora" in s for s in summaries.values()):
        tables.append(lora_table(summaries))
    return tables + ([pd] if pd is not None else [])


def spec_table(summaries: dict[str, dict[str, Any]]) -> Table:
    """Speculative decoding (frameworks without it show dashes)."""
    return _metric_table("Speculative decoding", ((None, SPEC_ROWS),), summaries,
                         caption="vLLM SpecDecodingStats: acceptance rate = accepted / verified drafts; mean "
                                 "acceptance length = 1 + accepted drafts per verification.")


# ---------------------------------------------------------------------------------------------
# Renderers
def to_rich(t: Table):
    rt = RichTable(title=t.title, caption=t.caption, title_justify="left", caption_justify="left",
                   title_style="bold")
    for i, c in enumerate(t.columns):
        rt.add_column(c, justify="left" if i == 0 or c in ("framework", "metric") else "right", no_wrap=True)
    for i, row in enumerate(t.rows):
        rt.add_row(*[_rich_text(c) for c in row], end_section=i in t.sections)
    return rt


def _rich_text(c: Cell):
    return Text(c.text, style=c.style or "")


_HTML_STYLE = {"green": "good", "red": "bad", "bold": "strong"}


def to_html(t: Table) -> str:
    out = [f"<table><caption>{html.escape(t.title)}</caption><thead><tr>"]
    for i, c in enumerate(t.columns):
        cls = "" if i == 0 or c in ("framework", "metric") else ' class="num"'
        out.append(f"<th{cls}>{html.escape(c)}</th>")
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(t.rows):
        tr_cls = ' class="section-end"' if i in t.sections else ""
        out.append(f"<tr{tr_cls}>")
        for j, cell in enumerate(row):
            classes = []
            if j > 0 and t.columns[j] not in ("framework", "metric"):
                classes.append("num")
            if cell.style in _HTML_STYLE:
                classes.append(_HTML_STYLE[cell.style])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            out.append(f"<td{attr}>{html.escape(cell.text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    if t.caption:
        out.append(f'<p class="note">{html.escape(t.caption)}</p>')
    return "".join(out)
