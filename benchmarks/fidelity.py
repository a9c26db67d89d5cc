"""End-to-end fidelity: `oracle replay` on every real run, markdown tables (benchmarks/FIDELITY.md).

Runs the replays one after another (each is what ``oracle replay RUN --json`` prints),
keeps each run's JSON in ``--json-dir`` and prints the tables: per run and stage, predicted
vs measured mean TTFT, TPOT (per token, converted), E2E and throughput with signed errors,
then the medians over the stages that were not overloaded. Optional extra tables:

* ``--before DIR``: per stage, the signed errors of saved "before" replays next to these;
* ``--lomo FILE``: the leave-one-model-out table of an ``oracle calibrate-e2e --json-out FILE``;
* ``--ablation``: the medians with each cost-model term switched off in turn (replays again);
* ``--seeds N``: each run is also replayed with the seeds after ``--seed`` (``oracle replay
  --seeds``: N arrival and prompt-order draws in all); prints, per stage, the signed errors at
  ``--seed`` with their range over the N draws, then the medians for each draw: how much of a
  stage's error is the one draw (also from saved JSONs of such replays, ``--from-json``).

    python benchmarks/fidelity.py                                  # ../shared/data/vllm_runs/h100-inference-perf
    python benchmarks/fidelity.py RUNS_DIR --json-dir runs/fidelity --gpu h100-sxm
    python benchmarks/fidelity.py --from-json runs/fidelity         # tables only, from saved JSONs
    python benchmarks/fidelity.py --from-json runs/after --before runs/before --lomo runs/cal.json --ablation
    python benchmarks/fidelity.py --seeds 5                       # + the spread over 5 arrival draws
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = ROOT.parent / "shared" / "data" / "vllm_runs" / "h100-inference-perf"
COLUMNS = (("ttft_ms", "TTFT"), ("tpot_ms", "TPOT/token"), ("e2e_ms", "E2E"))


def run_all(runs: Path, json_dir: Path | None, gpu: str, seed: int, seeds: int = 1) -> list[dict]:
    from oracle.replay import replay
    out = []
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        t0 = time.perf_counter()
        c = replay(run, gpu=gpu, seed=seed, seeds=seeds).comparison
        print(f"{run.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if json_dir is not None:
            json_dir.mkdir(parents=True, exist_ok=True)
            (json_dir / f"{run.name}.json").write_text(json.dumps(c, indent=1, default=str))
        out.append(c)
    return out


#: the signed errors of the seed-spread table (metric, statistic, column label)
SPREAD = (("ttft_ms", "mean", "TTFT mean"), ("ttft_ms", "p90", "TTFT p90"), ("tpot_ms", "mean", "TPOT/token"),
          ("e2e_ms", "mean", "E2E"))


def seed_spread(comparisons: list[dict]) -> str:
    """Per stage, the signed error of the replay's own seed and [min, max] over its draws
    (``replay(..., seeds=N)``: ``error_pct_range``), then the medians of each draw over its
    stages that were not overloaded."""
    seeds = comparisons[0]["seeds"]
    head = " | ".join(f"{label} (seed {seeds[0]}) [min, max]" for _, _, label in SPREAD)
    lines = [f"| run | stage | {head} |", "|---|---|" + "---|" * len(SPREAD)]
    for c in comparisons:
        for st in c["stages"]:
            cells = []
            for metric, stat, _ in SPREAD:
                row = st["metrics"][metric][stat]
                e, r = row["error_pct"], row["error_pct_range"]
                cells.append("-" if e is None else f"{e:+.1f} % [{r[0]:+.1f}, {r[1]:+.1f}]")
            mark = " **overloaded**" if any(st["overloaded_by_seed"]) else ""
            lines.append(f"| {c['name'].split('-', 2)[-1]}{mark} | {st['label'].split(': ', 1)[-1]} | "
                         + " | ".join(cells) + " |")
    keys = ("ttft", "ttft_p90", "tpot", "e2e", "rps")
    lines += ["", "| seed | " + " | ".join(f"median \\|error\\| {k}" for k in ("TTFT", "TTFT p90", "TPOT", "E2E", "req/s"))
              + " |", "|---|" + "---|" * len(keys)]
    for i, seed in enumerate(seeds):
        med = medians_line(comparisons, draw=i)
        lines.append(f"| {seed} | " + " | ".join(f"{_v(med[k])} %" for k in keys) + " |")
    return "\n".join(lines)


def _v(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _e(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1f} %"


def tables(comparisons: list[dict]) -> str:
    lines = ["| run | stage | TTFT ms meas / pred | err | TPOT ms/token meas / pred (factor) | err | "
             "E2E ms meas / pred | err | req/s meas / pred | err | ok / failed (pred. timeouts) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    errs: dict[str, list[float]] = {"ttft": [], "tpot": [], "e2e": [], "rps": []}
    kept = total = 0
    for c in comparisons:
        name = c["name"].split("-", 2)[-1]
        for st in c["stages"]:
            total += 1
            m = st["metrics"]
            row = [name + (" **overloaded**" if st["overloaded"] else ""), st["label"].split(":")[1].strip()]
            for key, _ in COLUMNS:
                r = m[key]["mean"]
                extra = ""
                if key == "tpot_ms" and st["tpot_conversion"].get("factor"):
                    extra = f" (x{st['tpot_conversion']['factor']:.3f})"
                row += [f"{_v(r['measured'])} / {_v(r['predicted'])}{extra}", _e(r["error_pct"])]
            t = st["throughput"]["requests_per_s"]
            row += [f"{_v(t['measured'], 2)} / {_v(t['predicted'], 2)}", _e(t["error_pct"])]
            row.append(f"{st['measured']['successes']:,} / {st['measured']['failures']:,} "
                       f"({st['predicted']['timeouts']:,})")
            lines.append("| " + " | ".join(row) + " |")
            if not st["overloaded"]:
                kept += 1
                for k, key in (("ttft", "ttft_ms"), ("tpot", "tpot_ms"), ("e2e", "e2e_ms")):
                    if m[key]["mean"]["error_pct"] is not None:
                        errs[k].append(m[key]["mean"]["error_pct"])
                if t["error_pct"] is not None:
                    errs["rps"].append(t["error_pct"])
    lines += ["", f"Medians over the {kept} stages that were not overloaded (of {total}):", "",
              "| metric (mean per stage) | median signed error | median absolute error | stages |",
              "|---|---|---|---|"]
    for k, label in (("ttft", "TTFT"), ("tpot", "TPOT per token"), ("e2e", "E2E"), ("rps", "requests/s")):
        e = errs[k]
        lines.append(f"| {label} | {_e(statistics.median(e)) if e else '-'} | "
                     f"{_v(statistics.median(abs(x) for x in e)) + ' %' if e else '-'} | {len(e)} |")
    return "\n".join(lines)


def _stage_key(c: dict, st: dict) -> tuple[str, str]:
    return c["name"], st["label"]


def before_after(before: list[dict], after: list[dict]) -> str:
    """Per stage: signed error before -> after of mean TTFT, p90 TTFT, TPOT and E2E, and req/s."""
    old = {_stage_key(c, st): st for c in before for st in c["stages"]}
    keys = (("ttft_ms", "mean"), ("ttft_ms", "p90"), ("tpot_ms", "mean"), ("e2e_ms", "mean"))
    lines = ["| run | stage | TTFT mean | TTFT p90 | TPOT/token | E2E | req/s |", "|---|---|---|---|---|---|---|"]
    for c in after:
        for st in c["stages"]:
            b = old.get(_stage_key(c, st))
            cells = []
            for metric, stat in keys:
                new_e = st["metrics"][metric][stat]["error_pct"]
                old_e = b["metrics"][metric][stat]["error_pct"] if b else None
                cells.append(f"{_e(old_e)} -> **{_e(new_e)}**")
            t_new = st["throughput"]["requests_per_s"]["error_pct"]
            t_old = b["throughput"]["requests_per_s"]["error_pct"] if b else None
            cells.append(f"{_e(t_old)} -> **{_e(t_new)}**")
            name = c["name"].split("-", 2)[-1] + (" **overloaded**" if st["overloaded"] else "")
            lines.append(f"| {name} | {st['label'].split(':')[1].strip()} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def medians_line(comparisons: list[dict], draw: int | None = None) -> dict[str, float | None]:
    """Median |error| (%) over the non-overloaded stages: TTFT mean/p90, TPOT, E2E, req/s;
    ``draw`` i: of the i-th arrival draw of replays made with ``seeds`` (``error_pct_by_seed``)."""
    errs: dict[str, list[float]] = {"ttft": [], "ttft_p90": [], "tpot": [], "e2e": [], "rps": []}
    for c in comparisons:
        for st in c["stages"]:
            if st["overloaded"] if draw is None else st["overloaded_by_seed"][draw]:
                continue
            m = st["metrics"]
            for k, row in (("ttft", m["ttft_ms"]["mean"]), ("ttft_p90", m["ttft_ms"]["p90"]),
                           ("tpot", m["tpot_ms"]["mean"]), ("e2e", m["e2e_ms"]["mean"]),
                           ("rps", st["throughput"]["requests_per_s"])):
                e = row["error_pct"] if draw is None else row["error_pct_by_seed"][draw]
                if e is not None:
                    errs[k].append(abs(e))
    return {k: (statistics.median(v) if v else None) for k, v in errs.items()}


def lomo_table(cal: dict) -> str:
    """In-sample and leave-one-model-out errors from an ``oracle calibrate-e2e --json-out`` file."""
    keys = ("ttft_mean", "ttft_p90", "tpot_mean", "e2e_mean", "requests_per_s")
    names = list(cal["factors"])
    lines = [f"| fitted on -> predicted | factors ({', '.join(names)}) | stages | TTFT mean | TTFT p90 | TPOT/token | "
             "E2E | req/s |", "|---|---|---|---|---|---|---|---|"]

    def row(label, factors, med):
        f = ", ".join(f"{factors[k]:.4g}" for k in names) if factors else "-"
        cells = [f"{med[k]['median_abs_error_pct']:.1f} ({med[k]['median_error_pct']:+.1f}; max "
                 f"{med[k]['max_abs_error_pct']:.1f})" if med[k]["median_abs_error_pct"] is not None else "-"
                 for k in keys]
        return f"| {label} | {f} | {med['stages']} | " + " | ".join(cells) + " |"
    lines.append(row("all models -> all (in sample)", cal["factors"], cal["in_sample"]["medians"]))
    for m, v in cal["lomo"].items():
        label = "each model held out in turn (pooled)" if m == "all held out" else f"the others -> {m}"
        lines.append(row(label, v.get("factors"), v["medians"]))
    lines += ["", "Per held-out stage (signed error, %):", "",
              "| held-out model | run | stage | TTFT mean | TTFT p90 | TPOT/token | E2E |", "|---|---|---|---|---|---|---|"]
    for m, v in cal["lomo"].items():
        for r in v["stages"]:
            lines.append(f"| {m} | {r['run'].split('-', 2)[-1]} | {r['stage'].split(':')[1].strip()} | "
                         + " | ".join(_e(r[k]["error_pct"]) for k in ("ttft_mean", "ttft_p90", "tpot_mean",
                                                                       "e2e_mean")) + " |")
    return "\n".join(lines)


#: ablation variants: label -> (GPU factor overrides, framework-spec overrides, framework scenario keys,
#: EngineConfig overrides)
def _ablations():
    from oracle.catalog import gpu_defaults
    d = gpu_defaults()
    return {
        "every term (after)": ({}, {}, {}, {}),
        "no API-server time (api_server_s = 0)": ({}, {}, {"api_server_s": 0.0}, {}),
        "NCCL all-reduce instead of vLLM's custom one": ({}, {"custom_allreduce_max_bytes": 0}, {}, {}),
        "engine without async scheduling (admission at each step's start), CPU time still overlapped": (
            {}, {}, {}, {"async_scheduling": False}),
        "synchronous scheduling (async_scheduling = false: the above and CPU time added to each step)": (
            {}, {"async_scheduling": False}, {}, {}),
        "no CUDA-graph padding": ({}, {"cudagraph_max_tokens": 0}, {}, {}),
        "A100 op-level eff_attn_memory and layer_overhead_s ([defaults])": (
            {"eff_attn_memory": d["eff_attn_memory"], "layer_overhead_s": d["layer_overhead_s"]}, {}, {}, {}),
    }


def ablation(runs: Path, gpu: str, seed: int) -> str:
    """Medians with each term switched off (the framework spec is swapped for the run)."""
    import dataclasses
    from unittest import mock

    import oracle.api
    from oracle.replay import load_plan
    from oracle.replay.calibrate import gpu_table
    from oracle.replay.run import simulate_plan
    real = oracle.api.framework_spec
    real_config = oracle.api.engine_config
    plans = [load_plan(p, seed=seed) for p in sorted(q for q in runs.iterdir() if q.is_dir())]
    lines = ["| variant | TTFT mean | TTFT p90 | TPOT/token | E2E | req/s |", "|---|---|---|---|---|---|"]
    base = None
    for label, (gpu_over, fw_over, fw_keys, eng_over) in _ablations().items():
        def spec(fw, _over=fw_over):
            return dataclasses.replace(real(fw), **_over)

        def config(*a, _over=eng_over, **kw):
            return dataclasses.replace(real_config(*a, **kw), **_over)
        with mock.patch.object(oracle.api, "framework_spec", spec), \
                mock.patch.object(oracle.api, "engine_config", config):
            comps = [simulate_plan(p, gpu=gpu, seed=seed, gpu_table=gpu_table(gpu, gpu_over) if gpu_over else None,
                                   framework_keys=fw_keys or None).comparison for p in plans]
        med = medians_line(comps)
        base = base or med
        cells = []
        for k in ("ttft", "ttft_p90", "tpot", "e2e", "rps"):
            delta = "" if med is base or med[k] is None else f" ({med[k] - base[k]:+.1f})"
            cells.append(f"{_v(med[k])} %{delta}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        print(f"ablation {label}: done", file=sys.stderr)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="?", type=Path, default=DEFAULT_RUNS, help="folder of inference-perf run folders")
    ap.add_argument("--json-dir", type=Path, default=None, help="keep each run's replay JSON here")
    ap.add_argument("--from-json", type=Path, default=None, help="only print the tables of saved replay JSONs")
    ap.add_argument("--before", type=Path, default=None, help="saved replay JSONs to compare with, stage by stage")
    ap.add_argument("--lomo", type=Path, default=None, help="an `oracle calibrate-e2e --json-out` file")
    ap.add_argument("--ablation", action="store_true", help="replay with each cost-model term switched off")
    ap.add_argument("--gpu", default="h100-sxm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, metavar="N",
                    help="also replay with the N - 1 seeds after --seed and print the spread of the errors")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds takes N >= 1")
    if args.from_json is not None:
        comparisons = [json.loads(p.read_text()) for p in sorted(args.from_json.glob("*.json"))]
    else:
        comparisons = run_all(args.runs, args.json_dir, args.gpu, args.seed, args.seeds)
    print(tables(comparisons))
    if args.before is not None:
        before = [json.loads(p.read_text()) for p in sorted(args.before.glob("*.json"))]
        print("\n" + before_after(before, comparisons))
        b, a = medians_line(before), medians_line(comparisons)
        print("\nMedian |error| over the non-overloaded stages, before -> after: " + ", ".join(
            f"{k} {_v(b[k])} % -> {_v(a[k])} %" for k in a))
    if args.lomo is not None:
        print("\n" + lomo_table(json.loads(args.lomo.read_text())))
    if args.ablation:
        print("\n" + ablation(args.runs, args.gpu, args.seed))
    if comparisons and all("seeds" in c for c in comparisons):
        print("\n" + seed_spread(comparisons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
