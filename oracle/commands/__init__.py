"""CLI command groups; each module exposes ``register(app)`` (see ``oracle.cli``).

This package also holds what the command modules share with ``oracle.cli``: the Typer app
factory and the mapping of user errors to one line per problem and exit code 1.

Start-up: ``oracle --help`` imports every command module, so they import only the standard
library, typer, ``oracle.errors`` and this package at the top; the rest of ``oracle`` (numpy,
polars, numba, rich, ...) is imported inside the commands, each such import marked ``# lazy``.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from typing import Iterator

import typer

from oracle.errors import OracleError, interrupted


def typer_factory(help: str) -> typer.Typer:
    """A Typer app with the project's conventions (no_args_is_help, -h, plain exceptions)."""
    return typer.Typer(help=help, no_args_is_help=True, pretty_exceptions_enable=False,
                       add_completion=False, context_settings={"help_option_names": ["-h", "--help"]})


def debug_enabled() -> bool:
    return os.environ.get("ORACLE_DEBUG", "") not in ("", "0", "false", "no")


def error_lines(exc: BaseException) -> list[str]:
    """``error: <file>: <key path>: <reason>``, one line per problem of a user error."""
    problems = exc.problems if isinstance(exc, OracleError) else [exc]
    return [f"error: {p}" for p in problems]


def fail(exc: BaseException) -> "typer.Exit":
    """Print one line per problem of a user error and return the Exit(1) to raise."""
    if debug_enabled():
        traceback.print_exception(exc)
    for line in error_lines(exc):
        typer.echo(line, err=True)
    return typer.Exit(code=1)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn user errors into one line per problem on stderr and exit code 1 (tracebacks with ORACLE_DEBUG=1).

    Also maps ``KeyboardInterrupt`` to exit 130 with a one-line message, and a numba error or
    any other unexpected exception to one line plus a hint to rerun with ORACLE_DEBUG=1.
    """
    try:
        yield
    except OracleError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: no results were written", err=True)
        raise typer.Exit(code=130) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - last line of defence for users
        if interrupted(exc):
            typer.echo("interrupted: no results were written", err=True)
            raise typer.Exit(code=130) from None
        if debug_enabled():
            raise
        typer.echo(f"error: internal error ({type(exc).__name__}: {exc}); rerun with ORACLE_DEBUG=1 "
                   "for the traceback and please report it", err=True)
        raise typer.Exit(code=1) from None

