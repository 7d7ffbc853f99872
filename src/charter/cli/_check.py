"""``charter check``, ``charter init`` and ``charter docs``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer

from charter.cli._app import app
from charter.cli._common import CharterOpt, JsonOpt, console, emit
from charter.errors import SpecError, UsageError
from charter.spec import load_charter
from charter.store._perms import storage_wide_modes

docs_app = typer.Typer(help="Generate documentation from the code.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


@app.command()
def check(
    path: Annotated[
        Path | None, typer.Argument(help="Charter file or folder (default: ./charter.yaml).")
    ] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a charter: schema, cross-references, referenced files, policies and secrets.

    Prints every problem as ``file:line: field: message`` and exits 1 if there is any. Also warns (exit 0)
    about files under ``.charter/`` and a SQLite database readable by other users, with the ``chmod`` that
    fixes each.
    """
    target = path or charter
    try:
        loaded = load_charter(target)
    except SpecError as exc:
        if as_json:
            emit({"valid": False, "problems": [p.__dict__ for p in exc.problems]}, True)
        else:
            for p in exc.problems:
                console.print(str(p), highlight=False, soft_wrap=True)
            console.print(f"[red]{len(exc.problems)} problem(s) found[/]")
        raise typer.Exit(1) from None
    wide = storage_wide_modes(loaded.base_dir, os.environ.get("CHARTER_DATABASE_URL"))
    result = {
        "valid": True,
        "charter": str(loaded.path),
        "workflow": loaded.spec.workflow.id,
        "fingerprint": loaded.fingerprint(),
        "warnings": [
            *({"kind": "charter", "message": str(w), "field": w.field} for w in loaded.warnings),
            *({"kind": "file_mode", "message": w.message(), **w.as_dict()} for w in wide),
        ],
    }

    def show(r: dict[str, Any]) -> None:
        for w in r["warnings"]:
            console.print(f"[yellow]warning[/]: {w['message']}", highlight=False, soft_wrap=True)
        console.print(
            f"[green]ok[/]: {r['charter']} is valid (workflow {r['workflow']}, fingerprint {r['fingerprint'][:23]}…)",
            highlight=False,
            soft_wrap=True,
        )

    emit(result, as_json, show)


def list_examples() -> list[str]:
    return (
        sorted(p.name for p in EXAMPLES_DIR.iterdir() if (p / "charter.yaml").is_file())
        if EXAMPLES_DIR.is_dir()
        else []
    )


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder to create the project in (must be empty or absent).")
    ],
    example: Annotated[str, typer.Option(help="Example to start from.")] = "billing-support",
    as_json: JsonOpt = False,
) -> None:
    """Create a working project from an example (charter, users, sources, prompts, policies, tools, evals)."""
    src = EXAMPLES_DIR / example
    if not (src / "charter.yaml").is_file():
        raise UsageError(f"unknown example {example!r}; available: {', '.join(list_examples()) or 'none'}")
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} exists and is not empty; choose a new folder")
    shutil.copytree(
        src, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".charter", "__pycache__", "*.pyc")
    )
    result = {
        "created": str(directory.resolve()),
        "example": example,
        "charter": str((directory / "charter.yaml").resolve()),
    }
    emit(
        result,
        as_json,
        lambda r: console.print(
            f"[green]created[/] {r['created']} from example {r['example']}\n"
            f'next: cd {directory} && charter check && charter sync && charter ask --as ana "How do refunds work?"',
            highlight=False,
            soft_wrap=True,
        ),
    )


@docs_app.command("reference")
def docs_reference(
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Generate the charter reference (docs/charter-reference.md) from the schema."""
    from charter.spec._reference import render_reference

    text = render_reference()
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")
    else:
        typer.echo(text, nl=False)
