"""Error and warning types shared by the whole package.

Every error a user can cause is an :class:`OracleError`: it carries the file, the key path
(or line number) and the reason, and the CLI prints it as one line and exits with code 1.

Parsers report every problem of a file in one go: they record each one in a :class:`Problems`
collector, keep checking what can still be checked, and finally raise them together. One
problem is raised as itself; several as an :class:`ErrorList`. Either way
``exc.problems`` lists them (in file order) and the CLI prints one line per problem.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterable, Iterator


class OracleWarning(UserWarning):
    """Warnings raised by the project itself (turned into errors in the test-suite)."""


class OracleError(Exception):
    """A user-facing error: one line naming where (file, key path or line) and why.

    Parameters
    ----------
    reason: what is wrong, as a sentence fragment ("must be > 0, got -1").
    file: the file the problem is in, if any.
    key: the dotted key path inside the file (``frameworks.0.block_size``), if any.
    line: the 1-based line number inside the file (for traces), if any.
    """

    def __init__(self, reason: str, *, file: str | Path | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        self.reason = reason
        self.file = str(file) if file is not None else None
        self.key = key
        self.line = line
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = []
        if self.file:
            where.append(self.file + (f":{self.line}" if self.line is not None else ""))
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.key:
            where.append(self.key)
        return (": ".join(where) + ": " if where else "") + self.reason

    def with_context(self, *, file: str | Path | None = None, key_prefix: str | None = None) -> "OracleError":
        """Return a copy with the file filled in and/or a key prefix prepended."""
        key = self.key
        if key_prefix:
            key = f"{key_prefix}.{key}" if key else key_prefix
        return type(self)(self.reason, file=self.file or file, key=key, line=self.line)

    @property
    def problems(self) -> list["OracleError"]:
        """The problems this error reports, one line each: ``[self]``, or an ErrorList's list."""
        return [self]

    def each(self, fn: Callable[["OracleError"], "OracleError"]) -> "OracleError":
        """Apply ``fn`` to every problem and combine the results (see :func:`combine`)."""
        return combine(fn(p) for p in self.problems)


class ScenarioError(OracleError):
    """A scenario (or sweep / legacy config) file is invalid."""


class ErrorList(ScenarioError):
    """Several problems of a scenario (sweep, legacy config) found in one pass (each an
    :class:`OracleError`).

    ``reason``, ``file``, ``key`` and ``line`` are those of the first problem; ``str()`` is
    one line per problem; ``problems`` is the list, in the order they were found.
    """

    def __init__(self, problems: Iterable[OracleError]) -> None:
        self._problems = [p for exc in problems for p in exc.problems]
        if not self._problems:
            raise ValueError("an ErrorList needs at least one problem")
        first = self._problems[0]
        super().__init__(first.reason, file=first.file, key=first.key, line=first.line)

    @property
    def message(self) -> str:
        return "\n".join(p.message for p in self._problems)

    @property
    def problems(self) -> list[OracleError]:
        return list(self._problems)

    def with_context(self, *, file: str | Path | None = None, key_prefix: str | None = None) -> "OracleError":
        return combine(p.with_context(file=file, key_prefix=key_prefix) for p in self._problems)


def combine(problems: Iterable[OracleError]) -> OracleError:
    """One error for a non-empty sequence: the problem itself if there is one, else an ErrorList."""
    flat = [p for exc in problems for p in exc.problems]
    if len(flat) == 1:
        return flat[0]
    return ErrorList(flat)


class Skip(Exception):
    """Internal: a problem was recorded in a :class:`Problems` collector and the rest of the
    current part cannot be checked; :meth:`Problems.guard` swallows it. Never reaches users."""


class Problems:
    """Collects the problems of one file while parsing goes on.

        problems = Problems()
        with problems.guard():        # an OracleError inside is recorded, then parsing moves on
            ...
        problems.raise_if_any()       # all of them at once (file order)

    ``len(problems)`` counts them; a part of the file is clean if the count did not change
    while it was parsed (``mark = len(problems)`` ... ``problems.clean_since(mark)``).
    """

    def __init__(self) -> None:
        self.items: list[OracleError] = []

    def __len__(self) -> int:
        return len(self.items)

    def add(self, exc: OracleError) -> None:
        self.items.extend(exc.problems)

    def clean_since(self, mark: int) -> bool:
        return len(self.items) == mark

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Record an OracleError raised inside (and swallow a :class:`Skip`), then carry on."""
        try:
            yield
        except Skip:
            pass
        except OracleError as exc:
            self.add(exc)

    def raise_if_any(self, *, file: str | Path | None = None) -> None:
        """Raise every recorded problem at once (``file`` filled in where none is named)."""
        if self.items:
            unique = {p.message: p for p in self.items}   # the same line twice says nothing new
            exc = combine(unique.values())
            raise (exc.with_context(file=file) if file is not None else exc)


class TraceError(OracleError):
    """A workload trace file is missing, empty or has a bad row."""


class CapacityError(OracleError):
    """The model does not fit, or a run would need more memory than allowed."""


def interrupted(exc: BaseException) -> bool:
    """True if ``exc`` is, or was caused by, a KeyboardInterrupt.

    A signal handler that raises while a numba function runs surfaces as ``SystemError:
    CPUDispatcher(...) returned a result with an exception set`` caused by the KeyboardInterrupt.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def read_text_file(path: str | Path, *, error: type[OracleError] = OracleError, expected: str = "a file") -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or binary file is one ``error``
    naming the file (``expected``: what the file should be, e.g. "a TOML file")."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error("file not found", file=path) from None
    except IsADirectoryError:
        raise error(f"is a directory, expected {expected}", file=path) from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror}", file=path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"not a text (UTF-8) {expected.removeprefix('a ').removeprefix('an ')}", file=path) from None
