"""Versioned prompts and their approvals.

Rules (see ``docs/models.md``):

* An approval is a row in ``prompt_approvals`` recorded by ``charter prompts approve`` (audited), made by the
  charter's prompt owner (``owners.prompt_changes``) and bound to the sha256 of the prompt file's bytes.
  Editing the file afterwards voids it: the version is unapproved again until re-approved.
* The charter's own ``approval:`` block on a version is a *declaration*, not an approval: it never
  approves anything by itself. If it carries a ``config_hash`` that no longer matches the file, the version
  is refused as well (the declaration is stale).
* The active version is the most recent decision: the charter's ``active`` (recorded as an activation by
  ``@charter`` whenever the file names a different version than last seen) or a later
  ``charter prompts activate``. Only an approved version can be activated, and the runtime refuses to run
  a workflow whose active version is not approved.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from charter.errors import Denied, NotFound, UsageError
from charter.spec import LoadedCharter, Principal, Prompt, PromptVersion
from charter.store import Store, utcnow
from charter.store.tables import prompt_activations, prompt_approvals

AuditFn = Callable[..., Any]
CHARTER_ACTOR = "@charter"  # activations that record the charter file's own `active` (not a user id)


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ActivePrompt:
    """The prompt text a request runs with, and the version recorded on it."""

    name: str
    version: str
    text: str
    file_hash: str
    approved_by: str
    approved_at: datetime


@dataclass(frozen=True)
class PromptVersionStatus:
    """One version as ``charter prompts list`` shows it."""

    prompt: str
    version: str
    file: str
    file_hash: str | None  # None when the file is missing
    approved: bool
    approved_by: str | None
    approved_at: datetime | None
    approval_problem: str | None
    declared_approval_by: str | None  # the charter's `approval.by`, informational
    active: bool
    charter_active: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PromptRegistry:
    """Reads prompt files named by the charter, records approvals and activations in the store."""

    def __init__(
        self, charter: LoadedCharter, store: Store, *, audit: AuditFn | None = None, cache_ttl: float = 5.0
    ) -> None:
        self.charter = charter
        self.store = store
        self.workflow_id = charter.spec.workflow.id
        self._audit = audit
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, ActivePrompt]] = {}

    # ------------------------------------------------------------------------------------ lookups
    def _prompt(self, name: str) -> Prompt:
        try:
            return self.charter.spec.prompt(name)
        except KeyError:
            names = ", ".join(p.name for p in self.charter.spec.prompts) or "none"
            raise NotFound(f"no prompt named {name!r} in the charter (prompts: {names})") from None

    def _version(self, prompt: Prompt, version: str) -> PromptVersion:
        for v in prompt.versions:
            if v.version == version:
                return v
        labels = ", ".join(v.version for v in prompt.versions)
        raise NotFound(f"prompt {prompt.name!r} has no version {version!r} (versions: {labels})")

    def _read(self, v: PromptVersion) -> bytes | None:
        path = self.charter.resolve(v.file)
        try:
            return path.read_bytes()
        except OSError:
            return None

    def _approval_row(self, prompt: str, version: str, file_hash: str | None) -> Any:
        """The latest approval of this version whose hash matches the file, else the latest at all."""
        a = prompt_approvals.c
        with self.store.connect() as conn:
            rows = conn.execute(
                select(prompt_approvals)
                .where((a.workflow_id == self.workflow_id) & (a.prompt == prompt) & (a.version == version))
                .order_by(a.id.desc())
            ).all()
        for row in rows:
            if row.file_hash == file_hash:
                return row
        return rows[0] if rows else None

    def _latest_activation(self, prompt: str, *, by: str | None = None) -> Any:
        a = prompt_activations.c
        query = select(prompt_activations).where((a.workflow_id == self.workflow_id) & (a.prompt == prompt))
        if by is not None:
            query = query.where(a.activated_by == by)
        with self.store.connect() as conn:
            return conn.execute(query.order_by(a.id.desc()).limit(1)).first()

    def _sync_charter_choice(self, prompt: Prompt) -> None:
        """Record the charter's ``active`` as an activation when it differs from the last one recorded, so
        that the newest decision — a charter edit or ``prompts activate`` — is simply the newest row."""
        seen = self._latest_activation(prompt.name, by=CHARTER_ACTOR)
        if seen is not None and seen.version == prompt.active:
            return
        data = self._read(self._version(prompt, prompt.active))
        with self.store.begin(immediate=True) as conn:
            a = prompt_activations.c
            again = conn.execute(
                select(a.version)
                .where(
                    (a.workflow_id == self.workflow_id)
                    & (a.prompt == prompt.name)
                    & (a.activated_by == CHARTER_ACTOR)
                )
                .order_by(a.id.desc())
                .limit(1)
            ).first()
            if again is not None and again[0] == prompt.active:
                return
            conn.execute(
                prompt_activations.insert().values(
                    workflow_id=self.workflow_id,
                    prompt=prompt.name,
                    version=prompt.active,
                    file_hash=file_sha256(data) if data is not None else "",
                    charter_active=prompt.active,
                    activated_by=CHARTER_ACTOR,
                    activated_at=utcnow(),
                )
            )

    def active_version(self, name: str) -> str:
        """The version in force: the newest decision, either the charter's ``active`` (recorded when it
        changes) or a later ``charter prompts activate``."""
        prompt = self._prompt(name)
        self._sync_charter_choice(prompt)
        row = self._latest_activation(name)
        if row is not None and any(v.version == row.version for v in prompt.versions):
            return str(row.version)
        return prompt.active

    def status(self, name: str, version: str) -> PromptVersionStatus:
        prompt = self._prompt(name)
        v = self._version(prompt, version)
        data = self._read(v)
        file_hash = file_sha256(data) if data is not None else None
        row = self._approval_row(name, version, file_hash)
        problem: str | None = None
        if data is None:
            problem = f"prompt file {v.file} is missing"
        elif row is None:
            problem = "not approved"
        elif row.file_hash != file_hash:
            problem = "the file changed after it was approved; it needs a new approval"
        elif v.approval is not None and v.approval.config_hash and v.approval.config_hash != file_hash:
            problem = "the charter's approval.config_hash does not match the file"
        approved = problem is None
        return PromptVersionStatus(
            prompt=name,
            version=version,
            file=v.file,
            file_hash=file_hash,
            approved=approved,
            approved_by=row.approved_by if row is not None and approved else None,
            approved_at=row.approved_at if row is not None and approved else None,
            approval_problem=problem,
            declared_approval_by=v.approval.by if v.approval else None,
            active=self.active_version(name) == version,
            charter_active=prompt.active == version,
        )

    def versions(self, name: str | None = None) -> list[PromptVersionStatus]:
        """Every version of every prompt (or of ``name``)."""
        prompts = [self._prompt(name)] if name else list(self.charter.spec.prompts)
        return [self.status(p.name, v.version) for p in prompts for v in p.versions]

    def active(self, name: str) -> ActivePrompt:
        """The active, approved version's text. Raises :class:`Denied` when it is not approved.

        The file is re-read and re-hashed on every call (an edit voids the approval at once); what comes from
        the database (approvals, activations) is cached for ``cache_ttl`` seconds, so another process's
        ``charter prompts activate`` takes effect within that time.
        """
        hit = self._cache.get(name)
        if hit is not None and time.monotonic() < hit[0]:
            cached = hit[1]
            data = self._read(self._version(self._prompt(name), cached.version))
            if data is not None and file_sha256(data) == cached.file_hash:
                return cached
        result = self._load_active(name)
        self._cache[name] = (time.monotonic() + self.cache_ttl, result)
        return result

    def _load_active(self, name: str) -> ActivePrompt:
        version = self.active_version(name)
        st = self.status(name, version)
        if not st.approved or st.approved_by is None or st.approved_at is None:
            owner = self.charter.spec.owners.prompt_changes
            raise Denied(
                f"prompt {name!r} version {version!r} is active but not approved ({st.approval_problem}); "
                f"the prompt owner must run: charter prompts approve {name} {version} --as {owner}",
                reasons=["prompts.approval"],
            )
        data = self._read(self._version(self._prompt(name), version))
        if data is None or file_sha256(data) != st.file_hash:  # changed since status(): check again
            return self._load_active(name)
        return ActivePrompt(
            name=name,
            version=version,
            text=data.decode("utf-8"),
            file_hash=st.file_hash or "",
            approved_by=st.approved_by,
            approved_at=st.approved_at,
        )

    def check(self) -> list[str]:
        """Problems that keep the workflow from running: active versions that are not approved."""
        problems = []
        for p in self.charter.spec.prompts:
            try:
                self.active(p.name)
            except Denied as exc:
                problems.append(str(exc))
        return problems

    # ------------------------------------------------------------------------------------ decisions
    def _require_owner(self, principal: Principal, action: str, name: str, version: str) -> None:
        owner = self.charter.spec.owners.prompt_changes
        if principal.id != owner or not principal.active:
            self._record(
                actor=principal.id,
                action=f"prompt.{action}",
                resource=f"prompt:{name}@{version}",
                outcome="denied",
                details={"reason": "not the prompt owner", "owner": owner},
            )
            raise Denied(
                f"only the prompt owner ({owner}) may {action} prompt versions; {principal.id} is not",
                reasons=["owners.prompt_changes"],
            )

    def _record(self, **event: Any) -> None:
        if self._audit is not None:
            self._audit(**event)

    def approve(
        self, name: str, version: str, *, principal: Principal, note: str | None = None
    ) -> PromptVersionStatus:
        """Record the prompt owner's approval of the version's current file content (audited)."""
        prompt = self._prompt(name)
        v = self._version(prompt, version)
        self._require_owner(principal, "approve", name, version)
        data = self._read(v)
        if data is None:
            raise UsageError(f"prompt file {v.file} does not exist; cannot approve a missing file")
        file_hash = file_sha256(data)
        self._cache.clear()
        now = utcnow()
        with self.store.begin() as conn:
            conn.execute(
                prompt_approvals.insert().values(
                    workflow_id=self.workflow_id,
                    prompt=name,
                    version=version,
                    file_hash=file_hash,
                    approved_by=principal.id,
                    approved_at=now,
                    note=note,
                )
            )
        self._record(
            actor=principal.id,
            action="prompt.approve",
            resource=f"prompt:{name}@{version}",
            outcome="approved",
            details={"file": v.file, "file_hash": file_hash, "note": note},
        )
        return self.status(name, version)

    def activate(self, name: str, version: str, *, principal: Principal) -> PromptVersionStatus:
        """Make an approved version the active one (audited); refused when it is not approved."""
        prompt = self._prompt(name)
        self._version(prompt, version)
        self._require_owner(principal, "activate", name, version)
        st = self.status(name, version)
        if not st.approved or st.file_hash is None:
            self._record(
                actor=principal.id,
                action="prompt.activate",
                resource=f"prompt:{name}@{version}",
                outcome="denied",
                details={"reason": st.approval_problem},
            )
            raise Denied(
                f"prompt {name!r} version {version!r} cannot become active: {st.approval_problem}; "
                f"approve it first (charter prompts approve {name} {version} --as "
                f"{self.charter.spec.owners.prompt_changes})",
                reasons=["prompts.approval"],
            )
        previous = self.active_version(name)
        self._cache.clear()
        with self.store.begin() as conn:
            conn.execute(
                prompt_activations.insert().values(
                    workflow_id=self.workflow_id,
                    prompt=name,
                    version=version,
                    file_hash=st.file_hash,
                    charter_active=prompt.active,
                    activated_by=principal.id,
                    activated_at=utcnow(),
                )
            )
        self._record(
            actor=principal.id,
            action="prompt.activate",
            resource=f"prompt:{name}@{version}",
            outcome="activated",
            details={"previous": previous, "file_hash": st.file_hash},
        )
        return self.status(name, version)
