"""Calibration data: Vidur's per-op profiles (and extra GEMM profiles) as deduplicated tables.

Times are seconds (the CSVs hold ms). Rows measured more than once are deduplicated: the
median of the per-row medians.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from oracle.catalog import ModelSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "calibration"

#: Vidur op column -> cost-model op
GEMM_OPS = {"attn_pre_proj": "qkv_proj", "attn_post_proj": "attn_out_proj", "mlp_up_proj": "mlp_gate_up",
            "mlp_down_proj": "mlp_down"}
SMALL_OPS = ("input_layernorm", "post_attention_layernorm", "attn_rope", "mlp_act", "add")
#: Vidur device folder -> catalog GPU holding its datasheet facts
DEVICES = {"a100": "a100-80g", "a40": "a40"}


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


def load_attention(data: Path):
    """Deduplicated A100 attention rows: ``is_prefill, batch_size, chunk, kv, n_embd, n_q_head, n_kv_head,
    tp, measured_s``."""
    df = pl.read_csv(vidur_dir(data) / "attention" / "a100_attention.csv", infer_schema_length=None)
    keys = ["is_prefill", "batch_size", "prefill_chunk_size", "kv_cache_size", "n_embd", "n_q_head", "n_kv_head",
            "num_tensor_parallel_workers"]
    t = (pl.when(pl.col("is_prefill")).then(pl.col("time_stats.attn_prefill.median").cast(pl.Float64))
         .otherwise(pl.col("time_stats.attn_decode.median").cast(pl.Float64)))
    return (df.with_columns(t.alias("t")).group_by(keys).agg(pl.col("t").median().mul(1e-3).alias("measured_s"))
            .filter(pl.col("measured_s") > 0).sort(keys))


def load_network(data: Path, setup: str = "a100_dgx", collective: str = "all_reduce"):
    """Deduplicated single-node collective rows: ``num_workers, size`` (bytes), ``measured_s``."""
    df = pl.read_csv(vidur_dir(data) / "network" / setup / f"{collective}.csv", infer_schema_length=None)
    return (df.filter(pl.col("num_workers") == pl.col("devices_per_node"))
            .group_by(["num_workers", "size"])
            .agg(pl.col(f"time_stats.{collective}.median").median().mul(1e-3).alias("measured_s"))
            .filter(pl.col("measured_s") > 0).sort(["num_workers", "size"]))


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
