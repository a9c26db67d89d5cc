"""Run one conformance workload and print where vLLM and the engine differ.

    python -m tests.conformance list
    python -m tests.conformance run burst_shared_prefix            # vLLM vs oracle and reference
    python -m tests.conformance run free_order --side oracle --steps
    python -m tests.conformance run /tmp/conformance-failures/gen_chat-1a2b3c4d5e.json
    python -m tests.conformance run tight_kv_preemption --async    # vLLM's AsyncScheduler

Run from the repository root with the Python that has vLLM (``pip install -e .[conformance]``).
``--steps`` also prints every step of each side; ``--vllm-option k=v`` overrides a vLLM
``SchedulerConfig`` field (e.g. ``scheduler_reserve_full_isl=False``).
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
from pathlib import Path

from .harness import RUNNERS, compare, run_vllm
from .trace import steps_table, summary
from .workloads import TRACE_CASES, Case, as_async, hand_made, trace_case


def load_case(name: str) -> Case:
    if name.endswith(".json") and Path(name).exists():
        return Case.from_json(Path(name).read_text())
    cases = hand_made()
    if name in cases:
        return cases[name]
    if name in TRACE_CASES:
        return trace_case(name, tempfile.mkdtemp(prefix="conformance-"))
    raise SystemExit(f"unknown workload {name!r}; try `python -m tests.conformance list`")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.conformance", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the named workloads")
    run = sub.add_parser("run", help="run one workload (a name or a dumped .json)")
    run.add_argument("name")
    run.add_argument("--side", choices=["oracle", "reference", "both"], default="both",
                     help="what to compare vLLM with")
    run.add_argument("--steps", action="store_true", help="print every step of every side")
    run.add_argument("--vllm-option", action="append", default=[], metavar="K=V")
    run.add_argument("--async", dest="async_", action="store_true",
                     help="async scheduling on both sides (client timeouts dropped)")
    args = ap.parse_args(argv)
    if args.cmd == "list":
        for name, c in hand_made().items():
            print(f"{name:32s} {c.what}")
        for name in TRACE_CASES:
            print(f"{name:32s} (bundled trace sample)")
        return 0
    case = load_case(args.name)
    if args.async_:
        case = as_async(case)
    overrides = {}
    for kv in args.vllm_option:
        k, _, v = kv.partition("=")
        overrides[k] = ast.literal_eval(v)
    print(f"workload {case.name}: {case.describe()}")
    v = run_vllm(case, **overrides)
    sides = ["oracle", "reference"] if args.side == "both" else [args.side]
    traces = [v] + [RUNNERS[s](case) for s in sides]
    for t in traces:
        print(summary(t))
    if args.steps:
        for t in traces:
            print(f"\n{t.source} steps:\n{steps_table(t)}")
    status = 0
    for t in traces[1:]:
        diff = compare(v, t)
        print()
        print(diff or f"{v.source} and {t.source} agree")
        status |= bool(diff)
    return status


if __name__ == "__main__":
    sys.exit(main())
