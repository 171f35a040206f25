"""Which scripts and stylesheets a built HTML page loads from the network (the book must render offline).

MathJax, which typesets every equation, is served from a CDN by Sphinx's default; a reader
offline, or a classroom behind a firewall, then sees raw TeX. The book ships MathJax with the
pages (``sphinx-mathjax-offline`` in ``_config.yml``: a maintained, pip-installable copy of MathJax 3
that the build copies into ``_static/mathjax``). :func:`external_assets` lists the ``<script src>`` and
``<link rel="stylesheet" href>`` of a page that point to ``http(s)://`` or protocol-relative ``//``
addresses, so a test (``tests/test_offline_book.py``) can prove that nothing is fetched from elsewhere.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

_EXTERNAL = ("http://", "https://", "//")


class _AssetParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "script" and values.get("src"):
            self.assets.append(values["src"])
        elif tag == "link" and ("stylesheet" in values.get("rel", "").split() or values.get("as") in ("script", "style")):
            self.assets.append(values.get("href", ""))


def external_assets(html: str) -> list[str]:
    """The scripts and stylesheets ``html`` loads from another host, in page order."""
    parser = _AssetParser()
    parser.feed(html)
    return [url for url in parser.assets if url.strip().lower().startswith(_EXTERNAL)]


def external_assets_of_site(folder: str | Path) -> dict[str, list[str]]:
    """:func:`external_assets` of every ``*.html`` page under ``folder`` that has any (relative path -> URLs)."""
    folder = Path(folder)
    found = {}
    for page in sorted(folder.rglob("*.html")):
        urls = external_assets(page.read_text(encoding="utf-8", errors="replace"))
        if urls:
            found[page.relative_to(folder).as_posix()] = urls
    return found
