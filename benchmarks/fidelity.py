"""End-to-end fidelity: `oracle replay` on every real run, one markdown table (benchmarks/FIDELITY.md).

Runs the replays one after another (each is what ``oracle replay RUN --json`` prints),
keeps each run's JSON in ``--json-dir`` and prints the tables: per run and stage, predicted
vs measured mean TTFT, TPOT (per token, converted), E2E and throughput with signed errors,
then the medians over the stages that were not overloaded.

    python benchmarks/fidelity.py                                  # ../shared/data/vllm_runs/h100-inference-perf
    python benchmarks/fidelity.py RUNS_DIR --json-dir runs/fidelity --gpu h100-sxm
    python benchmarks/fidelity.py --from-json runs/fidelity         # tables only, from saved JSONs
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


def run_all(runs: Path, json_dir: Path | None, gpu: str, seed: int) -> list[dict]:
    from oracle.replay import replay
    out = []
    for run in sorted(p for p in runs.iterdir() if p.is_dir()):
        t0 = time.perf_counter()
        c = replay(run, gpu=gpu, seed=seed).comparison
        print(f"{run.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if json_dir is not None:
            json_dir.mkdir(parents=True, exist_ok=True)
            (json_dir / f"{run.name}.json").write_text(json.dumps(c, indent=1, default=str))
        out.append(c)
    return out


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="?", type=Path, default=DEFAULT_RUNS, help="folder of inference-perf run folders")
    ap.add_argument("--json-dir", type=Path, default=None, help="keep each run's replay JSON here")
    ap.add_argument("--from-json", type=Path, default=None, help="only print the tables of saved replay JSONs")
    ap.add_argument("--gpu", default="h100-sxm")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.from_json is not None:
        comparisons = [json.loads(p.read_text()) for p in sorted(args.from_json.glob("*.json"))]
    else:
        comparisons = run_all(args.runs, args.json_dir, args.gpu, args.seed)
    print(tables(comparisons))
    return 0


if __name__ == "__main__":
    sys.exit(main())
