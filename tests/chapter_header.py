"""The jupytext front matter that makes a MyST-markdown file a chapter: a notebook nbval and myst-nb execute.

Shared by the tests that write throw-away chapters (imported as a module: pytest puts ``tests/`` on the path).
"""

JUPYTEXT_HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

"""
