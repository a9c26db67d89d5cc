"""Where the compiled engine's time goes: cycles per request in each block-pool kernel and
each phase of a step.

    python benchmarks/profile_engine.py chat 200000
    python benchmarks/profile_engine.py chat 200000 frameworks.0.router=session_affinity

No profiler sees inside the engine's one compiled loop (numba emits no symbols ``perf`` can
name, and ``NUMBA_ENABLE_PROFILING`` makes the compile take over 10 GB and 15 minutes). So
this script copies the ``oracle`` package into a temporary folder, wraps each block-pool
kernel of ``oracle/kernels/kvcache.py`` and each phase of a step in ``oracle/engine/loop.py``
in reads of the CPU's cycle counter (LLVM ``llvm.readcyclecounter``), runs the engine from
that copy in a subprocess (as ``engine_only.py`` does: inputs built first, the compiled
engine loaded on a small run, then timed runs), and prints microseconds per request and the
share of the loop for each, with the calls per request of the kernels.

The copy is a package state of its own: it compiles once (minutes) and is then loaded from
the kernel cache like any other. The counting costs time (about a third more on chat), so
compare shares, and compare before / after with this script on both, not with
``engine_only.py``. The instrumentation is a list of exact source substitutions: when the
engine's code changes so that one no longer matches, the script stops and names it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: Block-pool kernels timed (index in the counter array), all in oracle/kernels/kvcache.py.
KERNELS = {"match_prefix": 1, "touch_hits": 2, "allocate": 3, "free_blocks": 4, "cache_block": 5,
           "count_evictable_hits": 6}
#: Phases timed, all in oracle/engine/loop.py: (label, index, the exact source line to wrap,
#: the pool expression there; None for the router call, which is split from its enqueue).
PHASES = [
    ("route (router)", 8, "    _enqueue(q, route(q, cfg, req, st), ta, cfg, req, st)\n", None),
    ("_schedule", 9,
     "        nb, nsch, nrun = _schedule(r, t, cutoff, 1 if asy else 0, cfg, req, st)\n", "st.pool"),
    ("  schedule_active", 10,
     "        nsch, budget, preempted = schedule_active(r, budget, lag, cfg, req, st)\n", "pool"),
    ("  cache_cohort", 11,
     "        cache_cohort(r, lag, cfg, req, st)  # the members that fill a block register it now\n", "pool"),
    ("  schedule_waiting", 12,
     "        nsch = schedule_waiting(r, t, cutoff, budget, nsch, nb, cfg, req, st)\n", "pool"),
    ("_price", 13, "    dt, num_decode, num_tokens = _price(r, nb, nsch, cfg, req, st)\n",
     "st.pool"),
    ("_end_step", 14, "    _end_step(r, t, t_end, nb, nsch, cfg, req, st)\n", "st.pool"),
    ("  finish_completions", 15,
     "        finish_completions(r, t_end, nsch, cfg, req, st)\n", "st.pool"),
]
TOTAL = 16  # counter of the whole event loop (_run)
CALLS = 16  # the calls of kernel i are counted at i + CALLS
NUM = 32    # counters

_RDTSC = '''

@intrinsic
def rdtsc(typingctx):
    """The CPU's cycle counter (benchmarks/profile_engine.py instruments a copy with it)."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return sig, codegen
'''


class Mismatch(RuntimeError):
    """An instrumentation point no longer matches the engine's source."""


def _replace_once(text: str, old: str, new: str, where: str) -> str:
    if text.count(old) != 1:
        raise Mismatch(f"{where}: expected exactly one occurrence of {old.strip()!r}, found {text.count(old)}")
    return text.replace(old, new)


def instrument(pkg: Path) -> None:
    """Add the counters to the copy of the package at ``pkg`` (its ``oracle`` folder's parent)."""
    pre = pkg / "oracle/kernels/prefetch.py"
    pre.write_text(pre.read_text() + _RDTSC)

    kv = pkg / "oracle/kernels/kvcache.py"
    s = kv.read_text()
    s = _replace_once(s, "from oracle.kernels.prefetch import prefetch\n",
                      "from oracle.kernels.prefetch import prefetch, rdtsc\n", "kvcache.py")
    s = _replace_once(s, '"num_mapped", "n", "cmask", "caching"])', '"num_mapped", "n", "cmask", "caching", "prof"])',
                      "kvcache.py Pool")
    s = _replace_once(s, "caching=bool(caching))", "caching=bool(caching), prof=PROF)", "kvcache.py new_pool")
    s = _replace_once(s, "\nPool = namedtuple(", f"\nPROF = np.zeros({NUM}, np.int64)\n\nPool = namedtuple(",
                      "kvcache.py")
    for name, idx in KERNELS.items():
        s = _replace_once(s, f"\ndef {name}(", f"\ndef _{name}_timed(", f"kvcache.py {name}")
        start = s.index(f"\ndef _{name}_timed(") + len(f"\ndef _{name}_timed(")
        args = s[start:s.index(")", start)]
        s += (f'\n\n@jit(inline="always")\ndef {name}({args}):\n    t0 = rdtsc()\n'
              f"    res = _{name}_timed({args})\n    pool.prof[{idx}] += rdtsc() - t0\n"
              f"    pool.prof[{idx + CALLS}] += 1\n    return res\n")
    kv.write_text(s)

    loop = pkg / "oracle/engine/loop.py"
    s = loop.read_text()
    s = _replace_once(s, "from oracle.kernels.kvcache import num_free, num_hashed, num_used\n",
                      "from oracle.kernels.kvcache import num_free, num_hashed, num_used\n"
                      "from oracle.kernels.prefetch import rdtsc\n", "loop.py imports")
    for label, idx, line, pool in PHASES:
        indent = line[:len(line) - len(line.lstrip())]
        if pool is None:  # the router: time the call, then enqueue
            new = (f"{indent}t0 = rdtsc()\n{indent}rr = route(q, cfg, req, st)\n"
                   f"{indent}st.pool.prof[{idx}] += rdtsc() - t0\n{indent}_enqueue(q, rr, ta, cfg, req, st)\n")
        else:
            new = f"{indent}t0 = rdtsc()\n{line}{indent}{pool}.prof[{idx}] += rdtsc() - t0\n"
        s = _replace_once(s, line, new, f"loop.py {label.strip()}")
    s = _replace_once(s, "    si, num_steps = pos[0], pos[1]\n", "    si, num_steps = pos[0], pos[1]\n    t00 = rdtsc()\n",
                      "loop.py _run")
    s = _replace_once(s, "    pos[0], pos[1] = si, num_steps\n    return True",
                      f"    pos[0], pos[1] = si, num_steps\n    st.pool.prof[{TOTAL}] += rdtsc() - t00\n    return True",
                      "loop.py _run end")
    loop.write_text(s)


_RUNNER = '''
import json, sys, time
sys.path.insert(0, sys.argv[1])   # benchmarks/: engine_only.prepare (imports the copy on PYTHONPATH)
from engine_only import prepare
from oracle.engine.loop import run_engine
from oracle.kernels import kvcache

scenario, n, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kernels, phases, total, calls = json.loads(sys.argv[5]), json.loads(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
inputs, ov = prepare(scenario, n, sys.argv[9:])
runs = []
for _ in range(repeats):
    kvcache.PROF[:] = 0
    t0 = time.perf_counter()
    run_engine(inputs)
    runs.append((time.perf_counter() - t0, kvcache.PROF.copy()))
wall, prof = min(runs, key=lambda x: x[0])
cyc = prof[total] / wall  # cycles per second of the loop
us = lambda c: c / cyc / n * 1e6
print(f"{scenario} {n:,} requests {ov or ''}: best of {repeats} {wall:.3f} s with the counters "
      f"({us(prof[total]):.2f} us a request; runs {', '.join(f'{w:.3f}' for w, _ in runs)} s)")
print(f"{'':24s} {'us/request':>10s} {'share':>7s} {'calls/request':>14s}")
rows = [(name, i, True) for name, i in kernels.items()] + [(label, i, False) for label, i in phases.items()]
for name, i, kernel in rows:
    c = f"{prof[i + calls] / n:14.1f}" if kernel else ""
    print(f"{name:24s} {us(prof[i]):10.2f} {100 * prof[i] / prof[total]:6.1f}% {c}")
print(f"{'event loop (_run)':24s} {us(prof[total]):10.2f} {100.0:6.1f}%")
'''


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    from engine_only import parser

    args = parser(__doc__, repeats=2).parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="oracle-profile-") as tmp:
        pkg = Path(tmp)
        shutil.copytree(ROOT / "oracle", pkg / "oracle", ignore=shutil.ignore_patterns("__pycache__"))
        try:
            instrument(pkg)
        except Mismatch as exc:
            print(f"profile_engine.py: the engine's source changed, update the instrumentation: {exc}",
                  file=sys.stderr)
            return 1
        runner = pkg / "runner.py"
        runner.write_text(_RUNNER)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        phases = {label: idx for label, idx, *_ in PHASES}
        cmd = [sys.executable, str(runner), str(HERE), args.scenario, str(args.requests), str(args.repeats),
               json.dumps(KERNELS), json.dumps(phases), str(TOTAL), str(CALLS), *args.overrides]
        return subprocess.run(cmd, env=env, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
