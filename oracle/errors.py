"""Error and warning types shared by the whole package.

Every error a user can cause is an :class:`OracleError`: it carries the file, the key path
(or line number) and the reason, and the CLI prints it as one line and exits with code 1.
"""

from __future__ import annotations

from pathlib import Path


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


class ScenarioError(OracleError):
    """A scenario (or sweep / legacy config) file is invalid."""


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
