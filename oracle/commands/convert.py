"""``oracle convert OLD.yaml|OLD.json [-o scenario.toml]``: an original-LLMPerfOracle config -> TOML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from oracle.commands import user_errors


def register(app: typer.Typer) -> None:
    @app.command("convert", context_settings={"allow_extra_args": True})
    def convert(
        ctx: typer.Context,
        config: Annotated[Path, typer.Argument(help="A YAML or JSON config of the original LLMPerfOracle, or a "
                                               "benchmark tool's config (a file with a `vllm bench serve` command, "
                                               "a GuideLLM spec, an inference-perf config).",
                                               show_default=False)],
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the TOML scenario here "
                                                       "(default: print it to stdout).")] = None,
        check: Annotated[bool, typer.Option("--check/--no-check", help="Validate the converted scenario (catalog "
                                            "names, memory fit, prompt lengths) before writing it.")] = True,
    ) -> None:
        """Convert an original-LLMPerfOracle config (YAML/JSON) or a benchmark tool's config into
        an equivalent TOML scenario.

        Comments in the TOML mark every setting that was approximated, dropped or not simulated.
        `oracle simulate CONFIG` runs such a config directly (converted in memory the same way).

        Examples:
          oracle convert experiment.yaml
          oracle convert experiment.yaml -o scenarios/experiment.toml
          oracle convert experiment.json -o experiment.toml --no-check
          oracle convert bench.sh -o bench.toml          # a `vllm bench serve` command line
          oracle convert guidellm-scenario.yaml
          oracle convert inference-perf-config.yml
          oracle convert -- vllm bench serve --model meta-llama/Llama-3.1-8B-Instruct --max-concurrency 8
        """
        with user_errors():
            _run(config, output, check, ctx.args)


def _run(config: Path, output: Path | None, check: bool, extra: list[str] | None = None) -> None:
    # lazy: numpy (see oracle.commands)
    from oracle.importers import detect, import_args, import_file
    from oracle.metrics.writers import atomic_write
    imp = None
    if extra:
        words = [str(config), *extra]
        if words[:3] != ["vllm", "bench", "serve"]:
            from oracle.errors import ScenarioError
            raise ScenarioError(f"unexpected arguments {' '.join(extra)!r}: give a config file, or a command as "
                                "`oracle convert -- vllm bench serve ...`")
        imp = import_args(words)
    elif detect(config) is not None:
        imp = import_file(config)
    if imp is not None:
        if check:
            imp.scenario()
        text = imp.to_toml()
        if output is None:
            typer.echo(text, nl=False)
        else:
            atomic_write(output, text)
            typer.echo(f"wrote {output} ({len(imp.warnings())} setting(s) approximated or not simulated: see its "
                       "comments)", err=True)
        return
    from oracle.legacy import convert_file, scenario_from_conversion
    conv = convert_file(config)
    if check:
        scenario_from_conversion(conv)
    text = conv.to_toml()
    if output is None:
        typer.echo(text, nl=False)
        return
    atomic_write(output, text)
    c = conv.counts()
    typer.echo(f"wrote {output} ({c['approximated']} setting(s) approximated, {c['dropped']} dropped: see its "
               "comments)", err=True)
