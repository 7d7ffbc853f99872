"""Gate reports: Markdown, self-contained HTML and JSON, plus a signed manifest.

``gate-report.sig.json`` lists the SHA-256 of each report file, the charter fingerprint, the gate run id
and the signing key id, and carries an Ed25519 signature (the audit log's key in ``.charter/keys/``) over
the canonical JSON of everything else. :func:`verify_report` checks the signature with this installation's
public keys, every file's hash, and that the fingerprint is the current charter's: one edited byte in any
file, or in the manifest, fails.
"""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charter.errors import IntegrityError, UsageError
from charter.spec import canonical_json
from charter.store import private_dir, write_private

if TYPE_CHECKING:
    from charter.gate._types import GateResult
    from charter.runtime import Runtime

FILES = ("gate-report.json", "gate-report.md", "gate-report.html")
MANIFEST = "gate-report.sig.json"
_ICON = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}


def render_markdown(data: dict[str, Any]) -> str:
    out = [
        f"# Launch gate: {data['workflow']} — {data['status'].upper()}",
        "",
        f"- Gate run: `{data['id']}`",
        f"- Charter fingerprint: `{data['charter_fingerprint']}`",
        f"- Started: {data['started_at']} · duration {data['duration_s']} s",
        "",
        "| check | status | owner |",
        "|---|---|---|",
    ]
    for c in data["checks"]:
        out.append(f"| {c['title']} | {_ICON[c['status']]} | {c['owner']} ({c['owner_duty']}) |")
    for c in data["checks"]:
        out += [
            "",
            f"## {c['title']}: {_ICON[c['status']]}",
            "",
            f"Owner: **{c['owner']}** (owners.{c['owner_duty']})",
            "",
        ]
        for f in c["findings"]:
            out.append(
                f"- {_ICON[f['status']]} {f['message']}" + (f" — next: {f['fix']}" if f.get("fix") else "")
            )
            if f["evidence"]:
                out.append(f"  evidence: `{canonical_json(f['evidence'])}`")
    return "\n".join(out) + "\n"


def render_html(data: dict[str, Any]) -> str:
    e = html.escape
    rows = "".join(
        f"<tr class='{c['status']}'><td>{e(c['title'])}</td><td>{_ICON[c['status']]}</td>"
        f"<td>{e(str(c['owner']))} ({e(c['owner_duty'])})</td></tr>"
        for c in data["checks"]
    )
    sections = []
    for c in data["checks"]:
        items = "".join(
            f"<li class='{f['status']}'><b>{_ICON[f['status']]}</b> {e(f['message'])}"
            + (f" <i>next: {e(f['fix'])}</i>" if f.get("fix") else "")
            + ""
            + (
                f"<details><summary>evidence</summary><pre>"
                f"{e(json.dumps(f['evidence'], indent=2, default=str))}"
                f"</pre></details>"
                if f["evidence"]
                else ""
            )
            + "</li>"
            for f in c["findings"]
        )
        sections.append(
            f"<section><h2>{e(c['title'])}: {_ICON[c['status']]}</h2><p>Owner: <b>"
            f"{e(str(c['owner']))}</b> (owners.{e(c['owner_duty'])})</p><ul>{items}</ul></section>"
        )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3rem .6rem}"
        ".pass b,tr.pass td:nth-child(2){color:#176f2c}.warn b,tr.warn td:nth-child(2){color:#8a6100}"
        ".fail b,tr.fail td:nth-child(2){color:#b00020}pre{white-space:pre-wrap;font-size:.8rem}"
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Launch gate: "
        f"{e(data['workflow'])}</title><style>{style}</style></head><body>"
        f"<h1>Launch gate: {e(data['workflow'])} — {e(data['status'].upper())}</h1>"
        f"<p>Gate run <code>{e(data['id'])}</code> · fingerprint "
        f"<code>{e(data['charter_fingerprint'])}</code>"
        f" · {e(data['started_at'])} · {data['duration_s']} s</p><table><tr><th>check</th><th>status</th>"
        f"<th>owner</th></tr>{rows}</table>{''.join(sections)}</body></html>\n"
    )


def write_report(rt: Runtime, result: GateResult, folder: Path | str) -> dict[str, Any]:
    """Write the three reports and the signed manifest into ``folder``; returns the manifest."""
    from charter.telemetry.signing import SigningKey

    folder = private_dir(folder)  # 0700 when created here; reports are 0600 (they quote evidence)
    data = result.as_dict()
    blobs = {
        "gate-report.json": (json.dumps(data, indent=2, default=str) + "\n").encode(),
        "gate-report.md": render_markdown(data).encode(),
        "gate-report.html": render_html(data).encode(),
    }
    for name, blob in blobs.items():
        write_private(folder / name, blob)
    key = SigningKey.load_or_create(rt.key_dir)
    body = {
        "kind": "charter.gate.signature",
        "gate_run": result.id,
        "workflow": result.workflow,
        "charter_fingerprint": result.charter_fingerprint,
        "status": data["status"],
        "files": {n: "sha256:" + hashlib.sha256(b).hexdigest() for n, b in blobs.items()},
        "key_id": key.key_id,
        "alg": "ed25519",
    }
    manifest = {**body, "signature": key.sign(canonical_json(body).encode())}
    write_private(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return manifest


def verify_report(rt: Runtime, report: Path | str) -> dict[str, Any]:
    """Prove a report came from this installation, for the current configuration, unedited.

    ``report`` is the report folder, the manifest, or one report file (checked against the manifest beside
    it). Raises :class:`IntegrityError` naming the first problem; returns what was verified."""
    from charter.telemetry.signing import load_public_keys, verify_signature

    path = Path(report)
    if path.is_dir():
        folder, names = path, list(FILES)
    elif path.is_file():
        folder = path.parent
        names = list(FILES) if path.name == MANIFEST else [path.name]
    else:
        raise UsageError(f"no such report: {path}")
    mpath = folder / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        signature = manifest.pop("signature")
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise IntegrityError(f"{mpath}: missing or unreadable signature manifest ({exc})") from None
    keys = load_public_keys(rt.key_dir)
    key = keys.get(str(manifest.get("key_id")))
    if key is None:
        raise IntegrityError(
            f"signed with key {manifest.get('key_id')!r}, which is not one of this "
            f"installation's keys ({', '.join(sorted(keys)) or 'none'})"
        )
    if not verify_signature(canonical_json(manifest).encode(), signature, key):
        raise IntegrityError(f"{mpath}: the signature does not match its content (manifest edited)")
    files = manifest.get("files") or {}
    for name in names:
        if name not in files:
            raise IntegrityError(f"{name} is not covered by the signature")
        try:
            digest = "sha256:" + hashlib.sha256((folder / name).read_bytes()).hexdigest()
        except OSError as exc:
            raise IntegrityError(f"{name}: cannot read ({exc})") from None
        if digest != files[name]:
            raise IntegrityError(f"{name} was modified after it was signed ({digest} != {files[name]})")
    if manifest.get("charter_fingerprint") != rt.fingerprint:
        raise IntegrityError(
            f"the report is for charter {manifest.get('charter_fingerprint')}, not the current "
            f"configuration {rt.fingerprint}"
        )
    return {
        "ok": True,
        "gate_run": manifest.get("gate_run"),
        "status": manifest.get("status"),
        "charter_fingerprint": manifest.get("charter_fingerprint"),
        "key_id": manifest.get("key_id"),
        "files": names,
    }
