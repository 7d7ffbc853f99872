"""The ``sql`` connector: rows of any database SQLAlchemy can reach become documents.

``location`` is a SQLAlchemy URL **without a password** (``postgresql+psycopg://reader@db/kb``,
``sqlite:///kb.db`` — a relative SQLite path is resolved against the charter's folder); the password comes
from the environment variable named by ``sql.password_env``, or the whole URL from ``sql.url_env``.

The ``sql`` section maps a ``query`` (or a ``table``) to documents: ``id_column``, ``title_column``,
``body_column``, ``url_column``, and optionally:

* ``updated_column`` — a value that grows when a row changes (a timestamp or a change counter). The sync
  saves the highest value it read; the next one reads only rows above it (the others are listed by id only
  and reported unchanged). Deletions: rows that disappear, or
* ``tombstone_column`` — a true value deletes the document.
* ACLs from ``acl_column`` (a list, JSON array or comma/space-separated tokens) or ``grants_query``:
  ``SELECT doc_id, principal FROM grants`` joined per document (``grants_kind``: the principal column holds
  tokens, user ids or group ids). A document with no grant has no ACL: private by default (fail closed).

``acls(ctx)`` (``charter sync --acl-only``) runs only the id listing and the ACL query: no body is read.
The query is wrapped as a subquery (``SELECT ... FROM (<query>) AS charter_q``), so it must be one SELECT.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from charter.sources._acl import AclParseError, parse_acl
from charter.sources._connector import (
    AclEntry,
    ConnectorContext,
    Deleted,
    Failed,
    Item,
    SourceUnavailable,
    Unchanged,
    connector,
)
from charter.sources._extract import parse_timestamp
from charter.spec import SqlOptions

MAX_ID_CHARS = 500


def _quote(engine: Engine, name: str) -> str:
    prep = engine.dialect.identifier_preparer
    return ".".join(prep.quote(part) for part in name.split("."))


def _url(ctx: ConnectorContext, opts: SqlOptions) -> str:
    sid = ctx.source.id
    if opts.url_env:
        value = os.environ.get(opts.url_env)
        if not value:
            raise SourceUnavailable(
                f"source {sid!r}: environment variable {opts.url_env} (sql.url_env) is not set"
            )
        url = make_url(value)
    else:
        url = make_url(ctx.source.location)
        if opts.password_env:
            pw = os.environ.get(opts.password_env)
            if pw is None:
                raise SourceUnavailable(
                    f"source {sid!r}: environment variable {opts.password_env} (sql.password_env) is not set"
                )
            url = url.set(password=pw)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        p = Path(url.database)
        if not p.is_absolute():
            url = url.set(database=str(ctx.base_dir / p))
        if not Path(url.database or "").exists():
            raise SourceUnavailable(f"source {sid!r}: SQLite database not found: {url.database}")
    return url.render_as_string(hide_password=False)


def _sqlite_session(dbapi_conn: Any, _record: Any) -> None:
    """Read-only (``query_only``: an ``INSERT … RETURNING`` or ``DELETE … RETURNING`` written as the query or
    the grants query fails instead of changing the source), and lenient text: SQLite stores whatever bytes
    it was given as TEXT, and ``sqlite3`` refuses to decode a value that is not UTF-8 — that one row would
    fail the whole query. Decoded with ``surrogateescape`` instead, the sync's rule for unstorable text
    (``charter.sources._sync.storable``) fails only that row when the bytes are in its id, makes its ACL
    private when they are in a grant, and puts U+FFFD in text."""
    dbapi_conn.execute("PRAGMA query_only = ON")
    dbapi_conn.text_factory = lambda data: data.decode("utf-8", "surrogateescape")


def _postgres_session(dbapi_conn: Any, _record: Any) -> None:
    """Every transaction of the connector's sessions read-only: a data-modifying statement in a charter's
    query (``WITH d AS (DELETE … RETURNING …) SELECT …``) fails instead of changing the source. A guard
    against mistakes, not a permission: give the connector a database role that can only read."""
    with dbapi_conn.cursor() as cur:
        cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    dbapi_conn.commit()


def _acl_value(value: Any) -> tuple[frozenset[str] | None, str | None]:
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, "ACL column holds invalid JSON"
    try:
        return parse_acl(value), None
    except AclParseError as exc:
        return None, str(exc)


def _grant_token(kind: str, value: Any) -> str:
    v = str(value).strip()
    return v if kind == "token" else f"{kind}:{v}"


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _cursor_value(value: Any) -> Any:
    """A change value as JSON (timestamps as ISO strings, numbers as they are)."""
    if isinstance(value, datetime):
        return {"t": (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()}
    if isinstance(value, int | float):
        return {"n": value}
    return {"s": str(value)}


def _from_cursor(value: dict[str, Any]) -> Any:
    if "t" in value:
        return parse_timestamp(value["t"])
    return value.get("n", value.get("s"))


def _greater(a: Any, b: Any) -> bool:
    try:
        if isinstance(a, datetime) and isinstance(b, datetime):
            a = a if a.tzinfo else a.replace(tzinfo=UTC)
            b = b if b.tzinfo else b.replace(tzinfo=UTC)
        return bool(a > b)
    except TypeError:
        return str(a) > str(b)


@connector("sql")
class SqlConnector:
    """Rows of a SQL query or table as documents; ACL from a column or a grants query."""

    def _engine(self, ctx: ConnectorContext) -> tuple[Engine, SqlOptions]:
        opts = ctx.source.sql
        if opts is None:
            raise SourceUnavailable(f"source {ctx.source.id!r}: the sql connector needs a 'sql' section")
        try:
            engine = create_engine(_url(ctx, opts), pool_pre_ping=True)
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise SourceUnavailable(f"source {ctx.source.id!r}: cannot open the database: {exc}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_session)
        elif engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _postgres_session)
        return engine, opts

    @staticmethod
    def _base(engine: Engine, opts: SqlOptions) -> str:
        if opts.table:
            return f"SELECT * FROM {_quote(engine, opts.table)}"
        return (opts.query or "").strip().rstrip(";")

    def _col(self, engine: Engine, name: str) -> str:
        return f"charter_q.{_quote(engine, name)}"

    def _grants(self, conn: Any, opts: SqlOptions) -> dict[str, set[str]]:
        grants: dict[str, set[str]] = {}
        if opts.grants_query:
            for doc_id, principal in conn.execute(text(opts.grants_query)).tuples():
                if doc_id is not None and principal is not None:
                    grants.setdefault(str(doc_id), set()).add(_grant_token(opts.grants_kind, principal))
        return grants

    def _acl_for(
        self, opts: SqlOptions, doc_id: str, row_acl: Any, grants: dict[str, set[str]]
    ) -> tuple[frozenset[str] | None, str | None]:
        if opts.grants_query:
            tokens = grants.get(doc_id)
            if not tokens:
                return None, "no grants for this document"
            return _acl_value(sorted(tokens))
        if opts.acl_column:
            return _acl_value(row_acl)
        return None, None

    def documents(self, ctx: ConnectorContext) -> Iterator[Item]:
        engine, opts = self._engine(ctx)
        sid = ctx.source.id
        base = self._base(engine, opts)
        since = None
        if ctx.cursor and opts.updated_column and "max" in ctx.cursor:
            since = _from_cursor(ctx.cursor["max"])
        highest = since
        try:
            with engine.connect() as conn:
                grants = self._grants(conn, opts)
                seen: set[str] = set()
                changed: set[str] = set()
                if since is not None:
                    yield from self._listing(conn, engine, base, ctx, since, grants, seen, changed)
                    if not changed:
                        ctx.new_cursor = ctx.cursor
                        return
                rows = conn.execution_options(stream_results=True).execute(
                    text(f"SELECT * FROM ({base}) AS charter_q")
                )
                for rec in rows.mappings():
                    row: Any = rec
                    doc_id = _as_text(row.get(opts.id_column))
                    if not doc_id or doc_id in seen:
                        if not doc_id:
                            yield Failed(None, f"row without a value in {opts.id_column!r}")
                        continue
                    if since is not None and doc_id not in changed:
                        continue
                    change = row.get(opts.updated_column) if opts.updated_column else None
                    item, read = self._row_item(ctx, row, doc_id, change, grants)
                    if read and change is not None and (highest is None or _greater(change, highest)):
                        highest = change
                    yield item
        except SQLAlchemyError as exc:
            raise SourceUnavailable(f"source {sid!r}: query failed: {str(exc).splitlines()[0]}") from None
        finally:
            engine.dispose()
        if opts.updated_column:
            ctx.new_cursor = {"max": _cursor_value(highest)} if highest is not None else None

    def _listing(
        self,
        conn: Any,
        engine: Engine,
        base: str,
        ctx: ConnectorContext,
        since: Any,
        grants: dict[str, set[str]],
        seen: set[str],
        changed: set[str],
    ) -> Iterator[Item]:
        """Everything that is still there, by id (and change value): cheap, no bodies. Yields the deleted
        and unchanged documents; adds the unchanged ids to ``seen`` and the ids to read to ``changed``."""
        opts = ctx.source.sql
        assert opts is not None

        def c(name: str) -> str:
            return self._col(engine, name)

        extra = f", {c(opts.tombstone_column)}" if opts.tombstone_column else ""
        acl_col = f", {c(opts.acl_column)}" if opts.acl_column else ""
        listing = conn.execute(
            text(
                f"SELECT {c(opts.id_column)}, {c(opts.updated_column or opts.id_column)}"
                f"{extra}{acl_col} FROM ({base}) AS charter_q"
            )
        ).tuples()
        for item in listing:
            doc_id = _as_text(item[0])
            if not doc_id:
                continue
            tomb = bool(item[2]) if opts.tombstone_column else False
            if tomb:
                yield Deleted(doc_id)
                continue
            if item[1] is not None and _greater(item[1], since):
                changed.add(doc_id)
                continue
            if doc_id not in ctx.known:
                changed.add(doc_id)  # never indexed (or failed before): read it
                continue
            seen.add(doc_id)
            acl, err = self._acl_for(opts, doc_id, item[-1] if opts.acl_column else None, grants)
            known = opts.grants_query is not None or opts.acl_column is not None
            yield Unchanged(doc_id, acl, err, acl_known=known)

    def _row_item(
        self, ctx: ConnectorContext, row: Any, doc_id: str, change: Any, grants: dict[str, set[str]]
    ) -> tuple[Item, bool]:
        """The item for one row, and whether the row was read (its change value then counts toward the
        cursor): a document, or a failure or deletion."""
        opts = ctx.source.sql
        assert opts is not None
        if len(doc_id) > MAX_ID_CHARS:
            return Failed(None, f"id longer than {MAX_ID_CHARS} characters"), False
        if opts.tombstone_column and row.get(opts.tombstone_column):
            return Deleted(doc_id), False
        body = _as_text(row.get(opts.body_column))
        if len(body.encode("utf-8", "replace")) > ctx.max_bytes:
            return Failed(doc_id, f"body larger than {ctx.max_bytes} bytes"), True
        acl, err = self._acl_for(opts, doc_id, row.get(opts.acl_column or ""), grants)
        title = _as_text(row.get(opts.title_column)) if opts.title_column else ""
        url = _as_text(row.get(opts.url_column)) if opts.url_column else ""
        updated = change if isinstance(change, datetime) else None
        if updated is not None and updated.tzinfo is None:
            updated = updated.replace(tzinfo=UTC)
        doc = ctx.document(
            doc_id=doc_id,
            title=title.strip() or doc_id,
            text=body,
            format="text",
            url=url or None,
            acl=acl,
            acl_error=err,
            updated_at=updated,
            version=None if change is None else str(change),
        )
        return doc, True

    def acls(self, ctx: ConnectorContext) -> Iterator[AclEntry | Failed]:
        """Current ACL per document id: the id listing and the ACL column or grants query only."""
        engine, opts = self._engine(ctx)
        base = self._base(engine, opts)

        def c(name: str) -> str:
            return self._col(engine, name)

        cols = [c(opts.id_column)]
        if opts.tombstone_column:
            cols.append(c(opts.tombstone_column))
        if opts.acl_column:
            cols.append(c(opts.acl_column))
        try:
            with engine.connect() as conn:
                grants = self._grants(conn, opts)
                for row in conn.execute(
                    text(f"SELECT {', '.join(cols)} FROM ({base}) AS charter_q")
                ).tuples():
                    doc_id = _as_text(row[0])
                    if not doc_id or (opts.tombstone_column and row[1]):
                        continue  # a tombstone: not listed, so the ACL sync deletes it
                    acl, err = self._acl_for(opts, doc_id, row[-1] if opts.acl_column else None, grants)
                    yield AclEntry(doc_id, acl, err)
        except SQLAlchemyError as exc:
            raise SourceUnavailable(
                f"source {ctx.source.id!r}: query failed: {str(exc).splitlines()[0]}"
            ) from None
        finally:
            engine.dispose()
