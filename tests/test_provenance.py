"""Source hashes of a chapter's results: code cells only, and the support modules they import, followed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support.infra.provenance import (
    REPO_ROOT, changed_since_run, changed_sources, chapter_code, code_digest, result_chapters, source_hashes,
    support_closure,
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


PROFILES = """import os


def _cores():
    return os.cpu_count()


def _smoke():
    return {"points": 61, "cores": _cores()}


def _paper():
    return {"points": 101, "cores": _cores()}


_BUILDERS = {"smoke": _smoke, "paper": _paper}
"""
RESULTS = "def run_metadata():\n    return {'commit': 'abc'}\n\n\ndef write_results(x):\n    return round(x, 6)\n"


def make_infra_tree(root: Path) -> None:
    """make_tree plus a profiles module with two builders, a results module and a provenance module,
    all imported by the chapter."""
    make_tree(root)
    (root / "support/infra/profiles.py").write_text(PROFILES)
    (root / "support/infra/results.py").write_text(RESULTS)
    (root / "support/infra/provenance.py").write_text("RULES = 1\n")
    (root / "book/ch.md").write_text(CHAPTER.replace(
        "from support.core import geodesics",
        "from support.core import geodesics\nfrom support.infra import profiles, provenance, results"))


def edit(root: Path, path: str, old: str, new: str) -> None:
    file = root / path
    assert old in file.read_text(), (path, old)
    file.write_text(file.read_text().replace(old, new))


def test_a_result_of_one_profile_does_not_depend_on_another_profiles_sizes(tmp_path: Path) -> None:
    make_infra_tree(tmp_path)
    before = {name: source_hashes("book/ch.md", tmp_path, name) for name in ("smoke", "paper")}
    edit(tmp_path, "support/infra/profiles.py", '"points": 61', '"points": 81')  # a smoke size
    after = {name: source_hashes("book/ch.md", tmp_path, name) for name in ("smoke", "paper")}
    assert changed_sources(before["paper"], after["paper"]) == []
    assert changed_sources(before["smoke"], after["smoke"]) == ["support/infra/profiles.py"]
    edit(tmp_path, "support/infra/profiles.py", '"points": 101', '"points": 201')  # a paper size
    assert changed_sources(after["paper"], source_hashes("book/ch.md", tmp_path, "paper")) == ["support/infra/profiles.py"]
    edit(tmp_path, "support/infra/profiles.py", "return os.cpu_count()", "return 1")  # shared by both
    for name in ("smoke", "paper"):
        assert changed_sources(after[name], source_hashes("book/ch.md", tmp_path, name)) == ["support/infra/profiles.py"]
    with pytest.raises(ValueError, match="'gpu' has no builder.*smoke, paper"):
        source_hashes("book/ch.md", tmp_path, "gpu")


def test_code_that_only_records_provenance_is_not_hashed(tmp_path: Path) -> None:
    make_infra_tree(tmp_path)
    before = source_hashes("book/ch.md", tmp_path, "paper")
    assert "support/infra/provenance.py" not in before and "support/infra/results.py" in before
    edit(tmp_path, "support/infra/provenance.py", "RULES = 1", "RULES = 2")
    edit(tmp_path, "support/infra/results.py", "'commit': 'abc'", "'commit': 'def', 'host': 'x'")
    assert changed_sources(before, source_hashes("book/ch.md", tmp_path, "paper")) == []
    edit(tmp_path, "support/infra/results.py", "round(x, 6)", "round(x, 3)")  # what a results file holds
    assert changed_sources(before, source_hashes("book/ch.md", tmp_path, "paper")) == ["support/infra/results.py"]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_a_record_made_under_older_hashing_rules_is_checked_against_its_commit(tmp_path: Path) -> None:
    """A record from before RECORD_KEEPING and per-profile hashing: every module hashed whole. Its
    commit vouches for the files, which today's rules then compare with the working tree."""
    make_infra_tree(tmp_path)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "run")
    commit = git(tmp_path, "rev-parse", "HEAD")
    old_rules = {key: code_digest((tmp_path / key).read_text()) if key.endswith(".py") else value
                 for key, value in source_hashes("book/ch.md", tmp_path).items()}
    old_rules["support/infra/provenance.py"] = code_digest("RULES = 1\n")
    now = source_hashes("book/ch.md", tmp_path, "paper")
    assert changed_sources(old_rules, now) == ["support/infra/profiles.py", "support/infra/provenance.py",
                                               "support/infra/results.py"]  # by the rules alone
    assert changed_since_run(old_rules, commit, now, "paper", tmp_path) == []

    edit(tmp_path, "support/infra/profiles.py", '"points": 61', '"points": 81')
    edit(tmp_path, "support/infra/results.py", "'commit': 'abc'", "'commit': 'def'")
    now = source_hashes("book/ch.md", tmp_path, "paper")
    assert changed_since_run(old_rules, commit, now, "paper", tmp_path) == []
    edit(tmp_path, "support/infra/profiles.py", '"points": 101', '"points": 201')
    edit(tmp_path, "support/core/monge.py", "metric = 1", "metric = 2")
    now = source_hashes("book/ch.md", tmp_path, "paper")
    assert changed_since_run(old_rules, commit, now, "paper", tmp_path) == ["support/core/monge.py",
                                                                          "support/infra/profiles.py"]
    # a hash the commit's file does not reproduce (a run from an edited tree), or a commit git does
    # not know, leaves only the plain comparison
    tampered = {**old_rules, "support/infra/results.py": "0" * 64}
    assert "support/infra/results.py" in changed_since_run(tampered, commit, now, "paper", tmp_path)
    assert "support/infra/results.py" in changed_since_run(old_rules, "f" * 40, now, "paper", tmp_path)
