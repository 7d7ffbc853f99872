"""``charter users list`` and ``charter tokens create|list|revoke``.

These commands read and write the local database directly, so whoever runs them is trusted with the local
machine (an operator). With ``--as USER`` the command is also checked against the charter (``users.manage``)
and audited under that user's id; without it, the actor recorded is ``local:<os user>``.
"""

from __future__ import annotations

import getpass
import os
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import (
    CharterOpt,
    JsonOpt,
    acting_principal,
    console,
    emit,
    err_console,
    open_runtime,
)
from charter.errors import UsageError

if TYPE_CHECKING:
    from charter.runtime import Runtime

users_app = typer.Typer(
    help="Principals (users and service accounts) from the charter's users file.", no_args_is_help=True
)
tokens_app = typer.Typer(
    help="API tokens: create (shown once), list, revoke. Local operators only.", no_args_is_help=True
)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")

OptionalAs = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="Act as this user (needs users.manage; audited under this id). An operator "
        "convenience on the local machine only.",
    ),
]


def _actor(rt: Runtime, as_user: str | None) -> str:
    """Who the audit log records; with ``--as`` the user must hold ``users.manage``."""
    if as_user is None:
        try:
            return f"local:{getpass.getuser()}"
        except Exception:  # no login name (containers)
            return "local:unknown"
    principal = acting_principal(rt, as_user)
    rt.authorizer.require(principal, "users.manage", None, audit=rt.audit)
    return principal.id


@users_app.command("list")
def users_list(charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """Users and service accounts with their groups, roles and whether they are active."""
    rt = open_runtime(charter)
    try:
        rows = [
            {
                "id": p.id,
                "kind": p.kind,
                "name": p.name,
                "email": p.email,
                "groups": list(p.groups),
                "roles": list(p.roles),
                "active": p.active,
            }
            for p in rt.charter.principals.values()
        ]
    finally:
        rt.close()

    def render(data: list[dict[str, Any]]) -> None:
        table = Table("id", "kind", "name", "email", "groups", "roles", "active")
        for r in data:
            table.add_row(
                *(
                    escape(str(x))
                    for x in (
                        r["id"],
                        r["kind"],
                        r["name"],
                        r["email"] or "",
                        ", ".join(r["groups"]),
                        ", ".join(r["roles"]),
                        "yes" if r["active"] else "no",
                    )
                )
            )
        console.print(table)

    emit(rows, as_json, render)


@tokens_app.command("create")
def tokens_create(
    user: Annotated[str, typer.Option("--user", help="User or service account id the token stands for.")],
    expires: Annotated[str, typer.Option(help="Lifetime such as 30d, 12h, or 'never'.")] = "90d",
    label: Annotated[str | None, typer.Option(help="What the token is for, e.g. 'helpdesk'.")] = None,
    as_user: OptionalAs = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it once. Only a slow hash of its secret is stored; it is never shown again."""
    if expires.strip().lower() == "never":
        lifetime = None
    else:
        try:
            from charter.spec import parse_duration

            lifetime = parse_duration(expires)
        except ValueError as exc:
            raise UsageError(f"--expires: {exc}") from None
    from charter.identity import create_token

    rt = open_runtime(charter)
    try:
        issued = create_token(rt, user, expires_in=lifetime, label=label, created_by=_actor(rt, as_user))
    finally:
        rt.close()
    doc = {"token": issued.token, **issued.info.as_dict()}

    def render(d: dict[str, Any]) -> None:
        err_console.print(
            f"token for {d['user']} (id {d['id']}, expires {d['expires_at'] or 'never'}); "
            f"store it now, it is not shown again:",
            highlight=False,
            soft_wrap=True,
        )
        typer.echo(d["token"])

    emit(doc, as_json, render)


@tokens_app.command("list")
def tokens_list(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's tokens.")] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tokens (never their secrets): id, user, label, created, expires, revoked, last used, status."""
    from charter.identity import list_tokens

    rt = open_runtime(charter)
    try:
        rows = [t.as_dict() for t in list_tokens(rt, user)]
    finally:
        rt.close()

    def render(data: list[dict[str, Any]]) -> None:
        table = Table("id", "user", "label", "status", "created", "expires", "last used")
        for r in data:
            table.add_row(
                *(
                    escape(str(x or ""))
                    for x in (
                        r["id"],
                        r["user"],
                        r["label"],
                        r["status"],
                        r["created_at"],
                        r["expires_at"] or "never",
                        r["last_used_at"],
                    )
                )
            )
        console.print(table)

    emit(rows, as_json, render)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (the 12 characters after 'chr_'), or the token.")],
    as_user: OptionalAs = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token. Takes effect immediately in every process (each use re-reads the token's row)."""
    from charter.identity import revoke_token

    rt = open_runtime(charter)
    try:
        info = revoke_token(rt, token_id, revoked_by=_actor(rt, as_user))
    finally:
        rt.close()
    emit(
        info.as_dict(),
        as_json,
        lambda d: console.print(
            f"revoked token {d['id']} of {d['user']} at {d['revoked_at']}", highlight=False
        ),
    )


@tokens_app.command("whoami")
def tokens_whoami(
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Resolve the token in the CHARTER_TOKEN environment variable and print whom it stands for.

    Uses the same resolution as the server (audited as ``auth.token_used`` or ``auth.refused``); exits 1
    when the token is refused. The token is read from the environment so it stays out of shell history.
    """
    bearer = os.environ.get("CHARTER_TOKEN", "")
    if not bearer:
        raise UsageError("set CHARTER_TOKEN to the token to check")
    from charter.identity import resolve_token

    rt = open_runtime(charter)
    try:
        p = resolve_token(rt, bearer, channel="cli")
    finally:
        rt.close()
    doc = {"id": p.id, "kind": p.kind, "name": p.name, "groups": list(p.groups), "roles": list(p.roles)}
    emit(
        doc,
        as_json,
        lambda d: console.print(
            f"{d['id']} ({d['kind']}, roles: {', '.join(d['roles']) or 'none'})", highlight=False
        ),
    )
