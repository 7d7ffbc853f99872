"""The ``charter`` command.

Conventions: every command that prints data accepts ``--json`` and then prints exactly one JSON document on
stdout; exit codes are 0 for success, 1 when a check or policy said no, 2 for usage errors. Commands find the
charter in the current folder, via ``--charter PATH`` or via ``CHARTER_FILE``. Errors are mapped to exit codes
in one place, :func:`main`; no traceback reaches a user for a user mistake.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
from typing import Any

import typer

from charter.cli._app import app
from charter.errors import CharterError, CharterException, CharterRuntimeError, SpecError

# Command modules register themselves on ``app`` when imported.
from charter.cli import _charter_check  # noqa: F401  isort: skip
from charter.cli import _identity  # noqa: F401  isort: skip
from charter.cli import _policy  # noqa: F401  isort: skip
from charter.cli import _audit  # noqa: F401  isort: skip
from charter.cli import _sources  # noqa: F401  isort: skip
from charter.cli import _ask  # noqa: F401  isort: skip
from charter.cli import _prompts  # noqa: F401  isort: skip
from charter.cli import _search  # noqa: F401  isort: skip
from charter.cli import _tools  # noqa: F401  isort: skip
from charter.cli import _review  # noqa: F401  isort: skip
from charter.cli import _monitor  # noqa: F401  isort: skip
from charter.cli import _serve  # noqa: F401  isort: skip
from charter.cli import _eval  # noqa: F401  isort: skip
from charter.cli import _gate  # noqa: F401  isort: skip
from charter.cli import _db  # noqa: F401  isort: skip
from charter.cli import _mcp  # noqa: F401  isort: skip
from charter.cli import _agent  # noqa: F401  isort: skip


def _report_error(exc: CharterException, as_json: bool) -> int:
    from charter.cli._common import err_console

    code = getattr(exc, "exit_code", 1)
    if as_json:
        doc: dict[str, object] = {"error": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, SpecError):
            doc["problems"] = [p.__dict__ for p in exc.problems]
        reasons = getattr(exc, "reasons", None)
        if reasons:
            doc["reasons"] = reasons
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        kind = (
            "error"
            if isinstance(exc, CharterError)
            else "refused"
            if isinstance(exc, CharterRuntimeError)
            else "error"
        )
        for line in str(exc).splitlines() or [type(exc).__name__]:
            err_console.print(f"[bold red]{kind}:[/] {line}", markup=True, highlight=False, soft_wrap=True)
        for reason in getattr(exc, "reasons", []) or []:
            err_console.print(f"  because: {reason}", highlight=False, soft_wrap=True)
    return int(code)


# Click's exception base as Typer raises it: recent Typer releases vendor Click (``typer._click``), so
# ``click.ClickException`` from an installed Click is another class and a usage error (unknown command, missing
# argument) escaped as a traceback. ``typer.BadParameter`` is Click's, vendored or not: its bases name it.
CLICK_EXCEPTION: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


@functools.cache
def command() -> Any:
    """The Click command tree of ``app``, built once per process (Typer rebuilds it from the function
    signatures on every call: ~75 ms, which a process calling :func:`main` repeatedly paid each time)."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``charter`` console script (``argv`` given: called in-process, as tests do)."""
    if argv is not None:
        _main(argv)
        return
    try:
        _main(sys.argv[1:])
    finally:
        # The process exits next: every object goes to the collector's permanent generation, so the
        # interpreter's collection at exit does not walk a heap holding torch, the model and the runtime
        # (bench/startup_bench.py, "exit"). atexit handlers still run and the commands close the files and
        # databases they write; only the final pass over cyclic garbage is skipped.
        gc.freeze()


def _main(args: list[str]) -> None:
    try:
        rc = command().main(args=args, prog_name="charter", standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except CharterException as exc:
        sys.exit(_report_error(exc, "--json" in args))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except CLICK_EXCEPTION as exc:  # usage errors (exit code 2) and friends
        exc.show()  # type: ignore[attr-defined]
        sys.exit(exc.exit_code)  # type: ignore[attr-defined]
    sys.exit(0)


__all__ = ["app", "main"]
