"""``html_to_text`` (lxml) gives exactly what the earlier bs4 extraction gave, on well-formed HTML.

The oracle is the bs4 (``html.parser``) implementation kept verbatim in ``_bs4_oracle.py``. Checked on
generated pages (Hypothesis: every block and inline kind the extractor treats specially, skipped and
non-text elements, comments, whitespace runs, punctuation, entities, non-ASCII letters) and on every page
of Debian's PostgreSQL manual (the corpus of ``bench/ingest_bench.py``)."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.sources._extract import html_to_text
from tests.sources._bs4_oracle import bs4_html_to_text

PG_DOCS = Path("/usr/share/doc/postgresql-doc-15/html")

_CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters="\x00"
) | st.sampled_from(list(" \n\t  .,;:!?()[]{}'\"-–—/\\|*#_~`<>&«»"))
TEXT = st.text(_CHARS, max_size=30).map(lambda t: html.escape(t, quote=False))
SPACE = st.sampled_from(["", " ", "\n", "  \n\t", "\n\n"])
RAW = st.text(st.sampled_from(list("abc xyz.;{}=\n")), max_size=20)  # script/style bodies

INLINE_TAGS = ["span", "b", "i", "em", "strong", "code", "a", "small", "sup", "kbd", "mark", "time", "abbr"]
CONTAINERS = [
    "div",
    "section",
    "article",
    "blockquote",
    "main",
    "aside",
    "nav",
    "header",
    "footer",
    "details",
]


def _el(tag: str, inner: str, attrs: str = "") -> str:
    return f"<{tag}{attrs}>{inner}</{tag}>"


def phrasing(depth: int) -> st.SearchStrategy[str]:
    leaf = st.one_of(
        TEXT,
        SPACE,
        st.just("<br>"),
        st.just("<br/>"),
        TEXT.map(lambda t: f"<!-- {t.replace('-', '')} -->"),
        st.tuples(TEXT, TEXT).map(lambda p: f"<ruby>{p[0]}<rp>(</rp><rt>{p[1]}</rt><rp>)</rp></ruby>"),
        RAW.map(lambda t: f"<script>{t}</script>"),
    )
    if depth <= 0:
        return leaf
    return st.one_of(
        leaf,
        st.tuples(st.sampled_from(INLINE_TAGS), st.lists(phrasing(depth - 1), max_size=4)).map(
            lambda p: _el(p[0], "".join(p[1]), ' href="x.html"' if p[0] == "a" else "")
        ),
    )


def runs(strategy: st.SearchStrategy[str], n: int = 5) -> st.SearchStrategy[str]:
    return st.lists(st.tuples(SPACE, strategy), max_size=n).map(lambda xs: "".join(a + b for a, b in xs))


def flow(depth: int) -> st.SearchStrategy[str]:
    inline = phrasing(2)
    blocks = [
        runs(inline).map(lambda t: _el("p", t)),
        st.tuples(st.integers(1, 6), runs(inline)).map(lambda p: _el(f"h{p[0]}", p[1])),
        st.tuples(SPACE, TEXT, st.lists(st.tuples(TEXT, SPACE), max_size=3)).map(
            lambda p: "<pre>" + p[0] + p[1] + "".join(f"<b>{a}</b>{b}" for a, b in p[2]) + "</pre>"
        ),
        st.lists(st.lists(runs(inline, 3), min_size=1, max_size=3), min_size=1, max_size=3).map(
            lambda rows: (
                "<table>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
                + "</table>"
            )
        ),
        st.just("<hr>"),
        RAW.map(lambda t: f"<style>{t}</style>"),
        runs(inline, 3).map(lambda t: f"<noscript>{t}</noscript>"),
        runs(inline, 3).map(lambda t: f"<template><p>{t}</p></template>"),
        inline,
    ]
    if depth > 0:
        inner = runs(flow(depth - 1), 3)
        blocks += [
            st.tuples(st.sampled_from(CONTAINERS), inner).map(lambda p: _el(p[0], p[1])),
            st.tuples(st.sampled_from(["ul", "ol"]), st.lists(st.tuples(SPACE, inner), max_size=3)).map(
                lambda p: _el(p[0], "".join(s + _el("li", x) for s, x in p[1]))
            ),
            st.lists(st.tuples(TEXT, inner), max_size=3).map(
                lambda xs: _el("dl", "".join(_el("dt", a) + _el("dd", b) for a, b in xs))
            ),
        ]
    return st.one_of(*blocks)


PAGE = st.tuples(
    st.booleans(), TEXT, st.booleans(), runs(flow(2), 6), st.sampled_from(["utf-8", "none"])
).map(
    lambda p: (
        (
            "<!DOCTYPE html><html><head>"
            + (f'<meta charset="{p[4]}">' if p[4] != "none" else "")
            + f"<title>{p[1]}</title>"
            + ('<link rel="canonical" href="https://example.org/page.html">' if p[2] else "")
            + f"</head><body>{p[3]}</body></html>"
        )
        if p[0]
        else p[3]
    ).encode("utf-8")
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(PAGE)
def test_same_text_title_and_url_as_the_bs4_extraction(page: bytes) -> None:
    new, old = html_to_text(page), bs4_html_to_text(page)
    assert (new.title, new.text, new.url) == (old.title, old.text, old.url)


@pytest.mark.slow  # every page of a manual
def test_same_extraction_on_every_page_of_the_postgresql_manual() -> None:
    pages = sorted(PG_DOCS.glob("*.html"))
    assert len(pages) > 1000, "apt-get install postgresql-doc-15 (scripts/setup installs it)"
    for path in pages:
        data = path.read_bytes()
        new, old = html_to_text(data), bs4_html_to_text(data)
        assert (new.title, new.text, new.url) == (old.title, old.text, old.url), path.name


@pytest.mark.parametrize(
    ("page", "title", "text"),
    [
        (b"<ul><li>one<li>two</ul>", None, "- one\n\n- two"),  # unclosed items end at the next one
        (b"<p>a<p>b", None, "a\n\nb"),
        (b"", None, ""),
        (b"<!-- only a comment -->", None, ""),
        (b"<html><head><title>T</title></head><body><h1>H</h1>x</body></html>", "T", "# H\n\nx"),
    ],
)
def test_malformed_and_empty_pages(page: bytes, title: str | None, text: str) -> None:
    out = html_to_text(page)
    assert (out.title, out.text) == (title, text)


def test_links_base_and_canonical_come_from_the_same_parse() -> None:
    page = (
        b'<html><head><base href="/docs/"><link rel="alternate canonical" href="/c.html"></head>'
        b'<body><a href="a.html">A</a> <a rel="nofollow" href="b.html">B</a><a>no href</a></body></html>'
    )
    out = html_to_text(page)
    assert (out.base, out.url) == ("/docs/", "/c.html")
    assert out.links == [("a.html", ""), ("b.html", "nofollow")]
