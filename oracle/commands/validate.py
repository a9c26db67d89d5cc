"""``oracle validate FILE...``: check scenario files without running them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oracle.commands import debug_enabled, error_lines
from oracle.errors import OracleError


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
        bad = 0
        for f in files:
            try:
                loaded = _load(f)
                if isinstance(loaded, tuple):
                    spec, points = loaded
                    typer.echo(f"ok: {f}: sweep over {spec.base}: "
                               f"{len(points)} point(s), all valid")
                    continue
                sc = loaded
            except OracleError as exc:
                if debug_enabled():
                    raise
                bad += 1
                for line in error_lines(exc):
                    typer.echo(line, err=True)
                continue
            fws = ", ".join(f"{fw.name} ({fw.shape()}"
                            + (f", {fw.model.name}" if fw.model is not None else "") + ")" for fw in sc.frameworks)
            typer.echo(f"ok: {f}: {sc.name}: {sc.model.name} on {sc.gpu.name}; frameworks: {fws}")
        if bad:
            raise typer.Exit(code=1)


def _load(path: Path):
    """The scenario of ``path``, or ``(sweep spec, its validated points)`` for a sweep file (a
    TOML file with a top-level ``base``, see ``oracle.sweep.spec``); the file is read once."""
    # lazy: numpy, polars (~0.4 s; see oracle.commands)
    from oracle.api import as_scenario
    from oracle.scenario import read_toml, scenario_from_dict
    from oracle.sweep.spec import expand_points, load_sweep
    if path.suffix.lower() != ".toml":
        return as_scenario(path)
    raw = read_toml(path)
    if "base" in raw:
        spec = load_sweep(path, raw=raw)
        return spec, expand_points(spec)
    return scenario_from_dict(raw, base_dir=path.parent, file=path)
