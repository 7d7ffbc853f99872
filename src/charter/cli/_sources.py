"""``charter sources``, ``charter sources show ID`` and ``charter sync``.

Like the other operator commands these read the local database directly, so whoever runs them is trusted
with the local machine. With ``--as USER`` the command is also checked against the charter — ``sync`` needs
the ``sources.sync`` permission, ``sources show`` the source's owner (or the charter's sources owner) — and
audited under that user's id; without it, the actor recorded is ``local:<os user>``.
"""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from charter.access import require_source_owner
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

sources_app = typer.Typer(
    help="Data sources: owner, counts, freshness and approval; `show ID` lists a source's documents.",
    invoke_without_command=True,
)
app.add_typer(sources_app, name="sources")

OptionalAs = Annotated[
    str | None,
    typer.Option("--as", help="Act as this user (checked against the charter and audited under this id)."),
]


def _local_actor() -> str:
    try:
        return f"local:{getpass.getuser()}"
    except Exception:  # no login name (containers)
        return "local:unknown"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}".removesuffix(".0") + unit
    return f"{seconds:.0f}s"


# ------------------------------------------------------------------------------------------ sources
@sources_app.callback()
def sources_list(ctx: typer.Context, charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """List the charter's sources: owner, sensitivity, permissions, counts, freshness and approval."""
    if ctx.invoked_subcommand is not None:
        ctx.ensure_object(dict)
        ctx.obj.update(charter=charter, as_json=as_json)
        return
    from charter.sources import source_statuses

    rt = open_runtime(charter)
    try:
        rows = source_statuses(rt)
    finally:
        rt.close()
    emit({"sources": rows}, as_json, _render_sources)


def _render_sources(data: dict[str, Any]) -> None:
    table = Table(title="Sources", title_justify="left")
    for col in ("source", "owner", "access", "indexed", "freshness", "approval"):
        table.add_column(col, overflow="fold")
    for r in data["sources"]:
        access = f"{r['sensitivity']}\n{r['permission_model']}"
        if r["groups"]:
            access += f" ({', '.join(r['groups'])})"
        if not r["allowed_in_prompts"]:
            access += "\nnot in prompts"
        indexed = f"{r['documents']} docs\n{r['chunks']} chunks"
        if r["private_by_default"]:
            indexed += f"\n[yellow]{r['private_by_default']} private[/]"
        fresh = {"fresh": "[green]fresh[/]", "stale": "[red]stale[/]"}.get(
            r["freshness"], "[yellow]never synced[/]"
        )
        if r["last_successful_sync"]:
            fresh += (
                f"\n{_age(r['age_seconds'])} of {_age(r['max_age_seconds'])}"
                f"\n{r['last_successful_sync'][:10]}"
            )
        if r["last_run"] and r["last_run"]["status"] == "failed":
            fresh += "\n[red]last run failed[/]"
        a = r["approval"]
        when = f"{a['by']} {str(a['at'])[:10]}" if a["by"] else ""
        approval = {
            "approved": f"[green]approved[/]\n{when}",
            "approved_unbound": f"approved\n{when}\n[yellow]no config hash[/]",
            "config_changed": f"[red]config changed[/]\nsince {when}",
        }.get(a["state"], "[red]unapproved[/]")
        table.add_row(
            f"{escape(r['id'])}\n{escape(r['connector'])}",
            escape(r["owner"]),
            escape(access),
            indexed,
            fresh,
            approval,
        )
    console.print(table)


@sources_app.command("show")
def sources_show(
    ctx: typer.Context,
    source_id: Annotated[str, typer.Argument(help="Source id.")],
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
    as_user: OptionalAs = None,
) -> None:
    """List a source's documents: id, title, ACL, chunks, private-by-default and failures (for owners)."""
    from charter.sources import source_documents_listing, source_statuses

    parent = ctx.obj or {}
    charter = charter or parent.get("charter")
    as_json = as_json or bool(parent.get("as_json"))
    rt = open_runtime(charter)
    try:
        source = _source(rt, source_id)
        actor = _owner_actor(rt, source, as_user, "sources.show", "list the documents of")
        status = next(r for r in source_statuses(rt) if r["id"] == source.id)
        docs = source_documents_listing(rt, source.id)
        from charter.screening import screened_documents

        flagged = {f["doc_id"]: f for f in screened_documents(rt, source.id)}
        for d in docs:
            d["screened"] = _screen_note(flagged.pop(d["doc_id"], None))
        for f in flagged.values():  # quarantined: not in the index, so not in the catalog either
            docs.append(
                {
                    "doc_id": f["doc_id"],
                    "title": f["title"],
                    "acl": [],
                    "chunks": 0,
                    "private_by_default": False,
                    "acl_error": None,
                    "failed_reason": None,
                    "screened": _screen_note(f),
                }
            )
        rt.audit.append(
            actor=actor,
            action="sources.show",
            resource=f"source:{source.id}",
            outcome="success",
            details={"documents": len(docs)},
        )
    finally:
        rt.close()
    emit({"source": status, "documents": docs}, as_json, _render_documents)


def _owner_actor(rt: Runtime, source: Any, as_user: str | None, action: str, verb: str) -> str:
    """The actor to audit: ``--as USER`` must be the source's owner or the charter's sources owner
    (:func:`charter.access.require_source_owner`; refusals are audited); without ``--as``, the local
    operator."""
    if as_user is None:
        return _local_actor()
    principal = acting_principal(rt, as_user)
    require_source_owner(rt, principal.id, source.id, action=action, verb=verb)
    return principal.id


def _screen_note(flag: dict[str, Any] | None) -> dict[str, Any] | None:
    """A flagged document's screening record (``charter.screening.screened_documents``) for the listing."""
    if flag is None:
        return None
    return {
        k: flag[k] for k in ("state", "reasons", "sentences", "content_hash", "approved_by", "flagged_at")
    }


@sources_app.command("approve")
def sources_approve(
    ctx: typer.Context,
    source_id: Annotated[str, typer.Argument(help="Source id.")],
    doc_id: Annotated[
        str | None,
        typer.Argument(
            help="A quarantined document's id (see `charter sources show`); without it, the source's "
            "configuration is approved."
        ),
    ] = None,
    content_hash: Annotated[
        str | None,
        typer.Option(
            "--hash", help="The content hash you reviewed (a prefix is enough); refused if it changed."
        ),
    ] = None,
    no_sync: Annotated[
        bool, typer.Option("--no-sync", help="Only record the approval; the next `charter sync` indexes it.")
    ] = False,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
    as_user: OptionalAs = None,
) -> None:
    """Approve a source for this workflow, or a quarantined document of it.

    ``charter sources approve SOURCE --as OWNER`` records the owner's approval of the source's current
    configuration in the database (audited), like a prompt approval: the charter file and its fingerprint do
    not change, so eval runs stay valid; a later configuration change needs a new approval (the gate says so).

    With DOC_ID: approve a quarantined document (flagged by instruction screening) so it is indexed. The
    approval is bound to the content that was screened: if the document changes, it is screened (and
    quarantined) again. The document is indexed without its instruction sentences; the source is synced now
    unless ``--no-sync``.

    Only the source owner or the charter's sources owner may approve."""
    parent = ctx.obj or {}
    charter = charter or parent.get("charter")
    as_json = as_json or bool(parent.get("as_json"))
    rt = open_runtime(charter)
    if doc_id is None:
        _approve_source(rt, source_id, as_user, as_json)
    else:
        _approve_document(rt, source_id, doc_id, as_user, content_hash, sync=not no_sync, as_json=as_json)


def _approve_source(rt: Any, source_id: str, as_user: str | None, as_json: bool) -> None:
    """The owner's approval of the source's current configuration (closes ``rt``)."""
    from charter.sources import approve_source

    try:
        source = _source(rt, source_id)
        actor = _owner_actor(rt, source, as_user, "sources.approved", "approve")
        record = {"source": source.id, **approve_source(rt, source, actor)}
    finally:
        rt.close()
    emit(
        record,
        as_json,
        lambda r: console.print(
            f"approved source {escape(r['source'])} (configuration {r['config_hash']}) by {r['by']}; "
            "recorded in the database (the charter fingerprint is unchanged)",
            highlight=False,
        ),
    )


def _approve_document(
    rt: Any,
    source_id: str,
    doc_id: str,
    as_user: str | None,
    content_hash: str | None,
    *,
    sync: bool,
    as_json: bool,
) -> None:
    """The owner's approval of a quarantined document, then a sync unless ``sync`` is off (closes ``rt``)."""
    from charter.screening import approve_screened
    from charter.sources import sync_sources

    try:
        source = _source(rt, source_id)
        actor = _owner_actor(rt, source, as_user, "sources.screening_approved", "approve documents of")
        digest = approve_screened(rt, source, doc_id, actor=actor, content_hash=content_hash)
        result: dict[str, Any] = {
            "source": source.id,
            "doc_id": doc_id,
            "content_hash": digest,
            "synced": None,
        }
        if sync:
            summary = sync_sources(rt, source.id, actor=actor)[0]
            result["synced"] = summary.as_dict()
    finally:
        rt.close()

    def render(data: dict[str, Any]) -> None:
        console.print(
            f"approved {escape(data['doc_id'])} of {escape(data['source'])} (content {data['content_hash'][:12]})",
            highlight=False,
        )
        if data["synced"] is not None:
            s = data["synced"]
            console.print(
                f"synced {escape(s['source'])}: {s['status']}, {s['added']} added, {s['updated']} updated"
            )
        else:
            console.print("run `charter sync` to index it")

    emit(result, as_json, render)


def _render_documents(data: dict[str, Any]) -> None:
    s = data["source"]
    console.print(
        f"[bold]{escape(s['id'])}[/] — {escape(s['title'])} ({s['permission_model']}, "
        f"owner {s['owner']}, {s['documents']} documents, {s['chunks']} chunks)",
        highlight=False,
    )
    table = Table(title_justify="left")
    for col in ("doc id", "title", "acl", "chunks", "private", "note"):
        table.add_column(col, overflow="fold")
    for d in data["documents"]:
        note = ""
        if d.get("screened"):
            sc = d["screened"]
            state = {"quarantined": "quarantined (not indexed; `charter sources approve`)"}.get(
                sc["state"], sc["state"]
            )
            first = sc["sentences"][0]["sentence"] if sc["sentences"] else ""
            note = (
                f"[red]screened, {escape(state)}:[/] {escape(', '.join(sc['reasons']))} — "
                f"{escape(first[:120])!s}"
            )
        elif d["failed_reason"]:
            note = f"[red]last read failed:[/] {escape(d['failed_reason'])}"
        elif d["private_by_default"]:
            note = f"[yellow]{escape(d['acl_error'] or 'no ACL')}[/]"
        table.add_row(
            escape(d["doc_id"]),
            escape(d["title"]),
            escape(", ".join(d["acl"])),
            str(d["chunks"]),
            "[yellow]yes[/]" if d["private_by_default"] else "no",
            note,
        )
    console.print(table)


def _source(rt: Runtime, source_id: str) -> Any:
    try:
        return rt.spec.source(source_id)
    except KeyError:
        known = ", ".join(s.id for s in rt.spec.sources) or "none"
        raise UsageError(f"unknown source {source_id!r} (known: {known})") from None


# ------------------------------------------------------------------------------------------ sync
class _RichProgress:
    """Documents processed / total per source, on stderr (stdout stays clean for --json)."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, source_id: str, total: int | None) -> None:
        self.tasks[source_id] = self.progress.add_task(f"sync {source_id}", total=total)

    def advance(self, source_id: str) -> None:
        self.progress.advance(self.tasks[source_id])

    def finish(self, source_id: str) -> None:
        task = self.tasks.get(source_id)
        if task is not None:
            self.progress.update(task, total=self.progress.tasks[task].completed)


@app.command()
def sync(
    source: Annotated[str | None, typer.Option("--source", "-s", help="Sync only this source.")] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
    as_user: OptionalAs = None,
    progress: Annotated[
        bool,
        typer.Option("--progress/--no-progress", help="Show a progress bar on stderr (off with --json)."),
    ] = True,
    acl_only: Annotated[
        bool,
        typer.Option(
            "--acl-only",
            help="Only re-read ACLs (and deletions): fast, nothing is chunked or embedded. Keeps ACL "
            "freshness (freshness.acl_max_age) between full syncs.",
        ),
    ] = False,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker",
            help="Skip sources another process is syncing (start several workers on one PostgreSQL store "
            "and they split the sources).",
        ),
    ] = False,
    reembed: Annotated[
        bool,
        typer.Option("--reembed", help="Re-embed every document with the charter's (changed) embedder."),
    ] = False,
) -> None:
    """Sync sources into the index: incremental, deletions propagate, ACL-only changes without re-embedding.

    Prints (and records, and audits) a summary per source. A document that cannot be read fails alone; the
    command exits 1 only when a whole source could not be read.
    """
    from charter.sources import sync_sources

    rt = open_runtime(charter)
    try:
        if source is not None:
            _source(rt, source)
        actor = _local_actor()
        if as_user is not None:
            principal = acting_principal(rt, as_user)
            resource = f"source:{source}" if source else None
            rt.authorizer.require(principal, "sources.sync", resource, audit=rt.audit)
            actor = principal.id
        if acl_only and reembed:
            raise UsageError("--acl-only and --reembed cannot be combined")
        kw: dict[str, Any] = {"acl_only": acl_only, "skip_busy": worker, "reembed": reembed}
        if progress and not as_json:
            with _RichProgress() as bar:
                summaries = sync_sources(rt, source, actor=actor, progress=bar, **kw)
        else:
            summaries = sync_sources(rt, source, actor=actor, **kw)
    finally:
        rt.close()
    data = {"sources": [s.as_dict() for s in summaries], "ok": all(s.ok for s in summaries)}
    emit(data, as_json, _render_summaries)
    if not data["ok"]:
        raise typer.Exit(1)


def _render_summaries(data: dict[str, Any]) -> None:
    table = Table(
        title="Sync summary",
        title_justify="left",
        caption="upd updated, acl ACL changed, del deleted, same unchanged, priv private",
        caption_justify="left",
    )
    table.add_column("source", overflow="fold")
    table.add_column("status", no_wrap=True)
    for col in ("added", "upd", "acl", "del", "moved", "same", "priv", "fail"):
        table.add_column(col, justify="right", no_wrap=True)
    for s in data["sources"]:
        color = {"succeeded": "green", "partial": "yellow", "removed": "cyan", "skipped": "cyan"}.get(
            s["status"], "red"
        )
        status = "ok" if s["status"] == "succeeded" else s["status"]
        if s.get("mode") == "acl-only":
            status += " (ACLs)"
        table.add_row(
            escape(s["source"]),
            f"[{color}]{status}[/]",
            *(
                str(s[k])
                for k in (
                    "added",
                    "updated",
                    "acl_changed",
                    "deleted",
                    "moved",
                    "unchanged",
                    "private_by_default",
                    "failed",
                )
            ),
        )
    console.print(table)
    for s in data["sources"]:
        if s["error"]:
            console.print(
                f"[red]{escape(s['source'])}: {escape(s['error'])}[/]", highlight=False, soft_wrap=True
            )
        for p in s["private"]:
            console.print(
                f"[yellow]private by default[/] {escape(s['source'])}/{escape(p['doc_id'])}: "
                f"{escape(p['reason'])}",
                highlight=False,
                soft_wrap=True,
            )
        for w in s["warnings"]:
            console.print(
                f"[yellow]warning[/] {escape(s['source'])}/{escape(w['doc_id'])}: {escape(w['reason'])}",
                highlight=False,
                soft_wrap=True,
            )
        for f in s["failures"]:
            where = f["doc_id"] or f"line {f['line']}"
            if f["doc_id"] and f["line"]:
                where += f" (line {f['line']})"
            console.print(
                f"[red]failed[/] {escape(s['source'])}/{escape(where)}: {escape(f['reason'])}",
                highlight=False,
                soft_wrap=True,
            )
