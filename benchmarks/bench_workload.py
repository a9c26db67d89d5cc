"""Workload benchmarks: generation, block hashing, trace import, ideal prefix reuse.

Each case runs in a fresh child process (so peak RSS is per case), ``--repeat`` times;
the code under test is single-threaded except pyarrow's JSON reader. The report gives the
median wall time (``time_s``) and CPU time (``cpu_s``, all threads: the single-core figure,
and the steadier one on a loaded machine; ``BENCH_PIN_CPU=k`` pins the children to CPU k), the largest peak RSS of the children, plus the RSS of a child that only imports
the package (the baseline). Kernel compile (or numba cache load) time is reported apart
from the warm runs.

    python benchmarks/bench_workload.py             # all cases, 3 repeats
    python benchmarks/bench_workload.py --case generate --repeat 5
    ORACLE_NUMBA_CACHE=0 python benchmarks/bench_workload.py --case hash   # compile time without cache
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT.parent / "shared" / "data" / "traces"
CASES = ("baseline", "generate", "hash", "hash_unique", "mooncake_import", "ideal_reuse")


def chat_spec():
    """The DESIGN §7 chat client: lognormal lengths, 1-8 turns, 8 shared 600-token system prompts."""
    from oracle.workload.spec import ArrivalSpec, ClientSpec, ConversationSpec, DistSpec, WorkloadSpec, constant
    client = ClientSpec(
        name="chat", arrival=ArrivalSpec("poisson", 4.0),
        prompt_tokens=DistSpec(dist="lognormal", mean=600.0, sigma=0.9, max=8192.0),
        output_tokens=DistSpec(dist="lognormal", mean=220.0, sigma=0.7, max=2048.0),
        conversation=ConversationSpec(turns=DistSpec(dist="uniform", min=1.0, max=8.0),
                                      think_time_s=constant(5.0, integer=False)),
        system_prompt_tokens=600, num_system_prompts=8)
    return WorkloadSpec(clients=(client,))


def lone_spec():
    """Independent requests (no sharing): every block is hashed from scratch."""
    from oracle.workload.spec import ArrivalSpec, ClientSpec, DistSpec, WorkloadSpec
    client = ClientSpec(name="lone", arrival=ArrivalSpec("poisson", 4.0),
                        prompt_tokens=DistSpec(dist="lognormal", mean=2000.0, sigma=0.9, max=32768.0),
                        output_tokens=DistSpec(dist="lognormal", mean=220.0, sigma=0.7, max=2048.0))
    return WorkloadSpec(clients=(client,))


def make_mooncake_file(path: Path, lines: int) -> None:
    """Tile the Mooncake sample (shifting timestamps and hash ids) up to ``lines`` records."""
    src = [json.loads(line) for line in (TRACES / "synthetic_trace.jsonl").open()]
    span = src[-1]["timestamp"] + 1
    max_id = max(max(r["hash_ids"]) for r in src) + 1
    with path.open("w") as f:
        k = 0
        while k * len(src) < lines:
            for r in src[:lines - k * len(src)]:
                f.write(json.dumps({"timestamp": r["timestamp"] + k * span, "input_length": r["input_length"],
                                    "output_length": r["output_length"],
                                    "hash_ids": [h + k * max_id for h in r["hash_ids"]]}) + "\n")
            k += 1


class _Clock:
    """Wall and CPU seconds of a block: ``with _Clock() as c: ...; c.wall, c.cpu``."""

    def __enter__(self):
        self.t, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.t, time.process_time() - self.c


def run_case(case: str, n: int, mooncake_file: str | None) -> dict:
    """Run one case in this process; return timings (s) and facts."""
    import numpy as np

    from oracle.workload import build_workload
    out: dict = {"case": case}
    if case == "baseline":
        import oracle.kernels.hashing  # noqa: F401
        import oracle.workload.traces  # noqa: F401
    elif case == "generate":
        spec = chat_spec()
        with _Clock() as c:
            wl = build_workload(spec, duration_s=None, num_requests=n, seed=42)
        out.update(time_s=c.wall, cpu_s=c.cpu)
        out.update(requests=len(wl), segments=wl.num_segments,
                   workload_bytes=sum(getattr(wl, c).nbytes for c in
                                      ("arrival_s", "prompt_tokens", "output_tokens", "session", "turn", "parent",
                                       "think_s", "client", "seg_offsets", "seg_key", "seg_len")))
    elif case in ("hash", "hash_unique"):
        from oracle.kernels.hashing import block_hashes
        spec = chat_spec() if case == "hash" else lone_spec()
        wl = build_workload(spec, duration_s=None, num_requests=n, seed=42)
        tiny = wl.slice(2)
        t = time.perf_counter()
        block_hashes(tiny.seg_offsets, tiny.seg_key, tiny.seg_len, 16)
        out["first_call_s"] = time.perf_counter() - t  # compile or numba-cache load
        with _Clock() as c:
            h_off, h = block_hashes(wl.seg_offsets, wl.seg_key, wl.seg_len, 16)
        out.update(time_s=c.wall, cpu_s=c.cpu)
        out.update(requests=len(wl), blocks=int(h.size), blocks_per_s=h.size / out["time_s"],
                   tokens=int(wl.total_tokens().sum()))
    elif case == "mooncake_import":
        from oracle.workload.traces import read_trace
        with _Clock() as c:
            wl = read_trace(mooncake_file, "mooncake")
        out.update(time_s=c.wall, cpu_s=c.cpu)
        out.update(requests=len(wl), segments=wl.num_segments, file_mb=os.path.getsize(mooncake_file) / 1e6)
    elif case == "ideal_reuse":
        from oracle.workload.stats import ideal_prefix_reuse
        from oracle.workload.traces import read_trace
        wl = read_trace(TRACES / "synthetic_trace.jsonl")
        ideal_prefix_reuse(wl.slice(10), 512)  # compile / cache load
        with _Clock() as c:
            hit, prompt = ideal_prefix_reuse(wl, 512)
        out.update(time_s=c.wall, cpu_s=c.cpu, requests=len(wl), reuse=hit / prompt)
        big = build_workload(chat_spec(), duration_s=None, num_requests=n, seed=42)
        with _Clock() as c:  # hashing (block size 16) + counting
            hit, prompt = ideal_prefix_reuse(big, 16)
        out.update(chat_time_s=c.wall, chat_cpu_s=c.cpu, chat_requests=len(big), chat_reuse=hit / prompt)
    np.asarray(0)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=CASES, action="append", help="Case(s) to run (default: all).")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--mooncake-lines", type=int, default=1_000_000)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mooncake-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if os.environ.get("BENCH_PIN_CPU"):  # e.g. BENCH_PIN_CPU=1 pins children to CPU 1
            os.sched_setaffinity(0, {int(os.environ["BENCH_PIN_CPU"])})
        print(json.dumps(run_case(args.child, args.requests, args.mooncake_file)))
        return
    cases = args.case or list(CASES)
    with tempfile.TemporaryDirectory() as tmp:
        moon = Path(tmp) / "mooncake_big.jsonl"
        if "mooncake_import" in cases:
            make_mooncake_file(moon, args.mooncake_lines)
        for case in cases:
            runs = []
            for _ in range(1 if case == "baseline" else args.repeat):
                cmd = [sys.executable, __file__, "--child", case, "--requests", str(args.requests),
                       "--mooncake-file", str(moon)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ,
                                     "PYTHONPATH": str(ROOT)})
                runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
            summary = dict(runs[-1])
            for key in ("time_s", "cpu_s", "first_call_s", "chat_time_s", "chat_cpu_s"):
                if key in summary:
                    summary[key] = statistics.median(r[key] for r in runs)
            if "time_s" in summary and "blocks" in summary:
                summary["blocks_per_s"] = summary["blocks"] / summary["time_s"]
            summary["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
            summary["runs"] = len(runs)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}))


if __name__ == "__main__":
    main()
