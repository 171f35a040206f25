"""Source hashes of a chapter's results: code cells only, and the support modules they import, followed."""

from __future__ import annotations

from pathlib import Path

from support.infra.provenance import (
    REPO_ROOT, changed_sources, chapter_code, code_digest, result_chapters, source_hashes, support_closure,
)

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


def test_documentation_comments_and_layout_do_not_change_a_code_hash() -> None:
    code = 'def f(x):\n    return x + 1\n\n\nclass C:\n    size: int = 3\n'
    documented = ('"""A module."""\n# a comment\ndef f(x):  # inline\n    """Adds one."""\n    return (x\n            + 1)\n'
                  'class C:\n    """A class."""\n    size: int = 3\n    """The size (an attribute docstring)."""\n')
    assert code_digest(documented) == code_digest(code)
    for edit in ("return x + 2", "return x - 1", "size: int = 4", "size: float = 3"):
        changed = code.replace("return x + 1", edit) if "return" in edit else code.replace("size: int = 3", edit)
        assert code_digest(changed) != code_digest(code), edit
    assert code_digest('"""Only a docstring."""\n') == code_digest('"""Another one, listing a new module."""\n')
    assert code_digest("%timeit f()\n") != code_digest("%timeit g()\n")  # not Python: hashed as text


def test_a_module_docstring_edit_leaves_the_sources_unchanged(tmp_path: Path) -> None:
    make_tree(tmp_path)
    before = source_hashes("book/ch.md", tmp_path)
    (tmp_path / "support/__init__.py").write_text('"""The package; its module list now names a new module."""\n')
    (tmp_path / "support/core/monge.py").write_text('"""Monge."""\nimport math  # the metric\nmetric = 1\n')
    assert changed_sources(before, source_hashes("book/ch.md", tmp_path)) == []


def test_the_chapters_say_which_results_they_write(tmp_path: Path) -> None:
    make_tree(tmp_path)
    (tmp_path / "book/writer.md").write_text(CHAPTER.replace("assert True", 'write_results("toy", {}, profile)'))
    assert result_chapters(tmp_path) == {"toy": "book/writer.md"}
    found = result_chapters()
    assert found["experiment_2d"] == "book/09_experiment_2d.md" and found["digits"] == "book/13_digits.md"
    assert len(found) >= 8
