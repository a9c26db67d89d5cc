"""Time the jitted engine alone (no generation, hashing or writing) on a benchmark scenario.

    python benchmarks/engine_only.py chat 30000
    python benchmarks/engine_only.py chat 30000 frameworks.0.router=session_affinity --repeats 5
    python benchmarks/engine_only.py plain-spec 20000     # speculative decoding (plain_spec.toml)
    python benchmarks/engine_only.py chat-pd 100000       # prefill/decode disaggregation (chat_pd.toml)

The workload and engine inputs are built first; the compiled engine is loaded on a small
run; then ``run_engine`` is timed ``--repeats`` times (best and median printed) with the
engine's work counters per request (``EngineOutputs.diagnostics``). Overrides are dotted
``key=value`` pairs, each value read as TOML (``12``, ``1.5``, ``true``) or else kept as a string. Use it to
compare engine changes in one session on a noisy machine: run both versions back to back.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parser(description: str, repeats: int,
           scenarios: tuple[str, ...] = ("chat", "plain", "plain-spec")) -> argparse.ArgumentParser:
    """The command line shared with ``profile_engine.py``: scenario, requests, overrides."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=list(scenarios))
    ap.add_argument("requests", type=int)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ap.add_argument("--repeats", type=int, default=repeats)
    return ap


def parse_override(item: str) -> tuple[str, object]:
    """``"key=value"`` -> ``(key, value)``, the value read as a TOML value (``12``, ``1.5``,
    ``true``, ``"text"``, ``[1, 2]``) and kept as a string if it is not one (``prefix_aware``)."""
    import tomllib

    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"override {item!r}: expected KEY=VALUE")
    try:
        return key, tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return key, value


def prepare(scenario: str, requests: int, overrides: list[str]):
    """``(inputs, overrides dict)`` of a benchmark scenario with ``requests`` requests and the
    ``key=value`` overrides, after loading the compiled engine on a small run of it. A
    disaggregated scenario gives :class:`~oracle.engine.disagg.PDInputs` (run them with
    :func:`run`)."""
    from oracle.api import as_scenario, engine_inputs, load_workload, pd_inputs
    from oracle.scenario import apply_overrides, load_scenario

    ov = dict(parse_override(item) for item in overrides)
    raw = apply_overrides(load_scenario(HERE / f"{scenario.replace('-', '_')}.toml").raw,
                          {"simulation.num_requests": requests, **ov})
    sc = as_scenario(raw)
    fw = sc.frameworks[0]
    build = pd_inputs if fw.disaggregated else engine_inputs
    inputs = build(sc, fw, load_workload(sc), record_steps=False)
    small = as_scenario(apply_overrides(raw, {"simulation.num_requests": 300}))
    run(build(small, fw, load_workload(small), record_steps=False))  # load the compiled engine
    return inputs, ov


def run(inputs):
    """The engine's outputs for ``inputs``: the P/D engine for disaggregated inputs."""
    from oracle.engine.disagg import PDInputs
    if isinstance(inputs, PDInputs):
        from oracle.engine.pd import run_pd_engine
        return run_pd_engine(inputs)
    from oracle.engine.loop import run_engine
    return run_engine(inputs)


def main(argv: list[str] | None = None) -> None:
    args = parser(__doc__, repeats=3, scenarios=("chat", "plain", "plain-spec", "chat-pd")).parse_args(argv)
    inputs, ov = prepare(args.scenario, args.requests, args.overrides)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = run(inputs)
        times.append(time.perf_counter() - t0)
    n = args.requests
    per_req = {k: round(v / n, 1) for k, v in out.diagnostics.items()}
    print(f"{args.scenario} {n:,} requests {ov or ''}: engine best {min(times):.3f} s, median "
          f"{statistics.median(times):.3f} s ({min(times) / n * 1e6:.1f} us/request); per request: {per_req}")


if __name__ == "__main__":
    main()
