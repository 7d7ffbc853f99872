"""Charter's error hierarchy.

Everything Charter raises on purpose derives from :class:`CharterException`. There are two families:

* :class:`CharterError` — a *user mistake*: a charter file that does not validate, an unknown user, a bad
  argument. It carries the file, line and field when known, and the CLI prints it without a traceback
  (exit code 2 for usage errors, 1 for a check that failed).

  - :class:`SpecError` — the charter (or a file it references) is invalid; holds a list of
    :class:`Problem` so that *every* problem is reported, not only the first.
  - :class:`UsageError` — a command or API call was used wrongly (unknown user, malformed input).
  - :class:`NotFound` — a named thing (request, token, approval, document) does not exist.

* :class:`CharterRuntimeError` — the system could not do what was asked although the request was valid.

  - :class:`Denied` — policy said no (Cedar, kill switch, four-eyes, rate limit). Carries the reasons.
  - :class:`AuthenticationError` — a token is unknown, expired or revoked.
  - :class:`BudgetExceeded` — the request would overshoot a budget; it was not run.
  - :class:`Conflict` — a concurrent change won (optimistic concurrency); retry or re-read.
  - :class:`IntegrityError` — stored evidence (the audit chain, a signed report) does not verify.
  - :class:`ProviderError` — a model or tool backend failed (``retryable`` says whether to retry).

    - :class:`StoreUnavailable` — the database cannot be reached right now (retryable).

The server maps these to HTTP status codes in one place (``charter.server``); the CLI maps them to exit
codes in one place (``charter.cli``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input file: where it is and what is expected instead."""

    message: str
    file: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        elif self.line:
            where = f"line {self.line}: "
        fld = f"{self.field}: " if self.field else ""
        return f"{where}{fld}{self.message}"


class CharterException(Exception):
    """Root of every exception Charter raises on purpose."""


class CharterError(CharterException):
    """A user mistake. ``str()`` is a complete, human-readable message."""

    exit_code = 2

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        self.problem = Problem(message, file=file, line=line, field=field)
        super().__init__(str(self.problem))


class SpecError(CharterError):
    """The charter or a file it references is invalid. ``problems`` lists every problem found."""

    exit_code = 1

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        first = self.problems[0] if self.problems else Problem("invalid charter")
        CharterException.__init__(self, "\n".join(str(p) for p in self.problems) or str(first))
        self.problem = first


class UsageError(CharterError):
    """A command, API call or argument was used wrongly."""


class NotFound(CharterError):
    """A named object does not exist (or the caller may not know that it exists)."""


class CharterRuntimeError(CharterException):
    """A valid request that could not be carried out."""

    exit_code = 1


class Denied(CharterRuntimeError):
    """Policy refused the request. ``reasons`` names the policies or rules that decided."""

    def __init__(self, message: str, *, reasons: list[str] | None = None) -> None:
        self.reasons = list(reasons or [])
        super().__init__(message)


class AuthenticationError(CharterRuntimeError):
    """The credential is unknown, expired or revoked."""


class BudgetExceeded(Denied):
    """Running the request would exceed a budget; nothing was run."""


class Conflict(CharterRuntimeError):
    """A concurrent change won; the caller's change was not applied."""


class IntegrityError(CharterRuntimeError):
    """Stored evidence does not verify (audit chain, checkpoint, signed report)."""


class ProviderError(CharterRuntimeError):
    """A model or tool backend failed."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        self.retryable = retryable
        super().__init__(message)


class StoreUnavailable(ProviderError):
    """The database cannot be reached (down, restarting, connection cut). Retry later: nothing was written
    by the failed statement's transaction (HTTP 503)."""

    def __init__(self, message: str = "the database is unavailable; retry shortly") -> None:
        super().__init__(message, retryable=True)
