"""Time GEMMs shaped like Vidur's ``mlp.csv`` profiles on the local GPU (PyTorch), for calibration.

Run on a machine with a CUDA GPU and PyTorch::

    python benchmarks/calibrate.py --out DIR [--device-name h200]

For every profiled model shape of ../shared/data/calibration/vidur (hidden, heads, KV heads,
MLP width) and TP size 1, 2, 4, 8, it times the four per-layer GEMMs of one GPU of the TP
group -- QKV (``attn_pre_proj``), attention output (``attn_post_proj``), gate+up
(``mlp_up_proj``) and down (``mlp_down_proj``) -- in bf16 for 1 to 8192 tokens, and writes
``DIR/<device>/<org>/<model>/mlp.csv`` with Vidur's column names (times in ms), so that
``python -m oracle.calibrate --extra-profiles DIR/<device>=<catalog gpu>`` can evaluate or fit
the cost model on it.

Method: the weight is ``W [N, K]`` and the op is ``x @ W.T`` as in ``torch.nn.functional.linear``.
Each measurement replays a CUDA graph of ``REPS`` GEMMs that cycle through enough weight
copies to exceed the L2 cache (different layers never share weights in a real forward pass),
and divides the graph's time (CUDA events) by ``REPS``; the median of ``TRIALS`` replays is
kept. Launch overhead is thus excluded, like Vidur's kernel-level (Kineto) timings.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import time
from pathlib import Path

#: (org/model, heads, KV heads, hidden, MLP width, vocab, gated MLP, TP sizes) of Vidur's profiles
SHAPES = [
    ("meta-llama/Llama-2-7b-hf", 32, 32, 4096, 11008, 32768, True, (1, 2, 4, 8)),
    ("meta-llama/Meta-Llama-3-8B", 32, 8, 4096, 14336, 128256, True, (1, 2, 4, 8)),
    ("internlm/internlm-20b", 40, 40, 5120, 13824, 103168, True, (1, 2, 4, 8)),
    ("codellama/CodeLlama-34b-Instruct-hf", 64, 8, 8192, 22016, 32768, True, (1, 2, 4, 8)),
    ("meta-llama/Llama-2-70b-hf", 64, 8, 8192, 28672, 32768, True, (1, 2, 4, 8)),
    ("Qwen/Qwen-72B", 64, 64, 8192, 24576, 152064, True, (1, 2, 4, 8)),
    ("microsoft/phi-2", 32, 32, 2560, 10240, 51200, False, (1,)),
]
TOKENS = (1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)
REPS = 16
TRIALS = 5
L2_FLUSH_BYTES = 256 * 2**20


def gemm_shapes(heads: int, kv_heads: int, hidden: int, mlp: int, gated: bool, tp: int) -> dict[str, tuple[int, int]]:
    """``{vidur op: (K, N)}`` on one GPU of the TP group (KV heads replicated when tp > kv_heads)."""
    d = hidden // heads
    q = heads // tp
    kv = max(1, kv_heads // tp)
    f = mlp // tp
    return {"attn_pre_proj": (hidden, (q + 2 * kv) * d), "attn_post_proj": (q * d, hidden),
            "mlp_up_proj": (hidden, (2 if gated else 1) * f), "mlp_down_proj": (f, hidden)}


def time_gemm(torch, tokens: int, k: int, n: int) -> float:
    """Median seconds of one bf16 ``[tokens, k] @ [k, n]`` GEMM (CUDA-graph replay, see module doc)."""
    dev = torch.device("cuda")
    copies = max(1, min(64, math.ceil(L2_FLUSH_BYTES / (k * n * 2))))
    weights = [torch.randn(n, k, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
    x = torch.randn(tokens, k, device=dev, dtype=torch.bfloat16)
    out = torch.empty(tokens, n, device=dev, dtype=torch.bfloat16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):      # warm up cuBLAS (workspace, heuristics) outside the graph
        for w in weights[:2]:
            torch.mm(x, w.t(), out=out)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(REPS):
            torch.mm(x, weights[i % copies].t(), out=out)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(TRIALS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3 / REPS)
    del graph, weights, x, out
    return statistics.median(times)


def copy_bandwidth(torch, nbytes: int = 4 * 2**30) -> float:
    """Device-to-device copy rate, bytes/s counting bytes read and written (median of 5)."""
    a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda")
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    rates = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        end.record()
        end.synchronize()
        rates.append(2 * nbytes / (start.elapsed_time(end) * 1e-3))
    del a, b
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device-name", default=None, help="folder name for this GPU (default: from torch)")
    parser.add_argument("--max-tokens", type=int, default=max(TOKENS), help="largest token count to time")
    args = parser.parse_args(argv)

    import torch
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    props = torch.cuda.get_device_properties(0)
    name = args.device_name or props.name.lower().replace("nvidia ", "").replace(" ", "-")
    t0 = time.perf_counter()
    meta = {"device": props.name, "sms": props.multi_processor_count, "torch": torch.__version__,
            "copy_bytes_per_s": copy_bandwidth(torch)}
    for model, heads, kv_heads, hidden, mlp, vocab, gated, tps in SHAPES:
        path = args.out / name / model / "mlp.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            ops = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")
            writer = csv.writer(fh)
            writer.writerow([f"time_stats.{op}.median" for op in ops] + [
                "n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size", "use_gated_mlp", "num_tokens",
                "num_tensor_parallel_workers"])
            for tp in tps:
                shapes = gemm_shapes(heads, kv_heads, hidden, mlp, gated, tp)
                for tokens in (t for t in TOKENS if t <= args.max_tokens):
                    ms = [time_gemm(torch, tokens, *shapes[op]) * 1e3 for op in ops]
                    writer.writerow([f"{v:.6f}" for v in ms] + [heads, kv_heads, hidden, mlp, vocab, gated, tokens, tp])
        print(f"{model}: done at {time.perf_counter() - t0:.0f} s", flush=True)
    meta["wall_s"] = time.perf_counter() - t0
    (args.out / f"{name}_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
