"""A Sphinx extension that offers every executed chapter as a notebook (``.ipynb``) in the page's download menu.

sphinx-book-theme lists an ``.ipynb`` entry in its download menu when the page context names an
``ipynb_source`` under ``_sources/``, but for MyST-markdown notebooks it sets one only while a launch
button (Binder, JupyterHub, Colab, Thebe) is configured, and this book has none: it is read offline.
This extension copies the notebook myst-nb executed for the page (``jupyter_execute/<page>.ipynb``, with
its outputs) into ``_sources/`` and names it there, so the theme's own menu offers it. Pages that are not
notebooks (the glossary) have no executed notebook and keep the plain menu.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from myst_nb.sphinx_ext import OUTPUT_FOLDER

HEADER_BUTTONS_PRIORITY = 501
"""The priority of sphinx-book-theme's ``add_header_buttons``; this extension must run before it."""


def offer_notebook(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """Copy the page's executed notebook next to its source and point the download menu at it."""
    executed = Path(app.outdir).parent / OUTPUT_FOLDER / f"{pagename}.ipynb"
    if not executed.is_file():
        return
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(executed, target)
    context["ipynb_source"] = f"{pagename}.ipynb"


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", offer_notebook, priority=HEADER_BUTTONS_PRIORITY - 1)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
