"""The root Typer application that command modules attach to."""

import typer

app = typer.Typer(
    name="charter",
    help="Run AI workflows under a charter: enforce it on every request, prove it with a launch gate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
