"""Which code produced a result: the commit, and a hash of every source file the result depends on.

A results file records the git commit it was run from, but a commit names the whole tree: most
later commits change nothing a given chapter runs. So every results file also records the
SHA-256 of exactly the sources that determine its numbers (:func:`source_hashes`):

* the code cells of the chapter that wrote it (prose edits do not count),
* every module of ``support`` those cells import, followed through the imports of each module,
* ``pyproject.toml`` and ``constraints.txt`` (the pinned versions).

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
from collections.abc import Mapping
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


def code_digest(source: str) -> str:
    """SHA-256 of Python ``source`` as code: its syntax tree without docstrings (or any other bare string
    statement), comments or layout.

    Source that does not parse (e.g. a cell with an IPython magic) is hashed as text.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return _digest(source)
    return _digest(ast.dump(_StripStrings().visit(tree), include_attributes=False))


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
    cells = _CODE_CELL.findall(Path(path).read_text(encoding="utf-8"))
    return "\n".join(_CELL_OPTION.sub("", cell) for cell in cells)


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


def source_hashes(chapter: str | Path, root: Path = REPO_ROOT) -> dict[str, str]:
    """SHA-256 of each source the results of ``chapter`` (a path relative to ``root``) depend on.

    Keys are repository-relative paths; the chapter's entry hashes its code cells only, and Python
    everywhere is hashed as code (:func:`code_digest`).
    """
    code = chapter_code(root / chapter)
    hashes = {f"{Path(chapter).as_posix()} (code cells)": code_digest(code)}
    for path in support_closure(code, root):
        hashes[path.relative_to(root).as_posix()] = code_digest(path.read_text(encoding="utf-8"))
    for pin in PINS:
        if (root / pin).exists():
            hashes[pin] = _digest((root / pin).read_bytes())
    return hashes


def results_sources(name: str, root: Path = REPO_ROOT) -> dict[str, str] | None:
    """:func:`source_hashes` of the chapter that writes results ``name``, or None if no chapter writes them."""
    chapter = result_chapters(root).get(name)
    return None if chapter is None else source_hashes(chapter, root)


def changed_sources(recorded: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """The sources whose hash differs between a recorded run and ``now``: changed, added or removed files."""
    return sorted(key for key in recorded.keys() | now.keys() if recorded.get(key) != now.get(key))
