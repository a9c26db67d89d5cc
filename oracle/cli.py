"""The ``oracle`` command line: a thin typer app over the library functions.

Each command group lives in ``oracle/commands/<name>.py`` and exposes ``register(app)``;
this module builds the app, maps user errors to one line per problem + exit code 1 (``ORACLE_DEBUG=1``
shows tracebacks; see ``oracle.commands``) and runs it.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import traceback

import typer

from oracle import __version__
from oracle.commands import debug_enabled, error_lines, typer_factory
from oracle.errors import OracleError

# Command modules, registered in this order (their commands show up in `oracle --help`).
COMMAND_MODULES = [
    "oracle.commands.validate",
    "oracle.commands.simulate",
    "oracle.commands.report",
    "oracle.commands.cost",
    "oracle.commands.catalog",
    "oracle.commands.workload",
    "oracle.commands.convert",
    "oracle.commands.sweep",
    "oracle.commands.replay",
]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"oracle {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    app = typer_factory("LLMPerfOracle: simulate LLM inference serving (vLLM v1 semantics) without a GPU.")

    @app.callback()
    def _root(version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                           help="Print the version and exit.")) -> None:
        """LLMPerfOracle: simulate LLM inference serving (vLLM v1 semantics) without a GPU."""

    for mod in COMMAND_MODULES:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name == mod:
                continue
            raise
        module.register(app)
    return app


def _terminate(signum, _frame) -> None:
    """SIGTERM -> KeyboardInterrupt, so a terminated run cleans up like Ctrl-C (staging folders
    removed, earlier results untouched, exit 130) instead of dying mid-write."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        app = build_app()
        app(standalone_mode=True)
    except OracleError as exc:  # raised outside a command's own handler
        raise SystemExit(_exit_for(exc))
    except KeyboardInterrupt:  # before or outside a command's own handler
        print("interrupted", file=sys.stderr)
        _exit_interrupted()
    except SystemExit as exc:
        if exc.code == 130:
            _exit_interrupted()
        raise
    finally:
        # The command is over (results written or refused): a signal arriving during the
        # interpreter's shutdown must not turn a finished run into a crash.
        for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)):
            if s is not None:
                signal.signal(s, signal.SIG_IGN)


def _exit_interrupted() -> None:
    """Exit 130 now. An interrupted run has already cleaned up (no staging folders, earlier
    results untouched); leaving through the interpreter's normal shutdown can instead end the
    process by re-raising SIGINT (status -2) once a KeyboardInterrupt has been seen. Runs that
    started worker processes (sweeps) take the normal way out, so their semaphores and
    resource tracker are shut down properly."""
    if "multiprocessing" in sys.modules or "ray" in sys.modules:
        raise SystemExit(130)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _exit_for(exc: BaseException) -> int:
    if debug_enabled():
        traceback.print_exception(exc)
    for line in error_lines(exc):
        print(line, file=sys.stderr)
    return 1


if __name__ == "__main__":  # python -m oracle.cli
    main()
