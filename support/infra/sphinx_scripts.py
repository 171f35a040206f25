"""A Sphinx extension that writes each inline script of a page once (``_config.yml``, ``extra_extensions``).

With jupyter-book 1.0.4 (Sphinx 7.4, sphinx-thebe 0.3.1, sphinx-togglebutton 0.3.2) every chapter page
carries the inline configuration scripts of sphinx-thebe and sphinx-togglebutton twice, once with the
registry's priority and once with the builder's. The second ``const THEBE_JS_URL = ...`` is a
``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared`` in every browser, which the book's
browser check (:mod:`support.infra.browser_check`) reports. This extension drops the repeats of a script
(same file, same attributes and body; an empty file name given as None or "") just before the page is rendered, keeping the first.
"""

from __future__ import annotations

from typing import Any


def drop_repeated_scripts(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """Keep the first of every script entry that has the same file name and attributes as an earlier one."""
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for script in scripts:
        # the repeats differ only in an empty file name written as None once and as "" once
        key = (str(getattr(script, "filename", script) or ""), repr(sorted(getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", drop_repeated_scripts, priority=900)  # after the themes have added theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
