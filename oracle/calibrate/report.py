"""The ``## Cost-model calibration`` section of ``benchmarks/RESULTS.md``: Markdown tables of the
fits and errors, plus a machine-readable JSON comment that the tests read back."""

from __future__ import annotations

import json
import re

from oracle.calibrate.load import DEVICES, GEMM_OPS
from oracle.catalog import gpu_defaults

RESULTS_HEADING = "## Cost-model calibration"


def _fmt_err(e: dict) -> str:
    return f"{e['median_pct']:.1f} / {e['p90_pct']:.1f}"


def _label(dev: str) -> str:
    return {"a100": "A100", "a40": "A40", "defaults": "defaults"}.get(dev, dev)


def report_markdown(result: dict, command: str) -> str:
    """The ``## Cost-model calibration`` section of benchmarks/RESULTS.md."""
    fits, g = result["fits"], result["gemm"]
    measured = [k for k in fits if k != "defaults"]
    extra = list(result.get("extra", {}))
    lines = [RESULTS_HEADING, "",
             f"Reproduce: `{command}` (about a minute on 2 cores"
             + ("; each `--extra-profiles` folder is the output of `python benchmarks/calibrate.py --out DIR "
                "--device-name gpu` on that GPU" if extra else "") + "). Data: Vidur's per-op profiles "
             "(microsoft/vidur @7d47513, MIT) in `../shared/data/calibration/vidur`: one layer's GEMM on one GPU of "
             "the TP group (TP 1–8, 1–32k tokens, 7 model shapes on A100, 6 on A40), deduplicated, medians. "
             "Errors are `|predicted / measured − 1|` computed through the cost kernel with the rounded factors "
             "stored in `oracle/catalog/gpus.toml`.", "",
             "Model per GEMM: `t = max(c, m) + overlap·min(c, m) + kernel_overhead_s` with "
             "`c = FLOPs / (peak_bf16 · eff_compute)`, `m = bytes / (mem_bw · eff_memory)`.", "",
             "| fitted on | eff_compute | eff_memory | roofline_overlap | kernel_overhead_s | eff_elementwise | "
             "layer_overhead_s |",
             "|---|---|---|---|---|---|---|"]
    for dev in measured + ["defaults"]:
        f = fits[dev]
        small = (f"{f['eff_elementwise']} | {f['layer_overhead_s']:.3g}" if "eff_elementwise" in f
                 else "(defaults) | (defaults)")
        lines.append(f"| {_label(dev)} | {f['eff_compute']} | {f['eff_memory']} | {f['roofline_overlap']} | "
                     f"{f['kernel_overhead_s']:.3g} | {small} |")
    lines += ["", "GEMM error, median / p90 absolute % (held-out = the other GPU's factors applied to this GPU's "
              "datasheet peak FLOP/s and bandwidth):", "",
              "| op | A100 fit on A100 | A100 fit → A40 (held out) | A40 fit on A40 | A40 fit → A100 (held out) |",
              "|---|---|---|---|---|"]
    for op in (*GEMM_OPS.values(), "all"):
        lines.append(f"| {op} | {_fmt_err(g['a100->a100'][op])} | {_fmt_err(g['a100->a40'][op])} | "
                     f"{_fmt_err(g['a40->a40'][op])} | {_fmt_err(g['a40->a100'][op])} |")
    worst = max(g[k][op]["median_pct"] for k in ("a100->a40", "a40->a100") for op in GEMM_OPS.values())
    verdict = "met" if worst <= 10.0 else "missed"
    lines += ["", f"Target (median ≤ 10 % per GEMM op on the held-out GPU): **{verdict}** "
              f"(worst held-out median {worst:.1f} %, A100 factors on the A40's gate+up GEMMs). The A40 reaches a "
              "larger share of its datasheet FLOP/s than the A100 (0.82 vs 0.76), so A100 factors underpredict "
              "the A40's compute-bound GEMMs' speed by 6–10 % and A40 factors overpredict the A100's."]
    if extra:
        lines += ["", "All GEMMs, median / p90 absolute % (rows: whose factors; columns: whose measurements; "
                  "off-diagonal cells are held out):", "",
                  "| factors ↓ data → | " + " | ".join(_label(d) for d in measured) + " |",
                  "|---|" + "---|" * len(measured)]
        for fit_dev in measured + ["defaults"]:
            lines.append(f"| {_label(fit_dev)} | " + " | ".join(
                _fmt_err(g[f"{fit_dev}->{d}"]["all"]) for d in measured) + " |")
        for dev in extra:
            lines += ["", f"{dev}: GEMM profiles timed on a lent GPU by `python benchmarks/calibrate.py --out DIR` "
                      "(PyTorch bf16 `x @ W.T`, CUDA-graph replay, weights cycled past the L2 cache; same shapes, "
                      "TP 1–8, 1–8192 tokens). The raw CSVs are in `benchmarks/data/` (see its README). "
                      f"Per op: " + ", ".join(
                          f"{op} {_fmt_err(g[f'{dev}->{dev}'][op])}" for op in GEMM_OPS.values()) + " (in-sample); "
                      "`[defaults]` on it: " + _fmt_err(g[f"defaults->{dev}"]["all"]) + "."]
    lines += ["", "Signed median error by tokens per GEMM (bias, %):", "",
              "| factors → data | " + " | ".join(result["token_bias"]["a100->a100"]) + " |",
              "|---|" + "---|" * len(result["token_bias"]["a100->a100"])]
    for k, v in result["token_bias"].items():
        a, b = k.split("->")
        if a == b or {a, b} <= set(DEVICES) or (a in DEVICES) != (b in DEVICES) and b in extra:
            lines.append(f"| {_label(a)} → {_label(b)} | " + " | ".join(f"{x:+.1f}" for x in v.values()) + " |")
    p = result["gemm_pure_roofline"]
    lines += ["", "Pure roofline (`roofline_overlap = 0`, refitted), all GEMMs, median / p90 %: " + "; ".join(
        f"{_label(d)} fit on {_label(d)} {_fmt_err(p[f'{d}->{d}']['all'])}" for d in measured) +
        f"; A100 fit → A40 {_fmt_err(p['a100->a40']['all'])}, A40 fit → A100 {_fmt_err(p['a40->a100']['all'])}. "
        "On the Ampere profiles (Vidur, eager PyTorch, Kineto kernel times) its medians are similar but it "
        "overpredicts decode-size GEMMs (1–64 tokens) by 10–25 % and underpredicts 65–256-token ones; the overlap "
        "term removes that size-dependent bias. "
        + ("On the Hopper profiles the fitted overlap is close to 0: the pure roofline fits them, and the Ampere "
           "overlap would overpredict their mid-size GEMMs, hence their own factors in the catalog." if extra else "")]
    lines += ["", "Small per-layer ops (2 RMSNorms, rotary, activation, residual add; the model also counts the "
              "KV-cache write): DRAM bytes at `eff_elementwise` + `layer_overhead_s`: A100 "
              f"{_fmt_err(result['small_ops']['a100'])}, A40 {_fmt_err(result['small_ops']['a40'])} (median / p90 %)."]
    if "attention" in result:
        f, a = fits["a100"], result["attention"]
        lines += ["", f"Attention (A100 only, FlashAttention, 64 q / 8 kv heads at TP 2): eff_attn_compute "
                  f"{f['eff_attn_compute']}, eff_attn_memory {f['eff_attn_memory']}, attn_overhead_s "
                  f"{f['attn_overhead_s']:.3g}; prefill {_fmt_err(a['prefill'])} ({a['prefill']['n']} shapes), "
                  f"decode {_fmt_err(a['decode'])} ({a['decode']['n']} shapes), in-sample median / p90 %. The "
                  "prefill error is structured: chunks with no cached prefix run slower than their causal FLOPs "
                  "suggest and chunks after a long prefix faster (about −30 % and +30 % bias), which one "
                  "efficiency over `c·(p + (c+1)/2)` cannot separate. No other GPU has attention profiles: other "
                  "GPUs reuse these factors."]
    if "network" in result:
        f, n = fits["a100"], result["network"]
        parts = ", ".join(f"{k.replace('_', ' ')} {_fmt_err(v)}" for k, v in n.items())
        lines += ["", f"NVLink (DGX A100, 300 GB/s per direction): eff_link {f['eff_link']}, link_latency_s "
                  f"{f['link_latency_s']:.3g}; {parts} (median / p90 %; send/recv is not fitted, it checks the "
                  "pipeline hand-off, which shares the link factors and is overpredicted: a point-to-point send has "
                  "about a third of the all-reduce latency). These are NCCL timings: vLLM's custom all-reduce for "
                  "small messages under CUDA graphs is likely faster, so TP decode steps may be overpredicted. "
                  "Vidur's A40 'pairwise NVLink' send/recv moves only "
                  f"{result['a40_send_recv_gbps']:.1f} GB/s (peer-to-peer apparently off), so the catalog keeps the "
                  "A40 bridge datasheet figure with the A100 link factors."]
    d = fits["defaults"]
    lines += ["", "GPUs without profiles use `[defaults]`: the mean of the GEMM factors of every profiled GPU ("
              + ", ".join(_label(x) for x in measured) + f"): eff_compute {d['eff_compute']}, eff_memory "
              f"{d['eff_memory']}, roofline_overlap {d['roofline_overlap']}; the mean A100/A40 small-op factors; the "
              "A100 attention and link factors. The 'defaults' rows above show them on each profiled GPU. "
              "`step_overhead_s` (per-step CPU time) is not in the data and stays a documented default "
              f"({gpu_defaults()['step_overhead_s'] * 1e3:g} ms).", "",
              "<!-- calibration-json: " + json.dumps(_compact(result), sort_keys=True) + " -->", ""]
    return "\n".join(lines)


def _compact(result: dict) -> dict:
    """What the tests compare against: the fits and the GEMM medians."""
    def medians(d: dict) -> dict:
        return {k: round(e["median_pct"], 2) for k, e in d.items()}

    out = {"fits": result["fits"], "gemm_median_pct": {k: medians(v) for k, v in result["gemm"].items()},
           "small_ops_median_pct": medians(result["small_ops"])}
    for key in ("attention", "network"):
        if key in result:
            out[f"{key}_median_pct"] = medians(result[key])
    return out


def replace_section(text: str, section: str) -> str:
    """Replace (or append) the ``## Cost-model calibration`` section, leaving other sections alone."""
    pattern = re.compile(rf"^{re.escape(RESULTS_HEADING)}\s*$.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        return pattern.sub(lambda _m: section.rstrip("\n") + "\n\n", text, count=1).rstrip("\n") + "\n"
    head = text.rstrip("\n")
    return (head + "\n\n" if head else "# Benchmark results\n\n") + section.rstrip("\n") + "\n"


def read_results_json(text: str) -> dict | None:
    """The machine-readable summary embedded in the calibration section, if any."""
    m = re.search(r"<!-- calibration-json: (.*?) -->", text)
    return json.loads(m.group(1)) if m else None
