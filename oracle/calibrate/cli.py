"""Fit the cost model's per-GPU efficiency factors to measured kernel timings (Vidur profiles).

``python -m oracle.calibrate [DATA] [--update-catalog] [--results FILE] ...``: runs
:func:`oracle.calibrate.fit.calibrate`, prints the report section and writes what was asked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from oracle.calibrate.catalog import catalog_sections, update_catalog_text
from oracle.calibrate.fit import calibrate
from oracle.calibrate.load import DEFAULT_DATA, ExtraProfiles, vidur_dir
from oracle.calibrate.report import replace_section, report_markdown
from oracle.catalog import GPUS_TOML, gpu_defaults, load_gpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m oracle.calibrate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="?", type=Path, default=DEFAULT_DATA,
                        help="calibration data folder (holding vidur/), default ../shared/data/calibration")
    parser.add_argument("--update-catalog", action="store_true", help="write the fitted factors into gpus.toml")
    parser.add_argument("--catalog", type=Path, default=GPUS_TOML, help="the gpus.toml to update")
    parser.add_argument("--results", type=Path, help="markdown file whose calibration section to (re)write")
    parser.add_argument("--json", type=Path, help="write the full results as JSON")
    parser.add_argument("--models", nargs="*", help="only these org/name profile folders (quick runs)")
    parser.add_argument("--max-tokens", type=int, help="only GEMM rows with at most this many tokens")
    parser.add_argument("--no-attention", action="store_true", help="skip the attention fit")
    parser.add_argument("--no-network", action="store_true", help="skip the network fit")
    parser.add_argument("--extra-profiles", action="append", default=[], type=ExtraProfiles.parse,
                        metavar="FOLDER=GPU[,GPU...]",
                        help="GEMM profiles from benchmarks/calibrate.py (FOLDER/<org>/<model>/mlp.csv) measured on "
                             "catalog GPU GPU; --update-catalog gives its fitted GEMM factors to every GPU listed")
    args = parser.parse_args(argv)
    if not vidur_dir(args.data).is_dir():
        print(f"error: {args.data}: no calibration data (expected a vidur/ folder)", file=sys.stderr)
        return 1
    result = calibrate(args.data, models=args.models, max_tokens=args.max_tokens,
                       with_attention=not args.no_attention, with_network=not args.no_network,
                       extra=args.extra_profiles)
    command = " ".join(["python -m oracle.calibrate", *(sys.argv[1:] if argv is None else argv)])
    section = report_markdown(result, command)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if args.update_catalog:
        args.catalog.write_text(update_catalog_text(args.catalog.read_text(), catalog_sections(result)))
        if args.catalog.resolve() == GPUS_TOML.resolve():
            load_gpus.cache_clear()
            gpu_defaults.cache_clear()
    if args.results:
        old = args.results.read_text() if args.results.exists() else ""
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(replace_section(old, section))
    return 0
