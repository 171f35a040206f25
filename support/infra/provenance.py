"""Which code produced a result: the commit, and a hash of every source file the result depends on.

A results file records the git commit it was run from, but a commit names the whole tree: most
later commits change nothing a given chapter runs. So every results file also records the
SHA-256 of exactly the sources that determine its numbers (:func:`source_hashes`):

* the code cells of the chapter that wrote it (prose edits do not count),
* every module of ``support`` those cells import, followed through the imports of each module,
* ``pyproject.toml`` and ``constraints.txt`` (the pinned versions).

The sizes of every profile live in one module (``support/infra/profiles.py``), but a result of one
profile does not depend on another profile's sizes: for a result of profile ``P`` that module is hashed
without the builders of the other profiles (:func:`profile_builders`), so tuning the smoke sizes leaves
every paper-profile artefact current. Likewise the code that only records where a result came from,
or shows committed ones (:data:`RECORD_KEEPING`), computes no number and is not hashed.

Python is hashed as code, not as text (:func:`code_digest`): its syntax tree without docstrings,
comments or layout, so that documenting a module, or listing a new one in the package docstring, does
not mark every result that imports it as stale. Which chapter writes which results is read from the
chapters themselves (their ``write_results("name", ...)`` calls, :func:`result_chapters`), so adding a
chapter changes no module either.

:func:`changed_sources` compares such a record with the working tree and names the files that
have changed since, so a page showing committed paper-scale numbers can say whether the code
that made them is still the code of the book (``support.infra.paper_artefacts``).
"""

from __future__ import annotations

import ast
import hashlib
import re
import subprocess
from collections.abc import Collection, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PINS = ("pyproject.toml", "constraints.txt")
_CODE_CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)


class _StripStrings(ast.NodeTransformer):
    """Drops every statement that is a bare string: docstrings, and the attribute docstrings after fields."""

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None
        return node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        if hasattr(node, "body") and isinstance(node.body, list) and not node.body:
            node.body = [ast.Pass()]  # a class or function that held only a docstring
        return node


PROFILES_MODULE = "support/infra/profiles.py"
"""The module whose ``_BUILDERS = {"name": builder, ...}`` maps each profile to the function that builds it."""
RECORD_KEEPING: dict[str, tuple[str, ...] | None] = {
    "support/infra/provenance.py": None,
    "support/infra/paper_artefacts.py": None,
    "support/infra/results.py": ("run_metadata",),
}
"""Code that records where a result came from, or loads and shows committed runs, and computes no number
of one: a whole module (None) or the named top-level functions of a module. Results are not hashed on it."""


def code_digest(source: str, without: Collection[str] = ()) -> str:
    """SHA-256 of Python ``source`` as code: its syntax tree without docstrings (or any other bare string
    statement), comments or layout, and without the top-level functions named in ``without``.

    Source that does not parse (e.g. a cell with an IPython magic) is hashed as text.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return _digest(source)
    tree.body = [node for node in tree.body if not (isinstance(node, ast.FunctionDef) and node.name in without)]
    return _digest(ast.dump(_StripStrings().visit(tree), include_attributes=False))


def profile_builders(source: str) -> dict[str, str]:
    """Profile name -> the name of the function that builds it, read from the ``_BUILDERS`` dict of the
    profiles module ``source`` (empty if it has none)."""
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(getattr(target, "id", None) == "_BUILDERS" for target in node.targets)):
            return {key.value: value.id for key, value in zip(node.value.keys, node.value.values)
                    if isinstance(key, ast.Constant) and isinstance(value, ast.Name)}
    return {}


def result_chapters(root: Path = REPO_ROOT) -> dict[str, str]:
    """Results name -> the chapter (``book/*.md``, relative to ``root``) whose code calls ``write_results(name, ...)``."""
    found = {}
    for chapter in sorted((root / "book").glob("*.md")):
        try:
            tree = ast.parse(chapter_code(chapter))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "write_results"
                    and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                found[node.args[0].value] = chapter.relative_to(root).as_posix()
    return found


def git_commit(root: Path = REPO_ROOT) -> str:
    """The commit the book was run from (``unknown`` outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


_CELL_OPTION = re.compile(r"\A(?::[\w-]+:[^\n]*\n)+\n?")


def chapter_code(path: Path) -> str:
    """The Python of a jupytext MyST chapter's code cells, in order, without the prose and without
    cell options such as ``:tags: [remove-cell]`` (neither changes a result)."""
    return _cells_code(Path(path).read_text(encoding="utf-8"))


def _cells_code(markdown: str) -> str:
    return "\n".join(_CELL_OPTION.sub("", cell) for cell in _CODE_CELL.findall(markdown))


def imported_modules(source: str, package: str, members: bool = False) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``source``, code of a module of ``package``.

    Relative imports are resolved against ``package`` (e.g. ``support.core``); ``from support import
    core`` names the subpackage ``support.core``. With ``members``, ``from a import b`` also gives
    ``a.b`` (which may be a module: ``from support.core import geodesics``).
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found += [(node.lineno, f"{name}.{alias.name}" if name == "support" else name) for alias in node.names]
            if members and name != "support":
                found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def _module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` (``support.a.b``) under ``root``, or None if it is not a support module."""
    if name != "support" and not name.startswith("support."):
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def support_closure(code: str, root: Path = REPO_ROOT) -> list[Path]:
    """Every ``support`` module file that ``code`` imports, directly or through other support modules
    (package ``__init__`` files on the way included, since importing a module runs them)."""
    pending, seen = [(code, "__main__")], set()
    while pending:
        source, package = pending.pop()
        for _, name in imported_modules(source, package, members=True):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # support, support.core, support.core.geodesics
                path = _module_file(".".join(parts[:depth]), root)
                if path is None or path in seen:
                    continue
                seen.add(path)
                module = ".".join(path.relative_to(root).with_suffix("").parts)
                own_package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rpartition(".")[0]
                pending.append((path.read_text(encoding="utf-8"), own_package))
    return sorted(seen)


def _digest(text: str | bytes) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()


_CODE_CELLS = " (code cells)"


def _source_digest(key: str, text: str, profile: str | None, plain: bool = False) -> str:
    """The hash of source ``key`` (a :func:`source_hashes` key) whose content is ``text``, for a result of
    ``profile``. ``plain`` hashes Python as whole modules, as every record did before
    :data:`RECORD_KEEPING` and :func:`profile_builders` (used to check an older record)."""
    if key.endswith(_CODE_CELLS):
        return code_digest(_cells_code(text))
    if key in PINS:
        return _digest(text)
    if plain:
        return code_digest(text)
    without = set(RECORD_KEEPING.get(key) or ())
    if key == PROFILES_MODULE and profile is not None:
        builders = profile_builders(text)
        if profile not in builders:
            raise ValueError(f"profile {profile!r} has no builder in {PROFILES_MODULE}'s _BUILDERS "
                             f"({', '.join(builders)}); pass one of those names")
        without |= {name for other, name in builders.items() if other != profile}
    return code_digest(text, without)


def source_hashes(chapter: str | Path, root: Path = REPO_ROOT, profile: str | None = None) -> dict[str, str]:
    """SHA-256 of each source the results of ``chapter`` (a path relative to ``root``) depend on.

    Keys are repository-relative paths; the chapter's entry hashes its code cells only, and Python
    everywhere is hashed as code (:func:`code_digest`), without :data:`RECORD_KEEPING`. With
    ``profile``, the profiles module is hashed without the other profiles' builders.
    """
    code = chapter_code(root / chapter)
    keys = [f"{Path(chapter).as_posix()}{_CODE_CELLS}"]
    keys += [key for path in support_closure(code, root)
             if RECORD_KEEPING.get(key := path.relative_to(root).as_posix(), ()) is not None]
    keys += [pin for pin in PINS if (root / pin).exists()]
    return {key: _source_digest(key, (root / key.removesuffix(_CODE_CELLS)).read_text(encoding="utf-8"), profile)
            for key in keys}


def results_sources(name: str, root: Path = REPO_ROOT, profile: str | None = None) -> dict[str, str] | None:
    """:func:`source_hashes` of the chapter that writes results ``name``, or None if no chapter writes them."""
    chapter = result_chapters(root).get(name)
    return None if chapter is None else source_hashes(chapter, root, profile)


def changed_sources(recorded: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The sources whose hash differs between a recorded run and ``now``: changed, added or removed files."""
    return sorted(key for key in recorded.keys() | now.keys() if recorded.get(key) != now.get(key))


def _file_at_commit(commit: str, path: str, root: Path) -> str | None:
    """The text of ``path`` at ``commit`` of the repository at ``root``, or None if git cannot say."""
    try:
        out = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=root, capture_output=True, text=True,
                             check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def changed_since_run(recorded: Mapping[str, str], commit: str, now: Mapping[str, str], profile: str | None,
                      root: Path = REPO_ROOT) -> list[str]:
    """The sources that differ between a run (its recorded hashes and its commit) and ``now``.

    A recorded hash may differ from today's only because the hashing rules changed after the run
    (:data:`RECORD_KEEPING` and :func:`profile_builders` came later). So where the run's commit is in
    the history and its file reproduces the recorded hash (under the plain rule of that time or
    today's), that file is hashed with today's rules and compared instead; a recorded module that is
    record keeping today does not count. A file the commit cannot vouch for (no git, or a hash that no
    rule reproduces, as for a run from an edited tree) stays changed.
    """
    changed = []
    for key in changed_sources(recorded, now):
        if key not in now and key in RECORD_KEEPING and RECORD_KEEPING[key] is None:
            continue
        then = None if key not in recorded or key not in now else _file_at_commit(commit, key.removesuffix(_CODE_CELLS), root)
        if then is None:
            changed.append(key)
            continue
        then_today = _source_digest(key, then, profile)
        if recorded[key] not in {_source_digest(key, then, profile, plain=True), then_today} or then_today != now[key]:
            changed.append(key)
    return changed
