"""The built book renders its equations offline, shows exercises with hidden solutions, and offers notebooks.

Builds a one-page book (a few seconds) with the repository's own ``_config.yml`` extensions and parser
settings, then scans the HTML with :mod:`support.infra.offline_html`: no page may load a script or
stylesheet from another host. The same build without the extensions is the control: it must load
MathJax from a CDN, so the check can fail. The page is a jupytext notebook with an exercise whose
solution holds a code cell, executed as in the book: the solution must render collapsed, with the
cell's output, and the download menu must offer the executed notebook
(:mod:`support.infra.notebook_downloads`)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chapter_header import JUPYTEXT_HEADER
from support.infra.offline_html import external_assets, external_assets_of_site

REPO = Path(__file__).resolve().parents[1]
PAGE = "# Equations\n\nInline $\\alpha^2$ and a display:\n\n$$\n\\int_0^1 x\\,\\mathrm dx = \\tfrac12\n$$\n"
NOTEBOOK_PAGE = JUPYTEXT_HEADER + PAGE + """
```{exercise} Add two numbers
:label: ex-add

What is 20 + 22?
```

```{solution-start} ex-add
:class: dropdown
```

```{code-cell} ipython3
print("the answer is", 20 + 22)
```

```{solution-end}
```
"""


def _build(folder: Path, extensions: list[str], page: str = PAGE) -> Path:
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    small = {"title": "offline check", "execute": {"execute_notebooks": "force"}, "parse": config["parse"],
             "sphinx": {"extra_extensions": extensions}}
    folder.mkdir()
    (folder / "_config.yml").write_text(yaml.safe_dump(small))
    (folder / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (folder / "index.md").write_text(page)
    jupyter_book = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jupyter_book is None:
        pytest.skip("jupyter-book is not installed (pip install -e '.[book]')")
    subprocess.run([jupyter_book, "build", str(folder), "-W", "-n", "-q"], check=True, capture_output=True, timeout=600)
    return folder / "_build" / "html"


def test_the_book_ships_mathjax_and_loads_nothing_from_elsewhere(tmp_path):
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    extensions = config["sphinx"]["extra_extensions"]
    html = _build(tmp_path / "book", extensions, NOTEBOOK_PAGE)
    assert external_assets_of_site(html) == {}
    page = (html / "index.html").read_text()
    # sphinx-exercise: the solution is collapsed (a dropdown) and holds the executed cell's output
    solution = page[page.index('class="solution'):]
    assert "dropdown" in solution[:200] and "the answer is 42" in solution
    # support.infra.notebook_downloads: the download menu offers the executed notebook
    assert "download-notebook-button" in page and '_sources/index.ipynb' in page
    assert "the answer is 42" in (html / "_sources" / "index.ipynb").read_text()
    assert '_static/mathjax/tex-chtml.js' in page
    assert (html / "_static" / "mathjax" / "tex-chtml.js").stat().st_size > 100_000  # MathJax itself, copied
    assert page.count("const THEBE_JS_URL") == 1  # support.infra.sphinx_scripts: a second one is a SyntaxError


def test_without_the_extensions_mathjax_comes_from_a_cdn_and_scripts_repeat(tmp_path):
    html = _build(tmp_path / "control", [], JUPYTEXT_HEADER + PAGE)
    found = external_assets_of_site(html)
    assert any("mathjax" in url for urls in found.values() for url in urls), found
    page = (html / "index.html").read_text()
    assert page.count("const THEBE_JS_URL") == 2  # the bug the extension removes
    assert "download-notebook-button" not in page  # the theme alone offers no notebook without a launch button


def test_external_assets_finds_remote_scripts_and_stylesheets_only():
    page = """<html><head>
    <script src="_static/local.js"></script><script src="https://cdn.example/x.js"></script>
    <link rel="stylesheet" href="//fonts.example/f.css"><link rel="stylesheet" href="_static/a.css">
    <link rel="preload" as="script" href="http://cdn.example/p.js"><link rel="icon" href="https://x/fav.ico">
    </head><body><a href="https://example.org">a link is not an asset</a></body></html>"""
    assert external_assets(page) == ["https://cdn.example/x.js", "//fonts.example/f.css", "http://cdn.example/p.js"]
