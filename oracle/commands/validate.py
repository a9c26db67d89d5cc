"""``oracle validate FILE...``: check scenario files without running them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _is_sweep(path: Path) -> bool:
    """A TOML file with a top-level ``base`` key is a sweep file (see oracle.sweep.spec)."""
    if path.suffix.lower() != ".toml":
        return False
    try:
        import tomllib
        return "base" in tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False  # let the scenario loader report the problem


def register(app: typer.Typer) -> None:
    @app.command("validate")
    def validate(files: Annotated[list[Path], typer.Argument(help="Scenario files to check.")]) -> None:
        """Check scenario files (syntax, keys, types, ranges, catalog names, memory fit) without running them.

        Sweep files (a TOML with a top-level ``base``) are expanded and every point is checked;
        YAML/JSON configs of the original LLMPerfOracle are converted and checked.

        Prints one line per valid file and, for an invalid one, one line per problem: every
        problem of the file is reported in one run (unknown keys with a "did you mean", wrong
        types, out-of-range values, missing sections, settings that contradict each other).
        Exits 1 if any file is invalid.

        Examples:
          oracle validate scenarios/quickstart.toml
          oracle validate scenarios/*.toml
        """
        from oracle.api import as_scenario
        from oracle.cli import debug_enabled, error_lines
        from oracle.errors import OracleError
        bad = 0
        for f in files:
            try:
                if _is_sweep(f):
                    from oracle.sweep.spec import expand_points, load_sweep
                    spec = load_sweep(f)
                    points = expand_points(spec)
                    typer.echo(f"ok: {f}: sweep over {spec.base}: "
                               f"{len(points)} point(s), all valid")
                    continue
                sc = as_scenario(f)
            except OracleError as exc:
                if debug_enabled():
                    raise
                bad += 1
                for line in error_lines(exc):
                    typer.echo(line, err=True)
                continue
            fws = ", ".join(f"{fw.name} ({fw.replicas}x tp{fw.tp} pp{fw.pp}"
                            + (f", {fw.model.name}" if fw.model is not None else "") + ")" for fw in sc.frameworks)
            typer.echo(f"ok: {f}: {sc.name}: {sc.model.name} on {sc.gpu.name}; frameworks: {fws}")
        if bad:
            raise typer.Exit(code=1)
