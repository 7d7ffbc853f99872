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
        from charter.policy import load_checked_charter

        loaded = load_checked_charter(target)
    except SpecError as exc:
        if as_json:
            emit({"valid": False, "problems": [p.__dict__ for p in exc.problems]}, True)
        else:
            for p in exc.problems:
                console.print(str(p), highlight=False, soft_wrap=True)
            console.print(f"[red]{len(exc.problems)} problem(s) found[/]")
        raise typer.Exit(1) from None
    from charter.store import storage_wide_modes

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


#: The file in a template's or example's folder that makes it a template (``template``: its name,
#: ``description``: what it is, ``first``: the command to try after ``charter sync``). Not copied.
TEMPLATE_FILE = "template.yaml"


def templates() -> dict[str, tuple[Path, str, str]]:
    """``charter init --template``: name -> (folder, what it is, the command to try first), read from the
    ``template.yaml`` of every folder under ``templates/`` and ``examples/`` (the code names none)."""
    import yaml

    found: dict[str, tuple[Path, str, str]] = {}
    for root in (TEMPLATES_DIR, EXAMPLES_DIR):
        if not root.is_dir():
            continue
        for folder in sorted(root.iterdir()):
            meta_file = folder / TEMPLATE_FILE
            if not (folder / "charter.yaml").is_file() or not meta_file.is_file():
                continue
            meta = yaml.safe_load(meta_file.read_text(encoding="utf-8")) or {}
            name = str(meta.get("template") or folder.name)
            found.setdefault(
                name,
                (folder, str(meta.get("description", "")), str(meta.get("first", _FIRST))),
            )
    return found


_FIRST = 'charter ask --as <user> "<question>"'


@app.command()
def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder to create the project in (must be empty or absent).")
    ],
    template: Annotated[
        str | None,
        typer.Option(help="Template: blank, answer, draft or agent (docs/charter.md). Default: draft."),
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
        src = EXAMPLES_DIR / example
        if not (src / "charter.yaml").is_file():
            raise UsageError(
                f"unknown example {example!r}; available: {', '.join(list_examples()) or 'none'}"
            )
        name = example
        first = next((f for folder, _, f in templates().values() if folder == src), _FIRST)
    else:
        name = template or "draft"
        known = templates()
        if name not in known:
            raise UsageError(f"unknown template {name!r}; choose one of: {', '.join(sorted(known))}")
        src, _, first = known[name]
    if directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} exists and is not empty; choose a new folder")
    shutil.copytree(
        src,
        directory,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".charter", "__pycache__", "*.pyc", TEMPLATE_FILE),
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
    from charter.spec import render_reference

    text = render_reference()
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")
    else:
        typer.echo(text, nl=False)
