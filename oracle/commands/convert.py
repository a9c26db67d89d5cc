"""``oracle convert OLD.yaml|OLD.json [-o scenario.toml]``: an original-LLMPerfOracle config -> TOML."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from oracle.commands import user_errors


def register(app: typer.Typer) -> None:
    @app.command("convert")
    def convert(
        config: Annotated[Path, typer.Argument(help="A YAML or JSON config of the original LLMPerfOracle.",
                                               show_default=False)],
        output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the TOML scenario here "
                                                       "(default: print it to stdout).")] = None,
        check: Annotated[bool, typer.Option("--check/--no-check", help="Validate the converted scenario (catalog "
                                            "names, memory fit, prompt lengths) before writing it.")] = True,
    ) -> None:
        """Convert an original-LLMPerfOracle config (YAML/JSON) into an equivalent TOML scenario.

        Comments in the TOML mark every setting that was approximated or dropped. `oracle simulate
        OLD.yaml` runs such a config directly (converted in memory the same way).

        Examples:
          oracle convert experiment.yaml
          oracle convert experiment.yaml -o scenarios/experiment.toml
          oracle convert experiment.json -o experiment.toml --no-check
        """
        with user_errors():
            _run(config, output, check)


def _run(config: Path, output: Path | None, check: bool) -> None:
    from oracle.legacy import convert_file, scenario_from_conversion   # lazy: numpy (see oracle.commands)
    from oracle.metrics.writers import atomic_write
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
