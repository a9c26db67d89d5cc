"""Fit the cost model's per-GPU efficiency factors to measured kernel timings (Vidur profiles).

Rerunnable::

    python -m oracle.calibrate                     # print the report
    python -m oracle.calibrate --update-catalog --results benchmarks/RESULTS.md

Data (``DATA``, default ``<repo>/../shared/data/calibration``; Vidur @7d47513, MIT): per-op
GPU times in ms from ``vidur/{a100,a40}/<org>/<model>/mlp.csv`` (one layer, one GPU of the TP
group, ``num_tokens`` tokens), ``vidur/attention/a100_attention.csv`` and
``vidur/network/a100_dgx/all_reduce.csv``. Rows measured more than once are deduplicated (the
median of the per-row medians).

What is fitted, per GPU, minimising the mean absolute log error ``|log(predicted/measured)|``
by a deterministic grid + pattern search (NumPy only):

* GEMMs (QKV = ``attn_pre_proj``, output = ``attn_post_proj``, gate+up = ``mlp_up_proj``,
  down = ``mlp_down_proj``; all models, TP 1–8): ``eff_compute``, ``eff_memory``,
  ``roofline_overlap`` and ``kernel_overhead_s`` in
  ``t = max(c, m) + overlap·min(c, m) + kernel_overhead_s``, with ``c = FLOPs/(peak·eff_compute)``,
  ``m = bytes/(bandwidth·eff_memory)``. FLOPs and bytes per row come from the cost kernel itself
  (:func:`oracle.kernels.cost.step_work`), so the fit and the simulator use the same formulas.
  Validation: fit on A100, predict A40 from its datasheet peaks (and vice versa).
* Small per-layer kernels (RMSNorms, rotary, activation, residual add): ``eff_elementwise``
  (their achieved fraction of DRAM bandwidth) and ``layer_overhead_s`` (their fixed time).
* A100 attention (FlashAttention, decode and chunked prefill): ``eff_attn_compute``,
  ``eff_attn_memory``, ``attn_overhead_s``.
* A100 NVLink all-reduce (DGX, 2/4/8 GPUs): ``eff_link``, ``link_latency_s``.

``--extra-profiles FOLDER=GPU`` adds GEMM profiles timed on other GPUs by
``benchmarks/calibrate.py`` (the committed catalog used H100 SXM and H200 runs on lent GPUs;
their raw timings are not in the repository): they are fitted and cross-validated like the
Vidur GPUs, and their GEMM factors go to the GPUs named.

GPUs without measurements get ``[defaults]``: the mean of every profiled GPU's GEMM factors
(so a rerun without the same ``--extra-profiles`` changes them), the mean of the A100 and A40
small-op factors, and the A100 attention and link factors. Every reported error is computed
with the rounded factors that are written to the catalog, through the cost kernel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np

from oracle.catalog import GPUS_TOML, GpuSpec, ModelSpec, gpu_defaults, load_gpus
from oracle.cost import build_cost_params
from oracle.kernels.cost import NUM_OPS, OP_NAMES, step_work

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "calibration"

#: Vidur op column -> cost-model op
GEMM_OPS = {"attn_pre_proj": "qkv_proj", "attn_post_proj": "attn_out_proj", "mlp_up_proj": "mlp_gate_up",
            "mlp_down_proj": "mlp_down"}
SMALL_OPS = ("input_layernorm", "post_attention_layernorm", "attn_rope", "mlp_act", "add")
#: Vidur device folder -> catalog GPU holding its datasheet facts
DEVICES = {"a100": "a100-80g", "a40": "a40"}
#: catalog GPUs that receive each device's fitted factors
TARGETS = {"a100": ("a100-40g", "a100-80g"), "a40": ("a40",)}
TOKEN_BINS = ((1, 8), (9, 64), (65, 256), (257, 1024), (1025, 1 << 30))
FACTOR_KEYS = ("eff_compute", "eff_memory", "roofline_overlap", "kernel_overhead_s", "eff_elementwise",
               "layer_overhead_s",
               "eff_attn_compute", "eff_attn_memory", "attn_overhead_s", "eff_link", "link_latency_s")
RESULTS_HEADING = "## Cost-model calibration"


# -- data -------------------------------------------------------------------------------------


def vidur_dir(data: Path) -> Path:
    """``data`` itself or its ``vidur/`` subfolder, whichever holds the profiles."""
    data = Path(data)
    return data / "vidur" if (data / "vidur").is_dir() else data


def load_mlp(data: Path, device: str, *, models: list[str] | None = None, max_tokens: int | None = None):
    """Deduplicated rows of every ``<device>/<org>/<model>/mlp.csv`` (polars DataFrame).

    Columns: ``model, n_head, n_kv_head, n_embd, n_expanded_embd, vocab_size, use_gated_mlp,
    num_tokens, tp`` and one float column per op in :data:`GEMM_OPS` / :data:`SMALL_OPS`
    (seconds, median over repeated rows; null where the file lacks the op).
    """
    import polars as pl

    root = vidur_dir(data) / device
    files = sorted(root.glob("*/*/mlp.csv"))
    if models is not None:
        files = [f for f in files if f"{f.parent.parent.name}/{f.parent.name}" in models]
    if not files:
        raise FileNotFoundError(f"no mlp.csv under {root}")
    keys = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp", "num_tokens",
            "num_tensor_parallel_workers"]
    frames = []
    for f in files:
        df = pl.read_csv(f, infer_schema_length=None)
        cols = [pl.col(f"time_stats.{op}.median").cast(pl.Float64).median().mul(1e-3).alias(op)
                if f"time_stats.{op}.median" in df.columns else pl.lit(None, pl.Float64).alias(op)
                for op in (*GEMM_OPS, *SMALL_OPS)]
        df = df.group_by(keys).agg(cols).with_columns(pl.lit(f"{f.parent.parent.name}/{f.parent.name}").alias("model"))
        frames.append(df)
    out = pl.concat(frames).rename({"num_tensor_parallel_workers": "tp"})
    if max_tokens is not None:
        out = out.filter(pl.col("num_tokens") <= max_tokens)
    return out.sort(["model", "tp", "num_tokens"])


def shape_model(row: dict) -> ModelSpec:
    """A one-layer :class:`ModelSpec` with the shape of a Vidur profile row."""
    return ModelSpec(name=str(row.get("model", "profile")), num_layers=1, hidden_size=int(row["n_embd"]),
                     num_heads=int(row["n_head"]), num_kv_heads=int(row["n_kv_head"]),
                     head_dim=int(row["n_embd"]) // int(row["n_head"]), intermediate_size=int(row["n_expanded_embd"]),
                     vocab_size=int(row["vocab_size"]), max_context=4096, tied_embeddings=False,
                     gated_mlp=bool(row["use_gated_mlp"]))


def _kernel(params: np.ndarray, aggs: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = (np.zeros(NUM_OPS), np.zeros(NUM_OPS), np.zeros(NUM_OPS))
    step_work(params, *(float(a) for a in aggs), *out)
    return out


def _unit_gpu(spec: GpuSpec) -> GpuSpec:
    """The GPU with no efficiency losses and no fixed costs (to read FLOPs and bytes)."""
    return dataclasses.replace(spec, eff_compute=1.0, eff_memory=1.0, roofline_overlap=0.0, kernel_overhead_s=0.0,
                               layer_overhead_s=0.0, eff_attn_compute=1.0, eff_attn_memory=1.0, attn_overhead_s=0.0,
                               eff_link=1.0, link_latency_s=0.0, step_overhead_s=0.0)


# -- GEMMs and small ops -------------------------------------------------------------------------


@dataclasses.dataclass
class GemmData:
    """Long-format GEMM rows: one entry per (profile row, op). Arrays of equal length."""

    op: np.ndarray          # str, cost-model op name
    model: np.ndarray       # str, profiled model
    num_tokens: np.ndarray  # float64
    tp: np.ndarray          # int64
    flops: np.ndarray       # float64, one layer, one GPU
    nbytes: np.ndarray      # float64, DRAM bytes
    measured_s: np.ndarray  # float64
    rows: list[dict]        # the profile row of each entry (for kernel re-evaluation)


def gemm_data(df) -> GemmData:
    """FLOPs and bytes of every measured GEMM, from the cost kernel."""
    gpu = _unit_gpu(load_gpus()["a100-80g"])
    ops, models, tokens, tps, flops, nbytes, meas, rows = [], [], [], [], [], [], [], []
    cache: dict[tuple, np.ndarray] = {}
    for row in df.iter_rows(named=True):
        key = (row["model"], row["tp"])
        if key not in cache:
            cache[key] = build_cost_params(shape_model(row), gpu, tp=row["tp"])
        _, f, b = _kernel(cache[key], (row["num_tokens"], 0, 0, 0, 0, 0))
        for col, op in GEMM_OPS.items():
            t = row[col]
            if t is None or not t > 0:
                continue
            i = OP_NAMES.index(op)
            ops.append(op)
            models.append(row["model"])
            tokens.append(row["num_tokens"])
            tps.append(row["tp"])
            flops.append(f[i])
            nbytes.append(b[i])
            meas.append(t)
            rows.append(row)
    return GemmData(np.array(ops), np.array(models), np.array(tokens, float), np.array(tps), np.array(flops),
                    np.array(nbytes), np.array(meas), rows)


def roofline_s(flops, nbytes, flops_per_s, bytes_per_s, overlap, fixed_s):
    """Vectorised ``max(c, m) + overlap·min(c, m) + fixed_s`` (the kernel's formula)."""
    c = flops / flops_per_s
    m = nbytes / bytes_per_s
    return np.maximum(c, m) + overlap * np.minimum(c, m) + fixed_s


def _mean_abs_log(pred, meas) -> float:
    return float(np.mean(np.abs(np.log(pred / meas))))


def pattern_search(objective, x0, lo, hi, step, *, tol: float = 1e-4, max_iter: int = 400):
    """Deterministic compass search within bounds; ``step``/``tol`` relative to ``hi − lo``."""
    x = np.array(x0, float)
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    span = np.where(hi > lo, hi - lo, 1.0)
    step = np.asarray(step, float) * span
    best = objective(x)
    for _ in range(max_iter):
        improved = False
        for i in range(len(x)):
            if hi[i] <= lo[i]:
                continue
            for sign in (1.0, -1.0):
                y = x.copy()
                y[i] = min(max(x[i] + sign * step[i], lo[i]), hi[i])
                v = objective(y)
                if v < best - 1e-15:
                    x, best, improved = y, v, True
                    break
        if not improved:
            step = step / 2
            if np.all(step <= tol * span):
                break
    return x, best


def fit_gemm(data: GemmData, gpu: GpuSpec, *, fit_overlap: bool = True) -> dict[str, float]:
    """``eff_compute, eff_memory, roofline_overlap, kernel_overhead_s`` minimising mean |log error|."""
    peak, bw = gpu.peak_tflops_bf16 * 1e12, gpu.mem_bw_gbps * 1e9

    def objective(x):
        return _mean_abs_log(roofline_s(data.flops, data.nbytes, peak * x[0], bw * x[1], x[2], x[3]), data.measured_s)

    grid = [(ec, em, a, t0) for ec in np.linspace(0.3, 1.0, 8) for em in np.linspace(0.3, 1.0, 8)
            for a in ((0.0, 0.25, 0.5, 0.75, 1.0) if fit_overlap else (0.0,))
            for t0 in (0.0, 2.5e-6, 5e-6, 1e-5, 2e-5)]
    x0 = min(grid, key=lambda x: objective(np.array(x)))
    x, _ = pattern_search(objective, x0, lo=[0.05, 0.05, 0.0, 0.0], hi=[1.0, 1.0, 1.0 if fit_overlap else 0.0, 5e-5],
                          step=[0.05, 0.05, 0.1, 0.05])
    return {"eff_compute": x[0], "eff_memory": x[1], "roofline_overlap": x[2], "kernel_overhead_s": x[3]}


def predict_gemm(data: GemmData, gpu: GpuSpec) -> np.ndarray:
    """Predicted seconds of every GEMM entry, through the cost kernel with ``gpu``'s factors."""
    out = np.empty(len(data.measured_s))
    cache: dict[tuple, np.ndarray] = {}
    for j, row in enumerate(data.rows):
        key = (row["model"], row["tp"])
        if key not in cache:
            cache[key] = build_cost_params(shape_model(row), gpu, tp=row["tp"])
        s, _, _ = _kernel(cache[key], (row["num_tokens"], 0, 0, 0, 0, 0))
        out[j] = s[OP_NAMES.index(str(data.op[j]))]
    return out


def small_op_data(df):
    """(profile rows, measured seconds of the summed small ops) for files that have all of them."""
    rows, meas = [], []
    for row in df.iter_rows(named=True):
        vals = [row[c] for c in SMALL_OPS]
        if all(v is not None and v > 0 for v in vals):
            rows.append(row)
            meas.append(sum(vals))
    return rows, np.array(meas)


def predict_small_ops(rows: list[dict], gpu: GpuSpec) -> np.ndarray:
    """Predicted seconds of one layer's small ops: the kernel's ``elementwise`` op + ``overhead``."""
    gpu = dataclasses.replace(gpu, step_overhead_s=0.0)
    out = np.empty(len(rows))
    cache: dict[tuple, np.ndarray] = {}
    for j, row in enumerate(rows):
        key = (row["model"], row["tp"])
        if key not in cache:
            cache[key] = build_cost_params(shape_model(row), gpu, tp=row["tp"])
        s, _, _ = _kernel(cache[key], (row["num_tokens"], 0, 0, 0, 0, 0))
        out[j] = s[OP_NAMES.index("elementwise")] + s[OP_NAMES.index("overhead")]
    return out


def fit_small_ops(rows: list[dict], measured: np.ndarray, gpu: GpuSpec) -> dict[str, float]:
    """``eff_elementwise, layer_overhead_s`` minimising mean |log error| of the small ops."""
    # at full bandwidth and no fixed cost, the prediction is bytes / peak bandwidth
    base = predict_small_ops(rows, dataclasses.replace(gpu, eff_elementwise=1.0, layer_overhead_s=0.0))

    def objective(x):
        return _mean_abs_log(base / x[0] + x[1], measured)

    grid = [(e, t0) for e in np.linspace(0.1, 1.0, 10) for t0 in (0.0, 1e-5, 2e-5, 4e-5)]
    x0 = min(grid, key=lambda x: objective(np.array(x)))
    x, _ = pattern_search(objective, x0, lo=[0.02, 0.0], hi=[1.0, 1e-4], step=[0.05, 0.05])
    return {"eff_elementwise": float(x[0]), "layer_overhead_s": float(x[1])}


# -- attention ---------------------------------------------------------------------------------


def load_attention(data: Path):
    """Deduplicated A100 attention rows: ``is_prefill, batch_size, chunk, kv, n_embd, n_q_head, n_kv_head,
    tp, measured_s``."""
    import polars as pl

    df = pl.read_csv(vidur_dir(data) / "attention" / "a100_attention.csv", infer_schema_length=None)
    keys = ["is_prefill", "batch_size", "prefill_chunk_size", "kv_cache_size", "n_embd", "n_q_head", "n_kv_head",
            "num_tensor_parallel_workers"]
    t = (pl.when(pl.col("is_prefill")).then(pl.col("time_stats.attn_prefill.median").cast(pl.Float64))
         .otherwise(pl.col("time_stats.attn_decode.median").cast(pl.Float64)))
    return (df.with_columns(t.alias("t")).group_by(keys).agg(pl.col("t").median().mul(1e-3).alias("measured_s"))
            .filter(pl.col("measured_s") > 0).sort(keys))


def attention_aggregates(row: dict) -> tuple:
    """Kernel aggregates of an attention profile row (decode: ``batch_size`` × ``kv+1`` keys)."""
    kv = row["kv_cache_size"]
    if row["is_prefill"]:
        c = row["prefill_chunk_size"] * row["batch_size"]
        return c, 0, 0, 0, c * (kv + (c + 1) / 2), kv * row["batch_size"]
    b = row["batch_size"]
    return b, 0, b, b * (kv + 1), 0, 0


def _attention_params(row: dict, gpu: GpuSpec) -> np.ndarray:
    model = ModelSpec(name="attention-profile", num_layers=1, hidden_size=row["n_embd"], num_heads=row["n_q_head"],
                      num_kv_heads=row["n_kv_head"], head_dim=row["n_embd"] // row["n_q_head"],
                      intermediate_size=4 * row["n_embd"], vocab_size=32000, max_context=4096, tied_embeddings=False)
    return build_cost_params(model, gpu, tp=row["num_tensor_parallel_workers"])


def predict_attention(df, gpu: GpuSpec) -> np.ndarray:
    """Predicted attention seconds per row through the kernel (its attention_prefill/decode op)."""
    out = []
    for row in df.iter_rows(named=True):
        s, _, _ = _kernel(_attention_params(row, gpu), attention_aggregates(row))
        out.append(s[OP_NAMES.index("attention_prefill" if row["is_prefill"] else "attention_decode")])
    return np.array(out)


def fit_attention(df, gpu: GpuSpec) -> dict[str, float]:
    """``eff_attn_compute, eff_attn_memory, attn_overhead_s`` (``gpu.roofline_overlap`` fixed)."""
    unit = _unit_gpu(gpu)
    flops, nbytes = [], []
    for row in df.iter_rows(named=True):
        _, f, b = _kernel(_attention_params(row, unit), attention_aggregates(row))
        i = OP_NAMES.index("attention_prefill" if row["is_prefill"] else "attention_decode")
        flops.append(f[i])
        nbytes.append(b[i])
    flops, nbytes, meas = np.array(flops), np.array(nbytes), df["measured_s"].to_numpy()
    peak, bw = gpu.peak_tflops_bf16 * 1e12, gpu.mem_bw_gbps * 1e9

    def objective(x):
        return _mean_abs_log(roofline_s(flops, nbytes, peak * x[0], bw * x[1], gpu.roofline_overlap, x[2]), meas)

    grid = [(ec, em, t0) for ec in np.linspace(0.1, 1.0, 10) for em in np.linspace(0.1, 1.0, 10)
            for t0 in (0.0, 5e-6, 1e-5, 2e-5)]
    x0 = min(grid, key=lambda x: objective(np.array(x)))
    x, _ = pattern_search(objective, x0, lo=[0.02, 0.02, 0.0], hi=[1.0, 1.0, 5e-5], step=[0.05, 0.05, 0.05])
    return {"eff_attn_compute": x[0], "eff_attn_memory": x[1], "attn_overhead_s": x[2]}


# -- network -----------------------------------------------------------------------------------


def load_network(data: Path, setup: str = "a100_dgx", collective: str = "all_reduce"):
    """Deduplicated single-node collective rows: ``num_workers, size`` (bytes), ``measured_s``."""
    import polars as pl

    df = pl.read_csv(vidur_dir(data) / "network" / setup / f"{collective}.csv", infer_schema_length=None)
    return (df.filter(pl.col("num_workers") == pl.col("devices_per_node"))
            .group_by(["num_workers", "size"])
            .agg(pl.col(f"time_stats.{collective}.median").median().mul(1e-3).alias("measured_s"))
            .filter(pl.col("measured_s") > 0).sort(["num_workers", "size"]))


def predict_network(df, gpu: GpuSpec, collective: str = "all_reduce") -> np.ndarray:
    """Ring all-reduce ``2(n−1)/n · size / (link·eff_link) + latency`` (send/recv: ``size / ...``), s.

    The same formula the kernel's ``allreduce``/``pp_handoff`` ops use per call.
    """
    n = df["num_workers"].to_numpy().astype(float)
    size = df["size"].to_numpy().astype(float)
    factor = 2 * (n - 1) / n if collective == "all_reduce" else np.ones_like(n)
    return factor * size / (gpu.link_bw_gbps * 1e9 * gpu.eff_link) + gpu.link_latency_s


def fit_network(df, gpu: GpuSpec) -> dict[str, float]:
    """``eff_link, link_latency_s`` minimising mean |log error| of the all-reduce times."""
    meas = df["measured_s"].to_numpy()

    def objective(x):
        return _mean_abs_log(predict_network(df, dataclasses.replace(gpu, eff_link=x[0], link_latency_s=x[1])), meas)

    grid = [(e, lat) for e in np.linspace(0.1, 1.0, 10) for lat in (0.0, 1e-5, 2e-5, 4e-5, 8e-5)]
    x0 = min(grid, key=lambda x: objective(np.array(x)))
    x, _ = pattern_search(objective, x0, lo=[0.02, 0.0], hi=[1.0, 2e-4], step=[0.05, 0.05])
    return {"eff_link": x[0], "link_latency_s": x[1]}


# -- the whole calibration ---------------------------------------------------------------------


def _round(v: float) -> float:
    return float(f"{v:.4g}")


def error_stats(pred: np.ndarray, meas: np.ndarray) -> dict[str, float]:
    """Median and p90 of ``|pred/meas − 1|`` in %, the signed median in %, and the count."""
    rel = pred / meas - 1.0
    return {"median_pct": float(np.median(np.abs(rel)) * 100), "p90_pct": float(np.percentile(np.abs(rel), 90) * 100),
            "bias_pct": float(np.median(rel) * 100), "n": int(len(rel))}


def _per_op(data: GemmData, pred: np.ndarray) -> dict[str, dict[str, float]]:
    out = {op: error_stats(pred[data.op == op], data.measured_s[data.op == op]) for op in GEMM_OPS.values()}
    out["all"] = error_stats(pred, data.measured_s)
    return out


def _per_bin(data: GemmData, pred: np.ndarray) -> dict[str, float]:
    out = {}
    for lo, hi in TOKEN_BINS:
        m = (data.num_tokens >= lo) & (data.num_tokens <= hi)
        if m.any():
            out[f"{lo}-{hi}" if hi < 1 << 30 else f">={lo}"] = float(np.median(pred[m] / data.measured_s[m] - 1) * 100)
    return out


GEMM_KEYS = ("eff_compute", "eff_memory", "roofline_overlap", "kernel_overhead_s")


@dataclasses.dataclass(frozen=True)
class ExtraProfiles:
    """GEMM profiles measured with benchmarks/calibrate.py: ``folder/<org>/<model>/mlp.csv``.

    ``gpus[0]`` is the catalog GPU they were measured on (its datasheet facts are used); every
    name in ``gpus`` receives the fitted GEMM factors with ``--update-catalog``.
    """

    folder: Path
    gpus: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "ExtraProfiles":
        """``FOLDER=GPU[,GPU...]``."""
        folder, sep, names = text.rpartition("=")
        if not sep or not folder or not names:
            raise ValueError(f"expected FOLDER=GPU[,GPU...], got {text!r}")
        return cls(Path(folder), tuple(n.strip() for n in names.split(",") if n.strip()))


def calibrate(data: Path, *, models: list[str] | None = None, max_tokens: int | None = None,
              with_attention: bool = True, with_network: bool = True,
              extra: list[ExtraProfiles] = ()) -> dict:
    """Run every fit and evaluation; returns a JSON-ready dict (factors rounded to 4 digits).

    ``models`` (``"org/name"`` folders) and ``max_tokens`` restrict the GEMM data (quick runs);
    ``extra`` adds GEMM profiles of other GPUs (fitted, and cross-validated with the others).
    """
    catalog = load_gpus()
    base = {dev: catalog[name] for dev, name in DEVICES.items()}
    frames = {dev: load_mlp(data, dev, models=models, max_tokens=max_tokens) for dev in DEVICES}
    gemms = {dev: gemm_data(df) for dev, df in frames.items()}
    for ex in extra:
        label = ex.gpus[0]
        base[label] = catalog[label]
        gemms[label] = gemm_data(load_mlp(ex.folder.parent, ex.folder.name, models=models, max_tokens=max_tokens))
    result: dict = {"data": str(vidur_dir(data)), "fits": {}, "gemm": {}, "gemm_pure_roofline": {}, "token_bias": {},
                    "small_ops": {}, "extra": {ex.gpus[0]: list(ex.gpus) for ex in extra}}

    pure_fits: dict[str, dict[str, float]] = {}
    for dev in gemms:
        f = {k: _round(v) for k, v in fit_gemm(gemms[dev], base[dev]).items()}
        if dev in DEVICES:   # Vidur's profiles also time the small per-layer kernels
            rows, meas = small_op_data(frames[dev])
            f.update({k: _round(v) for k, v in fit_small_ops(rows, meas, dataclasses.replace(base[dev], **f)).items()})
            result["small_ops"][dev] = error_stats(predict_small_ops(rows, dataclasses.replace(base[dev], **f)), meas)
        result["fits"][dev] = f
        pure_fits[dev] = {k: _round(v) for k, v in fit_gemm(gemms[dev], base[dev], fit_overlap=False).items()}

    for fit_dev in gemms:
        for eval_dev in gemms:
            # the evaluated GPU's datasheet facts with the fitting GPU's factors
            gpu = dataclasses.replace(base[eval_dev], **{k: result["fits"][fit_dev][k] for k in GEMM_KEYS})
            pred = predict_gemm(gemms[eval_dev], gpu)
            result["gemm"][f"{fit_dev}->{eval_dev}"] = _per_op(gemms[eval_dev], pred)
            result["token_bias"][f"{fit_dev}->{eval_dev}"] = _per_bin(gemms[eval_dev], pred)
            pure = dataclasses.replace(base[eval_dev], **pure_fits[fit_dev])
            result["gemm_pure_roofline"][f"{fit_dev}->{eval_dev}"] = _per_op(gemms[eval_dev],
                                                                             predict_gemm(gemms[eval_dev], pure))

    a100 = dataclasses.replace(base["a100"], **result["fits"]["a100"])
    if with_attention:
        att = load_attention(data)
        fa = {k: _round(v) for k, v in fit_attention(att, a100).items()}
        a100 = dataclasses.replace(a100, **fa)
        pred = predict_attention(att, a100)
        meas = att["measured_s"].to_numpy()
        pre = att["is_prefill"].to_numpy()
        result["fits"]["a100"].update(fa)
        result["attention"] = {"prefill": error_stats(pred[pre], meas[pre]), "decode": error_stats(pred[~pre], meas[~pre])}
    if with_network:
        net = load_network(data)
        fn = {k: _round(v) for k, v in fit_network(net, a100).items()}
        a100 = dataclasses.replace(a100, **fn)
        result["fits"]["a100"].update(fn)
        pred, meas = predict_network(net, a100), net["measured_s"].to_numpy()
        n = net["num_workers"].to_numpy()
        result["network"] = {f"all_reduce_{k}gpu": error_stats(pred[n == k], meas[n == k]) for k in sorted(set(n))}
        sr = load_network(data, "a100_dgx", "send_recv")
        result["network"]["send_recv_2gpu"] = error_stats(predict_network(sr, a100, "send_recv"),
                                                          sr["measured_s"].to_numpy())
        a40_sr = load_network(data, "a40_pairwise_nvlink", "send_recv")
        big = a40_sr.filter(a40_sr["size"] >= 16 << 20)
        result["a40_send_recv_gbps"] = float(np.median(big["size"].to_numpy() / big["measured_s"].to_numpy()) / 1e9)

    # A40: its own GEMM/small-op fit, A100 attention/link factors. Extra GPUs: their own GEMM
    # factors, defaults for the rest. Defaults: GEMM factors = mean over every profiled GPU,
    # small ops = mean of A100 and A40, attention/link = A100.
    shared = {k: result["fits"]["a100"][k] for k in ("eff_attn_compute", "eff_attn_memory", "attn_overhead_s",
                                                      "eff_link", "link_latency_s") if k in result["fits"]["a100"]}
    result["fits"]["a40"].update(shared)
    defaults = {k: _round(float(np.mean([result["fits"][d][k] for d in gemms]))) for k in GEMM_KEYS}
    defaults.update({k: _round((result["fits"]["a100"][k] + result["fits"]["a40"][k]) / 2)
                     for k in ("eff_elementwise", "layer_overhead_s")})
    defaults.update(shared)
    result["fits"]["defaults"] = defaults
    result["fits_pure_roofline"] = pure_fits
    for dev in gemms:   # the defaults on every measured GPU (a held-out check for the extra GPUs)
        gpu = dataclasses.replace(base[dev], **{k: result["fits"]["defaults"][k] for k in GEMM_KEYS})
        result["gemm"][f"defaults->{dev}"] = _per_op(gemms[dev], predict_gemm(gemms[dev], gpu))
    return result


# -- writing the catalog and the report --------------------------------------------------------


def _toml_float(v: float) -> str:
    s = repr(float(v))
    return s if any(ch in s for ch in ".en") else s + ".0"


def update_catalog_text(text: str, section_values: dict[str, dict[str, float]]) -> str:
    """Set ``key = value`` lines in the given ``[section]``s of a TOML text, keeping everything else.

    Keys missing from a section are appended after its last key line.
    """
    lines = text.splitlines(keepends=True)
    header = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
    starts = [(i, header.match(ln).group(1).strip()) for i, ln in enumerate(lines) if header.match(ln)]
    out_lines = list(lines)
    inserts: dict[int, list[str]] = {}
    for j, (start, name) in enumerate(starts):
        values = section_values.get(name)
        if not values:
            continue
        end = starts[j + 1][0] if j + 1 < len(starts) else len(lines)
        seen, last_key = set(), start
        for i in range(start + 1, end):
            m = re.match(r"^(\s*)([A-Za-z0-9_]+)\s*=", lines[i])
            if not m:
                continue
            last_key = i
            if m.group(2) in values:
                out_lines[i] = f"{m.group(1)}{m.group(2)} = {_toml_float(values[m.group(2)])}\n"
                seen.add(m.group(2))
        missing = [k for k in values if k not in seen]
        if missing:
            inserts[last_key] = [f"{k} = {_toml_float(values[k])}\n" for k in missing]
    result = []
    for i, ln in enumerate(out_lines):
        result.append(ln)
        result.extend(inserts.get(i, []))
    return "".join(result)


def catalog_sections(result: dict) -> dict[str, dict[str, float]]:
    """``{toml section: factors}`` for the fitted GPUs and ``[defaults]``."""
    out = {"defaults": result["fits"]["defaults"]}
    for dev, names in TARGETS.items():
        for name in names:
            out[f"gpus.{name}"] = {k: v for k, v in result["fits"][dev].items() if k in FACTOR_KEYS}
    for label, names in result.get("extra", {}).items():
        for name in names:
            out[f"gpus.{name}"] = {k: result["fits"][label][k] for k in GEMM_KEYS}
    return out


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
                      "TP 1–8, 1–8192 tokens). The raw CSVs are not in the repository; rerun that script on a GPU "
                      f"to reproduce. Per op: " + ", ".join(
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oracle.calibrate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA,
                        help="calibration data folder (holding vidur/), default ../shared/data/calibration")
    parser.add_argument("--update-catalog", action="store_true", help="write the fitted factors into gpus.toml")
    parser.add_argument("--catalog", type=Path, default=GPUS_TOML, help="the gpus.toml to update")
    parser.add_argument("--results", type=Path, help="markdown file whose calibration section to (re)write")
    parser.add_argument("--json", type=Path, help="write the full results as JSON")
    parser.add_argument("--models", nargs="*", help="only these org/name profile folders (quick runs)")
    parser.add_argument("--max-tokens", type=int, help="only GEMM rows with at most this many tokens")
    parser.add_argument("--no-attention", action="store_true", help="skip the attention fit")
    parser.add_argument("--no-network", action="store_true", help="skip the network fit")
    parser.add_argument("--extra-profiles", action="append", default=[], type=ExtraProfiles.parse,
                        metavar="FOLDER=GPU[,GPU...]",
                        help="GEMM profiles from benchmarks/calibrate.py (FOLDER/<org>/<model>/mlp.csv) measured on "
                             "catalog GPU GPU; --update-catalog gives its fitted GEMM factors to every GPU listed")
    args = parser.parse_args(argv)
    if not vidur_dir(args.data).is_dir():
        print(f"error: {args.data}: no calibration data (expected a vidur/ folder)", file=sys.stderr)
        return 1
    result = calibrate(args.data, models=args.models, max_tokens=args.max_tokens,
                       with_attention=not args.no_attention, with_network=not args.no_network,
                       extra=args.extra_profiles)
    command = " ".join(["python -m oracle.calibrate", *(sys.argv[1:] if argv is None else argv)])
    section = report_markdown(result, command)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if args.update_catalog:
        args.catalog.write_text(update_catalog_text(args.catalog.read_text(), catalog_sections(result)))
        if args.catalog.resolve() == GPUS_TOML.resolve():
            load_gpus.cache_clear()
            gpu_defaults.cache_clear()
    if args.results:
        old = args.results.read_text() if args.results.exists() else ""
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(replace_section(old, section))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
