"""Fit the cost model's per-GPU efficiency factors to measured kernel timings (Vidur profiles).

Modules: :mod:`~oracle.calibrate.load` (the profiles as tables), :mod:`~oracle.calibrate.fit`
(the fits and :func:`calibrate`), :mod:`~oracle.calibrate.report` (the RESULTS.md section),
:mod:`~oracle.calibrate.catalog` (rewriting ``gpus.toml``) and :mod:`~oracle.calibrate.cli`.

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
their raw timings are in ``benchmarks/data/``): they are fitted and cross-validated like the
Vidur GPUs, and their GEMM factors go to the GPUs named.

GPUs without measurements get ``[defaults]``: the mean of every profiled GPU's GEMM factors
(so a rerun without the same ``--extra-profiles`` changes them), the mean of the A100 and A40
small-op factors, and the A100 attention and link factors. Every reported error is computed
with the rounded factors that are written to the catalog, through the cost kernel.
"""

from __future__ import annotations

from oracle.calibrate.catalog import FACTOR_KEYS, TARGETS, catalog_sections, update_catalog_text
from oracle.calibrate.cli import main
from oracle.calibrate.fit import (GEMM_KEYS, TOKEN_BINS, GemmData, attention_aggregates, calibrate, error_stats,
                                  fit_attention, fit_gemm, fit_network, fit_small_ops, gemm_data, pattern_search,
                                  predict_attention, predict_gemm, predict_network, predict_small_ops, roofline_s,
                                  small_op_data)
from oracle.calibrate.load import (DEFAULT_DATA, DEVICES, GEMM_OPS, REPO_ROOT, SMALL_OPS, ExtraProfiles,
                                   load_attention, load_mlp, load_network, shape_model, vidur_dir)
from oracle.calibrate.report import RESULTS_HEADING, read_results_json, replace_section, report_markdown
from oracle.catalog import GPUS_TOML

__all__ = ["DEFAULT_DATA", "DEVICES", "FACTOR_KEYS", "GEMM_KEYS", "GEMM_OPS", "GPUS_TOML", "REPO_ROOT",
           "RESULTS_HEADING", "SMALL_OPS", "TARGETS", "TOKEN_BINS", "ExtraProfiles", "GemmData",
           "attention_aggregates", "calibrate", "catalog_sections", "error_stats", "fit_attention", "fit_gemm",
           "fit_network", "fit_small_ops", "gemm_data", "load_attention", "load_mlp", "load_network", "main",
           "pattern_search", "predict_attention", "predict_gemm", "predict_network", "predict_small_ops",
           "read_results_json", "replace_section", "report_markdown", "roofline_s", "shape_model",
           "small_op_data", "update_catalog_text", "vidur_dir"]
