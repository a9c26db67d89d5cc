"""CLI command groups; each module exposes ``register(app)`` (see ``oracle.cli``)."""

from __future__ import annotations

import contextlib
from typing import Iterator

from oracle.errors import OracleError, interrupted


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn user errors into one line per problem on stderr and exit code 1 (tracebacks with ORACLE_DEBUG=1).

    Also maps ``KeyboardInterrupt`` to exit 130 with a one-line message, and a numba error or
    any other unexpected exception to one line plus a hint to rerun with ORACLE_DEBUG=1.
    """
    import typer

    from oracle.cli import debug_enabled, fail
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

