"""Helpers for the sources tests: sources built in code, and real PDFs written with pypdf."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from charter.spec import Source


def make_source(**overrides: Any) -> Source:
    data: dict[str, Any] = {
        "id": "docs",
        "connector": "folder",
        "location": "docs",
        "owner": "omar",
        "sensitivity": "internal",
        "permissions": {"model": "per-document"},
        "freshness": {"max_age": "7d"},
    }
    data.update(overrides)
    return Source.model_validate(data)


def write_pdf(path: Path, pages: list[str], title: str | None = None) -> Path:
    """A real PDF with one line of Helvetica text per page (pypdf writer, hand-made content streams)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for text in pages:
        page = writer.add_blank_page(612, 792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        stream = DecodedStreamObject()
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream.set_data(f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
    if title:
        writer.add_metadata({"/Title": title})
    with path.open("wb") as f:
        writer.write(f)
    return path
