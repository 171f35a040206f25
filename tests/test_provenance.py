"""Source hashes of a chapter's results: code cells only, and the support modules they import, followed."""

from __future__ import annotations

from pathlib import Path

from support.infra.provenance import REPO_ROOT, changed_sources, chapter_code, source_hashes, support_closure

CHAPTER = """---
jupytext: {}
---

# Title with 1.23 in the prose

```{code-cell} ipython3
from support.core import geodesics
```

Prose that changes.

```{code-cell} ipython3
:tags: [remove-cell]

assert True
```
"""


def make_tree(root: Path) -> None:
    """support/{__init__, core/{__init__, geodesics, monge}, infra/{__init__, unused}}: geodesics imports monge relatively."""
    for package in ("support", "support/core", "support/infra"):
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    (root / "support/core/geodesics.py").write_text("from .monge import metric\n")
    (root / "support/core/monge.py").write_text("import math\nmetric = 1\n")
    (root / "support/infra/unused.py").write_text("x = 1\n")
    (root / "book").mkdir(exist_ok=True)
    (root / "book/ch.md").write_text(CHAPTER)
    (root / "pyproject.toml").write_text("[project]\n")


def test_closure_follows_relative_imports_and_skips_unimported_modules(tmp_path: Path) -> None:
    make_tree(tmp_path)
    found = [p.relative_to(tmp_path).as_posix() for p in support_closure(chapter_code(tmp_path / "book/ch.md"), tmp_path)]
    assert found == ["support/__init__.py", "support/core/__init__.py", "support/core/geodesics.py",
                     "support/core/monge.py"]


def test_only_code_and_imported_sources_change_the_hashes(tmp_path: Path) -> None:
    make_tree(tmp_path)
    before = source_hashes("book/ch.md", tmp_path)
    (tmp_path / "book/ch.md").write_text(CHAPTER.replace("Prose that changes.", "Other prose, 4.56."))
    (tmp_path / "support/infra/unused.py").write_text("x = 2\n")
    assert changed_sources(before, source_hashes("book/ch.md", tmp_path)) == []
    (tmp_path / "support/core/monge.py").write_text("metric = 2\n")
    (tmp_path / "book/ch.md").write_text(CHAPTER.replace("assert True", "assert 1"))
    assert changed_sources(before, source_hashes("book/ch.md", tmp_path)) == ["book/ch.md (code cells)",
                                                                              "support/core/monge.py"]
    assert changed_sources(before, {}) == sorted(before)  # removed sources count as changed


def test_a_real_chapter_depends_on_the_modules_it_runs() -> None:
    hashes = source_hashes("book/09_experiment_2d.md")
    assert {"support/core/geodesics.py", "support/evaluation/divergences.py", "support/infra/profiles.py",
            "constraints.txt"} <= hashes.keys()
    assert "support/models/cifar_unet.py" not in hashes  # chapter 9 never imports the U-Net
    assert (REPO_ROOT / "book/09_experiment_2d.md").exists()
