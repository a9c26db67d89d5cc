"""The fits: per-GPU efficiency factors minimising the mean absolute log error, evaluated
through the cost kernel (:func:`oracle.kernels.cost.step_work`), and :func:`calibrate`, which
runs them all (see the package docstring for what is fitted).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from oracle.calibrate.load import (DEVICES, GEMM_OPS, SMALL_OPS, ExtraProfiles, load_attention, load_mlp,
                                   load_network, shape_model, vidur_dir)
from oracle.catalog import GpuSpec, ModelSpec, load_gpus
from oracle.cost import build_cost_params
from oracle.kernels.cost import NUM_OPS, OP_NAMES, step_work

TOKEN_BINS = ((1, 8), (9, 64), (65, 256), (257, 1024), (1025, 1 << 30))
GEMM_KEYS = ("eff_compute", "eff_memory", "roofline_overlap", "kernel_overhead_s")


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
