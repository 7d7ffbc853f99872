"""The safe-read rule (charter.sources._files): what a hostile or careless folder can make the connectors read.

Symlinks leaving the source folder, /dev/zero, FIFOs, /proc files whose size lies, a 20,000-page PDF and
slow extraction — each against the real connectors and the real sync, with real files.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from charter.retrieval import Index
from charter.sources import ConnectorContext, Document, Failed, SourceUnavailable, get_connector
from charter.sources._files import FileRefused, read_source_file
from tests.sources._helpers import make_source, write_pdf
from tests.sources.conftest import Workspace, md

SECRET = "PRIVATE KEY MATERIAL 7f3a"


def _docs(tmp_path: Path, **ctx_kw: Any) -> dict[str, Document | Failed]:
    ctx = ConnectorContext(source=make_source(), base_dir=tmp_path, **ctx_kw)
    return {i.doc_id or "?": i for i in get_connector("folder").documents(ctx)}


def _within(seconds: float, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a thread; fail (instead of hanging the suite) when it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # re-raised below, in the test's thread
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (blocked on a FIFO or a device?)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _setup(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "ok.md").write_text(md("# Fine\n\nOrdinary help text."), encoding="utf-8")
    return root


def test_symlinked_file_outside_the_folder_is_refused_and_reported(tmp_path: Path) -> None:
    root = _setup(tmp_path)
    keys = tmp_path / ".charter" / "keys"
    keys.mkdir(parents=True)
    (keys / "signing.key").write_text(SECRET, encoding="utf-8")
    (root / "leaked.md").symlink_to(Path("..") / ".charter" / "keys" / "signing.key")
    (root / "passwd.txt").symlink_to("/etc/passwd")
    items = _docs(tmp_path)
    assert isinstance(items["ok.md"], Document)
    for name in ("leaked.md", "passwd.txt"):
        item = items[name]
        assert isinstance(item, Failed) and item.refused, item
        assert "outside the source folder" in item.reason
    assert not any(SECRET in i.text for i in items.values() if isinstance(i, Document))


def test_symlink_inside_the_folder_is_followed(tmp_path: Path) -> None:
    root = _setup(tmp_path)
    (root / "sub").mkdir()
    (root / "sub" / "alias.md").symlink_to(Path("..") / "ok.md")
    item = _docs(tmp_path)["sub/alias.md"]
    assert isinstance(item, Document) and "Ordinary help text" in item.text


def test_symlinked_sidecar_outside_the_folder_fails_closed(tmp_path: Path) -> None:
    root = _setup(tmp_path)
    outside = tmp_path / "public.acl"
    outside.write_text("public\n", encoding="utf-8")
    (root / "secret.md").write_text("# Secret\n\nFinance only.", encoding="utf-8")
    (root / "secret.md.acl").symlink_to(outside)
    item = _docs(tmp_path)["secret.md"]
    assert isinstance(item, Document)
    assert item.acl is None and item.acl_error and "refused" in item.acl_error


def test_dev_zero_is_refused_without_reading(tmp_path: Path) -> None:
    root = _setup(tmp_path)
    (root / "zero.md").symlink_to("/dev/zero")
    items = _within(10, lambda: _docs(tmp_path))
    assert isinstance(items["zero.md"], Failed) and items["zero.md"].refused
    # even where /dev is the root (the symlink stays inside it), a device is never a document
    with pytest.raises(FileRefused, match="character device"):
        _within(10, lambda: read_source_file("/dev/zero", "/dev", 1000))
    with pytest.raises(FileRefused, match="character device"):
        _within(10, lambda: read_source_file(root / "zero.md", None, 1000))


def test_fifo_document_and_fifo_sidecar_do_not_hang(tmp_path: Path) -> None:
    root = _setup(tmp_path)
    os.mkfifo(root / "pipe.md")
    (root / "doc.md").write_text("# Doc\n\nBody.", encoding="utf-8")
    os.mkfifo(root / "doc.md.acl")
    items = _within(10, lambda: _docs(tmp_path))
    pipe = items["pipe.md"]
    assert isinstance(pipe, Failed) and pipe.refused and "named pipe" in pipe.reason
    doc = items["doc.md"]
    assert isinstance(doc, Document) and doc.acl is None and doc.acl_error and "named pipe" in doc.acl_error


def test_size_is_enforced_on_bytes_read_not_on_stat(tmp_path: Path) -> None:
    status = Path("/proc/self/status")
    assert status.stat().st_size == 0  # the kernel reports 0 bytes, yet the file holds ~1.5 kB
    with pytest.raises(Exception, match="file too large: more than 100 bytes"):
        read_source_file(status, "/proc", 100)
    data, _ = read_source_file(status, "/proc", 1_000_000)
    assert b"Name:" in data


def test_jsonl_fifo_makes_the_source_unavailable_instead_of_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "docs.jsonl")
    ctx = ConnectorContext(source=make_source(connector="jsonl", location="docs.jsonl"), base_dir=tmp_path)
    with pytest.raises(SourceUnavailable, match="named pipe"):
        _within(10, lambda: list(get_connector("jsonl").documents(ctx)))


def _big_pdf(path: Path, pages: int) -> Path:
    """A ``pages``-page PDF with text on every page (one content stream shared by all pages)."""
    from pypdf import PdfReader, PdfWriter

    write_pdf(path, ["Refunds are issued within 14 days of the request."])
    template = PdfReader(path).pages[0]
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_page(template)
    with path.open("wb") as f:
        writer.write(f)
    return path


@pytest.mark.slow  # builds a 20,000-page PDF: a stress case, full suite only
def test_a_20000_page_pdf_fails_fast_on_the_page_cap(tmp_path: Path) -> None:
    root = _setup(tmp_path)
    _big_pdf(root / "huge.pdf", 20_000)
    started = time.monotonic()
    items = _docs(tmp_path)
    elapsed = time.monotonic() - started
    huge = items["huge.pdf"]
    assert isinstance(huge, Failed) and "20000 pages (limit 2000)" in huge.reason, huge
    assert elapsed < 10, f"the page cap must stop before extraction ({elapsed:.1f} s)"


def test_per_document_time_budget_stops_extraction(tmp_path: Path) -> None:
    root = _setup(tmp_path)
    _big_pdf(root / "slow.pdf", 300)
    items = _docs(tmp_path, max_seconds=0.05)
    slow = items["slow.pdf"]
    assert isinstance(slow, Failed) and "ran out of time" in slow.reason, slow
    assert isinstance(items["ok.md"], Document)


def test_sync_reports_the_refusal_and_drops_an_earlier_indexed_version(ws: Workspace) -> None:
    ws.write("help.md", md("# Help\n\nRefunds within 14 days."))
    ws.write("notes.md", md("# Notes\n\nA harmless page.", acl="[public]"))
    assert ws.sync()["docs"].status == "succeeded"
    index = Index.for_runtime(ws.rt)
    assert "notes.md" in index.document_states("docs")
    secret = ws.base / "outside-secret.md"
    secret.write_text(md(f"# Keys\n\n{SECRET}", acl="[public]"), encoding="utf-8")
    (ws.docs / "notes.md").unlink()
    (ws.docs / "notes.md").symlink_to(secret)
    summary = ws.sync()["docs"]
    assert summary.status == "partial"
    (failure,) = summary.failures
    assert failure["doc_id"] == "notes.md" and failure["reason"].startswith("refused:")
    assert summary.deleted == 1
    states = Index.for_runtime(ws.rt).document_states("docs")
    assert "notes.md" not in states and "help.md" in states


def _pdf_with_a_bomb(path: Path, expanded: int) -> None:
    """A valid one-page PDF whose content stream is ~``expanded`` bytes of FlateDecode (a few hundred KB)."""
    import zlib

    c = zlib.compressobj(9)
    block = b"BT /F1 12 Tf 72 712 Td (refunds) Tj ET\n" + b" " * 999_960
    stream = b"".join(c.compress(block) for _ in range(expanded // len(block))) + c.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))


def test_a_pdf_compression_bomb_fails_alone_with_bounded_memory(tmp_path: Path) -> None:
    """A 0.4 MB PDF whose content stream expands to 400 MB: pypdf (>= 6.0, pinned for this) stops at its
    decompression limit, so that document fails alone and memory stays near the limit."""
    import tracemalloc

    root = _setup(tmp_path)
    _pdf_with_a_bomb(root / "bomb.pdf", 400_000_000)
    assert (root / "bomb.pdf").stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        docs = _within(60, lambda: _docs(tmp_path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(docs["bomb.pdf"], Failed) and "Limit" in docs["bomb.pdf"].reason, docs["bomb.pdf"]
    assert isinstance(docs["ok.md"], Document)
    assert peak < 250_000_000, f"{peak:,} bytes traced at the peak"
