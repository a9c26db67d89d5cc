"""Shared CLI argument/option aliases (defined once, used by several commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ScenarioArg = Annotated[Path, typer.Argument(help="Scenario file (TOML, or a YAML/JSON config of the original "
                                                  "LLMPerfOracle, or a benchmark tool's config: a file with a `vllm "
                                                  "bench serve` command, a GuideLLM spec, an inference-perf config).",
                                             show_default=False)]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Override the scenario's random seed.")]
OutDirOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (overrides the scenario's \\[output].dir); "
                                                                        "results go to DIR/<framework>/.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of a table.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary table; results are still written.")]
