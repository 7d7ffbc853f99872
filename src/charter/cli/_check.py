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

docs_app = typer.Typer(help="Generate documentation from the code.", no_args_is_help=True)
app.add_typer(docs_app, name="docs")

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


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
        from charter.spec import load_charter

        loaded = load_charter(target)
    except SpecError as exc:
        if as_json:
            emit({"valid": False, "problems": [p.__dict__ for p in exc.problems]}, True)
        else:
            for p in exc.problems:
                console.print(str(p), highlight=False, soft_wrap=True)
            console.print(f"[red]{len(exc.problems)} problem(s) found[/]")
        raise typer.Exit(1) from None
    from charter.store._perms import storage_wide_modes

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


#: ``charter init --template``: name -> (folder, what it is, the command to try first).
TEMPLATES: dict[str, tuple[Path, str, str]] = {
    "blank": (
        TEMPLATES_DIR / "blank",
        "the smallest valid charter, with comments saying what to fill in",
        'charter prompts approve system v1 --as you && charter ask --as alex "When do we meet?"',
    ),
    "answer": (
        EXAMPLES_DIR / "internal-knowledge",
        "an answer workflow: an internal knowledge assistant (team ACLs, a manager role that sees more)",
        'charter prompts approve answer v1 --as priya && charter ask --as eli "How many days of leave do I get?"',
    ),
    "draft": (
        EXAMPLES_DIR / "billing-support",
        "a draft workflow: billing support reply drafts reviewed before they are sent, with tools",
        'charter ask --as ana "How long does a card refund take?"',
    ),
    "agent": (
        EXAMPLES_DIR / "order-desk",
        "an agent workflow: an order desk that looks orders up, refunds (a lead approves above 50 EUR) and notes",
        'charter prompts approve system v1 --as ines && charter ask --as theo "ORD-10421 arrived damaged; refund 20 EUR."',
    ),
}


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder to create the project in (must be empty or absent).")
    ],
    template: Annotated[
        str | None,
        typer.Option(help="Template: blank, answer or draft (docs/charter.md). Default: draft."),
    ] = None,
    example: Annotated[
        str | None, typer.Option(help="Or an example by folder name (see --template for the usual ones).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a working project from a template or an example (charter, users, sources, prompts, evals)."""
    if template and example:
        raise UsageError("give --template or --example, not both")
    if example:
        src, first = EXAMPLES_DIR / example, 'charter ask --as <user> "<question>"'
        if not (src / "charter.yaml").is_file():
            raise UsageError(
                f"unknown example {example!r}; available: {', '.join(list_examples()) or 'none'}"
            )
        name = example
    else:
        name = template or "draft"
        if name not in TEMPLATES:
            raise UsageError(f"unknown template {name!r}; choose one of: {', '.join(TEMPLATES)}")
        src, _, first = TEMPLATES[name]
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} exists and is not empty; choose a new folder")
    shutil.copytree(
        src, directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".charter", "__pycache__", "*.pyc")
    )
    result = {
        "created": str(directory.resolve()),
        "template": name,
        "example": src.name,
        "charter": str((directory / "charter.yaml").resolve()),
        "next": f"cd {directory} && charter check && charter sync && {first}",
    }
    emit(
        result,
        as_json,
        lambda r: console.print(
            f"[green]created[/] {r['created']} from {r['template']}\nnext: {r['next']}",
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
